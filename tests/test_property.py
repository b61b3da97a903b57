"""Property tests: random valid cells (forward and delayed edges, both mixings, every neuron kind)
validate, compile, export, and ONNX Runtime reproduces torch step for step."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from helpers import make_exact, step_both
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import build_model, export_onnx, parse_genotype

NODE_OPS = ["conv1x1", "conv3x3", "skip", "avgpool3x3"]
INPUT_OPS = ["conv1x1", "conv3x3"]


@st.composite
def genotypes(draw):
    n_nodes = draw(st.integers(1, 4))
    names = [f"n{i}" for i in range(n_nodes)]
    nodes = {}
    for i, name in enumerate(names):
        sources = ["c_prev", "c_prev_prev", *names[:i]]
        k = draw(st.integers(1, 3))
        edges = []
        for _ in range(k):
            src = draw(st.sampled_from(sources))
            ops = NODE_OPS if src.startswith("n") else INPUT_OPS
            edges.append({"from": src, "op": draw(st.sampled_from(ops)), "b": draw(st.sampled_from([2, 3, 5]))})
        if i < n_nodes - 1 and draw(st.booleans()):  # a backward connection from a later node
            edges.append({"from": draw(st.sampled_from(names[i + 1:])), "op": "conv1x1", "delay": 1})
        nodes[name] = {"inputs": edges}
    mixing = draw(st.sampled_from(["membrane", "spike"]))
    if mixing == "membrane":
        for node in nodes.values():
            for e in node["inputs"]:
                e.pop("b", None)
    kind = draw(st.sampled_from(["lif", "if", "alif"]))
    return {
        "schema": 1, "name": "random", "task": "classification",
        "input": {"height": 8, "width": 8, "encoding": "image", "channels": 2},
        "neuron": {"kind": kind, "tau": 0.25, "threshold": 0.5, "surrogate": {"kind": "triangle", "b": 1}},
        "mixing": mixing,
        "cells": {"c": {"nodes": nodes}},
        "networks": {"net": {"rates": [1, 2], "node_channels": [4, 4], "layers": [
            {"conv": "conv3x3", "channels": 4}, {"cell": "c", "level": 0}, {"cell": "c", "level": 1}]}},
        "head": {"backbone": "net", "classes": 3},
    }


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=genotypes(), seed=st.integers(0, 1000))
def test_random_cells_compile_export_and_match(tmp_path_factory, data, seed):
    g = parse_genotype(data)
    model = build_model(g).eval()
    make_exact(model, seed)
    path = tmp_path_factory.mktemp("prop") / "m.onnx"
    export_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for out, state, res in step_both(model, session, 12, seed=seed):
        for layer, count in out["spikes"].items():
            np.testing.assert_array_equal(res[f"spikes.{layer}"], count.numpy(), err_msg=layer)
        np.testing.assert_allclose(res["logits"], out["logits"].numpy(), atol=1e-4)
        for key, value in state.items():
            np.testing.assert_allclose(res[f"state_out.{key}"], value.numpy(), atol=1e-4)
    assert parse_genotype(g.to_dict()) == g
    assert torch.isfinite(out["logits"]).all()


VALUES = [None, 0, -1, 1, 2, 3.5, "x", "c_prev", "n0", "skip", "conv3x3", [], {}, [1], {"a": 1}, True,
          10**9, "lif", "li", "relu", "spike"]


def _paths(d, p=()):
    yield p
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, (*p, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, (*p, i))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(name=st.sampled_from(["stereo", "snasnet_cifar10_bw", "cifar10"]), data=st.data())
def test_mutated_genotypes_load_or_fail_with_one_located_error(name, data):
    """Any edit of a valid file either validates or raises GenotypeError (never another exception)."""
    import copy

    import yaml
    from helpers import GENOTYPES

    from compiler import GenotypeError

    base = yaml.safe_load((GENOTYPES / f"{name}.yaml").read_text())
    d = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(d) if p]
        path = data.draw(st.sampled_from(paths))
        node = d
        for key in path[:-1]:
            node = node[key]
        if data.draw(st.booleans()) and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(VALUES)))  # never share a value
    try:
        parse_genotype(d, file="mutated.yaml")
    except GenotypeError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("mutated.yaml")
