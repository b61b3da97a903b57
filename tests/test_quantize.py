"""The int8 graph (runtime.quantize, runtime.calibrate, ``--int8``): which tensors are spike integers,
the QDQ numerics of one conv, ONNX Runtime's fusion into QLinearConv, an unchanged contract that the
runtime reads, and the command line with the built-in stream or a user's recording."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import ROOT, SMALL, small_genotype
from onnx import TensorProto, helper, numpy_helper

from compiler import build_model
from compiler.build import main as build_main
from compiler.export import to_onnx
from runtime.calibrate import to_int8
from runtime.quantize import integer_bounds, plan_int8, quantize_int8

STEREO_SET = [f"--set={k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in SMALL["stereo"].items()]


def _graph(nodes, inits=(), inputs=("x",), outputs=("y",), out_shape=None):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 6, 6]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, out_shape) for n in outputs], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_integer_bounds_follow_spikes_through_sums_and_moves():
    zero, th = numpy_helper.from_array(np.zeros(8, np.int64), "pads"), numpy_helper.from_array(np.float32(0.5), "th")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("GreaterOrEqual", ["x", "th"], ["ge"]), helper.make_node("Cast", ["ge"], ["s"], to=1),
             helper.make_node("Add", ["s", "s"], ["sum"]), helper.make_node("Concat", ["s", "sum"], ["cat"], axis=1),
             helper.make_node("Pad", ["cat", "pads"], ["pad"]),
             helper.make_node("Resize", ["pad", "", "scales"], ["near"], mode="nearest"),
             helper.make_node("Resize", ["pad", "", "scales"], ["lin"], mode="linear"),
             helper.make_node("Mul", ["s", "th"], ["scaled"]), helper.make_node("Cast", ["x"], ["xc"], to=1)]
    b = integer_bounds(_graph(nodes, [zero, th, scales], outputs=("near", "lin", "scaled", "xc")).graph)
    assert b["s"] == (0, 1) and b["sum"] == (0, 2) and b["cat"] == (0, 2) and b["pad"] == (0, 2)
    assert b["near"] == (0, 2)
    assert not {"lin", "scaled", "xc", "x"} & set(b)  # interpolated, scaled, or float input: not integers


def test_one_conv_int8_within_its_rounding_of_fp32():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    inits = [numpy_helper.from_array(np.float32(0.0), "th"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(bias, "b")]
    nodes = [helper.make_node("GreaterOrEqual", ["x", "th"], ["ge"]), helper.make_node("Cast", ["ge"], ["s"], to=1),
             helper.make_node("Conv", ["s", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    fp32 = _graph(nodes, inits, out_shape=[1, 4, 6, 6])
    planned, kept = plan_int8(fp32)
    assert [n.name for n in planned] == ["conv"] and not kept
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    want = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    q = quantize_int8(fp32, {"y": (float(want.min()), float(want.max()))})
    got = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    step = (max(want.max(), 0) - min(want.min(), 0)) / 255
    weight_err = (np.abs(w).reshape(4, -1).max(1) / 127 / 2) * 18 + np.abs(w).reshape(4, -1).max(1) / 127 / 2
    bound = step / 2 + weight_err.reshape(1, 4, 1, 1) + 1e-5  # output rounding + weights (18 taps) + bias
    assert np.all(np.abs(got - want) <= bound)
    assert np.abs(got - want).max() > 0  # it really is quantised
    inits[1] = numpy_helper.from_array(w[:1], "w")
    inits[2] = numpy_helper.from_array(bias[:1], "b")
    planned, kept = plan_int8(_graph(nodes, inits, out_shape=[1, 1, 6, 6]))
    assert not planned and "output channels" in kept["conv"]  # one output channel: float is faster


@pytest.fixture(scope="module")
def stereo_graphs():
    torch.manual_seed(0)
    model = build_model(small_genotype("stereo")).eval()
    fp32 = to_onnx(model)
    return model, fp32, to_int8(fp32, windows=3, threads=1)


def _optimized_ops(proto, level, path):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(path)
    opts.log_severity_level = 3
    ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_int8_graph_keeps_the_contract_and_onnxruntime_fuses_it(stereo_graphs, tmp_path):
    model, fp32, q = stereo_graphs
    for a, b in ((fp32.graph.input, q.graph.input), (fp32.graph.output, q.graph.output)):
        assert [(v.name, v.type.SerializeToString()) for v in a] == [(v.name, v.type.SerializeToString()) for v in b]
    meta = {p.key: p.value for p in q.metadata_props}
    record = json.loads(meta["snn.quantization"])
    convs = sum(n.op_type == "Conv" for n in fp32.graph.node)
    stems = {n.name for n in fp32.graph.node if n.op_type == "Conv" and n.input[0] in ("left", "right")}
    assert set(record["float_convs"]) == stems | {"/model/matching/layers.6/op/conv/Conv"}  # + the 1-channel cost
    assert record["int8_convs"] == convs - 3 and record["calibration"]["windows"] == 3
    assert [p["pass"] for p in json.loads(meta["snn.passes"])][-1] == "quantize_int8"
    fused = _optimized_ops(q, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, tmp_path / "e.onnx")
    assert fused["QLinearConv"] == record["int8_convs"] and fused["ConvInteger"] == 0
    assert fused["Conv"] + fused["FusedConv"] == 3
    plain = _optimized_ops(q, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, tmp_path / "b.onnx")
    assert plain["QLinearConv"] == 0  # below extended ONNX Runtime runs the QDQ form in float


def test_runtime_reads_the_int8_graph(stereo_graphs, tmp_path):
    from runtime.stream import Stream

    _, _, q = stereo_graphs
    path = tmp_path / "int8.onnx"
    onnx.save(q, str(path))
    with Stream(path, device="cpu", threads=1, max_steps=3) as stream:
        steps = list(stream)
        report = stream.report()
    assert len(steps) == 3 and all(np.isfinite(s.disparity).all() for s in steps)
    assert report["model"]["passes"][:2] == ["fold_batchnorm", "factorize_cost_volume"]
    assert report["model"]["passes"][-1] == "quantize_int8"
    assert report["model"]["quantization"]["int8_convs"] > 0
    assert sum(sum(s.spikes.values()) for s in steps) > 0


def test_build_int8_on_the_builtin_stream_and_on_a_recording(tmp_path, capsys):
    from runtime.data.synth import SynthConfig
    from runtime.data.synth.writer import write_mvsec

    out = tmp_path / "s.onnx"
    assert build_main([str(ROOT / "genotypes/stereo.yaml"), *STEREO_SET, "--int8", "--calib-windows", "2",
                       "-o", str(out), "--quiet"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["snn.quantization"])["calibration"]["source"].startswith("built-in synthetic")
    data, _ = write_mvsec(SynthConfig(seed=3, seconds=0.3, height=24, width=32), tmp_path, "rec")
    assert build_main([str(ROOT / "genotypes/stereo.yaml"), *STEREO_SET, "--int8", "--calib-windows", "3",
                       "--calib-events", data, "-o", str(out), "--quiet"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["snn.quantization"])["calibration"] == {"source": data, "windows": 3, "statistic": "min/max"}
    capsys.readouterr()
    assert build_main([str(ROOT / "genotypes/stereo.yaml"), *STEREO_SET, "--int8", "--calib-windows", "50",
                       "--calib-events", data, "-o", str(tmp_path / "x.onnx"), "--quiet"]) == 2
    assert "asks for 50" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--int8", "--calib-windows", "0"], "--calib-windows must be at least 1"),
    (["--calib-windows", "3"], "they calibrate --int8, which is not given"),
    (["--no-pad-channels"], "they apply to --int8, which is not given"),
    (["--int8", "--calib-events", "/no/such_data.hdf5"], "--calib-events: cannot read calibration windows"),
])
def test_build_int8_bad_input_is_one_line(args, message, tmp_path, capsys):
    assert build_main([str(ROOT / "genotypes/stereo.yaml"), *STEREO_SET, *args, "-o", str(tmp_path / "x.onnx"),
                       "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()


def test_build_int8_pads_channels_unless_told_not_to(tmp_path, capsys):
    """``compiler.build --int8`` pads few-channel convs as ``runtime.calibrate`` does; ``--no-pad-channels``
    passes through to it; a bad value of the switch is one line and exit 2 with nothing written."""
    counts = {}
    for name, extra in (("padded", []), ("plain", ["--no-pad-channels"])):
        out = tmp_path / f"{name}.onnx"
        assert build_main([str(ROOT / "genotypes/stereo.yaml"), *STEREO_SET, "--int8", "--calib-windows", "2",
                           *extra, "-o", str(out), "--quiet"]) == 0
        counts[name] = sum(n.name.endswith(".keep_channels") for n in onnx.load(str(out)).graph.node)
    assert counts["padded"] > 0 and counts["plain"] == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        build_main([str(ROOT / "genotypes/stereo.yaml"), *STEREO_SET, "--int8", "--pad-channels=no",
                    "-o", str(tmp_path / "x.onnx"), "--quiet"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()


def test_build_int8_classification_calibrates_on_tensors(tmp_path, capsys):
    # Was test_build_int8_refuses_classification: issue 24 makes --int8 work for models of tensors (classification
    # genotypes and imported NIR graphs), calibrated on a .npy array of inputs or on seeded uniform tensors.
    args = [f"--set={k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in SMALL["cifar10"].items()]
    out = tmp_path / "c.onnx"
    assert build_main([str(ROOT / "genotypes/cifar10.yaml"), *args, "--int8", "-o", str(out), "--quiet"]) == 0
    quant = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["snn.quantization"])
    assert quant["int8_convs"] > 0 and quant["calibration"]["source"].startswith("uniform [0, 1) tensors")
    np.save(tmp_path / "few.npy", np.zeros((2, 3, 8, 8), np.float32))
    assert build_main([str(ROOT / "genotypes/cifar10.yaml"), *args, "--int8", "--calib-events",
                       str(tmp_path / "few.npy"), "-o", str(tmp_path / "d.onnx"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibration needs 16 inputs" in err


@pytest.mark.parametrize("override, expected", [
    ({"snn.passes": "[1, 2]"}, "snn.passes must be a JSON list of objects with a 'pass' name"),
    ({"snn.passes": "{"}, "snn.passes is not valid JSON"),
    ({"snn.quantization": "[]"}, "snn.quantization must be a JSON object"),
])
def test_runtime_checks_the_optimisation_metadata(override, expected, tmp_path):
    from contract_models import stereo_model

    from runtime.core.errors import RuntimeInputError
    from runtime.session import SNNSession

    stereo_model(tmp_path / "m.onnx", metadata_override=override)
    with pytest.raises(RuntimeInputError, match=expected):
        SNNSession(tmp_path / "m.onnx", device="cpu")
    stereo_model(tmp_path / "ok.onnx", metadata_override={"snn.passes": '[{"pass": "fold_batchnorm"}]',
                                                          "snn.quantization": '{"int8_convs": 3}'})
    spec = SNNSession(tmp_path / "ok.onnx", device="cpu").spec
    assert spec.passes == ("fold_batchnorm",) and spec.quantization == {"int8_convs": 3}


@pytest.mark.parametrize("co, bias", [(1, True), (2, False)])
def test_few_channel_3d_conv_over_spikes_as_2d_equals_the_3d_conv(co, bias):
    from runtime import conv2d

    rng = np.random.default_rng(co)
    shape, w = [1, 6, 5, 7, 9], rng.standard_normal((co, 6, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32) if bias else None
    node = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["y"], kernel_shape=[3, 3, 3],
                            pads=[1, 1, 1, 1, 1, 1])
    assert conv2d.applies(node, w, shape)
    assert not conv2d.applies(helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 1, 1]), w, shape)
    nodes, inits = conv2d.as_2d(node, "x_u8", w, b, shape)
    x = (rng.random(shape) < 0.3).astype(np.float32)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x_u8", TensorProto.UINT8, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x_u8": x.astype(np.uint8)})[0]
    want = torch.nn.functional.conv3d(torch.from_numpy(x), torch.from_numpy(w),
                                      None if b is None else torch.from_numpy(b), padding=1).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the same sums in another order
