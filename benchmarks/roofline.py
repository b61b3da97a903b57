"""How close a graph's step is to the cost of its convolutions (``bench_deploy.py``'s roofline table).

The graph is optimised by ONNX Runtime (level ``extended``: the QDQ units fused into ``QLinearConv``,
Conv + activation into ``FusedConv``) and every convolution of that graph (``Conv``, ``FusedConv``,
``QLinearConv``) is cut out with its real input: one step of the optimised graph runs with each
convolution's inputs added as outputs, each convolution becomes a one-node graph fed that tensor (its
weights, scales and zero points as initializers) and is timed alone in a session with the step's
settings (level ``all``, the same threads). The sum of those medians is what the step would cost if it
were its convolutions and nothing else; the ratio to the step's median is the share the convolutions
take. ONNX Runtime's profile of the same step gives the kernel time by op type.

Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

CONV_OPS = {"Conv", "FusedConv", "QLinearConv"}


def _options(threads: int, level: str = "all"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _session(proto: onnx.ModelProto, opts):
    """A CPU session with the runtime's optimisers (``runtime.session.DISABLED_OPTIMIZERS`` left out)."""
    import onnxruntime as ort

    from runtime.session import DISABLED_OPTIMIZERS

    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def optimised(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` as ONNX Runtime's CPU provider optimises it at level ``extended`` (fused, not yet re-laid out)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = _options(1, "extended")
        opts.optimized_model_filepath = os.path.join(tmp, "optimised.onnx")
        _session(proto, opts)
        return onnx.load(opts.optimized_model_filepath)


def _input_type(node: onnx.NodeProto, inits: Mapping[str, np.ndarray], index: int) -> int:
    """The element type of a convolution's input ``index`` (QLinearConv: that of its zero point)."""
    if node.op_type == "QLinearConv" and index in (0, 3):
        zero = inits.get(node.input[index + 2])
        return helper.np_dtype_to_tensor_dtype(zero.dtype) if zero is not None else onnx.TensorProto.UINT8
    if node.op_type == "QLinearConv" and index == 8:
        return onnx.TensorProto.INT32
    return onnx.TensorProto.FLOAT


def _output_type(node: onnx.NodeProto, inits: Mapping[str, np.ndarray]) -> int:
    if node.op_type == "QLinearConv":
        zero = inits.get(node.input[7])
        return helper.np_dtype_to_tensor_dtype(zero.dtype) if zero is not None else onnx.TensorProto.UINT8
    return onnx.TensorProto.FLOAT


def conv_inputs(graph: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], threads: int):
    """Per convolution of the optimised ``graph``: (node, {input name: value}) after stepping ``feeds``
    with the state carried (the last step's values)."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    convs = [n for n in graph.graph.node if n.op_type in CONV_OPS]
    probe = onnx.ModelProto()
    probe.CopyFrom(graph)
    have = {o.name for o in probe.graph.output}
    wanted: dict[str, int] = {}
    for node in convs:
        for k, name in enumerate(node.input):
            if name and name not in inits and name not in have:
                wanted.setdefault(name, _input_type(node, inits, k))
    graph_inputs = {i.name for i in probe.graph.input}
    for name, elem in wanted.items():
        if name not in graph_inputs:
            probe.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    session = _session(probe, _options(threads, "extended"))
    names = [o.name for o in session.get_outputs()]
    state = {i.name: np.zeros([1, *i.shape[1:]], np.float32) for i in session.get_inputs()
             if i.name.startswith("state_in.")}
    values: dict[str, np.ndarray] = {}
    for feed in feeds:
        run_feed = {**feed, **state}
        values = dict(zip(names, session.run(names, run_feed), strict=True))
        values.update(run_feed)
        state = {"state_in." + k[len("state_out."):]: v for k, v in values.items() if k.startswith("state_out.")}
    return [(node, {n: (inits[n] if n in inits else values[n]) for n in node.input if n}) for node in convs], inits


def time_alone(node: onnx.NodeProto, inputs: Mapping[str, np.ndarray], inits, opsets, ir_version: int, threads: int,
               reps: int) -> float:
    """Median seconds of ``node`` run alone on ``inputs[node.input[0]]`` (the rest as initializers)."""
    x = node.input[0]
    one = onnx.NodeProto()
    one.CopyFrom(node)
    model = helper.make_model(
        helper.make_graph([one], "conv", [helper.make_tensor_value_info(
            x, helper.np_dtype_to_tensor_dtype(inputs[x].dtype), inputs[x].shape)],
            [helper.make_tensor_value_info(node.output[0], _output_type(node, inits), None)],
            [numpy_helper.from_array(np.asarray(v), n) for n, v in inputs.items() if n != x]),
        opset_imports=opsets, ir_version=ir_version)
    session = _session(model, _options(threads))
    feed = {x: inputs[x]}
    session.run(None, feed)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def profile_by_op(proto: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], threads: int):
    """Kernel microseconds per op type over ``feeds`` (state carried; the first step is a warm-up, not
    counted), from ONNX Runtime's profiler, and the number of steps counted."""
    from deploy_graphs import OrtStepper

    opts = _options(threads)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "profile")
        session = _session(proto, opts)
        stepper = OrtStepper(session)
        for feed in feeds:
            stepper.step(feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    warm_end = runs[0][1] if len(runs) > 1 else -1  # the first run (allocations, first touches) is left out
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > warm_end:
            per_op[e["args"]["op_name"]] += e["dur"]
    return per_op, max(len(runs) - 1, 1)


def roofline(proto: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], threads: int, steps: int,
             reps: int = 3) -> dict:
    """The step's median seconds, its convolutions' seconds alone (summed), their count and the
    profile's kernel time per op type (ms per step)."""
    from deploy_graphs import OrtStepper, ort_session

    stepper = OrtStepper(ort_session(proto, threads=threads, spinning=False))
    times = []
    for k in range(steps + 1):
        dt, _ = stepper.step(feeds[k % len(feeds)])
        if k:
            times.append(dt)
    graph = optimised(proto)
    cut, inits = conv_inputs(graph, feeds[:2], threads)
    opsets = list(graph.opset_import)
    alone = [time_alone(node, inputs, inits, opsets, graph.ir_version, threads, reps) for node, inputs in cut]
    per_op, n = profile_by_op(proto, feeds[:3], threads)
    return {"step_s": float(np.median(times)), "convs_s": float(sum(alone)), "convs": len(cut),
            "ops": {op: us / 1000 / n for op, us in per_op.most_common()},
            "conv_types": dict(collections.Counter(node.op_type for node, _ in cut))}
