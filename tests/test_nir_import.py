"""NIR import (compiler.nir_import): graphs written by snnTorch 1.0.0 (feed-forward with Leaky, Synaptic
(CubaLIF), Conv2d, AvgPool2d and Flatten; recurrent with RLeaky) run in ONNX Runtime with the same spikes as
snnTorch's own simulation over 60 steps; our NIR export read back gives an ONNX graph with the genotype's
outputs; what cannot be expressed is one located error."""

from __future__ import annotations

import json

import nir
import numpy as np
import onnx
import pytest
import torch
from helpers import ort_session, small_genotype

from compiler import build_model
from compiler.build import main as build_main
from compiler.export import save_onnx, to_onnx
from compiler.nir_export import export_nir
from compiler.nir_import import NIRImportError, NIRModel, import_plan, load_nir
from runtime.core import names
from runtime.session import SNNSession

snn = pytest.importorskip("snntorch")
from snntorch import utils as snn_utils  # noqa: E402
from snntorch.export_nir import export_to_nir  # noqa: E402

STEPS = 60


def _run(proto: onnx.ModelProto, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of the one-step graph over ``frames`` (each [batch, C, H, W]), stacked over steps."""
    sess = ort_session(proto)
    outs = [o.name for o in sess.get_outputs()]
    batch = frames[0].shape[0]
    state = {i.name: np.zeros([batch, *i.shape[1:]], np.float32) for i in sess.get_inputs()
             if i.name.startswith(names.STATE_IN)}
    data = next(i.name for i in sess.get_inputs() if not i.name.startswith(names.STATE_IN))
    seen: dict[str, list] = {o: [] for o in outs}
    for x in frames:
        res = dict(zip(outs, sess.run(None, {data: x, **state}), strict=True))
        state = {k: res[names.state_output(k[len(names.STATE_IN):])] for k in state}
        for o in outs:
            seen[o].append(res[o])
    return {o: np.stack(v) for o, v in seen.items()}


def _leaky(shape, beta, **kw):
    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True,
                     reset_mechanism="zero", **kw)


def _snntorch_steps(net, xs: torch.Tensor) -> np.ndarray:
    """snnTorch's own simulation, one sample at a time (its NIR export is unbatched): [steps, batch, ...]."""
    out = []
    with torch.no_grad():
        for b in range(xs.shape[1]):
            snn_utils.reset(net)
            out.append(torch.stack([net(xs[t, b]).clone() for t in range(xs.shape[0])]))
    return torch.stack(out, 1).numpy()


# reset_delay=False on Synaptic and RLeaky: the neuron is set to zero at the step it fires (NIR's reset);
# their default delays the reset one step and, in the zero mode, then also drops that step's input (Leaky
# keeps it, so its default matches NIR).
def _feed_forward_conv():
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), _leaky((4, 6, 6), 0.8), torch.nn.AvgPool2d(2),
        torch.nn.Flatten(start_dim=0), torch.nn.Linear(36, 5),
        snn.Synaptic(alpha=torch.full((5,), 0.7), beta=torch.full((5,), 0.85), threshold=torch.ones(5),
                     init_hidden=True, reset_mechanism="zero", reset_delay=False)), (2, 6, 6)


def _recurrent():
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), _leaky((16,), 0.9), torch.nn.Linear(16, 4),
        snn.RLeaky(beta=torch.full((4,), 0.8), threshold=torch.ones(4), linear_features=4, init_hidden=True,
                   reset_mechanism="zero", reset_delay=False)), (8,)


@pytest.mark.parametrize("make", [_feed_forward_conv, _recurrent], ids=["feed-forward", "recurrent"])
def test_snntorch_graph_streams_with_snntorchs_spikes(tmp_path, make):
    torch.manual_seed(0)
    net, shape = make()
    path = tmp_path / "net.nir"
    nir.write(path, export_to_nir(net, torch.zeros(shape)))
    xs = torch.rand(STEPS, 3, *shape) * 1.5
    want = _snntorch_steps(net, xs)
    plan = load_nir(path)
    save_onnx(to_onnx(NIRModel(plan)), tmp_path / "net.onnx")
    session = SNNSession(tmp_path / "net.onnx", device="cpu", threads=1, batch=3)  # the deployment runtime
    assert session.spec.task == "classification" and session.spec.data_inputs == ("image",)
    c, h, w = session.spec.data_input_shape[1:]
    steps = [session.step({"image": x.numpy().reshape(3, c, h, w)}) for x in xs]
    assert want.sum() > 10  # the layers fire
    np.testing.assert_array_equal(np.stack([s.output for s in steps]), want.reshape(STEPS, 3, -1))
    last = plan.spiking_layers[-1].name
    np.testing.assert_array_equal([s.spikes[last] for s in steps], want.reshape(STEPS, -1).sum(-1))
    if make is _recurrent:
        assert any(n.kind == "delay_read" for n in plan.graph)


@pytest.mark.parametrize("name", ["cifar10", "snasnet_cifar10_bw"])
def test_our_export_read_back_gives_the_same_onnx_outputs(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(small_genotype(name)).eval()
    export_nir(model, tmp_path / "m.nir")
    imported = to_onnx(NIRModel(load_nir(tmp_path / "m.nir")))
    direct = to_onnx(model)
    inp = model.genotype.input
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((2, inp.in_channels, inp.height, inp.width)).astype(np.float32)
              for _ in range(STEPS)]
    a, b = _run(direct, frames), _run(imported, frames)
    spiking = [n.name for n in model.plan.spiking_layers]
    assert sum(a[names.spikes_output(n)].sum() for n in spiking) > 0
    for n in spiking:  # the imported layers keep the exported node names (prefixed nir.)
        np.testing.assert_array_equal(b[names.spikes_output("nir." + n)], a[names.spikes_output(n)], err_msg=n)
    if any(n.kind == "group_mean" for n in model.plan.graph):
        # SNASNet's vectorize head: its mean over each class's group is a NIR Linear of weights 1/groups,
        # a matrix product where the ONNX graph takes a mean: the same sum in another float order
        np.testing.assert_allclose(b["logits"], a["logits"], rtol=1e-6, atol=1e-8)
    else:
        np.testing.assert_array_equal(b["logits"], a["logits"])


def test_a_node_that_cannot_be_expressed_is_one_located_error(tmp_path, capsys):
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([3])}),
               "fc": nir.Linear(weight=np.ones((3, 3), np.float32)),
               "late": nir.Delay(delay=np.full(3, 1.5e-4)),
               "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "fc"), ("fc", "late"), ("late", "output")])
    path = tmp_path / "bad.nir"
    nir.write(path, graph)
    assert build_main([str(path), "-o", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nodes.late" in err[0] and "whole number" in err[0]
    assert not (tmp_path / "bad.onnx").exists()


def test_an_unknown_node_type_names_the_node():
    class Mystery(nir.NIRNode):
        def __init__(self):
            self.input_type = {"input": np.array([2])}
            self.output_type = {"output": np.array([2])}
            self.metadata = {}

    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}), "odd": Mystery(),
                                "output": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("input", "odd"), ("odd", "output")], type_check=False)
    with pytest.raises(NIRImportError, match=r"nodes\.odd: NIR node type Mystery has no form"):
        import_plan(graph)


def test_command_line_writes_a_contract_graph_and_a_triton_repository(tmp_path, capsys):
    torch.manual_seed(0)
    net, shape = _recurrent()
    path = tmp_path / "rec.nir"
    nir.write(path, export_to_nir(net, torch.zeros(shape)))
    assert build_main([str(path), "-o", str(tmp_path / "rec.onnx"), "--triton", str(tmp_path / "triton")]) == 0
    out = capsys.readouterr().out
    assert "NIR graph" in out and "wrote" in out
    proto = onnx.load(tmp_path / "rec.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[names.META_TASK] == "classification"
    assert (tmp_path / "triton" / "rec" / "config.pbtxt").exists()
    assert build_main([str(path), "--set", "input.height=3"]) == 2
    assert "--set" in capsys.readouterr().err


def test_int8_of_an_imported_graph(tmp_path):
    torch.manual_seed(0)
    net, shape = _feed_forward_conv()
    path = tmp_path / "conv.nir"
    nir.write(path, export_to_nir(net, torch.zeros(shape)))
    assert build_main([str(path), "--int8", "--calib-windows", "4", "-o", str(tmp_path / "q.onnx"), "--quiet"]) == 0
    meta = {p.key: p.value for p in onnx.load(tmp_path / "q.onnx").metadata_props}
    assert "uniform [0, 1) tensors" in meta["snn.quantization"]
    session = SNNSession(tmp_path / "q.onnx", device="cpu", threads=1)
    assert session.step({"image": np.zeros((2, 6, 6), np.float32)}).output.shape == (5,)


def test_runtime_stream_streams_tensors_through_an_imported_graph(tmp_path, capsys):
    from runtime.stream.cli import main as stream_main

    torch.manual_seed(0)
    net, shape = _recurrent()
    nir.write(tmp_path / "rec.nir", export_to_nir(net, torch.zeros(shape)))
    assert build_main([str(tmp_path / "rec.nir"), "-o", str(tmp_path / "rec.onnx"), "--quiet"]) == 0
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.random((STEPS, 8), dtype=np.float32) * 1.5)
    np.save(tmp_path / "y.npy", rng.integers(0, 4, STEPS))
    argv = ["--onnx", str(tmp_path / "rec.onnx"), "--tensors", str(tmp_path / "x.npy"), "--threads", "1"]
    assert stream_main([*argv, "--labels", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r.json")]) == 0
    assert "steps/s" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["steps"] == STEPS and set(report["firing_rate"]) == {"nir.1", "nir.3.lif"}
    assert 0 <= report["classification"]["accuracy"] <= 1
    assert stream_main([*argv[:2], "--tensors", str(tmp_path / "y.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "8 values per step" in err
