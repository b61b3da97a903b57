"""Golden tests: torch (eval, BN not folded) against ONNX Runtime running the exported, BN-folded
graph, over 50 steps with carried state, for every shipped genotype at reduced size."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import GENOTYPES, make_exact, small_genotype, step_both

from compiler import build_model, export_onnx

SHIPPED = sorted(p.stem for p in GENOTYPES.glob("*.yaml"))
STEPS = 50


def _dims(value) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value.type.tensor_type.shape.dim]


def export_and_load(model, path, fold=True):
    export_onnx(model, path, fold=fold)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def near_tie(cost: torch.Tensor, eps: float = 1e-3) -> np.ndarray:
    """Pixels whose two smallest matching costs differ by less than eps (argmin is ill-posed there)."""
    two = torch.topk(cost, 2, dim=1, largest=False).values
    gap = (two[:, 1] - two[:, 0]).numpy()
    return (gap > 0) & (gap < eps)


@pytest.mark.parametrize("name", SHIPPED)
def test_torch_and_onnxruntime_agree_over_many_steps(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(small_genotype(name)).eval()
    make_exact(model)
    session = export_and_load(model, tmp_path / "m.onnx")
    total_spikes = 0.0
    nonzero_state = False
    excluded = 0
    for out, state, res in step_both(model, session, STEPS):
        for layer, count in out["spikes"].items():
            np.testing.assert_array_equal(res[f"spikes.{layer}"], count.numpy(), err_msg=layer)
            total_spikes += float(count.sum())
        for key, value in state.items():
            np.testing.assert_allclose(res[f"state_out.{key}"], value.numpy(), atol=1e-4, err_msg=key)
            nonzero_state |= bool(value.abs().sum() > 0)
        if model.genotype.task == "stereo":
            tie = near_tie(out["cost"])
            excluded += int(tie.sum())
            diff = np.abs(res["disparity"] - out["disparity"].numpy())
            assert np.all((diff <= 1e-4) | tie), f"max diff {diff[~tie].max()}"
        else:
            np.testing.assert_allclose(res["logits"], out["logits"].numpy(), atol=1e-4)
    assert nonzero_state and total_spikes > 0
    if model.genotype.task == "stereo":
        assert excluded < 0.01 * STEPS * 2 * 24 * 32  # near-ties are rare, not the bulk of the test


def test_stereo_soft_argmin_agrees_everywhere(tmp_path):
    model = build_model(small_genotype("stereo", **{"head.estimator.kind": "soft_argmin"})).eval()
    make_exact(model, seed=3)
    session = export_and_load(model, tmp_path / "m.onnx", fold=False)
    for out, _, res in step_both(model, session, 20, seed=3):
        np.testing.assert_allclose(res["disparity"], out["disparity"].numpy(), atol=1e-4)


@pytest.mark.parametrize("name", SHIPPED)
def test_contract(name, tmp_path):
    model = build_model(small_genotype(name)).eval()
    export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    stereo = model.genotype.task == "stereo"
    data_in = ["left", "right"] if stereo else ["image"]
    data_out = "disparity" if stereo else "logits"
    states = [n for n, _ in model.state_shapes()]
    assert inputs == data_in + [f"state_in.{s}" for s in states]
    spiking = [n.name for n in model.plan.spiking_layers]
    assert outputs == [data_out] + [f"state_out.{s}" for s in states] + [f"spikes.{s}" for s in spiking]
    for value in list(proto.graph.input) + list(proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # exact declarations: every state_out.X has exactly state_in.X's shape, batch symbolic, the rest fixed
    declared = {v.name: _dims(v) for v in list(proto.graph.input) + list(proto.graph.output)}
    for s, shape in model.state_shapes():
        assert declared[f"state_out.{s}"] == declared[f"state_in.{s}"] == ["batch", *shape], s
    g = model.genotype
    assert declared[data_out] == (["batch", g.input.height, g.input.width] if stereo else ["batch", g.head.classes])
    assert all(declared[f"spikes.{s}"] == ["batch"] for s in spiking)
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["snn.schema"] == "1" and meta["snn.task"] == model.genotype.task
    from compiler import loads_genotype
    assert loads_genotype(meta["snn.genotype"]) == model.genotype
    layers = json.loads(meta["snn.layers"])
    assert list(layers) == spiking
    assert all(v["neurons"] > 0 and v["fan_out"] >= 0 for v in layers.values())
    assert json.loads(meta["snn.dense_macs"])
    enc = json.loads(meta["snn.encoding"])
    assert (enc["height"], enc["width"]) == (model.genotype.input.height, model.genotype.input.width)
    if stereo:
        assert float(meta["snn.max_disparity"]) == model.genotype.head.max_disparity
        assert enc["kind"] == "sbt" and enc["bins"] == 5 and enc["window_ms"] == 50


def test_symbolic_batch_runs_other_batch_sizes(tmp_path):
    model = build_model(small_genotype("snasnet_cifar10_bw")).eval()
    session = export_and_load(model, tmp_path / "m.onnx")
    for batch in (1, 3):
        feeds = {"image": np.zeros((batch, 3, 16, 16), np.float32)}
        feeds.update({f"state_in.{n}": np.zeros((batch, *s), np.float32) for n, s in model.state_shapes()})
        assert session.run(["logits"], feeds)[0].shape == (batch, 10)


def test_export_refuses_nothing_and_leaves_model_mode(tmp_path):
    model = build_model(small_genotype("cifar10")).train()
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training  # exported in eval mode, restored afterwards
