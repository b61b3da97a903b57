"""End-to-end tests of `python -m compiler.build` in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import GENOTYPES, ROOT, SMALL, small_genotype

from compiler import build_model


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compiler.build", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def sets(name: str) -> list[str]:
    out = []
    for k, v in SMALL[name].items():
        out += ["--set", f"{k}={v}"]
    return out


def test_check_prints_summary_without_writing(tmp_path):
    res = run(str(GENOTYPES / "stereo.yaml"), "--check", "-o", str(tmp_path / "x.onnx"))
    assert res.returncode == 0, res.stderr
    assert "parameters: 3,454,922" in res.stdout and "paper: 0.87M" in res.stdout
    assert "matching.cell1" in res.stdout and "192x9x22x29" in res.stdout
    assert not (tmp_path / "x.onnx").exists()


def test_build_writes_a_model_that_runs_with_carried_state(tmp_path):
    out = tmp_path / "stereo.onnx"
    res = run(str(GENOTYPES / "stereo.yaml"), "-o", str(out), "--quiet", *sets("stereo"))
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([1, *i.shape[1:]], np.float32) for i in session.get_inputs()}
    feeds["left"][:] = 1.0
    names = [o.name for o in session.get_outputs()]
    for _ in range(3):
        res = dict(zip(names, session.run(None, feeds), strict=True))
        feeds.update({k.replace("state_out.", "state_in."): v for k, v in res.items() if k.startswith("state_out.")})
    assert res["disparity"].shape == (1, 24, 32) and np.isfinite(res["disparity"]).all()


def test_weights_are_exported_and_mismatches_named(tmp_path):
    model = build_model(small_genotype("snasnet_cifar10_bw"))
    with torch.no_grad():
        model.classifier.bias.fill_(0.75)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    out = tmp_path / "m.onnx"
    res = run(str(GENOTYPES / "snasnet_cifar10_bw.yaml"), "-o", str(out), "--weights", str(tmp_path / "ckpt.pt"),
              "--quiet", *sets("snasnet_cifar10_bw"))
    assert res.returncode == 0, res.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([1, *i.shape[1:]], np.float32) for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(["logits"], feeds)[0], 0.75, atol=1e-6)  # no input: bias only
    # the same checkpoint against the full-size genotype: the first mismatched tensor is named
    res = run(str(GENOTYPES / "snasnet_cifar10_bw.yaml"), "-o", str(out), "--weights", str(tmp_path / "ckpt.pt"),
              "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "checkpoint does not match the genotype: tensor 'nets.backbone.layers.0.op.conv.weight'" in res.stderr


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_bad_checkpoint_file(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    res = run(str(GENOTYPES / "snasnet_cifar10_bw.yaml"), "--weights", str(tmp_path / "bad.pt"),
              "-o", str(tmp_path / "m.onnx"), "--quiet", *sets("snasnet_cifar10_bw"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_genotype_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((GENOTYPES / "cifar10.yaml").read_text().replace("op: conv3x3, b: 5", "op: conv3x3x, b: 5"))
    res = run(str(bad), "--check")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "cells.cell.nodes.n1.inputs[0].op: unknown value 'conv3x3x'" in res.stderr
