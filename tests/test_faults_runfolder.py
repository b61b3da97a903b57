"""Run folders that cannot be mixed or lost (issue 12, docs/reliability.md).

A crash at every write of a run (simulated by raising from the one rename and the one log append the
run folder's files go through), then a resume, ends with exactly the weights, best checkpoint and
metrics rows of an uninterrupted run. A finished or running folder is refused without --resume or
--overwrite; a lock left by a killed run is taken over; a torn last metrics line is repaired."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import runtime.core.atomic
import training.runlog
from tests.helpers import GENOTYPES, ROOT
from training.errors import TrainError

torch.set_num_threads(1)
TIMING = ("train_s", "eval_s")
# The fastest training task: SNASNet's small classifier on 8x8 digits (few tensors: quick checkpoints).
GENOTYPE = GENOTYPES / "snasnet_cifar10_bw.yaml"
OVERRIDES = ("input.height=8", "input.width=8", "input.channels=1", "networks.backbone.node_channels=[4,8]",
             "networks.backbone.layers[0].channels=4", "networks.backbone.layers[2].channels=8",
             "neuron.threshold=0.25")  # with these, the held-out loss improves in both epochs: best.pt twice


def _cfg(out, **kw):
    from training.config import TrainConfig

    return TrainConfig(genotype=str(GENOTYPE), out=str(out), data="digits", epochs=2, timesteps=1,
                       max_batches=2, batch_size=16, eval_batch_size=512, augment=False, optimizer="adam", lr=0.01,
                       best_metric="loss", quiet=True, tensorboard=False, overrides=list(OVERRIDES), **kw)


def _run(out, **kw):
    from training.train import run

    return run(_cfg(out), log=lambda s: None, **kw)


class Crash(BaseException):
    """Stands for the process dying (it is not an Exception: nothing catches it on the way out)."""


def _crash_at(monkeypatch, k: int | None) -> dict:
    """Count the run folder's writes (renames of finished temporary files, log appends); die at the k-th.

    A crash at an append leaves half of the line behind (a torn row), as a killed process would."""
    calls = {"n": 0, "names": []}
    commit, append = runtime.core.atomic.commit, training.runlog.append_line

    def tick(name):
        calls["n"] += 1
        calls["names"].append(name)
        return calls["n"] == k

    def crashing_commit(tmp, path):
        if tick(Path(path).name):
            raise Crash
        commit(tmp, path)

    def crashing_append(path, text):
        if tick(Path(path).name):
            with open(path, "a", encoding="utf-8") as f:
                f.write(text[: len(text) // 2])
            raise Crash
        append(path, text)

    monkeypatch.setattr(runtime.core.atomic, "commit", crashing_commit)
    monkeypatch.setattr(training.runlog, "append_line", crashing_append)
    return calls


def _rows(out):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in map(json.loads, open(out / "metrics.jsonl"))]


def _same_checkpoint(a_path, b_path):
    a = torch.load(a_path, weights_only=True)
    b = torch.load(b_path, weights_only=True)
    assert a["epoch"] == b["epoch"] and a["best"] == b["best"]
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    strip = [[{k: v for k, v in h.items() if k not in TIMING} for h in c["history"]] for c in (a, b)]
    assert strip[0] == strip[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the sequence of its writes."""
    out = tmp_path_factory.mktemp("reference") / "run"
    mp = pytest.MonkeyPatch()
    calls = _crash_at(mp, None)
    try:
        _run(out)
    finally:
        mp.undo()
    return out, calls["names"]


def test_a_crash_at_every_write_resumes_to_the_same_run(reference, tmp_path, monkeypatch):
    ref, writes = reference
    # genotype.yaml, config.yaml, then per epoch: last.pt with the epoch's training (pending its validation),
    # metrics row, metrics.csv, best.pt (improved), last.pt
    assert writes == ["genotype.yaml", "config.yaml"] + ["last.pt", "metrics.jsonl", "metrics.csv", "best.pt",
                                                         "last.pt"] * 2
    for k in range(1, len(writes) + 1):
        out = tmp_path / f"crash{k}"
        mp = pytest.MonkeyPatch()
        _crash_at(mp, k)
        with pytest.raises(Crash):
            _run(out)
        mp.undo()
        assert not (out / training.runlog.LOCK).exists()
        if (out / "last.pt").exists():
            _run(out, resume=True)
        else:  # died before its first epoch was committed: nothing to continue
            with pytest.raises(TrainError, match="no last.pt"):
                _run(out, resume=True)
            _run(out, overwrite=bool(os.listdir(out)))
        _same_checkpoint(ref / "last.pt", out / "last.pt")
        _same_checkpoint(ref / "best.pt", out / "best.pt")
        assert _rows(out) == _rows(ref), k
        assert (out / "metrics.csv").read_text().count("\n") == 3
        assert not list(out.glob(".*.tmp"))


def test_full_disk_while_checkpointing_is_one_line_and_loses_nothing(reference, tmp_path, monkeypatch, capsys):
    import errno

    from training.train import main

    ref, _ = reference
    out = tmp_path / "run"
    _run(out)
    before = (out / "last.pt").read_bytes()
    import torch as torch_module

    real_save = torch_module.save

    def full(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch_module, "save", full)
    args = [str(GENOTYPE), "--out", str(out), "--resume", "--epochs", "3"]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "No space left" in err, err
    assert (out / "last.pt").read_bytes() == before  # the previous checkpoint, intact
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    assert main(args + ["--quiet"]) == 0  # space again: it continues
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
    assert [r["epoch"] for r in _rows(out)] == [1, 2, 3]


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(reference, tmp_path, capsys):
    from training.train import main

    out = tmp_path / "run"
    _run(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = [str(GENOTYPE), "--out", str(out), "--data", "digits", "--quiet",
            *[a for s in _cfg(out).overrides for a in ("--set", s)]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: holds a run") and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    assert main(args + ["--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    _run(out, overwrite=True)  # starts over: one row per epoch, not appended to the old ones
    assert [r["epoch"] for r in _rows(out)] == [1, 2]


def test_a_running_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    out = tmp_path / "run"
    live = training.runlog.RunLock(out)
    assert live.acquire() is None
    with pytest.raises(TrainError, match=r"another run is writing to this folder \(pid"):
        _run(out)
    live.release()
    # a run killed with SIGKILL leaves its lock file behind; the kernel released its lock
    code = ("import os, signal; from training.runlog import RunLock; "
            f"RunLock({str(out)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == -signal.SIGKILL and (out / training.runlog.LOCK).exists()
    lock = training.runlog.RunLock(out)
    note = lock.acquire()
    assert note is not None and "stale" in note and "pid" in note
    lock.release()
    assert not (out / training.runlog.LOCK).exists()


def test_torn_last_metrics_line_and_temporary_files_are_repaired_on_resume(tmp_path):
    out = tmp_path / "run"
    from training.train import run

    run(_cfg(out, stop_after=1), log=lambda s: None)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lr": 0.0')  # a row torn by a crash
    (out / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # left by a kill -9 during a write
    run(_cfg(out), resume=True, resume_overrides={"stop_after": None}, log=lambda s: None)
    assert [r["epoch"] for r in _rows(out)] == [1, 2]
    assert not (out / ".last.pt.x1y2.tmp").exists()


def _checkpoint(out, **change):
    ck = torch.load(out / "last.pt", weights_only=True)
    ck.update(change)
    return ck


@pytest.mark.parametrize("case, message", [
    ("stripped", "stripped checkpoint"),
    ("config_list", "entry 'config' is a list"),
    ("unknown_option", "unknown option 'colour'"),
    ("nan_weights", "non-finite values"),
])
def test_resume_from_a_checkpoint_that_cannot_continue_is_one_line(reference, tmp_path, case, message, capsys):
    from training.checkpoint import strip
    from training.train import main

    ref, _ = reference
    out = tmp_path / "run"
    out.mkdir()
    if case == "stripped":
        strip(ref / "last.pt", out / "last.pt")
    else:
        ck = torch.load(ref / "last.pt", weights_only=True)
        if case == "config_list":
            ck["config"] = [1, 2]
        elif case == "unknown_option":
            ck["config"] = {**ck["config"], "colour": "red"}
        else:
            next(iter(ck["model"].values())).fill_(float("nan"))
        torch.save(ck, out / "last.pt")
    rc = main([str(GENOTYPE), "--out", str(out), "--resume", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err


def test_checkpoint_strip_to_a_folder_and_evaluate_without_genotype_are_one_line(reference, tmp_path, capsys):
    from training.checkpoint import main as strip_main
    from training.evaluate import main as evaluate_main

    ref, _ = reference
    assert strip_main(["strip", str(ref / "last.pt"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path}: is a folder") and "\n" not in err
    for change, message in (({"genotype": None}, "entry 'genotype' is missing"),
                            ({"genotype": "schema: 1\nname: x\n"}, "missing required key"),
                            ({"genotype": 42}, "entry 'genotype' is a int")):
        ck = torch.load(ref / "last.pt", weights_only=True)
        ck.update(change)
        if change["genotype"] is None:
            del ck["genotype"]
        torch.save(ck, tmp_path / "bad.pt")
        assert evaluate_main([str(tmp_path / "bad.pt")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, err


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--lr must be a finite number"), (["--weight-decay", "-1"], "--weight-decay must be at least 0"),
    (["--threads", "1000000"], "--threads must be at most 1024"), (["--device", "xyz"], "is not a torch device"),
    (["--seed", "-1"], "--seed must be at least 0"), (["--best-metric", "xyz"], "'xyz' is not a held-out metric"),
    (["--best-metric", "one_pixel_accuracy_pct"], "'one_pixel_accuracy_pct' is not a held-out metric of this task"),
    (["--disparity-l1", "-1"], "--disparity-l1 must be at least 0"),
    (["--disparity-l1", "inf"], "--disparity-l1 must be a finite number"),
    (["--photo-fraction", "1.5"], "--photo-fraction must be at most 1"),
    (["--photo-fraction", "-0.1"], "--photo-fraction must be at least 0"),
    (["--photo-fraction", "nan"], "--photo-fraction must be a finite number"),
    (["--disparity-l1", "1e7"], "--disparity-l1 must be at most 1e+06"),
    (["--disparity-l1", "1", "--photo-fraction", "1"], "--photo-fraction, --disparity-l1: stereo options"),
    (["--photo-augment", "2"], "--photo-augment must be at most 1"),
    (["--photo-augment", "-1"], "--photo-augment must be at least 0"),
    (["--photo-augment", "nan"], "--photo-augment must be a finite number"),
    (["--photo-augment", "0.5"], "--photo-augment: stereo options"),
    (["--photo-variations", "coarser"], "--photo-variations: stereo options"),
    (["--train-textures", "train_more"], "--train-textures: stereo options"),
    (["--train-textures", "train_most"], "--train-textures: stereo options"),
    (["--distill", "teacher.pt"], "--distill: stereo options"),
    (["--distill-weight", "0"], "--distill-weight must be positive"),
    (["--distill-weight", "1.5"], "--distill-weight must be at most 1"),
    (["--distill-weight", "nan"], "--distill-weight must be a finite number"),
    (["--windows", "4", "--burn-in", "0"], "--windows, --burn-in: stereo options"),
    (["--diversity", "1"], "--diversity: stereo options"), (["--loss-step", "1"], "--loss-step: stereo options"),
    (["--ema", "-0.1"], "--ema must be at least 0"), (["--ema", "nan"], "--ema must be a finite number"),
    (["--ema", "1"], "--ema must be below 1"), (["--ema", "1e300"], "--ema must be below 1"),
    (["--ema", "0.9", "--tps"], "--ema cannot average weights while --tps searches"),
    (["--ema", "0.9", "--hns"], "--ema cannot average weights while --hns searches"),
])
def test_options_that_would_train_garbage_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    from training.train import main

    out = tmp_path / "run"
    base = [str(GENOTYPE), "--out", str(out), "--data", "digits", "--epochs", "1", "--max-batches", "1", "--quiet",
            *[a for s in OVERRIDES for a in ("--set", s)]]
    rc = main(base + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not [p.name for p in out.glob("*") if p.name in training.runlog.RUN_FILES and p.suffix != ".yaml"]
    # option bounds: refused before any folder; --device and --best-metric (checked against the task's
    # held-out metrics before the first epoch): refused after taking the folder, which is then removed again
    assert not out.exists()
    if "--best-metric" in args:  # nothing of it is left in the way of a new start
        assert main(base) == 0
