"""Reading and checking the ONNX contract (schema 1) of a compiled SNN.

Everything the runtime needs comes from the model itself: its inputs and outputs (names, shapes,
types, as ONNX Runtime reports them) and its ``metadata_props``. ``read_contract`` checks them all and
raises ``RuntimeInputError`` with a one-line message naming the first thing that is missing or wrong.

The specs it returns are ``runtime.modelspec``'s (imported here too).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runtime.core.errors import RuntimeInputError
from runtime.core.names import (
    MAX_SIDE,
    META_PASSES,
    META_QUANTIZATION,
    REQUIRED_METADATA,
    SCHEMA,
    SPIKES,
    STATE_IN,
    STATE_OUT,
    TASKS,
    encoding_channels,
    encoding_problem,
)
from runtime.modelspec import EncodingSpec, LayerSpec, ModelSpec, StateSpec

_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}


def _dims(shape: Sequence[Any]) -> tuple[int | str | None, ...]:
    return tuple(d if isinstance(d, (int, str)) else None for d in shape)


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _is_batch(dim: Any) -> bool:
    # the contract names it `batch`; any symbolic dimension or a fixed 1 is accepted (we stream batch 1)
    return isinstance(dim, str) or dim is None or dim == 1


def _json(where: str, meta: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise RuntimeInputError(
            where, f"metadata {key} is not valid JSON ({exc.msg} at char {exc.pos})"
        ) from None


def _number(where: str, key: str, value: Any, *, integer: bool = False, positive: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:  # an integer beyond 2**53 is no count of this contract (and would not survive float arithmetic)
        ok = abs(value) <= 2**53 if isinstance(value, int) else math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and positive:
        ok = value > 0
    elif ok:
        ok = value >= 0
    if not ok:
        kind = "integer" if integer else "number"
        sign = "positive" if positive else "non-negative"
        raise RuntimeInputError(where, f"{key} must be a {sign} {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _encoding(where: str, meta: Mapping[str, str], events: bool = True) -> EncodingSpec:
    raw = _json(where, meta, "snn.encoding")
    if not isinstance(raw, dict):
        raise RuntimeInputError(where, "metadata snn.encoding must be a JSON object")
    if not events and raw.get("kind") == "image":  # a model of tensors (images): no window, no bins
        missing = [k for k in ("height", "width") if k not in raw]
        if missing:
            raise RuntimeInputError(where, f"metadata snn.encoding lacks {', '.join(missing)}")
        return EncodingSpec("image", 0.0, 0, int(_number(where, "snn.encoding.height", raw["height"], integer=True)),
                            int(_number(where, "snn.encoding.width", raw["width"], integer=True)))
    missing = [k for k in ("kind", "window_ms", "bins", "height", "width") if k not in raw]
    if missing:
        raise RuntimeInputError(where, f"metadata snn.encoding lacks {', '.join(missing)}")
    if not isinstance(raw["kind"], str):
        raise RuntimeInputError(where, f"snn.encoding.kind must be a string, got {raw['kind']!r}")
    spec = EncodingSpec(
        kind=raw["kind"],
        window_ms=_number(where, "snn.encoding.window_ms", raw["window_ms"]),
        bins=int(_number(where, "snn.encoding.bins", raw["bins"], integer=True)),
        height=int(_number(where, "snn.encoding.height", raw["height"], integer=True)),
        width=int(_number(where, "snn.encoding.width", raw["width"], integer=True)),
    )
    problem = encoding_problem(spec.kind, spec.window_ms, spec.bins)
    if problem:
        raise RuntimeInputError(where, f"snn.encoding: {problem}")
    for key in ("height", "width"):
        if getattr(spec, key) > MAX_SIDE:
            raise RuntimeInputError(
                where, f"snn.encoding.{key} is {getattr(spec, key)}, beyond any event sensor ({MAX_SIDE})"
            )
    return spec


def _layers(where: str, meta: Mapping[str, str]) -> dict[str, LayerSpec]:
    raw = _json(where, meta, "snn.layers")
    if not isinstance(raw, dict):
        raise RuntimeInputError(
            where, "metadata snn.layers must be a JSON object: layer -> {neurons, fan_out}"
        )
    layers = {}
    for name, info in raw.items():
        if not isinstance(info, dict) or "neurons" not in info or "fan_out" not in info:
            raise RuntimeInputError(where, f"snn.layers.{name} must be an object with neurons and fan_out")
        neurons = int(_number(where, f"snn.layers.{name}.neurons", info["neurons"], integer=True))
        fan_out = _number(where, f"snn.layers.{name}.fan_out", info["fan_out"], positive=False)
        layers[name] = LayerSpec(name, neurons, fan_out)
    return layers


def _dense_macs(where: str, meta: Mapping[str, str]) -> dict[str, float]:
    raw = _json(where, meta, "snn.dense_macs")
    if not isinstance(raw, dict):
        raise RuntimeInputError(
            where, "metadata snn.dense_macs must be a JSON object: layer -> MACs per step"
        )
    return {str(k): _number(where, f"snn.dense_macs.{k}", v, positive=False) for k, v in raw.items()}


def _optimizations(where: str, meta: Mapping[str, str]) -> tuple[tuple[str, ...], dict | None]:
    """The optional ``snn.passes`` (a list of {"pass": name, ...}) and ``snn.quantization`` (an object)."""
    passes: tuple[str, ...] = ()
    if META_PASSES in meta:
        raw = _json(where, meta, META_PASSES)
        if not isinstance(raw, list) or not all(isinstance(p, dict) and isinstance(p.get("pass"), str) for p in raw):
            raise RuntimeInputError(where, f"metadata {META_PASSES} must be a JSON list of objects with a 'pass' name")
        passes = tuple(p["pass"] for p in raw)
    quantization = None
    if META_QUANTIZATION in meta:
        quantization = _json(where, meta, META_QUANTIZATION)
        if not isinstance(quantization, dict):
            raise RuntimeInputError(where, f"metadata {META_QUANTIZATION} must be a JSON object")
    return passes, quantization




def read_contract(
    where: str, metadata: Mapping[str, str], inputs: Sequence[Any], outputs: Sequence[Any]
) -> ModelSpec:
    """Check a model against the contract and return its spec.

    ``inputs`` and ``outputs`` are ONNX Runtime ``NodeArg``s (anything with ``name``, ``shape``, ``type``);
    ``where`` names the model in error messages. The checks run in order: metadata, data inputs,
    state pairs, data output, spike counters; the first failure is the error.
    """
    meta = dict(metadata)
    task, max_disparity = _task(where, meta)
    encoding = _encoding(where, meta, TASKS[task].events)
    layers = _layers(where, meta)
    dense = _dense_macs(where, meta)
    data_in_names, data_out_name = TASKS[task].inputs, TASKS[task].output
    data_shape = _data_inputs(where, task, encoding, inputs)
    states = _states(where, inputs, outputs, data_in_names)
    _data_output(where, task, encoding, outputs, data_out_name)
    ordered = _spike_outputs(where, outputs, data_out_name, layers)
    passes, quantization = _optimizations(where, meta)
    return ModelSpec(
        task=task,
        encoding=encoding,
        layers=tuple(ordered),
        dense_macs=dense,
        states=tuple(states),
        data_inputs=data_in_names,
        data_output=data_out_name,
        data_input_shape=data_shape,
        max_disparity=max_disparity,
        genotype=meta["snn.genotype"],
        metadata=meta,
        passes=passes,
        quantization=quantization,
    )


def _task(where: str, meta: dict[str, str]) -> tuple[str, float | None]:
    """The required metadata, the schema, the task and (stereo) the maximum disparity."""
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise RuntimeInputError(
            where, f"not an SNN of the ONNX contract: metadata {', '.join(missing)} missing"
        )
    if meta["snn.schema"] != SCHEMA:
        raise RuntimeInputError(
            where, f"snn.schema is {meta['snn.schema']!r}; this runtime reads schema {SCHEMA!r}"
        )
    task = meta["snn.task"]
    if task not in TASKS:
        raise RuntimeInputError(where, f"snn.task {task!r} is not one of {', '.join(sorted(TASKS))}")
    max_disparity = None
    if TASKS[task].disparity:
        if "snn.max_disparity" not in meta:
            raise RuntimeInputError(where, "metadata snn.max_disparity missing (required for stereo)")
        try:
            max_disparity = float(meta["snn.max_disparity"])
        except ValueError:
            raise RuntimeInputError(
                where, f"snn.max_disparity {meta['snn.max_disparity']!r} is not a number"
            ) from None
        if not np.isfinite(max_disparity) or max_disparity <= 0:
            raise RuntimeInputError(where, f"snn.max_disparity must be positive, got {max_disparity}")
    return task, max_disparity


def _data_inputs(where: str, task: str, encoding: EncodingSpec, inputs: Sequence[Any]) -> tuple:
    """The data inputs exist, are float [batch, C, H, W] and (stereo) match ``snn.encoding``."""
    data_in_names = TASKS[task].inputs
    in_by_name = {a.name: a for a in inputs}
    data_shape: tuple[int | str | None, ...] = ()
    for name in data_in_names:
        arg = in_by_name.get(name)
        if arg is None:
            raise RuntimeInputError(
                where, f"input {name!r} missing (a {task} model takes {', '.join(data_in_names)})"
            )
        if arg.type != "tensor(float)":
            raise RuntimeInputError(where, f"input {name!r} is {arg.type}, expected tensor(float)")
        shape = _dims(arg.shape)
        if len(shape) != 4 or not _is_batch(shape[0]):
            raise RuntimeInputError(
                where, f"input {name!r} has shape {_fmt(shape)}, expected [batch, C, H, W]"
            )
        if TASKS[task].events:
            want = (encoding_channels(encoding.kind, encoding.bins), encoding.height, encoding.width)
            for got, exp, what in zip(shape[1:], want, ("channels", "height", "width"), strict=True):
                if isinstance(got, int) and got != exp:
                    raise RuntimeInputError(
                        where,
                        f"input {name!r} has shape {_fmt(shape)} but snn.encoding ({encoding.kind}, "
                        f"{encoding.bins} bins) says [batch, {want[0]}, {want[1]}, {want[2]}] ({what} differs)",
                    )
        data_shape = shape
    return data_shape


def _states(where: str, inputs: Sequence[Any], outputs: Sequence[Any], data_in_names) -> list[StateSpec]:
    """``state_in.X`` / ``state_out.X`` pairs: paired, in the same order, same type and shape, fixed
    dimensions after batch."""
    state_ins = [a for a in inputs if a.name.startswith(STATE_IN)]
    state_outs = [a for a in outputs if a.name.startswith(STATE_OUT)]
    extra = [a.name for a in inputs if a.name not in data_in_names and not a.name.startswith(STATE_IN)]
    if extra:
        raise RuntimeInputError(
            where,
            f"unexpected input {extra[0]!r} (inputs are {', '.join(data_in_names)} and {STATE_IN}<name>)",
        )
    in_names = [a.name[len(STATE_IN) :] for a in state_ins]
    out_names = [a.name[len(STATE_OUT) :] for a in state_outs]
    for n in in_names:
        if n not in out_names:
            raise RuntimeInputError(where, f"state input {STATE_IN}{n} has no output {STATE_OUT}{n}")
    for n in out_names:
        if n not in in_names:
            raise RuntimeInputError(where, f"state output {STATE_OUT}{n} has no input {STATE_IN}{n}")
    if in_names != out_names:
        raise RuntimeInputError(
            where,
            f"state outputs are in another order than state inputs "
            f"({', '.join(out_names)} vs {', '.join(in_names)})",
        )
    return [_state(where, a_in, a_out) for a_in, a_out in zip(state_ins, state_outs, strict=True)]


def _state(where: str, a_in: Any, a_out: Any) -> StateSpec:
    name = a_in.name[len(STATE_IN) :]
    s_in, s_out = _dims(a_in.shape), _dims(a_out.shape)
    if a_in.type != a_out.type:
        raise RuntimeInputError(where, f"{a_in.name} is {a_in.type} but {a_out.name} is {a_out.type}")
    if a_in.type not in _ORT_TYPES:
        raise RuntimeInputError(where, f"{a_in.name} has unsupported type {a_in.type}")
    if not s_in or not _is_batch(s_in[0]):
        raise RuntimeInputError(
            where, f"{a_in.name} has shape {_fmt(s_in)}; its first dimension must be batch"
        )
    if len(s_in) != len(s_out) or any(
        isinstance(x, int) and isinstance(y, int) and x != y
        for x, y in zip(s_in[1:], s_out[1:], strict=True)
    ):
        raise RuntimeInputError(
            where, f"{a_in.name} has shape {_fmt(s_in)} but {a_out.name} has {_fmt(s_out)}"
        )
    rest = s_in[1:]
    if not all(isinstance(d, int) for d in rest):
        raise RuntimeInputError(
            where,
            f"{a_in.name} has shape {_fmt(s_in)}; all dimensions but batch "
            "must be fixed to allocate the initial zero state",
        )
    return StateSpec(name, tuple(int(d) for d in rest), _ORT_TYPES[a_in.type])


def _data_output(where: str, task: str, encoding: EncodingSpec, outputs: Sequence[Any], data_out_name: str) -> None:
    out = {a.name: a for a in outputs}.get(data_out_name)
    if out is None:
        raise RuntimeInputError(where, f"output {data_out_name!r} missing (a {task} model returns it)")
    if out.type != "tensor(float)":
        raise RuntimeInputError(where, f"output {data_out_name!r} is {out.type}, expected tensor(float)")
    oshape = _dims(out.shape)
    if TASKS[task].disparity and (
        len(oshape) != 3
        or not _is_batch(oshape[0])
        or any(
            isinstance(g, int) and g != e
            for g, e in zip(oshape[1:], (encoding.height, encoding.width), strict=True)
        )
    ):
        raise RuntimeInputError(
            where,
            f"output 'disparity' has shape {_fmt(oshape)}, expected "
            f"[batch, {encoding.height}, {encoding.width}]",
        )


def _spike_outputs(where: str, outputs: Sequence[Any], data_out_name: str, layers: dict) -> list:
    """Every ``spikes.<layer>`` is float [batch] with an entry in ``snn.layers``, and vice versa."""
    spike_args = [a for a in outputs if a.name.startswith(SPIKES)]
    extra_out = [
        a.name for a in outputs if a.name != data_out_name and not a.name.startswith((STATE_OUT, SPIKES))
    ]
    if extra_out:
        raise RuntimeInputError(where, f"unexpected output {extra_out[0]!r}")
    if not spike_args:
        raise RuntimeInputError(where, f"no {SPIKES}<layer> outputs: the runtime cannot measure firing rates")
    ordered = []
    for a in spike_args:
        layer = a.name[len(SPIKES) :]
        shape = _dims(a.shape)
        if a.type != "tensor(float)" or len(shape) != 1 or not _is_batch(shape[0]):
            raise RuntimeInputError(
                where, f"output {a.name} is {a.type} {_fmt(shape)}, expected tensor(float) [batch]"
            )
        if layer not in layers:
            raise RuntimeInputError(where, f"output {a.name} has no entry {layer!r} in metadata snn.layers")
        ordered.append(layers[layer])
    unused = sorted(set(layers) - {lay.name for lay in ordered})
    if unused:
        raise RuntimeInputError(
            where, f"snn.layers names {unused[0]!r} but the model has no output {SPIKES}{unused[0]}"
        )
    return ordered
