"""DGS, TPS and HNS change what they search, log it, and write a genotype the compiler accepts;
compiler.edit maps neuron layer names back to genotype locations."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import GENOTYPES, small_genotype

torch.set_num_threads(1)

DIGITS = ["input.height=8", "input.width=8", "input.channels=1", "networks.backbone.node_channels=[4,4,8]",
          "networks.backbone.layers[0].channels=8"]


def _run(tmp_path, **kw):
    from training.config import TrainConfig
    from training.train import run

    cfg = TrainConfig(genotype=str(GENOTYPES / "cifar10.yaml"), out=str(tmp_path), data="digits", epochs=1,
                      timesteps=2, max_batches=3, batch_size=16, quiet=True, tensorboard=False, overrides=DIGITS,
                      **kw)
    run(cfg, log=lambda s: None)
    from compiler import load_genotype

    searched = load_genotype(tmp_path / "searched.yaml")  # the compiler accepts it
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    return searched, ck, [json.loads(line) for line in (tmp_path / f"{next(iter(kw))[:3]}.jsonl").open()]


def _resolved(g, name):
    from compiler.planner import plan

    return plan(g).neurons[name].neuron


# ------------------------------------------------------------------------------------- compiler.edit
def test_edit_locates_every_neuron_layer_and_round_trips():
    from compiler.edit import locate, neuron_layer_names, set_neuron
    from compiler.planner import plan

    for name in ("stereo", "cifar10", "snasnet_cifar10_bw"):
        g = small_genotype(name)
        for layer in neuron_layer_names(g, spiking_only=False):
            site = locate(g, layer)
            assert site.layer in layer
            g2 = set_neuron(g, layer, {"tau": 0.37})
            p = plan(g2)
            assert p.neurons[layer].neuron.tau == pytest.approx(0.37)
            # only that location changed (the right instance of a shared feature net shares it)
            changed = {n for n, v in p.neurons.items() if v.neuron.tau == pytest.approx(0.37)}
            assert changed <= {layer, layer.replace(".left.", ".right.")}, (layer, changed)


def test_edit_clones_a_shared_cell_and_rejects_bad_names():
    from compiler import GenotypeError
    from compiler.edit import set_neuron

    g = small_genotype("cifar10", mixing="spike_sum")  # one cell shared by 8 layers; nodes without a neuron
    g2 = set_neuron(g, "backbone.cell2.n1.0", {"surrogate": {"b": 4.2}})
    assert _resolved(g2, "backbone.cell2.n1.0").surrogate.b == pytest.approx(4.2)
    assert _resolved(g2, "backbone.cell3.n1.0").surrogate.b == pytest.approx(5.0)  # b5 edge
    assert len(g2.cells) == 2 and g2.network("backbone").layers[3].cell == "cell_cell2"
    for bad, words in (("backbone.cel2.n1.0", "did you mean"), ("backbone.cell2.n1", "EDGE"),
                       ("backbone.cell2.n7.0", "did you mean .n2."), ("nope.stem", "unknown network")):
        with pytest.raises(GenotypeError, match=words):
            set_neuron(g, bad, {"tau": 0.3})


def test_edit_membrane_node_and_conv_layer():
    from compiler.edit import set_neuron

    g = small_genotype("snasnet_cifar10_bw", mixing="membrane")
    g2 = set_neuron(set_neuron(g, "backbone.cell0.n1", {"kind": "relu"}), "backbone.stem", {"tau": 0.9})
    assert _resolved(g2, "backbone.cell0.n1").kind == "relu"
    assert _resolved(g2, "backbone.cell1.n1").kind == "lif"
    assert _resolved(g2, "backbone.stem").tau == pytest.approx(0.9)


# ------------------------------------------------------------------------------------- searchers
def test_dgs_moves_temperatures_logs_and_writes_them_back(tmp_path):
    searched, ck, rows = _run(tmp_path, dgs=["all"], dgs_every=1, dgs_iters=2)
    assert len(rows) == 1 and rows[0]["iterations"] == 2
    before, after = rows[0]["b_before"], rows[0]["b_after"]
    assert set(before) == set(after) and len(after) > 10
    assert any(abs(after[k] - before[k]) > 0.1 for k in after), "DGS moved no temperature"
    for k, v in after.items():
        assert 1.0 <= v <= 6.0
        assert _resolved(searched, k).surrogate.b == pytest.approx(v)
        for m in rows[0]["mean_softmax_alpha"].values():
            assert sum(m) == pytest.approx(1.0, abs=1e-4)
    # the checkpoint's buffers hold the same temperatures: export of searched.yaml + last.pt agrees
    from compiler import build_model

    model = build_model(searched)
    model.load_state_dict(ck["model"])


def test_tps_moves_time_constants_and_writes_them_back(tmp_path):
    searched, ck, rows = _run(tmp_path, tps=["all"], tps_every=1, tps_warmup=0, tps_delta=0.05)
    assert len(rows) == 3  # one move per iteration
    taus = rows[-1]["tau"]
    assert any(abs(v - 0.2) > 1e-6 for v in taus.values()), "TPS moved no time constant"
    for k, v in taus.items():
        assert _resolved(searched, k).tau == pytest.approx(v)
        assert any(abs(v - (0.2 + d)) < 1e-6 for d in (-0.15, -0.1, -0.05, 0, 0.05, 0.1, 0.15))
    key = next(k for k in ck["model"] if k.endswith("neurons.n0_0.tau"))
    assert key  # the checkpoint keeps the plain neuron's keys


def test_hns_mixes_lif_and_relu_with_the_energy_loss(tmp_path):
    # HNS now has three candidates (lif, alif, relu), a warm-up and a step every --hns-every iterations
    # (issue 19): no warm-up and one step at the run's third and last iteration here
    from training.searchers.hns import KINDS

    searched, ck, rows = _run(tmp_path, hns=["all"], hns_lambda=0.0, arch_lr=0.2, hns_warmup=0, hns_every=3)
    probs = rows[-1]["softmax_alpha"]
    assert any(abs(p[0] - 1 / 3) > 1e-3 for p in probs.values()), "HNS alphas did not move"
    kinds = rows[-1]["kind"]
    for k, kind in kinds.items():
        assert _resolved(searched, k).kind == kind
        assert kind == KINDS[max(range(3), key=lambda i: (probs[k][i], -i))]
    assert "relu" in kinds.values(), "with no energy cost some layer should prefer ReLU"
    # a strong energy weight pushes every layer to a spiking kind (LIF and ALIF cost the same)
    searched2, _, rows2 = _run(tmp_path / "e", hns=["all"], hns_lambda=50.0, arch_lr=0.2, hns_warmup=0,
                               hns_every=3)
    assert "relu" not in set(rows2[-1]["kind"].values())
    assert all(p[2] < min(p[0], p[1]) for p in rows2[-1]["softmax_alpha"].values())


def test_hybrid_neuron_is_relu_or_lif_at_the_extremes():
    from compiler.ir import Neuron
    from compiler.neurons import ALIF, LIF
    from training.searchers.hns import HybridNeuron

    x = torch.randn(3, 4)
    state = {"v": torch.zeros(3, 4), "a": torch.zeros(3, 4)}
    lif = LIF(Neuron())
    y_relu, _ = HybridNeuron(lif, torch.tensor([-50.0, -50.0, 50.0]))(x, state)
    y_lif, new = HybridNeuron(lif, torch.tensor([50.0, -50.0, -50.0]))(x, state)
    y_alif, _ = HybridNeuron(lif, torch.tensor([-50.0, 50.0, -50.0]))(x, state)
    assert torch.allclose(y_relu, torch.relu(x))
    assert torch.allclose(y_lif, lif(x, {"v": state["v"]})[0]) and set(new) == {"v", "a"}
    assert torch.allclose(y_alif, ALIF(Neuron(kind="alif"))(x, state)[0])


def test_search_options_reject_bad_layers(tmp_path):
    from compiler import GenotypeError, load_genotype
    from training.errors import TrainError
    from training.searchers import resolve_layers

    relu_stem = "networks.backbone.layers[0].neuron={kind: relu}"
    g = load_genotype(GENOTYPES / "cifar10.yaml", overrides=[*DIGITS, relu_stem])
    with pytest.raises(GenotypeError, match="did you mean"):
        resolve_layers(g, ["backbone.cel1.n0.0"], ("lif",))
    with pytest.raises(TrainError, match="has a relu neuron"):
        resolve_layers(g, ["backbone.stem"], ("lif",))


def _close_rows(a: dict, b: dict, centre: float) -> None:
    """Two runs' per-layer softmax(alpha) agree within 5 % of their distance from uniform (``centre``)."""
    for layer, probs in a.items():
        signal = max(abs(p - centre) for p in probs)
        apart = max(abs(p - q) for p, q in zip(probs, b[layer], strict=True))
        assert apart <= 0.05 * signal + 2e-6, (layer, signal, apart)  # (Adam on rounded gradients; 6 digits)


@pytest.mark.parametrize("name, kw, key, centre", [
    ("dgs", dict(dgs=["backbone.stem", "backbone.cell0.n0.0"], dgs_every=1, dgs_iters=2), "mean_softmax_alpha", 0.2),
    ("tps", dict(tps=["all"], tps_warmup=0, tps_every=2), "softmax_alpha", 1 / 3),
    ("hns", dict(hns=["all"], hns_warmup=0, hns_every=2), "softmax_alpha", 1 / 3)])
def test_searchers_train_multistep_and_decide_as_step_by_step(tmp_path, name, kw, key, centre):
    """DGS swaps ops only for its probes, TPS's and HNS's mixed neurons step inside the multi-step mode (no
    fused update): a run with any of them trains multi-step by default, with the same decisions and
    softmax(alpha) as step by step (float rounding apart) and the same weights within float32 rounding."""
    runs = {}
    for mode in ("step", "multistep"):
        _, ck, rows = _run(tmp_path / mode, **kw, exec=mode)  # (the searcher first: its log is read)
        runs[mode] = ck, rows
    (ck_s, rows_s), (ck_m, rows_m) = runs["step"], runs["multistep"]
    assert len(rows_s) == len(rows_m) >= 1
    for a, b in zip(rows_s, rows_m, strict=True):
        _close_rows(a[key], b[key], centre)
        for field in ("b_after", "tau", "tau_a", "kind"):
            assert a.get(field) == b.get(field), field
    assert any(max(abs(p - centre) for p in probs) > 1e-5 for probs in rows_s[-1][key].values())
    for k, tensor in ck_s["model"].items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, ck_m["model"][k], rtol=1e-4, atol=1e-6), k


def test_a_search_run_resolves_to_multistep():
    from training.errors import TrainError
    from training.execution import resolve_exec

    class Model:
        def forward_steps(self):
            pass

    assert resolve_exec(None, Model()) == "multistep" and resolve_exec("step", Model()) == "step"
    assert resolve_exec(None, object()) == "step"
    with pytest.raises(TrainError, match="--exec multistep needs a model that runs all T steps at once"):
        resolve_exec("multistep", object())
