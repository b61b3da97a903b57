"""``python -m training.checkpoint widen``: a trained model's weights in a wider genotype of the same graph
compute what they computed (the channels of a concatenation widen group by group), the new channels
start free, and what cannot be widened is refused in one line."""

from __future__ import annotations

import pytest
import torch
from helpers import GENOTYPES

from compiler import build_model, load_genotype, loads_genotype
from training.checkpoint import load, main, save_atomic
from training.errors import TrainError
from training.widen import index_map, layouts, output_difference, widen_state

SMALL = {"input.height": 24, "input.width": 32}
CLASS = """schema: 1
name: widen-cla
task: classification
input: {height: 8, width: 8, encoding: image, channels: 1, timesteps: 2}
neuron: {kind: lif, tau: 0.2, threshold: 0.5, reset: hard, surrogate: {kind: dspike, b: 3}}
mixing: spike
cells:
  cell:
    nodes:
      n0: {inputs: [{from: c_prev, op: conv3x3}, {from: c_prev_prev, op: conv3x3}]}
      n1: {inputs: [{from: n0, op: conv3x3}, {from: c_prev, op: skip}]}
  cellb:
    nodes:
      n0: {inputs: [{from: c_prev, op: conv3x3}, {from: c_prev_prev, op: conv3x3}]}
      n1: {inputs: [{from: n0, op: conv3x3}, {from: c_prev, op: SKIP}]}
networks:
  backbone:
    dims: 2
    rates: [1, 2]
    node_channels: [NODES]
    layers:
      - {conv: conv3x3, channels: STEM, name: stem}
      - {cell: cell, level: 0}
      - {cell: cellb, level: 1}
head:
  backbone: backbone
  classes: 10
"""


def _class(nodes: str = "4, 8", stem: int = 4, skip: str = "conv3x3"):
    return loads_genotype(CLASS.replace("NODES", nodes).replace("STEM", str(stem)).replace("SKIP", skip))


def _trained(g, seed: int = 1):
    """A model with random weights and BatchNorm statistics (not a fresh initialisation), in float64."""
    torch.manual_seed(seed)
    m = build_model(g).double()
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 2)
            elif v.is_floating_point() and v.dim() > 0:
                v.normal_(0, 0.6 if v.dim() > 1 else 0.3)
    return m


def _pair(kind: str):
    if kind == "stereo":
        return (load_genotype(GENOTYPES / "stereo_small_fine.yaml", overrides=SMALL),
                load_genotype(GENOTYPES / "stereo_fine_c12.yaml", overrides=SMALL))
    return _class("4, 8", 4), _class("6, 12", 6)


@pytest.mark.parametrize("kind", ["stereo", "class"])
def test_the_widened_model_computes_what_the_trained_one_did(kind):
    g_old, g_new = _pair(kind)
    old = _trained(g_old)
    torch.manual_seed(0)
    new = build_model(g_new).double()
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    new.load_state_dict(widen_state(old, new))
    assert sum(p.numel() for p in new.parameters()) > sum(p.numel() for p in old.parameters())
    assert output_difference(old, new, steps=5) < 1e-9
    # the new output channels keep their fresh weights (they read everything); trained ones read no new input
    state, lo, ln = new.state_dict(), layouts(old.plan), layouts(new.plan)
    grew = 0
    for n in old.plan.graph:
        if n.kind != "op" or n.module is None or n.attrs.get("kind") != "conv":
            continue
        key = ".".join(n.module) + ".conv.weight"
        w, w0 = state[key], old.state_dict()[key]
        rows, cols = n.shape[0], index_map(lo[n.inputs[0]], ln[n.inputs[0]])
        assert torch.equal(w[:rows][:, cols], w0)
        others = torch.ones(w.shape[1], dtype=torch.bool)
        others[cols] = False
        assert not w[:rows][:, others].any()
        if w.shape[0] > rows:
            assert torch.equal(w[rows:], fresh[key][rows:])
            grew += 1
    assert grew > 5


def test_a_concatenation_widens_group_by_group_not_as_a_leading_slice():
    """The check above can fail: the same weights put in the leading slice of every tensor (what a copy
    by shape would do) change what the model computes, because a cell's output and the cost volume join
    groups that each widen."""
    g_old, g_new = _pair("stereo")
    old = _trained(g_old)
    new = build_model(g_new).double()
    naive = {k: v.clone() for k, v in new.state_dict().items()}
    for k, v in old.state_dict().items():
        w = naive[k]
        if w.dim() == 0 or w.shape == v.shape:
            naive[k] = v.clone()
            continue
        if w.dim() > 1:
            w[: v.shape[0]] = 0
        w[tuple(slice(0, s) for s in v.shape)] = v
    new.load_state_dict(naive)
    assert output_difference(old, new, steps=5) > 1e-3
    lo, ln = layouts(old.plan), layouts(new.plan)
    assert lo["head:cost_volume"] == [12, 12] and ln["head:cost_volume"] == [24, 24]
    assert lo["feature.left.cell0:concat"] == [8, 8, 8] and ln["feature.left.cell0:concat"] == [16, 16, 16]
    assert index_map([2, 3], [4, 5]).tolist() == [0, 1, 4, 5, 6]


@pytest.mark.parametrize("neuron", ["lif", "relu"])
def test_widen_writes_a_checkpoint_that_trains_from(tmp_path, capsys, neuron):
    g_old, g_new = _pair("stereo")
    sets = [] if neuron == "lif" else ["--set", "neuron.kind=relu"]  # a ReLU twin, as training.train --set
    if sets:
        g_old = load_genotype(GENOTYPES / "stereo_small_fine.yaml", overrides={**SMALL, "neuron.kind": "relu"})
    old = _trained(g_old).float()
    src, dst, wide = tmp_path / "a.pt", tmp_path / "wide.pt", tmp_path / "wide.yaml"
    save_atomic({"model": old.state_dict(), "genotype": g_old.to_yaml(), "config": {"lr": 0.1}, "epoch": 3,
                 "optimizer": {}}, src)
    wide.write_text(g_new.to_yaml())
    assert main(["widen", str(src), str(wide), str(dst), *sets]) == 0
    out = capsys.readouterr().out
    assert "parameters; the two models' outputs differ by at most" in out
    ck = load(dst)
    assert "optimizer" not in ck and ck["widened_from"]["epoch"] == 3
    model = build_model(loads_genotype(ck["genotype"]))
    assert model.genotype.neuron.kind == neuron
    model.load_state_dict(ck["model"])  # what --init loads
    assert output_difference(old, model) < 1e-4


@pytest.mark.parametrize("case", ["narrower", "structure", "task", "same-file", "folder", "no-genotype",
                                  "ckpt-without-genotype", "ckpt-weights-misfit", "seed-huge", "seed-negative"])
def test_widen_refuses_what_it_cannot_widen_in_one_line(tmp_path, capsys, case):
    g_old = _class("4, 8", 4)
    src, dst, wide = tmp_path / "a.pt", tmp_path / "wide.pt", tmp_path / "wide.yaml"
    save_atomic({"model": build_model(g_old).state_dict(), "genotype": g_old.to_yaml(), "config": {}}, src)
    text, want, extra = _class("6, 12", 6).to_yaml(), None, []
    if case == "narrower":
        text, want = _class("3, 6", 3).to_yaml(), "channels, fewer than the trained 4"
    elif case == "structure":
        text, want = _class("6, 12", 6).to_yaml().replace("stride: 1", "stride: 2", 1), "in more than its channels"
        if text == _class("6, 12", 6).to_yaml():
            text = loads_genotype(CLASS.replace("NODES", "6, 12").replace("STEM", "6").replace("SKIP", "conv3x3")
                                  .replace("      - {cell: cellb, level: 1}\n", "")).to_yaml()
            want = "nodes, the trained model's"
    elif case == "task":
        text, want = load_genotype(GENOTYPES / "stereo_fine_c12.yaml").to_yaml(), "a stereo genotype"
    elif case == "same-file":
        dst, want = src, "is the checkpoint widened"
    elif case == "folder":
        dst, want = tmp_path, "is a folder"
    elif case == "no-genotype":
        wide, want = tmp_path / "none.yaml", "none.yaml"
    elif case == "ckpt-without-genotype":
        save_atomic({"model": build_model(g_old).state_dict(), "config": {}}, src)
        want = "holds no genotype"
    elif case == "ckpt-weights-misfit":  # a checkpoint whose genotype was edited after training
        save_atomic({"model": build_model(g_old).state_dict(), "genotype": _class("5, 10", 5).to_yaml()}, src)
        want = "its weights do not fit its own genotype (size mismatch for"
    elif case in ("seed-huge", "seed-negative"):
        extra = ["--seed", str(10**23 if case == "seed-huge" else -5)]
        want = "--seed must be from 0 to 4294967295, got"
    if case != "no-genotype":
        wide.write_text(text)
    assert main(["widen", str(src), str(wide), str(dst), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and want in err and len(err.splitlines()) == 1, err
    assert case in ("same-file", "folder") or not dst.exists()


def test_widen_state_refuses_a_layer_it_does_not_know():
    g_old, g_new = _pair("class")
    old, new = build_model(g_old), build_model(g_new)
    with pytest.raises(TrainError, match="its graph has 189 nodes, the trained model's 3"):
        widen_state(old, build_model(load_genotype(GENOTYPES / "stereo_small_fine.yaml", overrides=SMALL)))
    assert widen_state(old, new).keys() == new.state_dict().keys()
    # an auxiliary head (its own small network): not one of the layers widening knows
    aux = "  classes: 10\n  aux: {after: 1, weight: 0.4}\n"
    old = build_model(loads_genotype(CLASS.replace("NODES", "4, 8").replace("STEM", "4").replace("SKIP", "conv3x3")
                                     .replace("  classes: 10\n", aux)))
    new = build_model(loads_genotype(CLASS.replace("NODES", "6, 12").replace("STEM", "6").replace("SKIP", "conv3x3")
                                     .replace("  classes: 10\n", aux)))
    with pytest.raises(TrainError, match="widening knows convolutions with BatchNorm and linear layers only"):
        widen_state(old, new)
    # a skip edge from a concatenation whose parts widen, summed with a convolution's channels: no zero
    # padding keeps that sum, so it is refused
    old, new = build_model(_class("4, 8", 4, "skip")), build_model(_class("6, 12", 6, "skip"))
    with pytest.raises(TrainError, match="adds inputs whose channels widen differently"):
        widen_state(old, new)
