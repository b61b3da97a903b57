"""Tiny models of the ONNX contract (schema 1), built with onnx.helper only (no torch), for tests.

``stereo_model`` is a two-layer LIF network whose output depends on carried state:

    I0   = conv1x1(concat(left, right))                 # (B, C, H, W), dense input layer
    u0   = tau * m0 + I0;   s0 = [u0 >= th];   m0' = u0 * (1 - s0)     # layer0
    I1   = conv1x1(s0)                                   # spiking input
    u1   = tau * m1 + I1;   s1 = [u1 >= th];   m1' = u1 * (1 - s1)     # layer1
    disparity = scale * relu(mean_c(u1)) + offset       # (B, H, W)
    spikes.layer0 = sum(s0), spikes.layer1 = sum(s1)    # (B,)

``reference_step`` computes the same in numpy, so tests can check the runtime against it.
Keyword arguments let tests break the contract one way at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TAU = 0.5
THRESHOLD = 0.5
SCALE = 4.0
OFFSET = 1.0
GENOTYPE = "schema: 1\nname: tiny-test\ntask: stereo\n"


def weights(bins: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the two 1x1 convolutions, [C, 2*bins, 1, 1] and [C, C, 1, 1]."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(0.0, 0.6, size=(channels, 2 * bins, 1, 1)).astype(np.float32)
    w1 = rng.normal(0.0, 0.8, size=(channels, channels, 1, 1)).astype(np.float32)
    return w0, w1


def metadata(
    *, bins: int, height: int, width: int, channels: int, window_ms: float = 50.0, max_disparity: float = 37.0
) -> dict[str, str]:
    """The metadata_props a contract-following stereo model of these sizes carries."""
    neurons = channels * height * width
    return {
        "snn.schema": "1",
        "snn.task": "stereo",
        "snn.genotype": GENOTYPE,
        "snn.encoding": json.dumps(
            {"kind": "sbt", "window_ms": window_ms, "bins": bins, "height": height, "width": width}
        ),
        "snn.layers": json.dumps(
            {
                "layer0": {"neurons": neurons, "fan_out": float(channels)},
                "layer1": {"neurons": neurons, "fan_out": 0.0},
            }
        ),
        "snn.dense_macs": json.dumps({"layer0": 2 * bins * channels * height * width}),
        "snn.max_disparity": str(max_disparity),
    }


def stereo_model(
    path: str | Path | None = None,
    *,
    bins: int = 5,
    height: int = 8,
    width: int = 12,
    channels: int = 4,
    seed: int = 0,
    window_ms: float = 50.0,
    drop_metadata: tuple[str, ...] = (),
    metadata_override: dict[str, str] | None = None,
    drop_outputs: tuple[str, ...] = (),
    bad_state_shape: bool = False,
    swap_state_outputs: bool = False,
    symbolic_state: bool = False,
    fixed_batch: int | None = None,
) -> onnx.ModelProto:
    """Build (and save, when ``path`` is given) the tiny stereo model; options break the contract."""
    w0, w1 = weights(bins, channels, seed)
    batch: Any = fixed_batch if fixed_batch is not None else "batch"
    C, H, W = channels, height, width

    def vi(name: str, shape: list[Any]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    state_shape = [batch, "c" if symbolic_state else C, H, W]
    inputs = [
        vi("left", [batch, bins, H, W]),
        vi("right", [batch, bins, H, W]),
        vi("state_in.mem0", state_shape),
        vi("state_in.mem1", state_shape),
    ]
    state_outs = [
        vi("state_out.mem0", [batch, C, H, W]),
        vi("state_out.mem1", [batch, 1 if bad_state_shape else C, H, W]),
    ]
    if swap_state_outputs:
        state_outs.reverse()
    outputs = [
        vi("disparity", [batch, H, W]),
        *state_outs,
        vi("spikes.layer0", [batch]),
        vi("spikes.layer1", [batch]),
    ]
    outputs = [o for o in outputs if o.name not in drop_outputs]

    init = [
        numpy_helper.from_array(w0, "w0"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.array(TAU, np.float32), "tau"),
        numpy_helper.from_array(np.array(THRESHOLD, np.float32), "th"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(SCALE, np.float32), "scale"),
        numpy_helper.from_array(np.array(OFFSET, np.float32), "offset"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes123"),
    ]
    nodes = [
        helper.make_node("Concat", ["left", "right"], ["x"], axis=1),
        helper.make_node("Conv", ["x", "w0"], ["i0"]),
    ]

    def lif(k: int, current: str) -> None:
        nodes.extend(
            [
                helper.make_node("Mul", [f"state_in.mem{k}", "tau"], [f"d{k}"]),
                helper.make_node("Add", [f"d{k}", current], [f"u{k}"]),
                helper.make_node("GreaterOrEqual", [f"u{k}", "th"], [f"b{k}"]),
                helper.make_node("Cast", [f"b{k}"], [f"s{k}"], to=TensorProto.FLOAT),
                helper.make_node("Sub", ["one", f"s{k}"], [f"k{k}"]),
                helper.make_node("Mul", [f"u{k}", f"k{k}"], [f"m{k}"]),
                helper.make_node("ReduceSum", [f"s{k}", "axes123"], [f"spikes.layer{k}"], keepdims=0),
            ]
        )

    lif(0, "i0")
    nodes.append(helper.make_node("Conv", ["s0", "w1"], ["i1"]))
    lif(1, "i1")
    nodes.append(helper.make_node("Identity", ["m0"], ["state_out.mem0"]))
    if bad_state_shape:  # a state output that really has another shape: [B, 1, H, W]
        nodes.append(helper.make_node("ReduceMean", ["m1"], ["state_out.mem1"], axes=[1], keepdims=1))
    else:
        nodes.append(helper.make_node("Identity", ["m1"], ["state_out.mem1"]))
    nodes.extend(
        [
            helper.make_node("ReduceMean", ["u1"], ["mu"], axes=[1], keepdims=0),
            helper.make_node("Relu", ["mu"], ["r"]),
            helper.make_node("Mul", ["r", "scale"], ["rs"]),
            helper.make_node("Add", ["rs", "offset"], ["disparity"]),
        ]
    )
    graph = helper.make_graph(nodes, "tiny_stereo_snn", inputs, outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default
    meta = metadata(bins=bins, height=H, width=W, channels=C, window_ms=window_ms)
    meta.update(metadata_override or {})
    for key, value in meta.items():
        if key not in drop_metadata:
            helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, key: value})
    if not drop_outputs and not bad_state_shape and not swap_state_outputs and not symbolic_state:
        onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, str(path))
    return model


def initial_state(
    bins: int = 5, height: int = 8, width: int = 12, channels: int = 4
) -> dict[str, np.ndarray]:
    """Zero state of the tiny model, batch 1."""
    z = np.zeros((1, channels, height, width), np.float32)
    return {"mem0": z.copy(), "mem1": z.copy()}


def reference_step(
    left: np.ndarray,
    right: np.ndarray,
    state: dict[str, np.ndarray],
    *,
    bins: int = 5,
    channels: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """The tiny model's step in numpy: (disparity [H, W], new state, spikes per layer) for batch 1."""
    w0, w1 = weights(bins, channels, seed)
    x = np.concatenate([left, right], axis=0)  # (2*bins, H, W)
    i0 = np.einsum("oc,chw->ohw", w0[:, :, 0, 0], x)
    u0 = TAU * state["mem0"][0] + i0
    s0 = (u0 >= THRESHOLD).astype(np.float32)
    i1 = np.einsum("oc,chw->ohw", w1[:, :, 0, 0], s0)
    u1 = TAU * state["mem1"][0] + i1
    s1 = (u1 >= THRESHOLD).astype(np.float32)
    disp = SCALE * np.maximum(u1.mean(axis=0), 0.0) + OFFSET
    new = {"mem0": (u0 * (1 - s0))[None].astype(np.float32), "mem1": (u1 * (1 - s1))[None].astype(np.float32)}
    return disp.astype(np.float32), new, {"layer0": float(s0.sum()), "layer1": float(s1.sum())}


def random_sbt(
    rng: np.random.Generator, bins: int = 5, height: int = 8, width: int = 12, density: float = 0.3
) -> np.ndarray:
    """A random SBT-like tensor with values in {-1, 0, 1}."""
    mask = rng.random((bins, height, width)) < density
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=(bins, height, width))
    return (mask * sign).astype(np.float32)
