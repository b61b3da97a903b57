"""Every registry entry tested without editing a test: the tests below are parametrised over the
registries (ops, neurons, surrogates, encodings, tasks), so a new entry is covered by them. And adding a
neuron kind or an op kind takes no other file than its own: a test-only neuron kind and a test-only op
kind, registered here alone, build, export to ONNX and step in ONNX Runtime like the torch model."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import make_exact, small_genotype, step_both

from compiler import build_model
from compiler.export import to_onnx
from compiler.genotype import HEAD_PARSERS
from compiler.ir import ENCODINGS, Neuron
from compiler.ir import TASKS as IR_TASKS
from compiler.neurons import NEURON_MODULES, SURROGATE_GRADS, NeuronModule, build_neuron
from compiler.ops import BUILDERS
from compiler.registry import NEURONS, OPS, SURROGATES, NeuronSpec, OpSpec
from compiler.tasks import TASKS
from runtime.core.names import data_output
from training.searchers import SEARCHERS

SMALL_OF_TASK = {"stereo": "stereo_small", "classification": "cifar10"}


def _session(proto) -> ort.InferenceSession:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_builds_to_its_shape_rule_and_runs_on_a_cell_edge(op):
    spec = OPS[op]
    for dims in (2, 3):
        channels = 6 if spec.kind == "conv" else 4
        module = BUILDERS[op](4, channels, dims).eval()
        x = torch.zeros(1, 4, *([5] * dims))
        assert tuple(module(x).shape[1:]) == spec.out_shape((4, *([5] * dims)), channels)
    g = small_genotype("cifar10", **{"cells.cell.nodes.n2.inputs[0].op": op})
    model = build_model(g).eval()
    assert any(n.kind == "op" and n.attrs["op"] == op for n in model.plan.graph)
    with torch.no_grad():
        out, _ = model({"image": torch.randn(2, 3, 8, 8)}, model.initial_state(2))
    assert out["logits"].shape == (2, 10) and bool(torch.isfinite(out["logits"]).all())


@pytest.mark.parametrize("kind", sorted(NEURONS))
def test_every_neuron_kind_is_defined_once_and_steps_as_its_entry_says(kind):
    entry = NEURONS[kind]
    module = build_neuron(Neuron(kind=kind))
    assert isinstance(module, NEURON_MODULES[kind]) and module.state_names == entry.state
    assert module.spiking == entry.spiking
    assert entry.nir in (None, "lif", "li")
    assert set(entry.searchers) <= set(SEARCHERS)
    assert set(entry.params) <= {f.name for f in dataclasses.fields(Neuron)}
    current = torch.randn(2, 3, 4)
    y, new = module(current, {s: torch.rand(2, 3, 4) for s in entry.state})
    assert tuple(new) == entry.state and all(t.shape == current.shape for t in new.values())
    if entry.spiking:
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", sorted(NEURONS))
def test_every_neuron_kind_compiles_and_exports(kind):
    g = small_genotype("cifar10", **{"neuron.kind": kind})
    model = build_model(g)
    assert {n.neuron.kind for n in model.plan.neurons.values()} == {kind}
    _torch_matches_onnx(model)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_searcher_searches_the_kinds_the_registry_gives_it(name):
    kinds = SEARCHERS[name].search_kinds()
    assert kinds and all(name in NEURONS[k].searchers for k in kinds)


@pytest.mark.parametrize("kind", sorted(SURROGATES))
def test_every_surrogate_has_a_gradient(kind):
    v = torch.linspace(-1, 1, 41)
    grad = SURROGATE_GRADS[kind](v, 3.0)
    assert bool(torch.isfinite(grad).all()) and float(grad.min()) >= 0 and float(grad[20]) > 0


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_gives_a_model_of_its_channels(encoding):
    stem = "cifar10" if encoding == "image" else "stereo_small"
    model = build_model(small_genotype(stem, **{"input.encoding": encoding}))
    first = next(n for n in model.plan.graph if n.kind == "input")
    assert first.shape[0] == model.genotype.input.in_channels


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_lowers_to_its_contract_output(task):
    assert set(TASKS) == set(IR_TASKS) == set(HEAD_PARSERS)
    model = build_model(small_genotype(SMALL_OF_TASK[task]))
    assert model.genotype.task == task and data_output(task) in model.plan.outputs
    assert model.output_name in model.plan.outputs
    p = model.plan  # the graph's nodes carry the synaptic work the ONNX metadata lists
    assert {n.name: n.fan_out for n in p.graph if n.kind == "neuron" and n.name in p.fan_out} == p.fan_out
    assert sum(n.dense_macs for n in p.graph) == sum(p.dense_macs.values())


# ---------------------------------------------------------------------- a new neuron kind, a new op kind
class _Clip(NeuronModule):
    """Test-only neuron: a leaky integrator whose output is clipped to [0, 1]."""

    def fire(self, u, state):
        return torch.clamp(u, 0.0, 1.0)

    def reset(self, u, y, state):
        return {"v": u}


class _Halve(torch.nn.Module):
    def forward(self, x):
        return 0.5 * x


@pytest.fixture
def test_kinds():
    NEURONS.register("test_clip", NeuronSpec("test_clip", False, ("v",), "test only", ("tau",)))
    NEURON_MODULES.register("test_clip", _Clip)
    OPS.register("test_halve", OpSpec("test_halve", "test_scale", doc="test only: x / 2"))
    BUILDERS.register("test_halve", lambda in_channels, out_channels, dims, stride=1: _Halve())
    try:
        yield
    finally:
        for registry, name in ((NEURONS, "test_clip"), (NEURON_MODULES, "test_clip"), (OPS, "test_halve"),
                               (BUILDERS, "test_halve")):
            registry.pop(name)


def test_a_new_neuron_kind_and_op_kind_need_no_other_file(test_kinds):
    g = small_genotype("cifar10", **{"neuron.kind": "test_clip", "cells.cell.nodes.n2.inputs[0].op": "test_halve"})
    model = build_model(g)
    kinds = {(n.kind, n.attrs.get("op"), getattr(n.attrs.get("neuron"), "kind", None)) for n in model.plan.graph}
    assert ("op", "test_halve", None) in kinds and ("neuron", None, "test_clip") in kinds
    assert all(name.endswith(".v") for name, _ in model.plan.states)
    _torch_matches_onnx(model)


def _torch_matches_onnx(model, steps: int = 4) -> None:
    make_exact(model)
    model.eval()
    sess = _session(to_onnx(model))
    for out, state, res in step_both(model, sess, steps):
        _close(res[model.output_name], out[model.output_name].numpy())
        for name, t in state.items():
            _close(res[f"state_out.{name}"], t.numpy())
        for name, t in out["spikes"].items():
            np.testing.assert_array_equal(res[f"spikes.{name}"], t.numpy())


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float32 summation order, relative to the tensor's scale (non-spiking layers grow)."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
