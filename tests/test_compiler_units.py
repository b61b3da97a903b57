"""Unit tests: schema round trip, registry coverage, neurons and surrogates against their formulas,
cost volume, disparity estimators, BN folding, weights loading."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import GENOTYPES, ROOT, SMALL, small_genotype

from compiler import build_model, load_genotype, parse_genotype
from compiler.fold import FoldError, fold_batchnorm, fold_conv_bn_weights
from compiler.ir import Neuron, Surrogate
from compiler.neurons import ALIF, IF, LI, LIF, SURROGATE_GRADS, ReLU, spike
from compiler.ops import BUILDERS, cost_volume, estimate_disparity
from compiler.registry import OPS, SURROGATES

SHIPPED = sorted(p.stem for p in GENOTYPES.glob("*.yaml"))


def test_every_shipped_genotype_has_a_small_version():
    assert set(SHIPPED) == set(SMALL)


@pytest.mark.parametrize("name", SHIPPED)
def test_load_dump_load_is_identity(name):
    g = load_genotype(GENOTYPES / f"{name}.yaml")
    again = parse_genotype(g.to_dict())
    assert again == g
    from compiler import loads_genotype
    assert loads_genotype(g.to_yaml()) == g


@pytest.mark.parametrize("name", SHIPPED)
def test_params_of_model_equal_plan(name):
    g = small_genotype(name)
    model = build_model(g)
    aux = sum(p.numel() for p in model.aux.parameters()) if hasattr(model, "aux") else 0
    assert sum(p.numel() for p in model.parameters()) - aux == model.plan.params
    assert aux == model.plan.aux_params


def test_full_size_parameter_counts():
    from compiler.planner import plan
    assert plan(load_genotype(GENOTYPES / "stereo.yaml")).params == 3_454_922
    assert plan(load_genotype(GENOTYPES / "cifar10.yaml")).params == 14_287_834


def test_registries_agree():
    assert set(BUILDERS) == set(OPS)
    assert set(SURROGATE_GRADS) == set(SURROGATES)
    for name, spec in OPS.items():  # every op: built module output shape == shape rule
        for dims in (2, 3):
            channels = 6 if spec.kind == "conv" else 4
            module = BUILDERS[name](4, channels, dims).eval()
            x = torch.zeros(1, 4, *([5] * dims))
            assert tuple(module(x).shape[1:]) == spec.out_shape((4, *([5] * dims)), channels)


def test_edit_of_one_edge_changes_the_network():
    text = (GENOTYPES / "stereo.yaml").read_text()
    edited = text.replace("n2: {inputs: [{from: n0, op: conv3x3, b: 3}",
                          "n2: {inputs: [{from: n0, op: conv5x5, b: 3}", 1)
    from compiler import loads_genotype
    a, b = (build_model(loads_genotype(t, overrides=SMALL["stereo"])) for t in (text, edited))
    assert a.plan.params != b.plan.params
    key = "nets.feature.layers.2.ops.n2_0.conv.weight"
    assert a.state_dict()[key].shape[-1] == 3 and b.state_dict()[key].shape[-1] == 5


# ------------------------------------------------------------------------------------------ neurons
def neuron(kind="lif", **kw):
    return Neuron(kind=kind, **kw)


def test_lif_hard_reset_sequence():
    lif = LIF(neuron(tau=0.5, threshold=1.0))
    state = {"v": torch.zeros(1)}
    ys, vs = [], []
    for current in (0.6, 0.6, 0.6, 2.0):
        y, state = lif(torch.tensor([current]), state)
        ys.append(y.item())
        vs.append(state["v"].item())
    # u: 0.6 -> 0.9 -> 1.05 (spike, reset to 0) -> 2.0 (spike)
    assert ys == [0, 0, 1, 1]
    assert vs == pytest.approx([0.6, 0.9, 0.0, 0.0])


def test_lif_soft_reset_and_if():
    lif = LIF(neuron(tau=1.0, threshold=1.0, reset="soft"))
    y, s = lif(torch.tensor([1.5]), {"v": torch.zeros(1)})
    assert y.item() == 1 and s["v"].item() == pytest.approx(0.5)
    iff = IF(neuron(kind="if", tau=0.2, threshold=1.0))
    state = {"v": torch.zeros(1)}
    for _ in range(3):
        y, state = iff(torch.tensor([0.4]), state)
    assert y.item() == 1  # no leak: 0.4 + 0.4 + 0.4 >= 1


def test_alif_threshold_adapts():
    alif = ALIF(neuron(kind="alif", tau=0.0, threshold=0.5, tau_a=0.5, beta=1.0))
    state = {"v": torch.zeros(1), "a": torch.zeros(1)}
    y1, state = alif(torch.tensor([0.6]), state)  # A = 0.5: spike; a -> 1
    y2, state = alif(torch.tensor([0.6]), state)  # A = 1.5: silent; a -> 0.5
    y3, state = alif(torch.tensor([1.2]), state)  # A = 1.0: spike
    assert (y1.item(), y2.item(), y3.item()) == (1, 0, 1)
    assert state["a"].item() == pytest.approx(0.25 + 1)


def test_li_and_relu():
    li = LI(neuron(kind="li", tau=0.5))
    u, s = li(torch.tensor([2.0]), {"v": torch.tensor([4.0])})
    assert u.item() == 4.0 and s["v"].item() == 4.0
    r, s = ReLU(neuron(kind="relu"))(torch.tensor([-1.0, 2.0]), {})
    assert r.tolist() == [0.0, 2.0] and s == {}


FORMULAS = {
    "dspike": lambda x, b: (b / 2) * (1 - math.tanh(b * (x - 0.5)) ** 2) / math.tanh(b / 2) if 0 <= x <= 1 else 0.0,
    "triangle": lambda x, b: b * max(0.0, 1 - abs(x - 0.5)),
    "superspike": lambda x, b: 1 / (b * abs(x) + 1) ** 2,
    "arctan": lambda x, b: (b / 3) / (1 + (math.pi * x) ** 2),
}
SHIFT = {"dspike": 0.5, "triangle": 0.5, "superspike": 0.0, "arctan": 0.0}  # x = u - V_th + shift


@pytest.mark.parametrize("kind", sorted(FORMULAS))
@pytest.mark.parametrize("b", [1.0, 3.0, 5.0])
def test_surrogate_gradient_matches_formula(kind, b):
    threshold = 0.5
    u = torch.linspace(-1.0, 2.0, 61, dtype=torch.float64, requires_grad=True)
    y = spike(u - threshold, kind, b)
    assert torch.equal(y.detach(), (u >= threshold).double())
    y.sum().backward()
    expected = [FORMULAS[kind](float(v) - threshold + SHIFT[kind], b) for v in u.detach()]
    assert u.grad.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_neuron_uses_its_temperature_in_backward():
    lif = LIF(neuron(surrogate=Surrogate("triangle", 4.0)))
    current = torch.tensor([0.3], requires_grad=True)
    y, _ = lif(current, {"v": torch.zeros(1)})
    y.backward()
    assert current.grad.item() == pytest.approx(4.0 * (1 - abs(0.3 - 0.5)))


# ------------------------------------------------------------------------------------------- stereo
def test_cost_volume_shifts_right_features():
    left = torch.arange(2 * 1 * 5, dtype=torch.float32).view(1, 2, 1, 5)
    right = 100 + left
    vol = cost_volume(left, right, disparities=3, shift=2)
    assert vol.shape == (1, 4, 3, 1, 5)
    assert torch.equal(vol[0, :2, 1], left[0])  # left half: unshifted at every disparity
    # right half at d = 1 (shift 2): x -> right[x - 2], zeros where x - 2 < 0
    assert vol[0, 2, 1, 0].tolist() == [0, 0, 100, 101, 102]
    assert vol[0, 3, 2, 0].tolist() == [0, 0, 0, 0, 105]


def test_subpixel_estimator_hand_computed():
    cost = torch.tensor([5.0, 1.0, 2.0, 0.0, 9.0]).view(1, 5, 1, 1)
    # argmin = 3; support 2 -> d in {2, 3, 4}; softmin of (2, 0, 9)
    w = torch.softmax(torch.tensor([-2.0, 0.0, -9.0]), 0)
    expected = 2.0 * float((w * torch.tensor([2.0, 3.0, 4.0])).sum())
    got = estimate_disparity(cost, "subpixel", support=2, step=2.0)
    assert got.shape == (1, 1, 1) and got.item() == pytest.approx(expected, rel=1e-6)
    soft = estimate_disparity(cost, "soft_argmin", support=2, step=1.0).item()
    w_all = torch.softmax(-cost.view(-1), 0)
    assert soft == pytest.approx(float((w_all * torch.arange(5.0)).sum()), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_argmin_over_disparities_is_argmins(dtype):
    """The estimator's argmin (``min(dim).indices`` outside export, a faster kernel) gives ``torch.argmin``'s
    indices: the first of tied minima, NaN counted minimal, -inf, channels-last memory."""
    from compiler.ops import _argmin_d

    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        x = torch.randint(0, 4, (3, 9, 5, 7), generator=g).to(dtype)  # many ties
        if trial % 3 == 0:
            x.view(-1)[torch.randint(0, x.numel(), (10,), generator=g)] = float("nan")
        if trial % 5 == 0:
            x.view(-1)[torch.randint(0, x.numel(), (10,), generator=g)] = float("-inf")
        for t in (x, x.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(_argmin_d(t), torch.argmin(t, dim=1, keepdim=True)), (dtype, trial)


# ------------------------------------------------------------------------------------------ folding
@pytest.mark.parametrize("dims", [2, 3])
def test_fold_pure_function_matches_conv_then_bn(dims):
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(3, 5, 3, padding=1, bias=True)
    bn = (torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm3d)(5).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, *([6] * dims))
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    f = torch.nn.functional.conv2d if dims == 2 else torch.nn.functional.conv3d
    with torch.no_grad():
        assert torch.allclose(f(x, w, b, padding=1), bn(conv(x)), atol=1e-5)
    assert conv.weight.shape == w.shape  # inputs untouched, new tensors out
    assert not torch.equal(conv.weight, w)


@pytest.mark.parametrize("name", SHIPPED)
def test_folded_model_equals_unfolded(name):
    import numpy as np
    from helpers import make_exact, random_inputs

    model = build_model(small_genotype(name)).eval()
    make_exact(model)
    folded = fold_batchnorm(model)
    assert any(m.bn is not None for m in model.modules() if hasattr(m, "bn"))  # the original is untouched
    assert all(m.bn is None for m in folded.modules() if hasattr(m, "bn") and hasattr(m, "conv"))
    rng = np.random.default_rng(1)
    sa, sb = model.initial_state(2), folded.initial_state(2)
    with torch.no_grad():
        for _ in range(8):
            x = {k: torch.from_numpy(v) for k, v in random_inputs(model, rng).items()}
            oa, sa = model(x, sa)
            ob, sb = folded(x, sb)
            for k in oa["spikes"]:
                assert torch.equal(oa["spikes"][k], ob["spikes"][k]), k
            key = model.output_name
            if key == "logits":
                assert torch.allclose(oa[key], ob[key], atol=1e-4)
            else:
                assert torch.allclose(oa["cost"], ob["cost"], atol=1e-4)


def test_fold_refuses_training_mode_and_unfoldable_pairs():
    model = build_model(small_genotype("cifar10"))
    with pytest.raises(FoldError, match="training mode"):
        fold_batchnorm(model.train())
    model.eval()
    model.nets["backbone"].layers[0].op.bn = torch.nn.BatchNorm2d(8, track_running_stats=False).eval()
    with pytest.raises(FoldError, match=r"nets.backbone.layers.0.op: BatchNorm keeps no running statistics"):
        fold_batchnorm(model)


def test_state_is_explicit_and_complete():
    from helpers import randomize_bn

    torch.manual_seed(1)  # its own weights, whatever ran before: under seed 0 the state happens not to reach the logits
    model = build_model(small_genotype("snasnet_cifar10_bw")).eval()
    randomize_bn(model)
    state = model.initial_state(3)
    assert any(k.endswith(".delayed") for k in state)  # backward connections became state
    x = {"image": 3 * torch.randn(3, 3, 16, 16)}
    with torch.no_grad():
        out1, s1 = model(x, state)
        out2, _ = model(x, state)  # same state in -> same output: nothing hidden in the module
        out3, _ = model(x, s1)
    assert set(s1) == set(state) and all(s1[k].shape == state[k].shape for k in state)
    assert torch.equal(out1["logits"], out2["logits"])
    assert sum(v.sum() for v in out1["spikes"].values()) > 0
    assert not torch.equal(out1["logits"], out3["logits"])


def test_structural_shape_rules_agree_with_torch():
    from compiler.ops import resample
    from compiler.registry import RULES

    left = torch.zeros(2, 6, 5, 7)
    vol = cost_volume(left, left, 4)
    assert tuple(vol.shape[1:]) == RULES["cost_volume"].shape((6, 5, 7), (6, 5, 7), 4)
    assert tuple(resample(left, (3, 4)).shape[1:]) == RULES["resample"].shape((6, 5, 7), (3, 4))
    assert tuple(resample(vol, (2, 3, 4)).shape[1:]) == RULES["resample"].shape((12, 4, 5, 7), (2, 3, 4))
    cost = torch.zeros(2, 4, 10, 12)
    for kind in ("subpixel", "soft_argmin"):
        assert tuple(estimate_disparity(cost, kind, 2, 1.0).shape[1:]) == RULES[kind].shape((1, 4, 10, 12), 10, 12)
    assert RULES["global_avgpool"].shape((6, 5, 7)) == (6,)
    assert RULES["linear"].shape((6,), 10) == (10,)
    from compiler.registry import ShapeError
    with pytest.raises(ShapeError, match="differ"):
        RULES["cost_volume"].shape((6, 5, 7), (6, 5, 8), 4)


def test_count_encoding_has_two_channels_per_bin_and_matches_the_runtime():
    from runtime.data.encoding import channels

    g = small_genotype("stereo", **{"input.encoding": "count"})
    assert g.input.in_channels == channels("count", g.input.bins) == 2 * g.input.bins
    model = build_model(g).eval()
    x = torch.zeros(1, 2 * g.input.bins, g.input.height, g.input.width)
    with torch.no_grad():
        out, _ = model({"left": x, "right": x}, model.initial_state(1))
    assert out["disparity"].shape == (1, g.input.height, g.input.width)


def test_first_cell_takes_the_stem_output_as_both_inputs():
    from compiler.planner import plan

    p = plan(load_genotype(GENOTYPES / "cifar10.yaml"))
    first = p.nets["backbone"].layers[1]
    assert first.inputs == {"c_prev": (144, 32, 32), "c_prev_prev": (144, 32, 32)}
    second = p.nets["backbone"].layers[2]
    assert second.inputs["c_prev_prev"] == (144, 32, 32) and second.inputs["c_prev"] == (144, 32, 32)
    stereo = plan(load_genotype(GENOTYPES / "stereo.yaml")).nets["feature"].layers[2]
    assert stereo.inputs == {"c_prev": (48, 87, 116), "c_prev_prev": (24, 260, 346)}  # stem1, stem0


def test_delayed_edge_contributes_nothing_at_the_first_step_in_inference():
    """A delayed edge's op runs on the source at the end of a step, so its zero initial state means
    "no input yet". Applying a BatchNorm to the zero state would instead add the BN's running-mean
    offset in inference (but nothing in training, where the batch mean of zeros is zero)."""
    from helpers import randomize_bn

    g = small_genotype("snasnet_cifar10_bw")
    model = build_model(g).eval()
    randomize_bn(model)
    cell = model.nets["backbone"].layers[1]
    delayed = [(node, i) for node, i, _ in cell.delayed]
    assert delayed, "the shipped SNASNet-Bw cell has backward edges"
    x = {"image": 3 * torch.randn(2, 3, 16, 16)}
    state = model.initial_state(2)
    with torch.no_grad():
        out_a, s1 = model(x, state)
        for node, i in delayed:  # the delayed ops' BN statistics must not matter at t = 0 ...
            bn = cell.ops[f"{node}_{i}"].bn
            bn.running_mean.add_(5.0)
            bn.running_var.mul_(0.1)
        out_b, s1b = model(x, state)
        assert torch.equal(out_a["logits"], out_b["logits"])
        _, s2 = model(x, s1)  # ... but they do from the next step on: the state holds op(source)
    key = "backbone.cell0.{}.{}.delayed".format(*delayed[0])  # (layer name).(node).(input).delayed
    assert key in s1, sorted(s1)
    assert not torch.equal(s1[key], s1b[key])


@pytest.mark.parametrize("mixing", ["spike", "spike_sum", "membrane"])
def test_delayed_edges_count_as_synaptic_work_of_their_source(mixing):
    """A delayed conv edge is driven by its source's spikes of the step before: SynOps through the
    source's fan-out, never dense MACs (the source is planned after the edge's node)."""
    from compiler import plan

    # the SNASNet genotype before issue 19 (global-pool head), kept verbatim under tests/kept/genotypes/
    g = load_genotype(ROOT / "tests/kept/genotypes/snasnet_cifar10_bw.yaml",  # n0 <- delayed conv1x1(n2), ...
                      overrides={**SMALL["snasnet_cifar10_bw"], "mixing": mixing})
    p = plan(g)
    assert set(p.dense_macs) == {"backbone.stem", "head.linear"}, p.dense_macs
    channels = g.network("backbone").node_channels[0]
    n2 = "backbone.cell0.n2.0" if mixing == "spike_sum" else "backbone.cell0.n2"  # spike: the node's own neuron
    # n2 feeds n3 through conv1x1 and n0 through the delayed conv1x1: channels synapses per spike each
    assert p.fan_out[n2] == pytest.approx(2 * channels)
    # the classifier reads the pooled cell output once, however many spiking parts are summed into it
    assert p.dense_macs["head.linear"] == g.network("backbone").node_channels[-1] * g.head.classes
