"""Hostile targets for the writers (issue 23, class 3): outputs are all or nothing, and what was there
before that is not ours is never deleted or overwritten without --overwrite.

Triton: a model folder that already holds other versions and files keeps them, says which version was
written, refuses to replace a config.pbtxt or version it did not write. DSEC submission: written to a
hidden folder and moved in only when the run is accepted. training.train --out: a user's own
config.yaml is not overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import ROOT
from test_dsec_submission import model_path as dsec_model_fixture
from test_dsec_submission import sequence as dsec_sequence_fixture

from compiler.build import main as build_main

GENOTYPE = str(Path(ROOT) / "genotypes" / "cifar10.yaml")
SMALL = ["--set", "input.height=8", "--set", "input.width=8", "--quiet"]


dsec_model = pytest.fixture(scope="module", name="dsec_model")(dsec_model_fixture.__wrapped__)
dsec_sequence = pytest.fixture(scope="module", name="dsec_sequence")(dsec_sequence_fixture.__wrapped__)


def _build(*argv):
    return build_main([GENOTYPE, *SMALL, *argv])


def test_triton_keeps_other_versions_and_files_and_says_which_version(tmp_path, capsys):
    model = tmp_path / "repo" / "cifar10"
    (model / "2").mkdir(parents=True)
    (model / "2" / "model.onnx").write_bytes(b"the user's version 2")
    (model / "labels.txt").write_text("cat\ndog\n")
    # no config.pbtxt: version 1 is free, nothing of the user's is in the way
    assert _build("--triton", str(tmp_path / "repo")) == 0
    out = capsys.readouterr().out
    assert "version 1" in out, out
    assert (model / "2" / "model.onnx").read_bytes() == b"the user's version 2"
    assert (model / "labels.txt").read_text() == "cat\ndog\n"
    onnx.load(str(model / "1" / "model.onnx"))
    assert _build("--triton", str(tmp_path / "repo"), "--triton-version", "3") == 0  # ours: replaced freely
    assert "version 3" in capsys.readouterr().out and (model / "3" / "model.onnx").is_file()
    assert (model / "1" / "model.onnx").is_file() and (model / "2" / "model.onnx").is_file()
    assert sorted(p.name for p in model.iterdir()) == ["1", "2", "3", "config.pbtxt", "labels.txt"]


def test_triton_refuses_to_replace_a_config_or_version_it_did_not_write(tmp_path, capsys):
    model = tmp_path / "repo" / "cifar10"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"the user's model")
    (model / "config.pbtxt").write_text('name: "cifar10"\nbackend: "onnxruntime"\n# tuned by hand\n')
    assert _build("--triton", str(tmp_path / "repo")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.pbtxt" in err and "--overwrite" in err, err
    assert (model / "1" / "model.onnx").read_bytes() == b"the user's model"
    assert "tuned by hand" in (model / "config.pbtxt").read_text()
    assert _build("--triton", str(tmp_path / "repo"), "--overwrite") == 0
    onnx.load(str(model / "1" / "model.onnx"))
    assert sorted(p.name for p in model.iterdir()) == ["1", "config.pbtxt"]  # no staging left


def test_triton_bad_version_and_a_file_in_the_way(tmp_path, capsys):
    assert _build("--triton", str(tmp_path), "--triton-version", "0") == 2
    assert "version" in capsys.readouterr().err
    (tmp_path / "cifar10").write_text("a file")
    assert _build("--triton", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1
    assert (tmp_path / "cifar10").read_text() == "a file"


def test_a_refused_or_crashed_submission_leaves_no_png(dsec_model, dsec_sequence, tmp_path, capsys, monkeypatch):
    from test_dsec_submission import NAME, run, write_csv

    import runtime.stream.core

    folder, start, _ = dsec_sequence
    csv = write_csv(tmp_path / "ts.csv", start + np.array([100_000, 200_000]), [0, 1])
    sub = tmp_path / "sub"
    argv = ["--onnx", str(dsec_model), "--events", str(folder), "--dsec-submission", str(sub),
            "--dsec-timestamps", str(csv), "--quiet"]
    rc, err, _, _ = run([*argv, "--burn-in", "50"], tmp_path, capsys)  # refused: no counted window
    assert rc == 2 and len(err) == 1 and "burn-in" in err[0], err
    assert list(sub.iterdir()) == []  # no PNG, no hidden stage

    real, calls = runtime.stream.core.Stream.record, [0]

    def crash_at_the_second_step(self, *a, **k):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(runtime.stream.core.Stream, "record", crash_at_the_second_step)
    rc, err, _, _ = run(argv, tmp_path, capsys)
    assert rc == 130 and err == ["error: interrupted"]
    assert list(sub.iterdir()) == []
    monkeypatch.undo()
    assert run(argv, tmp_path, capsys)[0] == 0
    assert sorted(p.name for p in sub.iterdir()) == [NAME]
    assert sorted(p.name for p in (sub / NAME).iterdir()) == ["000000.png", "000001.png"]
