"""``python -m runtime.calibrate MODEL.onnx -o OUT.onnx [--calib-windows N] [--calib-events PATH]``: the
int8 graph of an exported fp32 graph, calibrated on event windows (``to_int8``), or, for a model of tensors
(classification, an imported NIR graph), on a ``.npy`` array of inputs or seeded uniform tensors.

The fp32 graph runs in ONNX Runtime, with the state carried from window to window, over consecutive
event windows of the built-in synthetic stereo stream (default) or of a user's recording, read by
the runtime's one window pipeline (``runtime.data.sources``) with the model's own encoding. The conv
outputs ``runtime.quantize`` will quantise are added as graph outputs and their min/max recorded.

A deployment host can quantise a model itself (ONNX and ONNX Runtime, no torch).
``python -m compiler.build --int8`` runs this command (``compiler/int8.py``): the compiler imports only
``runtime.core``, and calibration reads event data.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from runtime.core import memory, names
from runtime.core.atomic import write_bytes_atomic
from runtime.core.errors import ArgumentParser, first_line, run_main
from runtime.data import sources
from runtime.quantize import int8_conv_outputs, quantize_int8

CALIBRATION_SEED = 100  # the built-in stream's seed for calibration (held-out evaluation uses seeds 0-3)


class CalibrationError(ValueError):
    """The calibration data cannot be read or does not fit the model; the message says why."""


MAX_SYNTHETIC_S = 3600.0  # the built-in stream is generated in memory (as runtime.stream's)


def check_windows(count: int, window_bytes: int, window_us: int, synthetic: bool) -> None:
    """Refuse a ``--calib-windows`` whose windows (held in memory together) exceed the memory budget
    (``runtime.core.memory``), or, on the built-in stream, its length limit; the message says the most."""
    if count < 1:
        raise CalibrationError(f"--calib-windows must be at least 1, got {count}")
    budget = memory.default_budget()
    most = max(1, budget // max(window_bytes, 1))
    if synthetic:
        most = min(most, int(MAX_SYNTHETIC_S * 1e6 // window_us) - 1)
    if count > most:
        raise CalibrationError(f"--calib-windows {count}: {count:,} windows of {window_bytes:,} bytes need "
                               f"{memory.gb(count * window_bytes)}; at most {most:,} fit (a quarter of the memory "
                               f"available, {memory.gb(budget)}" + (f", and {MAX_SYNTHETIC_S:g} s of the built-in "
                               "stream" if synthetic else "") + ")")


def calibration_windows(proto: onnx.ModelProto, events: str | None = None, count: int = 16,
                        seed: int = CALIBRATION_SEED) -> list[dict[str, np.ndarray]]:
    """``count`` consecutive encoded windows, as the graph's data inputs (batch 1), from ``events``
    (None: the built-in synthetic stream at the model's size) with the model's ``snn.encoding``."""
    meta = {p.key: p.value for p in proto.metadata_props}
    task = names.TASKS.get(meta.get(names.META_TASK, ""))
    if task is None:
        raise CalibrationError(f"snn.task {meta.get(names.META_TASK)!r}: not a model of this contract")
    if not task.events:
        return tensor_feeds(proto, task.inputs[0], events, count, seed)
    enc = json.loads(meta[names.META_ENCODING])
    height, width, window_us = int(enc["height"]), int(enc["width"]), int(round(enc["window_ms"] * 1000))
    where = "--calib-events" if events else "the built-in synthetic stream"
    check_windows(count, 2 * int(enc["bins"]) * height * width * 4, window_us, synthetic=events is None)
    try:
        if events is None:
            rec = sources.open_recording(seed=seed, height=height, width=width,
                                         seconds=(count + 1) * window_us / 1e6 + 0.05)
        else:
            rec = sources.open_recording(events)
        crop = None if (rec.height, rec.width) == (height, width) else (height, width)
        feeds = [{"left": w.left[None], "right": w.right[None]}
                 for w in sources.windows(rec, window_us=window_us, bins=int(enc["bins"]), encoding=enc["kind"],
                                          max_windows=count, crop=crop)]
    except (OSError, ValueError, KeyError, TypeError) as exc:  # DataError is a ValueError
        raise CalibrationError(f"{where}: cannot read calibration windows: {first_line(exc)}") from None
    if len(feeds) < count:
        raise CalibrationError(f"{where}: has {len(feeds)} windows of {window_us // 1000} ms, "
                               f"--calib-windows asks for {count}")
    return feeds


def tensor_feeds(proto: onnx.ModelProto, name: str, path: str | None, count: int,
                 seed: int = CALIBRATION_SEED) -> list[dict[str, np.ndarray]]:
    """``count`` inputs of a model of tensors (images, an imported NIR graph): the first ``count`` of the
    ``.npy`` array at ``path`` ([N, C, H, W] or [N, *the input's shape without batch]), else seeded
    uniform values in [0, 1)."""
    shape = [d.dim_value for d in next(i for i in proto.graph.input if i.name == name).type.tensor_type.shape.dim[1:]]
    if path is None:
        rng = np.random.default_rng(seed)
        return [{name: rng.random((1, *shape), dtype=np.float32)} for _ in range(count)]
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"--calib-events {path}: not a readable .npy array of inputs: "
                               f"{first_line(exc)}") from None
    if data.ndim < 1 or data.shape[0] < count or int(np.prod(data.shape[1:])) != int(np.prod(shape)):
        raise CalibrationError(f"--calib-events {path}: holds {data.shape}, calibration needs {count} inputs of "
                               f"{int(np.prod(shape))} values each ({shape})")
    if not np.all(np.isfinite(data[:count])):
        raise CalibrationError(f"--calib-events {path}: holds non-finite values")
    return [{name: np.asarray(x, np.float32).reshape(1, *shape)} for x in data[:count]]


def output_ranges(proto: onnx.ModelProto, tensors: Sequence[str], feeds: Iterable[Mapping[str, np.ndarray]],
                  threads: int | None = None) -> dict[str, tuple[float, float]]:
    """(min, max) of each of ``tensors`` over a run of ``proto`` on ``feeds`` with the state carried."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    have = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]
    state = {i.name: np.zeros([1, *i.shape[1:]], np.float32)
             for i in session.get_inputs() if i.name.startswith(names.STATE_IN)}
    lo = {name: np.inf for name in tensors}
    hi = {name: -np.inf for name in tensors}
    for feed in feeds:
        values = dict(zip(out_names, session.run(out_names, {**feed, **state}), strict=True))
        state = {names.STATE_IN + k[len(names.STATE_OUT):]: v for k, v in values.items()
                 if k.startswith(names.STATE_OUT)}
        for name in tensors:
            lo[name] = min(lo[name], float(values[name].min()))
            hi[name] = max(hi[name], float(values[name].max()))
    return {name: (lo[name], hi[name]) for name in tensors}


def to_int8(proto: onnx.ModelProto, events: str | None = None, windows: int = 16,
            threads: int | None = None, pad_channels: bool = True) -> onnx.ModelProto:
    """The int8 graph of an fp32 graph, calibrated on ``windows`` windows of ``events``; ``pad_channels``:
    ``runtime.convpad``."""
    if windows < 1:
        raise CalibrationError(f"--calib-windows must be at least 1, got {windows}")
    feeds = calibration_windows(proto, events, windows)
    ranges = output_ranges(proto, int8_conv_outputs(proto), feeds, threads)
    tensors = not names.TASKS[{p.key: p.value for p in proto.metadata_props}[names.META_TASK]].events
    source = events or (f"uniform [0, 1) tensors, seed {CALIBRATION_SEED}" if tensors
                        else f"built-in synthetic stream, seed {CALIBRATION_SEED}")
    return quantize_int8(proto, ranges, {"source": source, "windows": windows, "statistic": "min/max"},
                         pad_channels=pad_channels)


def main(argv: list[str] | None = None) -> int:
    """Read ``MODEL``, write its int8 graph to ``-o`` (atomically); bad input: one line ``error: ...``, exit 2."""
    parser = ArgumentParser(prog="python -m runtime.calibrate", description=main.__doc__)
    parser.add_argument("model", help="the fp32 ONNX graph (python -m compiler.build)")
    parser.add_argument("-o", "--out", required=True, help="where to write the int8 graph")
    parser.add_argument("--calib-windows", type=int, default=16,
                        help="event windows to calibrate on (default 16; at most as many as fit a quarter of the "
                        "memory available, and 3600 s of the built-in stream)")
    parser.add_argument("--calib-events", default=None,
                        help="recording to calibrate on (default: the built-in synthetic stream); for a model of "
                        "tensors (classification) a .npy array of inputs (default: uniform [0, 1) tensors)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: its own)")
    parser.add_argument("--pad-channels", action=argparse.BooleanOptionalAction, default=True,
                        help="compute int8 convs with fewer than 16 output channels with 16, for ONNX Runtime's "
                        "faster x86 kernel (the same outputs; --no-pad-channels on ARM, where it only adds work)")
    args = parser.parse_args(argv)

    def body() -> int:
        try:
            proto = onnx.load(args.model)
        except Exception as exc:  # noqa: BLE001 - onnx raises several types for a file that is not a graph
            raise CalibrationError(f"{args.model}: not a readable ONNX graph: {first_line(exc)}") from None
        if os.path.isdir(args.out):  # before the calibration, which takes a while
            raise CalibrationError(f"-o {args.out}: is a folder; give the file to write the int8 graph to")
        int8 = to_int8(proto, args.calib_events, args.calib_windows, args.threads, args.pad_channels)
        try:
            write_bytes_atomic(os.fspath(args.out), int8.SerializeToString())
        except OSError as exc:
            raise CalibrationError(f"-o {args.out}: cannot write the int8 graph: {first_line(exc)}") from None
        return 0

    return run_main(body, (CalibrationError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
