"""A Triton Inference Server model repository for a compiled model (ONNX Runtime backend, sequence
batching with implicit state), written by ``python -m compiler.build GENOTYPE --triton DIR``:

    DIR/<name>/config.pbtxt
    DIR/<name>/1/model.onnx

The config follows Triton's ``model_config.proto`` (the tests parse it with the ``model_config_pb2``
that ``tritonclient`` ships). Each ``state_in.<x>`` / ``state_out.<x>`` pair of the graph is one
``sequence_batching.state`` entry with its dims (the batch excluded, as Triton wants with
``max_batch_size > 0``) and an ``initial_state`` of zeros, so Triton feeds zeros at a sequence's first
request (``sequence_start``) and each request's ``state_out`` as the next request's ``state_in``. The
data inputs and the data output are listed, and the ``spikes.<layer>`` outputs ([batch] in the graph)
as dims [1] reshaped to a scalar. The graph has no START/READY control inputs, so the config lists none.
The ``direct`` strategy keeps each sequence (camera) in one batch slot for its lifetime.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

from runtime.core import names

# ONNX element type -> Triton data type (model_config.proto DataType)
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}
DEFAULT_MAX_BATCH = 8
IDLE_US = 5_000_000  # a sequence that sends nothing for 5 s is ended and its slot freed


class TritonError(ValueError):
    """The graph cannot be described for Triton (off the contract); the message says why."""


def _type_and_dims(value: onnx.ValueInfoProto) -> tuple[str, list[int]]:
    """Triton data type and dims without the leading batch dimension (-1 for a symbolic one)."""
    tensor = value.type.tensor_type
    if tensor.elem_type not in TRITON_TYPES:
        raise TritonError(f"{value.name}: element type {onnx.TensorProto.DataType.Name(tensor.elem_type)} "
                          "has no Triton data type here")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if not dims or dims[0] != -1:
        raise TritonError(f"{value.name}: the first dimension must be the symbolic batch, got {dims}")
    return TRITON_TYPES[tensor.elem_type], dims[1:]


def _q(text: str) -> str:
    return json.dumps(text)  # a protobuf text-format string literal for these ASCII names


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def config_text(proto: onnx.ModelProto, name: str, max_batch_size: int = DEFAULT_MAX_BATCH) -> str:
    """The ``config.pbtxt`` of a contract graph (schema 1) for Triton's ONNX Runtime backend."""
    if max_batch_size < 1:
        raise TritonError(f"max_batch_size must be at least 1 (sequence batching), got {max_batch_size}")
    graph = proto.graph
    init = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in init]
    outputs = {v.name: v for v in graph.output}
    lines = [f"name: {_q(name)}", 'backend: "onnxruntime"', f"max_batch_size: {max_batch_size}", "input ["]
    data_in = [v for v in inputs if not v.name.startswith(names.STATE_IN)]
    lines += [",\n".join("  {{ name: {} data_type: {} dims: {} }}".format(_q(v.name), *_fmt(v)) for v in data_in),
              "]", "output ["]
    out_lines = []
    for v in graph.output:
        if v.name.startswith(names.STATE_OUT):
            continue  # states go back to the model through sequence_batching.state, not to the client
        dtype, dims = _type_and_dims(v)
        if v.name == names.data_output("stereo") and any(d < 0 for d in dims):
            dims = _disparity_dims(proto)
        reshape = "" if dims else " reshape: { shape: [ ] }"  # a [batch] tensor: dims [1], reshaped away
        out_lines.append(f"  {{ name: {_q(v.name)} data_type: {dtype} dims: {_dims(dims or [1])}{reshape} }}")
    lines += [",\n".join(out_lines), "]", "sequence_batching {",
              f"  max_sequence_idle_microseconds: {IDLE_US}", "  direct { }", "  state ["]
    states = []
    for v in inputs:
        if not v.name.startswith(names.STATE_IN):
            continue
        out_name = names.STATE_OUT + v.name[len(names.STATE_IN):]
        if out_name not in outputs:
            raise TritonError(f"{v.name} has no {out_name} output")
        dtype, dims = _type_and_dims(v)
        out_type, out_dims = _type_and_dims(outputs[out_name])
        same = len(out_dims) == len(dims) and all(o < 0 or o == d for o, d in zip(out_dims, dims, strict=True))
        if out_type != dtype or not same:
            raise TritonError(f"{out_name} {out_dims} differs from {v.name} {dims} in type or shape")
        if any(d < 0 for d in dims):
            raise TritonError(f"{v.name}: the state needs fixed dims for its zero initial state, got {dims}")
        states.append(
            f"    {{\n      input_name: {_q(v.name)}\n      output_name: {_q(out_name)}\n"
            f"      data_type: {dtype}\n      dims: {_dims(dims)}\n"
            f"      initial_state [ {{ name: \"zeros\" data_type: {dtype} dims: {_dims(dims)} zero_data: true }} ]\n"
            "    }")
    lines += [",\n".join(states), "  ]", "}"]
    return "\n".join(lines) + "\n"


def _disparity_dims(proto: onnx.ModelProto) -> list[int]:
    """[H, W] of the disparity output from ``snn.encoding`` (the contract: disparity at input resolution),
    for graphs whose exporter left the output's spatial dims symbolic."""
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        enc = json.loads(meta[names.META_ENCODING])
        return [int(enc["height"]), int(enc["width"])]
    except (KeyError, ValueError, TypeError):
        raise TritonError(f"disparity has symbolic dims and no readable {names.META_ENCODING}") from None


def _fmt(v: onnx.ValueInfoProto) -> tuple[str, str]:
    dtype, dims = _type_and_dims(v)
    return dtype, _dims(dims)


MARK = "# written by python -m compiler.build --triton"  # first line of our config.pbtxt (a text-format comment)


class RepositoryError(TritonError):
    """The model folder holds files this tool did not write where it would write; the message says which."""


def _ours(folder: Path, version: str) -> list[str]:
    """What in an existing model folder this write would replace that is not ours: a config.pbtxt
    without our first line, a version folder holding more than model.onnx (or any, beside a foreign config)."""
    foreign = []
    config = folder / "config.pbtxt"
    mine = False
    if config.is_file():
        with open(config, encoding="utf-8", errors="replace") as fh:
            mine = fh.readline().rstrip("\n") == MARK
        if not mine:
            foreign.append("config.pbtxt")
    elif config.exists():
        foreign.append("config.pbtxt (not a file)")
    target = folder / version
    if target.exists() or target.is_symlink():
        inside = sorted(p.name for p in target.iterdir()) if target.is_dir() else ["(a file)"]
        if not (mine and target.is_dir() and inside in ([], ["model.onnx"])):
            foreign.append(f"{version}/ ({', '.join(inside) or 'empty'})")
    return foreign


def _private_to_shared(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp makes it private; the server may run as another user


def write_repository(directory: str | Path, name: str, export: Callable[[Path], onnx.ModelProto],
                     max_batch_size: int = DEFAULT_MAX_BATCH, version: int = 1, overwrite: bool = False) -> Path:
    """Write ``directory/name/{config.pbtxt, <version>/model.onnx}``; ``export(path)`` writes the ONNX graph
    and returns it. Everything is built in temporary places first and moved in only when complete, so a
    failure leaves the repository as it was. Other versions and files of the model folder are kept; a
    config.pbtxt or version folder there that this tool did not write is a ``RepositoryError`` unless
    ``overwrite``. Returns the model's folder."""
    if not 1 <= version <= 2**31 - 1:
        raise TritonError(f"the version must be from 1 to {2**31 - 1}, got {version}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    if final.exists() and not final.is_dir():
        raise RepositoryError(f"{final} is a file, not a model folder")
    foreign = _ours(final, str(version)) if final.is_dir() else []
    if foreign and not overwrite:
        raise RepositoryError(f"{final} holds {', '.join(foreign)} not written by this tool: give --overwrite to "
                              "replace them (other versions and files there are kept)")
    parent = final if final.is_dir() else directory
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    _private_to_shared(stage)
    old = None
    try:
        proto = export(stage / str(version) / "model.onnx")
        with open(stage / "config.pbtxt", "w", encoding="utf-8") as fh:
            fh.write(MARK + "\n" + config_text(proto, name, max_batch_size))
            fh.flush()
            os.fsync(fh.fileno())
        if parent is directory:  # a new model folder: the whole of it moves in
            os.replace(stage, final)
            return final
        target = final / str(version)
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=final))
            os.replace(target, old / str(version))
        os.replace(stage / str(version), target)
        os.replace(stage / "config.pbtxt", final / "config.pbtxt")
    except BaseException:
        if old is not None and not (final / str(version)).exists():
            os.replace(old / str(version), final / str(version))  # put the old version back
        raise
    finally:
        for tmp in (stage, old):
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
