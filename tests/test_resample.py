"""Nearest resampling as Slice / Resize / Gather (compiler.resample): bit for bit the Gathers it replaces,
for single chains (float with NaN and infinities, uint8), for ONNX Runtime's Resize at every size pair
the pass would use it for, and for the demo stereo graph stepped 30 times with its state carried."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import ROOT, assert_graphs_step_alike, ort_session
from onnx import TensorProto, helper, numpy_helper

from compiler import build_model, load_genotype
from compiler.build import load_weights
from compiler.export import to_onnx
from compiler.resample import nearest_gathers_as_slices_and_resizes, resize_exact, resize_scale
from compiler.rewrite import nearest_resize_to_gather, nearest_source_indices


def _resize_graph(src, dst, elem=TensorProto.FLOAT):
    """The exporter's nearest Resize from ``src`` to ``dst``, as ``nearest_resize_to_gather`` leaves it."""
    sizes = numpy_helper.from_array(np.array([2, *dst[1:]], np.int64), "sizes")  # the batch fed: 2
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, src)],
                          [helper.make_tensor_value_info("y", elem, dst)], [sizes])
    return nearest_resize_to_gather(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                                      ir_version=8))[0]


@pytest.mark.parametrize("src, dst, ops", [
    (("batch", 3, 17, 44, 58), ("batch", 3, 33, 87, 116), {"Reshape", "Resize", "Gather"}),  # the trellis, up
    (("batch", 2, 33, 87, 116), ("batch", 2, 17, 44, 58), {"Gather", "Reshape", "Resize"}),  # down
    (("batch", 4, 16, 22), ("batch", 4, 32, 43), {"Resize"}),                  # 2x and 22 -> 43
    (("batch", 2, 260, 346), ("batch", 2, 44, 58), {"Gather"}),                # no exact Resize: kept
    (("batch", 2, 33, 87, 116), ("batch", 2, 9, 22, 29), {"Gather", "Reshape", "Resize"}),  # width 4x down
    (("batch", 3, 12, 10), ("batch", 3, 6, 40), {"Slice", "Resize"}),          # 4x up, 2x down
    (("batch", 2, 10, 12), ("batch", 2, 10, 24), {"Resize"}),                  # width 2x up
    (("batch", 2, 10, 24), ("batch", 2, 10, 12), {"Resize"}),                  # width 2x down
    (("batch", 2, 9, 24), ("batch", 2, 9, 8), {"Slice"}),                      # width 3x down: 1/3 is no float
    (("batch", 2, 8, 12), ("batch", 2, 4, 6), {"Slice", "Resize"}),            # the height's rows sliced
    (("batch", 2, 7, 12), ("batch", 2, 15, 24), {"Resize"}),                   # height > 2x: one Resize as before
])
def test_chains_give_the_gathers_bits(src, dst, ops):
    before = _resize_graph(src, dst)
    after, n = nearest_gathers_as_slices_and_resizes(before)
    assert {nd.op_type for nd in after.graph.node} == ops
    assert n == (0 if ops == {"Gather"} else 1)
    onnx.checker.check_model(after, full_check=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *src[1:])).astype(np.float32)
    x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, -0.0]
    x.reshape(-1)[rng.integers(0, x.size, 40)] = np.nan
    got, want = ort_session(after).run(None, {"x": x})[0], ort_session(before).run(None, {"x": x})[0]
    assert got.shape == want.shape and got.tobytes() == want.tobytes()
    torch_x = torch.from_numpy(np.nan_to_num(x, nan=7.0))
    ref = torch.nn.functional.interpolate(torch_x, size=dst[2:], mode="nearest").numpy()
    np.testing.assert_array_equal(ort_session(after).run(None, {"x": np.nan_to_num(x, nan=7.0)})[0], ref)
    before8 = _resize_graph(src, dst, TensorProto.UINT8)
    after8, _ = nearest_gathers_as_slices_and_resizes(before8)
    x8 = rng.integers(0, 256, x.shape, dtype=np.uint8)
    got8, want8 = (ort_session(g).run(None, {"x": x8})[0] for g in (after8, before8))
    assert got8.tobytes() == want8.tobytes()


def test_resize_reads_the_gathers_indices_wherever_the_pass_uses_it():
    """ONNX Runtime's nearest Resize with the pass's scales against torch's source indices, for every
    size pair up to 64 -> 130 the pass accepts (one graph per input size, one Resize per output size)."""
    accepted = 0
    for n_in in range(1, 65):
        outs = [n for n in range(1, 131) if resize_exact(nearest_source_indices(n_in, n), n_in)]
        if not outs:
            continue
        nodes, inits = [], []
        for n in outs:
            s = resize_scale(n_in, n)
            assert s is not None
            inits.append(numpy_helper.from_array(np.array([1, 1, 1, s], np.float32), f"s{n}"))
            nodes.append(helper.make_node("Resize", ["x", "", f"s{n}"], [f"y{n}"], mode="nearest",
                                          coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, n_in])],
                              [helper.make_tensor_value_info(f"y{n}", TensorProto.FLOAT, None) for n in outs], inits)
        proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        x = np.arange(n_in, dtype=np.float32).reshape(1, 1, 1, n_in)
        for n, y in zip(outs, ort_session(proto).run(None, {"x": x}), strict=True):
            np.testing.assert_array_equal(y.reshape(-1), nearest_source_indices(n_in, n), err_msg=f"{n_in} -> {n}")
        accepted += len(outs)
    assert accepted > 1000  # the check covers many pairs, not a handful


def test_demo_graph_steps_bit_identical_with_the_pass():
    """The stereo demo genotype's graph with and without the pass, 30 steps, state carried: every
    output (disparity, every state, every spike count) the same bits."""
    model = build_model(load_genotype(ROOT / "genotypes/stereo_small.yaml"))
    load_weights(model, str(ROOT / "models/stereo_small.pt"))
    before, after = to_onnx(model.eval(), resample=False), to_onnx(model)
    resizes = [sum(nd.op_type == "Resize" for nd in p.graph.node) for p in (before, after)]
    assert resizes[1] > resizes[0]  # the disparity's linear upsampling is in both
    last = assert_graphs_step_alike(before, after, seed=3)
    assert sum(float(v.sum()) for k, v in last.items() if k.startswith("spikes.")) > 0
