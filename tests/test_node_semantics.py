"""Node semantics (issue 19): under ``mixing: spike`` a cell node's sum of spikes passes its spiking function
(SpikeDHS eq. 3, g(b = 3)), so every convolution inside a shipped spiking SpikeDHS network reads 0/1 spikes
(except those that read the network input or a non-spiking layer), with trained and with random weights;
``mixing: spike_sum`` keeps the plain sum; the schema fields are validated at their lines."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers import GENOTYPES, ROOT, SMALL, small_genotype
from kept_cases import named_weights

from compiler import build_model, load_genotype
from compiler.build import load_weights
from compiler.errors import GenotypeError
from compiler.interpret import submodule
from compiler.ir import NODE_NEURON_DEFAULT, Neuron, resolve_neuron
from compiler.registry import NEURONS

OLD_WEIGHTS = ROOT / "tests/kept/stereo_small_spike_sum.pt"  # the demo model as trained under spike_sum (kept)

SPIKEDHS = ["stereo", "stereo_small", "cifar10"]  # the shipped spiking SpikeDHS genotypes
PASS_THROUGH = ("resample", "concat", "cost_volume")  # keep 0/1 values 0/1


def _must_be_binary(nodes: dict, name: str) -> bool:
    """Whether value ``name`` should hold spikes: it comes (through resampling, concatenation, the cost
    volume) from spiking neurons and cell-node sums, not from the network input or a non-spiking layer."""
    node = nodes[name]
    if node.kind == "neuron":
        return NEURONS[node.attrs["neuron"].kind].spiking
    if node.kind == "sum":
        return True  # a node's sum inside a spiking cell: what reaches a conv must be spikes
    if node.kind in PASS_THROUGH:
        return all(_must_be_binary(nodes, i) for i in node.inputs)
    return False


def _conv_inputs(model, steps: int = 6, seed: int = 0) -> dict[str, set[float]]:
    """The distinct values every binary-fed conv op of ``model`` reads over ``steps`` random steps."""
    nodes = {n.name: n for n in model.plan.graph}
    seen: dict[str, set[float]] = {}
    hooks = []
    for node in model.plan.graph:
        if node.kind == "op" and node.attrs["kind"] == "conv" and _must_be_binary(nodes, node.inputs[0]):
            def record(module, args, key=node.name):
                seen.setdefault(key, set()).update(torch.unique(args[0]).tolist())
            hooks.append(submodule(model, node.module).register_forward_pre_hook(record))
    gen = torch.Generator().manual_seed(seed)
    g = model.genotype
    shape = (1, g.input.in_channels, g.input.height, g.input.width)
    state = model.initial_state(1)
    with torch.no_grad():
        for _ in range(steps):
            inputs = {k: torch.rand(shape, generator=gen) * 2 for k in model.input_names}
            _, state = model(inputs, state)
    for h in hooks:
        h.remove()
    assert seen, "no conv reads spikes"
    return seen


def _not_binary(seen: dict[str, set[float]]) -> dict[str, list[float]]:
    return {k: sorted(v - {0.0, 1.0})[:3] for k, v in seen.items() if not v <= {0.0, 1.0}}


@pytest.mark.parametrize("stem", SPIKEDHS)
def test_every_conv_inside_reads_binary_spikes_random_weights(stem):
    model = build_model(small_genotype(stem))
    named_weights(model)  # large random weights: many neurons fire, so sums of two spikes would show
    assert _not_binary(_conv_inputs(model.eval())) == {}


@pytest.mark.parametrize("stem", ["stereo_small", "stereo_small_fine", "stereo_fine_c12"])
def test_every_conv_inside_reads_binary_spikes_trained_weights(stem):
    model = build_model(small_genotype(stem))
    load_weights(model, str(ROOT / f"models/{stem}.pt"))  # a shipped model, trained under these nodes
    assert _not_binary(_conv_inputs(model.eval(), steps=10)) == {}


def test_spike_sum_keeps_the_plain_sum_of_spikes():
    """The old semantics, explicit: a node passes counts (the check above would fail with it)."""
    model = build_model(small_genotype("stereo_small", mixing="spike_sum"))
    load_weights(model, str(OLD_WEIGHTS))
    assert any(2.0 in v for v in _conv_inputs(model.eval(), steps=10).values())


def test_node_neuron_defaults_to_the_papers_sign_function():
    g = small_genotype("stereo_small", **{"neuron.surrogate.kind": "superspike", "neuron.surrogate.b": 10})
    p = g.__dict__["_plan"]
    node = p.neurons["feature.left.cell0.n0"]
    assert node.neuron == resolve_neuron(g.neuron, NODE_NEURON_DEFAULT)
    assert (node.neuron.surrogate.kind, node.neuron.surrogate.b) == ("dspike", 3.0)
    assert p.neurons["feature.left.cell0.n0.0"].neuron.surrogate.kind == "superspike"  # the edges keep theirs
    g = small_genotype("stereo_small", **{"node_neuron": {"kind": "if", "surrogate": {"b": 4}}})
    node = g.__dict__["_plan"].neurons["feature.left.cell0.n2"].neuron
    assert (node.kind, node.surrogate.b, node.tau) == ("if", 4.0, Neuron().tau)


def test_node_neurons_count_as_spiking_layers_with_fan_out():
    new, old = small_genotype("cifar10"), small_genotype("cifar10", mixing="spike_sum")
    pn, po = new.__dict__["_plan"], old.__dict__["_plan"]
    nodes = [n for n in pn.spiking_layers if n.site.node is not None and n.site.edge is None]
    assert len(nodes) == len(pn.spiking_layers) - len(po.spiking_layers) == 8 * 3
    assert all(pn.fan_out[n.name] > 0 for n in nodes if not n.name.startswith("backbone.cell7."))  # not pooled
    edges = [n.name for n in pn.spiking_layers if n.site.edge is not None]
    assert all(pn.fan_out[e] == 1.0 for e in edges)  # one synapse of weight 1 each: its node's neuron
    assert pn.params == po.params


def test_old_checkpoint_loads_into_the_new_semantics_with_the_genotype_values():
    model = build_model(small_genotype("stereo_small"))
    load_weights(model, str(OLD_WEIGHTS))
    node = model.nets["feature"].layers[2].neurons["n0"]
    assert float(node.b) == 3.0 and float(node.tau) == pytest.approx(0.2)


def test_genotype_round_trip_keeps_node_neuron():
    from compiler.genotype import parse_genotype

    g = small_genotype("cifar10", **{"node_neuron.surrogate.b": 5})
    assert g.to_dict()["node_neuron"] == {"surrogate": {"b": 5.0}}
    assert parse_genotype(g.to_dict()) == g


@pytest.mark.parametrize(("sets", "words"), [
    ({"mixing": "membrane", "node_neuron": {"tau": 0.5}}, ["node_neuron", "only mixing 'spike'"]),
    ({"mixing": "spike_sum", "node_neuron": {"tau": 0.5}}, ["node_neuron", "mixes by 'spike_sum'"]),
    ({"node_neuron": {"tau": 2.0}}, ["node_neuron.tau"]),
    ({"node_neuron": {"kind": "lfi"}}, ["node_neuron.kind", "lif"]),
    ({"node_neuron": {"surrogate": {"b": 0}}}, ["node_neuron.surrogate.b"]),
    ({"node_neuron": {"bogus": 1}}, ["node_neuron", "bogus"]),
    ({"mixing": "spikes"}, ["mixing", "spike_sum"]),
])
def test_schema_errors_are_located(sets, words):
    with pytest.raises(GenotypeError) as err:
        load_genotype(GENOTYPES / "cifar10.yaml", overrides={**SMALL["cifar10"], **sets})
    assert all(w in str(err.value) for w in words), str(err.value)


def test_node_neuron_is_located_at_its_line(tmp_path):
    text = re.sub(r"(?m)^mixing: spike\b.*$", "mixing: membrane\nnode_neuron: {}",
                  (GENOTYPES / "cifar10.yaml").read_text(), count=1)
    path = tmp_path / "g.yaml"
    path.write_text(text)
    line = text.splitlines().index("node_neuron: {}") + 1
    with pytest.raises(GenotypeError) as err:
        load_genotype(path)
    assert f":{line}" in str(err.value)


@pytest.mark.parametrize("stem", SPIKEDHS)
def test_onnx_parity_of_the_node_neurons_over_many_steps(stem, tmp_path):
    """torch vs ONNX Runtime over 30 steps: each node's spiking function, exported (folded), spikes alike."""
    import onnxruntime as ort
    from helpers import make_exact, step_both

    from compiler.export import export_onnx

    model = build_model(small_genotype(stem)).eval()
    make_exact(model)
    export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    nodes = [n.name for n in model.plan.spiking_layers if n.site.node is not None and n.site.edge is None]
    fired = 0.0
    for out, _, res in step_both(model, session, 30):
        for name in nodes:
            np.testing.assert_array_equal(res[f"spikes.{name}"], out["spikes"][name].numpy(), err_msg=name)
            fired += float(out["spikes"][name].sum())
    assert nodes and fired > 0


@pytest.mark.parametrize("stem", ["stereo_small", "stereo_small_fine", "stereo_fine_c12"])
def test_shipped_models_were_trained_on_their_genotype(stem):
    """models/X.pt (and its ReLU twin) store the network of genotypes/X.yaml: what `make demo` compiles."""
    import torch

    from compiler import load_genotype, loads_genotype

    shipped = load_genotype(ROOT / "genotypes" / f"{stem}.yaml")
    for name, over in ((stem, {}), (f"{stem}_relu", {"neuron.kind": "relu"})):
        ck = torch.load(ROOT / "models" / f"{name}.pt", weights_only=False, map_location="cpu")
        stored = loads_genotype(ck["genotype"], file=name)
        want = load_genotype(ROOT / "genotypes" / f"{stem}.yaml", overrides=over) if over else shipped
        assert stored.to_dict()["networks"] == want.to_dict()["networks"], name
        assert stored.to_dict()["head"] == want.to_dict()["head"] and stored.neuron == want.neuron, name
