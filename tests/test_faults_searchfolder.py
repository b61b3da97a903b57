"""The architecture search's run folders cannot be mixed or lost either (docs/reliability.md, section 3).

``python -m training.search`` takes ``--out`` as ``python -m training.train`` does (``runlog.claim``):
a crash at every write of a tiny SpikeDHS search, resumed, ends bit-identical to an uninterrupted
search (checkpoint, metrics and architecture rows, searched.yaml, architecture.png); a folder that
holds a run is refused without --resume or --overwrite (SNASNet, which has no resume: without
--overwrite); a live lock refuses a second search. Crashes are simulated as in
tests/test_faults_runfolder.py (raising from the one rename and the one log append)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import training.runlog
from tests.helpers import GENOTYPES, TINY_SEARCH_SPACE
from tests.test_faults_runfolder import Crash, _crash_at
from training.errors import TrainError
from training.search import drawings

torch.set_num_threads(1)
TIMING = ("train_s", "eval_s")
SPACE = TINY_SEARCH_SPACE
# The digits at 8x8 on a 2-layer trellis of 4-8 channels, one step: about 0.2 s per search here.
OVERRIDES = ["input.height=8", "input.width=8", "input.channels=1", "networks.backbone.node_channels=[4,4,8]",
             "networks.backbone.layers[0].channels=4", "input.timesteps=1"]
SNAS = [str(GENOTYPES / "snasnet_cifar10_bw.yaml"), "--cell", "bw", "--candidates", "2", "--batch", "8",
        "--threads", "1", "--quiet", "--set", "input.height=8", "--set", "input.width=8", "--set", "input.channels=1",
        "--set", "networks.backbone.node_channels=[8,16]", "--set", "networks.backbone.layers[0].channels=8",
        "--set", "networks.backbone.layers[2].channels=16", "--set", "input.timesteps=2"]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SPACE)
    return path


def _search(space, out, **kw):
    from training.search.bilevel import SearchConfig, run_search

    sc = SearchConfig(space=str(space), out=str(out), overrides=list(OVERRIDES), data="digits", epochs=2, warmup=1,
                      batch_size=8, max_batches=1, decode_every=1, threads=1, quiet=True)
    return run_search(sc, log=lambda s: None, **kw)


def _cli(space, out, *extra):
    from training.search.cli import main

    return main(["spikedhs", str(space), "--out", str(out), "--epochs", "2", "--warmup", "1", "--batch-size", "8",
                 "--max-batches", "1", "--decode-every", "1", "--threads", "1", "--quiet",
                 *[a for s in OVERRIDES for a in ("--set", s)], *extra])


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in open(path)]


def _same(a, b, where="last.pt"):
    """Two checkpoint entries are equal: tensors bit for bit, everything else by value, paths aside."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            if k != "out":  # the run folder's own path
                _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def reference(space, tmp_path_factory):
    """An uninterrupted search, and the sequence of its writes."""
    out = tmp_path_factory.mktemp("reference") / "search"
    mp = pytest.MonkeyPatch()
    calls = _crash_at(mp, None)
    try:
        _search(space, out)
    finally:
        mp.undo()
    return out, calls["names"]


def test_a_crash_at_every_search_write_resumes_to_the_same_search(space, reference, tmp_path):
    ref, writes = reference
    # config.yaml, then per epoch: architecture row, its drawing, metrics row, metrics.csv, last.pt; then the
    # results (issue 24 added the drawings: .svg with graphviz's dot program, else .dot)
    ext = drawings.suffix()
    assert writes == ["config.yaml"] + [w for e in (1, 2) for w in (
        "arch.jsonl", f"decoded_epoch{e:03d}{ext}", "metrics.jsonl", "metrics.csv", "last.pt")] + [
        "searched.yaml", f"searched{ext}", "architecture.png"]
    for k in range(1, len(writes) + 1):
        out = tmp_path / f"crash{k}"
        mp = pytest.MonkeyPatch()
        _crash_at(mp, k)
        with pytest.raises(Crash):
            _search(space, out)
        mp.undo()
        assert not (out / training.runlog.LOCK).exists(), k
        (out / ".last.pt.k1l2.tmp").write_bytes(b"half a checkpoint")  # as a kill -9 during a write leaves
        if (out / "last.pt").exists():
            _search(space, out, resume=True)
        else:  # died before its first epoch was committed: nothing to continue
            with pytest.raises(TrainError, match="no last.pt"):
                _search(space, out, resume=True)
            _search(space, out, overwrite=True)
        _same(torch.load(ref / "last.pt", weights_only=True), torch.load(out / "last.pt", weights_only=True))
        assert _rows(out / "metrics.jsonl") == _rows(ref / "metrics.jsonl"), k
        assert _rows(out / "arch.jsonl") == _rows(ref / "arch.jsonl"), k
        assert (out / "metrics.csv").read_text().count("\n") == 3, k
        assert (out / "searched.yaml").read_text() == (ref / "searched.yaml").read_text(), k
        assert (out / "architecture.png").read_bytes() == (ref / "architecture.png").read_bytes(), k
        assert not list(out.glob(".*.tmp")), k


def test_a_folder_holding_a_search_is_refused_without_resume_or_overwrite(space, tmp_path, capsys):
    out = tmp_path / "search"
    assert _cli(space, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _cli(space, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: holds a run") and "--resume" in err and "--overwrite" in err, err
    assert "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    assert _cli(space, out, "--resume", "--overwrite") == 2
    assert "exclude each other" in capsys.readouterr().err
    assert _cli(space, out, "--overwrite") == 0  # starts over: one row per epoch, not appended to the old ones
    assert [r["epoch"] for r in _rows(out / "metrics.jsonl")] == [1, 2]
    assert [r["epoch"] for r in _rows(out / "arch.jsonl")] == [1, 2]
    assert (out / "searched.yaml").read_bytes() == before["searched.yaml"]


def test_snasnet_refuses_a_folder_holding_a_run_without_overwrite(space, tmp_path, capsys):
    """SNASNet has no resume (one deterministic pass, results written at the end): a folder holding its
    results, or any run's, is refused unless --overwrite, which starts it over."""
    from training.search.cli import main

    out = tmp_path / "snas"
    assert main(["snasnet", *SNAS, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"snasnet.jsonl", "searched.yaml"}
    assert main(["snasnet", *SNAS, "--out", str(out), "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: holds a run (searched.yaml, snasnet.jsonl)") and "--overwrite" in err, err
    assert "--resume" not in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _cli(space, out) == 2  # nor does a SpikeDHS search mix its files into it
    assert "holds a run" in capsys.readouterr().err
    (out / ".snasnet.jsonl.x1y2.tmp").write_text("half a table")  # left by a kill -9 during a write
    assert main(["snasnet", *SNAS, "--out", str(out), "--seed", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["searched.yaml", "snasnet.jsonl"]
    assert (out / "snasnet.jsonl").read_bytes() != before["snasnet.jsonl"]  # the seed-1 table
    assert [r["index"] for r in _rows(out / "snasnet.jsonl")] == [0, 1]
    with pytest.raises(SystemExit) as exc:  # no such option: argparse's one line
        main(["snasnet", *SNAS, "--out", str(tmp_path / "snas2"), "--resume"])
    assert exc.value.code == 2 and "unrecognized arguments: --resume" in capsys.readouterr().err


def test_a_running_search_folder_is_refused(space, tmp_path, capsys):
    from training.search.cli import main

    for method in ("spikedhs", "snasnet"):
        out = tmp_path / method
        live = training.runlog.RunLock(out)
        assert live.acquire() is None
        rc = _cli(space, out) if method == "spikedhs" else main(["snasnet", *SNAS, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and f"{out}: another run is writing to this folder (pid {os.getpid()}" in err, err
        assert os.listdir(out) == [training.runlog.LOCK]  # nothing written beside the live run's lock
        live.release()
        assert (_cli(space, out) if method == "spikedhs" else main(["snasnet", *SNAS, "--out", str(out)])) == 0
        assert not (out / training.runlog.LOCK).exists()  # released when the search ends


def test_spikedhs_resume_of_a_training_folder_is_one_line(space, tmp_path, capsys):
    """A training run's last.pt is not a search's: --resume says so instead of a KeyError traceback."""
    from tests.test_faults_runfolder import _run

    out = tmp_path / "run"
    _run(out)
    assert _cli(space, out, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {Path(out) / 'last.pt'}: not a checkpoint of python -m training.search spikedhs")
    assert "\n" not in err


def test_resume_refuses_a_search_space_that_changed(space, tmp_path, capsys):
    """--resume reads the search space again: an edited file (here another candidate), the run's own or
    another given on the command line, is refused in one line instead of being searched on without a word;
    a comment alone changes nothing."""
    mine = tmp_path / "space.yaml"
    mine.write_text(space.read_text())
    out = tmp_path / "search"
    assert _cli(mine, out, "--stop-after", "1") == 0
    capsys.readouterr()
    mine.write_text("# a comment\n" + space.read_text())
    assert _cli(mine, out, "--resume", "--stop-after", "1") == 0  # same content: resumes
    capsys.readouterr()
    edited = SPACE.replace("{op: skip}", "{op: conv1x1}")
    assert edited != SPACE
    mine.write_text(edited)
    assert _cli(mine, out, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "differs from the one the run" in err and "\n" not in err, err
