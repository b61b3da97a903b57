"""The SpikeDHS supernet: mixed edges and the level trellis built from the compiler's registry,
decoded into a genotype that validates, compiles and exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import GENOTYPES, SMALL
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import GenotypeError, build_model, export_onnx
from training.search.decode import random_genotypes, random_path, to_genotype
from training.search.space import load_search_space
from training.search.supernet import Supernet

SPACE = """search_space: 1
base: {base}
candidates: [{{op: conv3x3, b: 3}}, {{op: conv3x3, b: 5}}, {{op: skip}}]
nodes: 2
keep: 2
networks:
  backbone: {{cell: cell, layers: 3, start_level: 0, end_level: 1}}
"""


@pytest.fixture()
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml"))
    return load_search_space(path, overrides=SMALL["cifar10"])


def test_supernet_steps_with_state_and_gradients_reach_alpha_and_beta(space):
    torch.manual_seed(0)
    net = Supernet(space)
    x = {"image": torch.randn(2, 3, 8, 8)}
    state = net.initial_state(2)
    assert state and all(float(v.abs().sum()) == 0 for v in state.values())
    out, state = net(x, state)
    out2, _ = net(x, state)
    loss = out["logits"].sum() + out2["logits"].sum()
    loss.backward()
    assert net.alphas["backbone"].grad.abs().sum() > 0
    assert net.betas["backbone"].grad.abs().sum() > 0
    arch = {id(p) for p in net.arch_parameters()}
    assert all(id(p) not in arch for p in net.weights())
    assert len(net.weights()) + len(net.arch_parameters()) == len(list(net.parameters()))


def test_skip_is_masked_where_channels_differ(space):
    net = Supernet(space)
    cell = next(iter(net.blocks["backbone"]["trellis"].cells.values()))
    # node 0 from c_prev (the 8-channel stem) into 4-channel nodes: skip impossible; from n0 possible
    assert cell.mask(0)[1].tolist() == [True, True, False]
    assert cell.mask(1)[2].tolist() == [True, True, True]


def test_decode_hand_set_weights_to_a_genotype_that_compiles_and_exports(space, tmp_path):
    net = Supernet(space)
    with torch.no_grad():
        a = net.alphas["backbone"]  # rows: n0 <- (c_prev_prev, c_prev); n1 <- (c_prev_prev, c_prev, n0)
        a.zero_()
        a[0, 1] = 3.0   # n0 <- c_prev_prev: b5
        a[1, 0] = 3.0   # n0 <- c_prev: b3
        a[3, 0] = 2.0   # n1 <- c_prev: b3
        a[4, 2] = 4.0   # n1 <- n0: skip
        b = net.betas["backbone"]
        b.zero_()
        b[0, 0, 2] = 5.0  # layer 0: from level 0 down to level 1 (beta: [layer, from level, move])
        b[1, 1, 1] = 5.0  # layer 1: stay
        b[2, 1, 1] = 5.0  # layer 2: stay (must end on level 1)
    decoded = net.decode()["backbone"]
    assert decoded["cell"] == {"n0": [("c_prev_prev", "conv3x3_b5"), ("c_prev", "conv3x3_b3")],
                               "n1": [("c_prev", "conv3x3_b3"), ("n0", "skip")]}
    assert decoded["path"] == [1, 1, 1]
    g = to_genotype(space, net.decode(), {"search": {"seed": 0, "epoch": 1}})
    assert [layer.level for layer in g.network("backbone").layers if layer.kind == "cell"] == [1, 1, 1]
    edge = g.cell("cell").node("n0").inputs[0]
    assert (edge.source, edge.op, edge.neuron) == ("c_prev_prev", "conv3x3", {"surrogate": {"b": 5.0}})
    assert g.meta["search"] == {"seed": 0, "epoch": 1}
    assert g.head.aux_after == 2  # 6 of 8 layers -> the same relative depth of 4
    model = build_model(g).eval()
    export_onnx(model, tmp_path / "searched.onnx")
    assert (tmp_path / "searched.onnx").stat().st_size > 0


def test_stereo_space_runs_at_small_size():
    space = load_search_space(GENOTYPES.parent / "searchspaces" / "stereo.yaml",
                              overrides={**SMALL["stereo"], "input.height": 12, "input.width": 18,
                                         "head.cost_volume.disparities": 3})
    net = Supernet(space)
    x = {"left": torch.randn(1, 5, 12, 18).sign(), "right": torch.randn(1, 5, 12, 18).sign()}
    out, _ = net(x, net.initial_state(1))
    assert out["disparity"].shape == (1, 12, 18) and torch.isfinite(out["disparity"]).all()
    g = to_genotype(space, net.decode())
    assert [layer.level for layer in g.network("matching").layers if layer.kind == "cell"][-1] == 1
    assert np.isfinite(float(out["cost"].detach().sum()))


def test_bad_search_space_errors_are_located(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml").replace("{op: skip}", "{op: skipp}"))
    with pytest.raises(GenotypeError, match=r"s.yaml.*candidates\[2\].op: unknown op 'skipp'.*'skip'"):
        load_search_space(path)
    path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml").replace("backbone: {", "backbon: {"))
    with pytest.raises(GenotypeError, match="no network 'backbon'"):
        load_search_space(path)


def test_fixed_path_searches_normal_and_reduction_cells(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml").replace(
        "{cell: cell, layers: 3, start_level: 0, end_level: 1}",
        "{cell: cell, path: [0, 1, 1, 2], reduction_cell: cell_reduce}"))
    space = load_search_space(path, overrides=SMALL["cifar10"])
    net = Supernet(space)
    assert set(net.alphas) == {"backbone", "backbone__reduce"} and not net.betas
    x = {"image": torch.randn(2, 3, 8, 8)}
    out, _ = net(x, net.initial_state(2))
    out["logits"].sum().backward()
    assert net.alphas["backbone"].grad.abs().sum() > 0 and net.alphas["backbone__reduce"].grad.abs().sum() > 0
    from training.search.bilevel import expected_energy
    assert float(expected_energy(net).detach()) > 0
    with torch.no_grad():
        net.alphas["backbone__reduce"].zero_()
        net.alphas["backbone__reduce"][:, 1] = 5.0  # the reduction cell prefers b5 everywhere
        net.alphas["backbone"].zero_()
        net.alphas["backbone"][:, 0] = 5.0  # the normal cell b3
    d = net.decode()["backbone"]
    assert d["path"] == [0, 1, 1, 2]
    assert all(op == "conv3x3_b5" for edges in d["reduction_cell"].values() for _, op in edges)
    assert all(op == "conv3x3_b3" for edges in d["cell"].values() for _, op in edges)
    g = to_genotype(space, net.decode())
    cells = [layer.cell for layer in g.network("backbone").layers if layer.kind == "cell"]
    assert cells == ["cell", "cell_reduce", "cell", "cell_reduce"]  # level 0 -> 0 is normal; 0->1, 1->2 reduce
    build_model(g)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), layers=st.integers(1, 8), levels=st.integers(1, 5), data=st.data())
def test_random_paths_stay_on_the_trellis(seed, layers, levels, data):
    start = data.draw(st.integers(0, levels - 1))
    end = data.draw(st.integers(max(0, start - layers), min(levels - 1, start + layers)))
    path = random_path(np.random.default_rng(seed), layers, levels, start, end)
    assert len(path) == layers and path[-1] == end
    assert all(0 <= j < levels for j in path)
    assert all(abs(b - a) <= 1 for a, b in zip([start, *path], path, strict=False))


def test_random_genotypes_of_a_space_validate_use_its_candidates_and_are_seeded(space):
    gs = random_genotypes(space, 4, seed=3)
    assert [g.to_yaml() for g in gs] == [g.to_yaml() for g in random_genotypes(space, 4, seed=3)]
    assert len({g.to_yaml() for g in gs}) > 1
    allowed = {(c.op, c.b) for c in space.candidates}
    for g in gs:
        for node in g.cell("cell").nodes:
            assert len(node.inputs) == space.keep == len({e.source for e in node.inputs})
            for e in node.inputs:
                assert (e.op, e.neuron.get("surrogate", {}).get("b")) in allowed, e
        levels = [layer.level for layer in g.network("backbone").layers if layer.kind == "cell"]
        assert len(levels) == 3 and levels[-1] == 1
        build_model(g)  # compiles


def test_random_genotypes_give_up_with_one_located_error(tmp_path):
    path = tmp_path / "space.yaml"  # only skip: node 0 always joins the 16-channel stem to 8-channel nodes
    path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml").replace(
        "[{op: conv3x3, b: 3}, {op: conv3x3, b: 5}, {op: skip}]", "[{op: skip}]"))
    space = load_search_space(path, overrides=SMALL["cifar10"])
    with pytest.raises(GenotypeError, match="1000 random genotypes in a row were refused") as info:
        random_genotypes(space, 1)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


STEREO_SPACE = """search_space: 1
base: {base}
candidates: [{{op: conv3x3, b: 3}}, {{op: conv3x3, b: 5}}, {{op: skip}}]
nodes: 2
networks:
  feature: {{cell: feature, layers: 2, start_level: 0, end_level: 0}}
  matching: {{cell: matching, layers: 2, start_level: 0, end_level: 0}}
"""


@pytest.mark.parametrize("task", ["classification", "stereo"])
def test_forward_steps_is_t_calls_of_forward(task, tmp_path):
    """The supernet's multi-step mode (training's default since the twenty-fifth session): T steps stacked in
    the batch give the outputs, state, spike counts and gradients of T calls of ``forward``, in float64, with
    the architecture weights and BatchNorm's running averages as T calls leave them."""
    torch.manual_seed(0)
    path = tmp_path / "space.yaml"
    if task == "stereo":
        path.write_text(STEREO_SPACE.format(base=GENOTYPES / "stereo_small.yaml"))
        sp = load_search_space(path, overrides=["input.height=24", "input.width=32"])
        x = {"left": torch.rand(3, 2, 5, 24, 32).double(), "right": torch.rand(3, 2, 5, 24, 32).double()}
        key = "cost"
    else:
        path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml"))
        sp = load_search_space(path, overrides=SMALL["cifar10"])
        x = {"image": torch.randn(3, 2, 3, 8, 8).double()}
        key = "logits"
    nets = [Supernet(sp).double().train() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    state: dict = {}  # (zeros of the input's type: the supernet's missing state, ``_ZeroStep``)
    outs, s = [], dict(state)
    for t in range(3):
        out, s = nets[0]({k: v[t] for k, v in x.items()}, s)
        outs.append(out)
    multi, s2 = nets[1].forward_steps(x, dict(state))
    for t in range(3):
        assert torch.allclose(multi[key][t], outs[t][key], rtol=1e-10, atol=1e-12), t
        for layer, count in outs[t]["spikes"].items():
            assert torch.equal(multi["spikes"][layer][t], count), layer
    assert s.keys() == s2.keys() and all(torch.allclose(s[k], s2[k], atol=1e-12) for k in s)
    sum(o[key].sum() for o in outs).backward()
    multi[key].sum().backward()
    grads = [dict(n.named_parameters()) for n in nets]
    for name, p in grads[0].items():
        q = grads[1][name].grad
        assert (p.grad is None) == (q is None), name
        if q is not None:
            assert torch.allclose(p.grad, q, rtol=1e-9, atol=1e-12), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets[1].arch_parameters())
    for name, buf in nets[0].state_dict().items():
        assert torch.allclose(buf.double(), nets[1].state_dict()[name].double(), atol=1e-12), name
