"""Training loop: loss decreases on a tiny stereo genotype, digits reach 90 %, checkpoints export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import GENOTYPES, SMALL

torch.set_num_threads(1)

DIGITS = ["input.height=8", "input.width=8", "input.channels=1", "networks.backbone.node_channels=[8,16,16]",
          "networks.backbone.layers[0].channels=16"]


def stereo_cfg(tmp_path, **kw):
    from training.config import TrainConfig

    overrides = [f"{k}={v}" for k, v in SMALL["stereo"].items()]
    base = dict(genotype=str(GENOTYPES / "stereo.yaml"), out=str(tmp_path / "run"), overrides=overrides,
                windows=2, burn_in=1, batch_size=2, train_seeds=[100], val_seeds=[0], seconds=0.6, quiet=True,
                tensorboard=False, epochs=1)
    base.update(kw)
    return TrainConfig(**base)


def test_laplace_target_is_a_distribution_peaked_at_the_ground_truth():
    from training.losses import laplace_target, subpixel_cross_entropy

    gt = torch.tensor([[[4.0, 7.0]]])  # (1, 1, 2)
    p = laplace_target(gt, disparities=6, step=2.0, diversity=2.0)  # D(d) = 0, 2, ..., 10
    assert torch.allclose(p.sum(1), torch.ones(1, 1, 2))
    assert int(p[0, :, 0, 0].argmax()) == 2 and int(p[0, :, 0, 1].argmax()) in (3, 4)
    # exp(-|D - gt| / b) ratios
    assert float(p[0, 1, 0, 0] / p[0, 2, 0, 0]) == pytest.approx(np.exp(-1.0), rel=1e-5)
    # the loss is smallest for a cost whose softmin is the target itself, and NaN pixels do not count
    cost = -torch.log(p)
    gt_nan = torch.tensor([[[4.0, float("nan")]]])
    best, n = subpixel_cross_entropy(cost, gt_nan, 2.0)
    worse, _ = subpixel_cross_entropy(torch.zeros_like(cost), gt_nan, 2.0)
    assert int(n) == 1 and float(best) < float(worse)


def test_disparity_smooth_l1_is_huber_over_the_pixels_that_count():
    from training.losses import disparity_smooth_l1

    est = torch.tensor([[[1.0, 3.0, 5.0, 2.0, 7.0]]], requires_grad=True)
    gt = torch.tensor([[[1.5, 0.5, float("nan"), 20.0, 7.0]]])  # errors 0.5, 2.5; NaN and beyond 14 px left out
    total = disparity_smooth_l1(est, gt, max_disparity=14.0)
    assert float(total.detach()) == pytest.approx(0.5 * 0.5 ** 2 + (2.5 - 0.5))
    total.backward()
    assert est.grad.tolist() == [[[-0.5, 1.0, 0.0, 0.0, 0.0]]]


def test_disparity_l1_adds_the_estimators_error_to_the_paper_loss(tmp_path):
    """--disparity-l1 W: the loss is eq. 6 plus W x the smooth-L1 error of the disparity the model's own
    estimator gives, per counted pixel; W = 0 is eq. 6 alone, as before the option."""
    from compiler import build_model, load_genotype
    from compiler.ops import estimate_disparity
    from training.config import task_defaults
    from training.data import SyntheticSpec, synthetic_stereo
    from training.distributed import Dist
    from training.execution import stereo_costs
    from training.loop import Trainer
    from training.losses import disparity_smooth_l1, subpixel_cross_entropy, valid_disparity

    g = load_genotype(GENOTYPES / "stereo.yaml", overrides=SMALL["stereo"])
    data = synthetic_stereo(SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.6, val_seconds=0.6),
                            height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3, stride=3,
                            burn_in=1)
    batch = data.batch([0, 1], (24, 32), np.random.default_rng(0))
    torch.manual_seed(0)
    model = build_model(g)
    head = g.head
    limit = (head.disparities - 1) * head.disparity_step
    with torch.no_grad():
        costs = stereo_costs(model, batch["left"], batch["right"], 1, "eager")
        disp = batch["disparity"][1:]
        count = sum(int(valid_disparity(d, limit).sum()) for d in disp)
        pairs = list(zip(costs, disp, strict=True))
        ce = sum(float(subpixel_cross_entropy(c, d, head.disparity_step, 2.0, limit)[0]) for c, d in pairs)
        l1 = sum(float(disparity_smooth_l1(estimate_disparity(c, head.estimator, head.support, head.disparity_step),
                                           d, limit)) for c, d in pairs)
    assert l1 > 0
    for weight in (0.0, 0.5):
        cfg = task_defaults(stereo_cfg(tmp_path, disparity_l1=weight, diversity=2.0, exec="eager"), g)
        trainer = Trainer(cfg, g, model, data, data, Dist(), log=lambda s: None)
        with torch.no_grad():
            loss = float(trainer.batch_loss(batch)[0])
        assert loss == pytest.approx((ce + weight * l1) / count, rel=1e-5)


def test_a_few_steps_reduce_the_stereo_loss(tmp_path):
    from compiler import build_model, load_genotype
    from training.config import task_defaults
    from training.data import SyntheticSpec, synthetic_stereo
    from training.distributed import Dist
    from training.loop import Trainer

    g = load_genotype(GENOTYPES / "stereo.yaml", overrides=SMALL["stereo"])
    cfg = task_defaults(stereo_cfg(tmp_path, lr=3e-3), g)
    data = synthetic_stereo(SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.6, val_seconds=0.6),
                            height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3, stride=3,
                            burn_in=1)
    torch.manual_seed(0)
    trainer = Trainer(cfg, g, build_model(g), data, data, Dist(), log=lambda s: None)
    batch = data.batch([0, 1], (24, 32), np.random.default_rng(0))
    with torch.no_grad():
        before = float(trainer.batch_loss(batch)[0])
    for _ in range(8):
        trainer.train_step(batch)
    with torch.no_grad():
        after = float(trainer.batch_loss(batch)[0])
    assert after < before * 0.9, (before, after)


def test_digits_reach_90_percent_in_five_epochs(tmp_path):
    from training.config import TrainConfig
    from training.train import run

    # The training loop's budget check, on the plain sum of spikes at a node (mixing: spike_sum). Under the
    # paper's node semantics (mixing: spike, a LIF after each node's sum) this tiny net at T=2 reaches only
    # 18.9 % after 3 epochs (measured; docs/fidelity.md), so it would test the semantics, not the loop.
    # Five epochs, not three: after three the best accuracy straddled 90 % with the seed and with float
    # rounding alone (seeds 0, 1, 2: 90.22, 86.44, 86.00 % before the Dspike kernel multiplied instead of
    # dividing, 89.11, 86.89, 84.22 % after it, with the convolutions that share an input run as one); after
    # five: 96.22, 96.00, 93.11 % (docs/training.md).
    cfg = TrainConfig(genotype=str(GENOTYPES / "cifar10.yaml"), out=str(tmp_path / "digits"),
                      overrides=[*DIGITS, "mixing=spike_sum"], data="digits", epochs=5, timesteps=2, quiet=True,
                      tensorboard=False)
    # (its speed is measured by benchmarks/bench_train.py side by side, not timed here: no timed tests)
    summary = run(cfg, log=lambda s: None)
    assert summary["best"]["value"] >= 90.0, summary
    out = tmp_path / "digits"
    for name in ("last.pt", "best.pt", "config.yaml", "genotype.yaml", "metrics.jsonl", "metrics.csv"):
        assert (out / name).exists(), name
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")


def test_checkpoint_holds_everything_and_exports(tmp_path):
    from compiler.build import main as build_main
    from training.config import TrainConfig
    from training.train import run

    cfg = TrainConfig(genotype=str(GENOTYPES / "cifar10.yaml"), out=str(tmp_path / "r"), overrides=DIGITS,
                      data="digits", epochs=1, timesteps=1, max_batches=2, quiet=True, tensorboard=False)
    run(cfg, log=lambda s: None)
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "rng", "epoch", "genotype", "config", "best", "history"):
        assert key in ck, key
    assert ck["epoch"] == 1 and "networks" in ck["genotype"]
    assert not list((tmp_path / "r").glob("*.tmp")), "temporary files left behind"
    onnx_path = tmp_path / "m.onnx"
    assert build_main([str(tmp_path / "r" / "genotype.yaml"), "--weights", str(tmp_path / "r" / "best.pt"),
                       "-o", str(onnx_path), "--quiet"]) == 0
    assert onnx_path.stat().st_size > 0


def test_stereo_run_evaluate_constant_baseline_and_strip(tmp_path, monkeypatch):
    from compiler.build import main as build_main
    from training.checkpoint import strip
    from training.evaluate import constant_baseline, evaluate_checkpoint
    from training.train import main

    args = [str(GENOTYPES / "stereo.yaml"), "--out", str(tmp_path / "s"), "--windows", "2", "--burn-in", "1",
            "--batch-size", "2", "--epochs", "1", "--max-batches", "2", "--train-seeds", "100", "--val-seeds", "0",
            "--seconds", "0.6", "--crop", "16,24", "--quiet", "--no-tensorboard"]
    for k, v in SMALL["stereo"].items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    res = evaluate_checkpoint(str(tmp_path / "s" / "best.pt"), constant=True)
    assert 0 <= res["model"]["one_pixel_accuracy_pct"] <= 100
    # without the constant, a checkpoint of many training recordings reads one of them, not all
    import training.data as data_mod

    made = []
    real = data_mod.synthetic_recording
    monkeypatch.setattr(data_mod, "synthetic_recording", lambda seed, **kw: made.append(seed) or real(seed, **kw))
    monkeypatch.setenv("SNN_DATA_CACHE", "off")
    again = evaluate_checkpoint(str(tmp_path / "s" / "best.pt"), overrides={"train_seeds": [100, 101, 102]})
    assert again["model"] == res["model"] and sorted(made) == [0, 100]
    const = res["constant"]
    assert const["windows"] == res["model"]["windows"] == 11  # 12 windows of 0.6 s, 1 burn-in

    class D:  # the constant baseline by hand on a 2-pixel sequence
        train = [type("S", (), {"disparity": np.array([[[1.0, 3.0]], [[5.0, np.nan]]], np.float32)})]
        val = [type("S", (), {"disparity": np.array([[[2.5, 9.0]]], np.float32), "fb": 10.0})]
        val_segments = [type("G", (), {"seq": 0, "start": 0, "end": 1, "score_from": 0})]

    hand = constant_baseline(D)
    assert hand["constant_px"] == 3.0 and hand["one_pixel_accuracy_pct"] == 50.0
    assert hand["mean_disparity_error_px"] == pytest.approx((0.5 + 6.0) / 2)
    small = strip(tmp_path / "s" / "best.pt", tmp_path / "small.pt")
    assert "optimizer" not in small and "model" in small
    (tmp_path / "g.yaml").write_text(small["genotype"])
    assert build_main([str(tmp_path / "g.yaml"), "--weights", str(tmp_path / "small.pt"), "-o",
                       str(tmp_path / "s.onnx"), "--quiet"]) == 0

