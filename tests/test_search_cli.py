"""End-to-end tests of `python -m training.search`: tiny SpikeDHS searches on the digits set and on
synthetic event stereo that write genotypes the compiler exports, exact resume, and SNASNet on one and
on two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import GENOTYPES, ROOT, TINY_SEARCH_SPACE

from training.execution import cpu_has_bf16

DIGITS = ["--set", "input.height=8", "--set", "input.width=8", "--set", "input.channels=1"]
SPACE = TINY_SEARCH_SPACE
SMALL_CLA = [*DIGITS, "--set", "networks.backbone.node_channels=[4,4,8]", "--set",
             "networks.backbone.layers[0].channels=4", "--set", "input.timesteps=1"]


def run(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def search(space, out, *extra):
    return run(sys.executable, "-m", "training.search", "spikedhs", space, "--out", out, "--epochs", 2,
               "--warmup", 1, "--batch-size", 8, "--max-batches", 2, "--decode-every", 1, "--threads", 1,
               "--quiet", *SMALL_CLA, *extra)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SPACE)
    return path


def test_spikedhs_search_writes_a_genotype_that_exports(space, tmp_path):
    res = search(space, tmp_path / "run")
    assert res.returncode == 0, res.stderr
    searched = tmp_path / "run" / "searched.yaml"
    rows = [json.loads(line) for line in open(tmp_path / "run" / "arch.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]  # decoded every epoch: the architecture's history
    assert len(rows[-1]["decoded"]["backbone"]["path"]) == 2 and rows[-1]["decoded"]["backbone"]["path"][-1] == 1
    assert (tmp_path / "run" / "architecture.png").stat().st_size > 0
    # alpha moved only in the search epoch (epoch 1 is warm-up: weights only)
    assert rows[0]["alpha"] != rows[1]["alpha"]
    res = run(sys.executable, "-m", "compiler.build", searched, "-o", tmp_path / "s.onnx", "--quiet")
    assert res.returncode == 0, res.stderr
    import yaml
    meta = yaml.safe_load(searched.read_text())["meta"]["search"]
    assert meta["epoch"] == 2 and meta["seed"] == 0 and "alpha" in meta and "beta" in meta


def test_spikedhs_resume_is_exact(space, tmp_path):
    assert search(space, tmp_path / "straight").returncode == 0
    first = search(space, tmp_path / "cut", "--stop-after", 1)
    assert first.returncode == 0, first.stderr
    assert not (tmp_path / "cut" / "searched.yaml").exists()
    res = run(sys.executable, "-m", "training.search", "spikedhs", space, "--out", tmp_path / "cut", "--resume",
              "--quiet")
    assert res.returncode == 0, res.stderr
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "straight" / "searched.yaml").read_text() == (tmp_path / "cut" / "searched.yaml").read_text()


def test_bad_search_inputs_are_one_line_errors(space, tmp_path):
    res = run(sys.executable, "-m", "training.search", "spikedhs", tmp_path / "missing.yaml", "--out", tmp_path / "o")
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.startswith("error: ")
    res = search(space, tmp_path / "o2", "--warmup", 5)
    assert res.returncode == 2 and "--warmup 5 leaves no search epoch" in res.stderr
    res = search(space, tmp_path / "o3", "--windows", 4, "--burn-in", 0)  # a classification space
    assert res.returncode == 2 and "\n" not in res.stderr.strip(), res.stderr
    assert "--windows, --burn-in: stereo options, and the space's task is classification" in res.stderr
    assert not (tmp_path / "o3").exists()


SNAS = [GENOTYPES / "snasnet_cifar10_bw.yaml", "--cell", "bw", "--candidates", 6, "--batch", 16,
        "--threads", 1, "--quiet", *DIGITS, "--set", "networks.backbone.node_channels=[8,16]",
        "--set", "networks.backbone.layers[0].channels=8", "--set", "networks.backbone.layers[2].channels=16",
        "--set", "input.timesteps=2"]


def test_snasnet_one_and_two_processes_agree(tmp_path):
    res = run(sys.executable, "-m", "training.search", "snasnet", *SNAS, "--out", tmp_path / "one")
    assert res.returncode == 0, res.stderr
    one = [json.loads(line) for line in open(tmp_path / "one" / "snasnet.jsonl")]
    assert [r["index"] for r in one] == list(range(6))
    best = max(one, key=lambda r: r["score"])
    import yaml
    meta = yaml.safe_load((tmp_path / "one" / "searched.yaml").read_text())["meta"]["snasnet"]
    assert meta["cell"] == best["cell"] and meta["score"] == best["score"]
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous on this machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = run(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
              "-m", "training.search", "snasnet", *SNAS,
              "--out", tmp_path / "two", env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    two = [json.loads(line) for line in open(tmp_path / "two" / "snasnet.jsonl")]
    assert [(r["index"], r["cell"]) for r in two] == [(r["index"], r["cell"]) for r in one]
    for a, b in zip(one, two, strict=True):
        assert a["score"] == pytest.approx(b["score"], rel=1e-9)


def test_spikedhs_two_processes_match_one(space, tmp_path):
    """Under torchrun (gloo, 2 processes) the supernet ends where one process on the same global batch ends."""
    import socket

    env = {"OMP_NUM_THREADS": "1"}
    one = search(space, tmp_path / "one")
    assert one.returncode == 0, one.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    two = run(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
              "-m", "training.search", "spikedhs", space, "--out", tmp_path / "two", "--epochs", 2, "--warmup", 1,
              "--batch-size", 8, "--max-batches", 2, "--decode-every", 1, "--threads", 1, "--quiet", *SMALL_CLA,
              env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=False)["model"]
    for key, t in a.items():
        if t.is_floating_point():
            assert torch.allclose(t, b[key], rtol=1e-3, atol=1e-4), (key, float((t - b[key]).abs().max()))
        else:
            assert torch.equal(t, b[key]), key
    rows = [json.loads(line) for line in open(tmp_path / "two" / "arch.jsonl")]
    assert rows[0]["alpha"] != rows[1]["alpha"]  # the search epoch moved alpha: not two initialisations


def test_snasnet_scores_stereo_cells_on_event_windows(tmp_path):
    res = run(sys.executable, "-m", "training.search", "snasnet", GENOTYPES / "stereo_small.yaml", "--cell", "feature",
              "--input-op", "conv1x1", "--out", tmp_path / "st", "--candidates", 3, "--batch", 2, "--steps", 2,
              "--set", "input.height=24", "--set", "input.width=32", "--threads", 1, "--quiet")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in open(tmp_path / "st" / "snasnet.jsonl")]
    assert len(rows) == 3 and all(np.isfinite(r["score"]) for r in rows)
    res = run(sys.executable, "-m", "compiler.build", tmp_path / "st" / "searched.yaml", "--check", "--quiet")
    assert res.returncode == 0, res.stderr
    # without a conv into node 0, the 48-channel stem cannot be summed into 16-channel nodes: a clear error
    res = run(sys.executable, "-m", "training.search", "snasnet", GENOTYPES / "stereo_small.yaml", "--cell", "feature",
              "--out", tmp_path / "bad", "--candidates", 1, "--batch", 2, "--steps", 2, "--set", "input.height=24",
              "--set", "input.width=32", "--quiet")
    assert res.returncode == 2 and "no valid random cell" in res.stderr and "Traceback" not in res.stderr


def test_spikedhs_stereo_search_on_synthetic_events_writes_a_genotype_that_exports(tmp_path):
    """The stereo space on the built-in synthetic event stereo: trellis paths decoded, file exports."""
    out = tmp_path / "stereo"
    res = run(sys.executable, "-m", "training.search", "spikedhs", ROOT / "searchspaces" / "stereo_small.yaml",
              "--out", out, "--set", "input.height=48", "--set", "input.width=64", "--epochs", 2, "--warmup", 1,
              "--batch-size", 2, "--max-batches", 1, "--train-seeds", "100-101", "--val-seeds", "0", "--seconds", 1,
              "--threads", 1, "--quiet")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in open(out / "arch.jsonl")]
    paths = rows[-1]["decoded"]
    assert len(paths["feature"]["path"]) == 2 and paths["feature"]["path"][-1] == 0
    assert len(paths["matching"]["path"]) == 4 and paths["matching"]["path"][-1] == 1
    res = run(sys.executable, "-m", "compiler.build", out / "searched.yaml", "-o", tmp_path / "s.onnx", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "s.onnx").stat().st_size > 0


def test_snasnet_scores_each_distinct_cell_once(tmp_path):
    """2-node cells have at most 4 distinct forms (the one edge's op), so 8 codes must repeat some."""
    import yaml

    from training.search.snasnet import cell_from_matrix, parse_code

    args = [a if a != 6 else 8 for a in SNAS]  # --candidates 8
    res = run(sys.executable, "-m", "training.search", "snasnet", *args, "--nodes", 2, "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in open(tmp_path / "snasnet.jsonl")]
    assert [r["index"] for r in rows] == list(range(8))
    distinct = [r for r in rows if "duplicate_of" not in r]
    assert 1 <= len(distinct) <= 4
    by_index = {r["index"]: r for r in rows}
    for r in rows:
        if "duplicate_of" in r:
            original = by_index[r["duplicate_of"]]
            assert "duplicate_of" not in original and original["index"] < r["index"]
            assert cell_from_matrix(parse_code(r["cell"])) == cell_from_matrix(parse_code(original["cell"]))
            assert r["score"] == original["score"]
    keys = [json.dumps(cell_from_matrix(parse_code(r["cell"])), sort_keys=True) for r in distinct]
    assert len(set(keys)) == len(keys)
    meta = yaml.safe_load((tmp_path / "searched.yaml").read_text())["meta"]["snasnet"]
    assert meta["candidates"] == 8 and meta["distinct"] == len(distinct)


def _last(out):
    return torch.load(out / "last.pt", weights_only=False)["model"]


def test_spikedhs_execution_options_run_the_supernet_as_training_does(space, tmp_path):
    """--exec eager (plain neuron steps), step (fused neurons) and multistep (the default: every convolution
    once over the T steps, the supernet's ``forward_steps``) give the same search within float rounding; the
    log names the mode. Two time steps, so that stacking them is not trivial."""
    two = ("--set", "input.timesteps=2")
    eager = search(space, tmp_path / "eager", "--exec", "eager", *two)
    step = search(space, tmp_path / "step", "--exec", "step", *two)
    multi = search(space, tmp_path / "multi", *two)
    assert eager.returncode == 0 and step.returncode == 0 and multi.returncode == 0, \
        eager.stderr + step.stderr + multi.stderr
    assert "execution: --exec eager, --precision fp32" in eager.stdout
    assert "execution: --exec step, --precision fp32" in step.stdout
    assert "execution: --exec multistep, --precision fp32" in multi.stdout
    a, b, c = _last(tmp_path / "eager"), _last(tmp_path / "step"), _last(tmp_path / "multi")
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
            assert torch.allclose(c[k], b[k], rtol=1e-5, atol=1e-6), k
    res = search(space, tmp_path / "bad", "--exec", "stacked")
    assert res.returncode == 2 and "invalid choice: 'stacked'" in res.stderr and "Traceback" not in res.stderr
    for bad in (["--precision", "fp16"], ["--layout", "nhwc"]):
        res = search(space, tmp_path / "bad", *bad)
        assert res.returncode == 2 and "invalid choice" in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has neither AMX nor AVX512-BF16")
def test_spikedhs_bf16_search_tracks_float32_and_resume_keeps_its_precision(space, tmp_path):
    fp32 = search(space, tmp_path / "fp32")
    cut = search(space, tmp_path / "bf16", "--precision", "bf16", "--stop-after", 1)
    assert fp32.returncode == 0 and cut.returncode == 0, fp32.stderr + cut.stderr
    assert "--precision bf16" in cut.stdout and "layout channels-last (auto: bf16" in cut.stdout
    loss32 = [json.loads(line)["train_loss"] for line in open(tmp_path / "fp32" / "metrics.jsonl")]
    loss16 = [json.loads(line)["train_loss"] for line in open(tmp_path / "bf16" / "metrics.jsonl")]
    assert loss16[0] != loss32[0] and abs(loss16[0] - loss32[0]) < 0.05 * loss32[0]
    resume = ["-m", "training.search", "spikedhs", space, "--out", tmp_path / "bf16", "--resume", "--quiet"]
    res = run(sys.executable, *resume, "--precision", "fp32")
    assert res.returncode == 2 and "--precision 'fp32': the run in" in res.stderr and "Traceback" not in res.stderr
    res = run(sys.executable, *resume, "--exec", "eager")  # the mode may change, as in training
    assert res.returncode == 0, res.stderr
    assert "--exec eager, --precision bf16" in res.stdout and (tmp_path / "bf16" / "searched.yaml").exists()


def test_resume_of_a_search_saved_before_the_execution_options_refuses_another_precision(tmp_path):
    """A search checkpoint written before --exec/--precision/--layout existed ran in float32: asking its
    resume for bf16 is refused (it would otherwise be ignored without a word)."""
    import dataclasses

    from training.checkpoint import save_atomic
    from training.errors import TrainError
    from training.search.bilevel import SearchConfig, _resumed_config

    old = {k: v for k, v in dataclasses.asdict(SearchConfig(space="s.yaml", out=str(tmp_path))).items()
           if k not in ("exec", "precision", "layout")}
    save_atomic({"search_config": old, "model": {}}, tmp_path / "last.pt")
    sc = SearchConfig(space="s.yaml", out=str(tmp_path))
    with pytest.raises(TrainError, match="--precision 'bf16': the run in .* was started with 'fp32'"):
        _resumed_config(tmp_path, sc, {"precision": "bf16"})
    _, resumed = _resumed_config(tmp_path, sc, {"precision": "fp32", "exec": "eager"})
    assert (resumed.precision, resumed.layout) == ("fp32", "auto")
