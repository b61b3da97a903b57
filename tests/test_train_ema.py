"""``--ema DECAY``: the weights' moving average is what a run validates and keeps, the optimiser's own weights
train exactly as without it, resume is exact, and the average starts from the run's first weights."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import GENOTYPES

torch.set_num_threads(1)


def _cfg(out, **kw):
    from training.config import TrainConfig

    base = dict(genotype=str(GENOTYPES / "cifar10.yaml"), out=str(out), data="digits", epochs=2, timesteps=2,
                max_batches=3, batch_size=16, quiet=True, tensorboard=False,
                overrides=["input.height=8", "input.width=8", "input.channels=1",
                           "networks.backbone.node_channels=[4,4,8]", "networks.backbone.layers[0].channels=8"])
    return TrainConfig(**{**base, **kw})


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_average_is_decay_times_itself_plus_the_rest_of_the_weights():
    from training.ema import WeightAverage

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    model.to(memory_format=torch.channels_last)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    avg = WeightAverage(model, 0.75)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()(torch.randn(4, 2, 5, 5))  # BatchNorm's statistics and counter move
    avg.update(model)
    now = model.state_dict()
    for k, v in avg.tensors.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.75 * start[k] + 0.25 * now[k], rtol=0, atol=1e-6), k
        else:
            assert torch.equal(v, now[k]) and not torch.equal(v, start[k]), k  # num_batches_tracked: copied
    saved = avg.state_dict()
    assert all(t.is_contiguous() for t in saved.values())
    assert saved["0.weight"].data_ptr() != avg.tensors["0.weight"].data_ptr()  # a copy, not the live average
    other = WeightAverage(model, 0.75)
    other.load_state_dict(saved)
    assert all(torch.equal(other.tensors[k], avg.tensors[k]) for k in saved)
    with pytest.raises(KeyError):
        other.load_state_dict({"0.weight": saved["0.weight"]})
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError):
            WeightAverage(model, bad)


def test_a_run_validates_the_average_and_trains_its_weights_as_without_it(tmp_path):
    from training.train import run

    run(_cfg(tmp_path / "plain"), log=lambda s: None)
    lines: list[str] = []
    run(_cfg(tmp_path / "ema", ema=0.5), log=lines.append)
    plain = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)
    ema = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    assert "train_model" not in plain
    for key, tensor in plain["model"].items():  # the optimiser's weights: bit for bit those of the plain run
        assert torch.equal(tensor, ema["train_model"][key]), key
    differ = [k for k, v in ema["model"].items() if v.is_floating_point() and not torch.equal(v, ema["train_model"][k])]
    assert differ  # the kept "model" is the average
    plain_rows, ema_rows = _rows(tmp_path / "plain"), _rows(tmp_path / "ema")
    assert [r["val"] for r in plain_rows] == [r["val_raw"] for r in ema_rows]  # the weights' scores, logged beside
    assert all("val_raw" not in r for r in plain_rows)
    assert [h["val.accuracy_pct"] for h in ema["history"]] == [r["val"]["accuracy_pct"] for r in ema_rows]
    assert any("(weights " in line for line in lines)  # the epoch line shows both
    # the average's score is that of the kept weights: evaluate them as a user would
    from training.evaluate import main as evaluate_main

    assert evaluate_main([str(tmp_path / "ema" / "last.pt"), "--json", str(tmp_path / "e.json")]) == 0
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["model"]["accuracy_pct"] == ema_rows[-1]["val"]["accuracy_pct"]


def test_resume_with_the_average_is_exact(tmp_path):
    from training.train import run

    run(_cfg(tmp_path / "full", ema=0.8), log=lambda s: None)
    run(_cfg(tmp_path / "half", ema=0.8, stop_after=1), log=lambda s: None)
    run(_cfg(tmp_path / "half", ema=0.8), resume=True, resume_overrides={"stop_after": None}, log=lambda s: None)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for part in ("model", "train_model"):
        for key, tensor in a[part].items():
            assert torch.equal(tensor, b[part][key]), (part, key)
    assert [r["val"] for r in _rows(tmp_path / "full")] == [r["val"] for r in _rows(tmp_path / "half")]


def test_the_average_starts_from_the_init_weights(tmp_path):
    from training.train import run

    run(_cfg(tmp_path / "first", epochs=1), log=lambda s: None)
    init = torch.load(tmp_path / "first" / "last.pt", weights_only=True)["model"]
    run(_cfg(tmp_path / "next", epochs=1, ema=0.999999, init=str(tmp_path / "first" / "last.pt"), lr=0.5),
        log=lambda s: None)
    ck = torch.load(tmp_path / "next" / "last.pt", weights_only=True)
    moved = [k for k, v in ck["train_model"].items() if v.is_floating_point() and not torch.allclose(v, init[k])]
    assert moved
    for key in moved:  # three steps at decay 1 - 1e-6: the average is still the --init weights
        assert torch.allclose(ck["model"][key], init[key], rtol=0, atol=1e-4), key


def test_a_stereo_run_on_crops_validates_the_average_on_the_full_size_model(tmp_path):
    """Crops: the full-size model is validated (the run's eval model); with --ema it holds the average, and the
    kept last.pt scores what the run logged."""
    from training.config import TrainConfig
    from training.evaluate import main as evaluate_main
    from training.train import run

    out = tmp_path / "run"
    run(TrainConfig(genotype=str(GENOTYPES / "stereo_small.yaml"), out=str(out), epochs=1, train_seeds=[100, 101],
                    val_seeds=[0], seconds=0.8, crop=(48, 64), batch_size=2, quiet=True, tensorboard=False,
                    ema=0.5), log=lambda s: None)
    row = _rows(out)[-1]
    assert row["val"] != row["val_raw"]
    assert evaluate_main([str(out / "last.pt"), "--json", str(tmp_path / "e.json")]) == 0
    got = json.loads((tmp_path / "e.json").read_text())["model"]
    assert got["one_pixel_accuracy_pct"] == row["val"]["one_pixel_accuracy_pct"]


@pytest.mark.parametrize("value, says", [("abc", "argument --ema: invalid float value: 'abc'"),
                                         ("inf", "--ema must be a finite number"),
                                         ("0.999999999", None)])
def test_ema_values_from_the_command_line(tmp_path, capsys, value, says):
    """Not a number and infinite: one line, exit 2, no run folder; a decay just below 1 is taken."""
    from training.train import main

    out = tmp_path / "run"
    argv = [str(GENOTYPES / "cifar10.yaml"), "--out", str(out), "--data", "digits", "--epochs", "1", "--timesteps", "2",
            "--max-batches", "1", "--batch-size", "16", "--quiet", "--no-tensorboard", "--ema", value,
            *[a for s in _cfg(out).overrides for a in ("--set", s)]]
    try:
        rc = main(argv)
    except SystemExit as exc:  # the parser's own errors exit from parse_args
        rc = exc.code
    err = capsys.readouterr().err.strip()
    if says is None:
        assert rc == 0 and (out / "last.pt").exists()
        return
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and says in err, err
    assert not out.exists()


def test_the_average_follows_the_temperatures_dgs_moves(tmp_path):
    """--ema with --dgs: the surrogate temperatures are copied, not averaged, after every step and after each
    DGS run, so best.pt / last.pt hold the b of the written searched.yaml; the other weights are averaged and
    the optimiser's weights train as without the average. Resume stays exact."""
    from compiler import load_genotype
    from compiler.planner import plan
    from training.ema import surrogate_temperatures
    from training.train import run

    layers = ["backbone.stem", "backbone.cell0.n0.0"]
    kw = dict(dgs=layers, dgs_every=1, dgs_iters=2)
    run(_cfg(tmp_path / "plain", **kw), log=lambda s: None)
    run(_cfg(tmp_path / "ema", ema=0.9, **kw), log=lambda s: None)
    plain = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)
    ck = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    for key, tensor in plain["model"].items():  # DGS and training as without the average
        assert torch.equal(tensor, ck["train_model"][key]), key
    searched = plan(load_genotype(tmp_path / "ema" / "searched.yaml")).neurons
    dgs_rows = [json.loads(line) for line in (tmp_path / "ema" / "dgs.jsonl").open()]
    assert len(dgs_rows) == 2
    moved = 0
    from compiler import build_model

    model = build_model(load_genotype(tmp_path / "ema" / "searched.yaml"))  # b from the written genotype
    names = surrogate_temperatures(model)
    assert len(names) > 10 and all(n.endswith(".b") for n in names)
    written = model.state_dict()
    for name in names:  # followed, not averaged: the kept model's temperatures are the genotype's
        assert torch.equal(ck["model"][name], ck["train_model"][name]), name
        assert torch.allclose(ck["model"][name], written[name], rtol=0, atol=1e-6), name  # (YAML: decimals)
    for layer in layers:
        b = dgs_rows[-1]["b_after"][layer]
        assert searched[layer].neuron.surrogate.b == pytest.approx(b)
        moved += b != dgs_rows[0]["b_before"][layer]
    assert moved, "DGS moved no temperature: the test would not see an average of two values"
    averaged = [k for k, v in ck["model"].items() if v.is_floating_point() and k not in names
                and not torch.equal(v, ck["train_model"][k])]
    assert averaged  # the weights are the average
    # resume across the DGS run is exact, the followed temperatures included
    run(_cfg(tmp_path / "half", ema=0.9, stop_after=1, **kw), log=lambda s: None)
    run(_cfg(tmp_path / "half", ema=0.9, **kw), resume=True, resume_overrides={"stop_after": None},
        log=lambda s: None)
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    for part in ("model", "train_model"):
        for key, tensor in ck[part].items():
            assert torch.equal(tensor, half[part][key]), (part, key)


def test_weight_average_follows_only_tensors_the_model_has():
    from training.ema import WeightAverage

    model = torch.nn.Linear(2, 2)
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        WeightAverage(model, 0.5, frozenset({"nope"}))
    avg = WeightAverage(model, 0.5, frozenset({"bias"}))
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.add_(1.0)
    avg.update(model)
    assert torch.equal(avg.tensors["bias"], model.bias)
    assert not torch.equal(avg.tensors["weight"], model.weight)
