"""Exact resume: 1 epoch + --resume ends bit for bit where 2 uninterrupted epochs end."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import GENOTYPES

torch.set_num_threads(1)


def _cfg(out, **kw):
    from training.config import TrainConfig

    return TrainConfig(genotype=str(GENOTYPES / "cifar10.yaml"), out=str(out), data="digits", epochs=2,
                       timesteps=2, max_batches=3, batch_size=16, augment=True, quiet=True, tensorboard=False,
                       overrides=["input.height=8", "input.width=8", "input.channels=1",
                                  "networks.backbone.node_channels=[4,4,8]",
                                  "networks.backbone.layers[0].channels=8"], **{"threads": 1, **kw})
    # one thread in every run compared: without --threads a run takes the cores the load average leaves, and
    # runs at 1 and 2 threads differ by float rounding (a comparison once failed that way under load)


@pytest.mark.parametrize("layout", ["auto", "channels-last"])
def test_resume_is_exact(tmp_path, layout):
    from training.train import run

    run(_cfg(tmp_path / "full", layout=layout), log=lambda s: None)
    run(_cfg(tmp_path / "half", stop_after=1, layout=layout), log=lambda s: None)
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert half["epoch"] == 1
    run(_cfg(tmp_path / "half", layout=layout), resume=True, resume_overrides={"stop_after": None},
        log=lambda s: None)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_a_run_begun_with_the_foreach_optimiser_resumes_with_it_exactly(tmp_path):
    """Checkpoints written before --optimizer-impl (no such key in their configuration, a foreach optimiser
    in their state) resume with the optimiser they began with, bit for bit as if never stopped, and the log
    says so; a new run's checkpoint resumes with its own (fused)."""
    from training.checkpoint import load, save_atomic
    from training.train import run

    run(_cfg(tmp_path / "full", optimizer_impl="foreach"), log=lambda s: None)
    run(_cfg(tmp_path / "half", stop_after=1, optimizer_impl="foreach"), log=lambda s: None)
    path = tmp_path / "half" / "last.pt"
    ck = load(path)
    del ck["config"]["optimizer_impl"]  # as a checkpoint of an earlier version holds it
    save_atomic(ck, path)
    lines = []
    run(_cfg(tmp_path / "half"), resume=True, resume_overrides={"stop_after": None}, log=lines.append)
    assert any("optimizer foreach, as the run began" in line for line in lines), lines
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(path, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and b["optimizer"]["param_groups"][0]["foreach"] is True
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    lines.clear()
    run(_cfg(tmp_path / "new", stop_after=1), log=lines.append)
    assert any(line.startswith("execution:") and line.endswith("optimizer fused") for line in lines), lines
    run(_cfg(tmp_path / "new"), resume=True, resume_overrides={"stop_after": None}, log=lines.append)
    assert not any("as the run began" in line for line in lines)
    assert torch.load(tmp_path / "new" / "last.pt", weights_only=True)["optimizer"]["param_groups"][0]["fused"]


def test_resume_cli_without_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from training.train import main

    rc = main([str(GENOTYPES / "cifar10.yaml"), "--out", str(tmp_path / "none"), "--resume"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "last.pt" in err


def test_stereo_resume_is_exact_with_its_3d_convolutions_channels_last(tmp_path):
    """A stereo run (auto: 3-D convolutions channels-last in float32 on a CPU, the first matching convolution
    from the views) resumed after epoch 1 ends bit for bit where 2 uninterrupted epochs end."""
    from training.config import TrainConfig
    from training.train import run

    def cfg(out, **kw):
        return TrainConfig(genotype=str(GENOTYPES / "stereo_small.yaml"), out=str(out), epochs=2,
                           train_seeds=[100, 101], val_seeds=[0], seconds=0.8, crop=(48, 64), batch_size=2,
                           quiet=True, tensorboard=False, threads=1, **kw)

    logs = []
    run(cfg(tmp_path / "full"), log=logs.append)
    assert any("layout conv3d-channels-last (auto" in line for line in logs), logs
    run(cfg(tmp_path / "half", stop_after=1), log=lambda s: None)
    run(cfg(tmp_path / "half"), resume=True, resume_overrides={"stop_after": None}, log=lambda s: None)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key


def _rows(path):
    import json

    drop = ("train_s", "eval_s")  # wall-clock times
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.open()]


@pytest.mark.parametrize("searcher", [{}, {"dgs": ["all"], "dgs_every": 1, "dgs_iters": 2},
                                      {"tps": ["all"], "tps_every": 1, "tps_warmup": 0, "tps_delta": 0.05},
                                      {"hns": ["all"], "hns_lambda": 0.0, "arch_lr": 0.2, "hns_warmup": 0,
                                       "hns_every": 3}])
def test_an_interrupted_validation_loses_no_training_and_resume_stays_exact(tmp_path, monkeypatch, searcher):
    """Epoch 2's validation fails (an error, or a kill, there): last.pt holds epoch 2's training, marked
    pending; --resume validates it without training again and ends bit for bit where the uninterrupted run
    ends, with the same logs (a metrics row written before the failure is not doubled)."""
    import training.loop as loop
    from training.train import run

    run(_cfg(tmp_path / "full", **searcher), log=lambda s: None)
    real = loop.evaluate_classification
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("validation failed")
        return real(*a, **k)

    monkeypatch.setattr(loop, "evaluate_classification", failing)
    with pytest.raises(RuntimeError, match="validation failed"):
        run(_cfg(tmp_path / "half", **searcher), log=lambda s: None)
    monkeypatch.setattr(loop, "evaluate_classification", real)
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert half["epoch"] == 2 and half["pending"]["epoch"] == 2 and "val" not in half["pending"]
    assert [r["epoch"] for r in _rows(tmp_path / "half" / "metrics.jsonl")] == [1]
    with (tmp_path / "half" / "metrics.jsonl").open("a") as f:  # as if killed after the row, before last.pt
        f.write('{"epoch": 2, "lr": 0.0, "train_loss": 9.0}\n')
    steps = []
    real_step = loop.Trainer.train_step
    monkeypatch.setattr(loop.Trainer, "train_step", lambda self, b: steps.append(1) or real_step(self, b))
    lines = []
    run(_cfg(tmp_path / "half", **searcher), resume=True, log=lines.append)
    assert steps == [] and any("validation was interrupted" in s for s in lines)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and "pending" not in b
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    untimed = [[{k: v for k, v in h.items() if not k.endswith("_s")} for h in ck["history"]] for ck in (a, b)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 2
    assert a["best"] == b["best"] and a["scheduler"] == b["scheduler"]
    for name in ("metrics.jsonl", "dgs.jsonl", "tps.jsonl", "hns.jsonl"):
        if (tmp_path / "full" / name).exists():
            assert _rows(tmp_path / "full" / name) == _rows(tmp_path / "half" / name), name
    assert (tmp_path / "half" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
