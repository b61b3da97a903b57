"""``--int8``: the runtime's calibrating quantiser, reached through its command line.

Calibration runs the fp32 graph in ONNX Runtime on event windows (``runtime.data``), and the
compiler imports only ``runtime.core``; so ``compiler.build --int8`` writes the fp32 graph to a
private temporary folder and runs ``python -m runtime.calibrate`` on it (the same command a
deployment host runs; ``runtime/calibrate.py``), with the runtime of this source tree first on the
path. Its one-line error becomes the build's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]  # the tree that holds compiler/ and runtime/


class Int8Error(ValueError):
    """Calibration or quantisation failed; the message is the runtime command's one-line error."""


def to_int8(proto: onnx.ModelProto, events: str | None = None, windows: int = 16,
            pad_channels: bool = True) -> onnx.ModelProto:
    """The int8 graph of ``proto`` (``runtime.calibrate.to_int8``, run as ``python -m runtime.calibrate``;
    ``pad_channels=False``: its ``--no-pad-channels``)."""
    with tempfile.TemporaryDirectory(prefix="snn-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(proto.SerializeToString())
        cmd = [sys.executable, "-m", "runtime.calibrate", str(src), "-o", str(dst), "--calib-windows", str(windows)]
        if events is not None:
            cmd += ["--calib-events", events]
        if not pad_channels:
            cmd.append("--no-pad-channels")
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise Int8Error(lines[-1].removeprefix("error: ") if lines else
                            f"python -m runtime.calibrate stopped with exit status {done.returncode}")
        return onnx.load_from_string(dst.read_bytes())
