"""NIR export: the exported file read back by another framework (snnTorch 1.0.0's NIR import) and stepped
against our torch model, spike for spike; the node types snnTorch cannot import (IF, LI, Delay, Scale,
padded SumPool2d) read by a small NIR reader of the tests' own (nir_reference.py); the parameter mapping;
the command line and its errors for what NIR cannot express."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from helpers import GENOTYPES, SMALL, make_exact, small_genotype
from nir_reference import NIRStepper

from compiler import build_model
from compiler.build import main as build_main
from compiler.interpret import Step
from compiler.nir_export import DT, export_nir, lif_tau, threshold_for

STEPS = 25
BATCH = 2


@pytest.fixture
def spikes_of_torch(monkeypatch):
    """Every neuron layer's output of the torch model's last step, by neuron name."""
    seen: dict[str, torch.Tensor] = {}
    neuron = Step.neuron

    def record(self, name, module, current):
        y = neuron(self, name, module, current)
        seen[name] = y
        return y

    monkeypatch.setattr(Step, "neuron", record)
    return seen


def _model(name: str, **extra):
    torch.manual_seed(0)
    model = build_model(small_genotype(name, **extra)).eval()
    make_exact(model)  # dyadic weights: every sum exact in float32 whatever its order (helpers.make_exact)
    return model


def _images(model, rng) -> torch.Tensor:
    inp = model.genotype.input
    x = np.round(rng.standard_normal((BATCH, inp.in_channels, inp.height, inp.width)) * 8) / 8
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("mixing", ["spike", "membrane"])
def test_snntorch_runs_the_exported_file_with_our_spikes(tmp_path, spikes_of_torch, mixing):
    """SpikeDHS-CLA (genotypes/cifar10.yaml) at 8x8: conv stem, 8 cells on 3 levels (downsampling,
    concatenation), LIF neurons, global average pooling, linear head."""
    import snntorch
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    model = _model("cifar10", mixing=mixing)
    export_nir(model, tmp_path / "m.nir")
    net = import_from_nir(nir.read(tmp_path / "m.nir"))
    for module in net.modules():  # snnTorch 1.0.0 maps NIR Flatten dims (no batch) to torch's (batch first)
        if isinstance(module, torch.nn.Flatten) and module.start_dim >= 0:
            module.start_dim += 1
    leaky = {name: m for name, m in net.named_modules() if isinstance(m, snntorch.Leaky)}
    assert len(leaky) == len(model.plan.neurons)
    theirs: dict[str, torch.Tensor] = {}
    for name, m in leaky.items():
        m.register_forward_hook(lambda _m, _i, out, name=name: theirs.__setitem__(name, out))
    snntorch.utils.reset(net)
    rng = np.random.default_rng(0)
    state = model.initial_state(BATCH)
    fired = dict.fromkeys(model.plan.neurons, 0.0)
    for _ in range(STEPS):
        x = _images(model, rng)
        with torch.no_grad():
            out, state = model({"image": x}, state)
            logits, _ = net(x)
        for name, ours in spikes_of_torch.items():
            key = name.replace(".", "_")  # nirtorch's module names
            assert torch.equal(theirs[key], ours), name
            assert torch.equal(leaky[key].mem, state[f"{name}.v"]), name  # post-reset membrane, bit for bit
            fired[name] += float(ours.sum())
        assert torch.equal(logits, out["logits"])
    assert all(v > 0 for v in fired.values()), [k for k, v in fired.items() if v == 0]


@pytest.mark.parametrize(("name", "extra", "types"), [
    ("snasnet_cifar10_bw", {}, {"Delay", "LIF", "SumPool2d"}),  # delayed (backward) edges, skips
    ("cifar10", {"networks.backbone.layers[0].neuron": {"kind": "if"},
                 "cells.cell.nodes.n2.inputs[0].op": "avgpool3x3",
                 "cells.cell.nodes.n1.inputs[0].neuron": {"kind": "li"}}, {"IF", "LI", "Scale", "SumPool2d"}),
    ("cifar10", {"cells.cell.nodes.n2.inputs[0].op": "skip", "cells.cell.nodes.n2.inputs[1].op": "skip",
                 "cells.cell.nodes.n2.inputs[1].from": "n0"}, {"Scale"}),  # n2 = n0 + n0: an edge can't say twice
], ids=["delays", "if-li-avgpool", "same-input-twice"])
def test_the_file_read_back_steps_like_our_model(tmp_path, spikes_of_torch, name, extra, types):
    """nir.write -> nir.read -> a reader of our own, for the node types snnTorch 1.0.0 cannot import.
    Spikes must be equal; LI membranes and logits within 1e-5 (Scale multiplies by 1/count where torch's
    average pooling divides, and a reader sums a node's inputs in its own order)."""
    model = _model(name, **extra)
    written = export_nir(model, tmp_path / "m.nir")
    graph = nir.read(tmp_path / "m.nir")
    assert types <= {type(n).__name__ for n in graph.nodes.values()}
    assert sorted(graph.nodes) == sorted(written.nodes) and sorted(graph.edges) == sorted(written.edges)
    reader = NIRStepper(graph, dt=float(graph.metadata["dt"]))
    rng = np.random.default_rng(1)
    state = model.initial_state(BATCH)
    for _ in range(STEPS):
        x = _images(model, rng)
        with torch.no_grad():
            out, state = model({"image": x}, state)
            theirs = reader.step(x)
        for layer, ours in spikes_of_torch.items():
            if model.plan.neurons[layer].spiking:
                assert torch.equal(theirs[layer], ours), layer
            else:
                torch.testing.assert_close(theirs[layer], ours, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs["logits"], out["logits"], rtol=1e-5, atol=1e-5)


def test_parameter_mapping_is_exact_in_float32():
    decays = np.concatenate([np.linspace(0.0, 0.999, 2001), [0.2, 0.5, 0.9, 0.99]])
    for d in decays:  # what a reader computes: beta = 1 - dt/tau, in float64, used in float32
        assert np.float32(1.0 - DT / lif_tau(float(d))) == np.float32(d), d
    rng = np.random.default_rng(0)
    for v_th in (0.5, 1.0, 0.3, 0.7):
        thr = np.float32(v_th)
        u = np.concatenate([thr + np.arange(-4, 5, dtype=np.float32) * np.spacing(thr),
                            rng.normal(v_th, 1e-6, 1000).astype(np.float32)])
        assert np.array_equal(u - thr >= 0, u > threshold_for(v_th))  # ours: u >= V_th; NIR: v > v_threshold


def _sets(name: str, **extra) -> list[str]:
    out = []
    for k, v in {**SMALL[name], **extra}.items():
        out += ["--set", f"{k}={v}"]
    return out


def test_command_line_writes_the_weights_it_is_given(tmp_path, monkeypatch, capsys):
    model = _model("cifar10")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    rc = build_main([str(GENOTYPES / "cifar10.yaml"), *_sets("cifar10"), "--weights", "w.pt", "--nir", "m.nir",
                     "--quiet"])
    assert rc == 0 and capsys.readouterr().out.strip() == "wrote m.nir"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nir", "w.pt"]  # no ONNX without -o
    graph = nir.read(tmp_path / "m.nir")
    linear = graph.nodes["head.linear"]
    np.testing.assert_array_equal(linear.weight, model.classifier.weight.detach().numpy())
    assert graph.metadata["dt"] == DT and isinstance(graph.nodes["image"], nir.Input)


@pytest.mark.parametrize(("genotype", "extra", "key", "what"), [
    ("stereo_small", {"input.width": 36}, "networks.feature.layers[3].level", "upsampling 4x6 -> 8x12"),
    ("stereo_small", {}, "networks.feature.layers[2].level", "not by a whole factor"),
    ("stereo_small", {"input.width": 36, "networks.feature.layers[3].level": 1, "networks.feature.layers[4].level": 1},
     "head.cost_volume", "cost volume"),
    ("cifar10", {"neuron.kind": "alif"}, "networks.backbone.layers[0]", "'alif'"),
    ("cifar10", {"neuron.reset": "soft"}, "networks.backbone.layers[0]", "soft reset"),
    ("cifar10", {"networks.backbone.layers[1].neuron": "{kind: relu}"}, "networks.backbone.layers[1] (node n0",
     "'relu'"),
])
def test_what_nir_cannot_express_is_one_line_naming_the_key(tmp_path, capsys, genotype, extra, key, what):
    out = tmp_path / "m.nir"
    rc = build_main([str(GENOTYPES / f"{genotype}.yaml"), *_sets(genotype, **extra), "--nir", str(out), "--quiet",
                     "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{genotype}.yaml: {key}" in err and what in err, err
    assert list(tmp_path.iterdir()) == []  # neither the NIR file nor the ONNX file, no temporary file

