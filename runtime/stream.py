"""Streaming event-camera stereo through a compiled SNN: the Python API and ``python -m runtime.stream``.

One step per encoding window; the state is carried from step to step (and across chunks: feeding the
same windows in several calls, or to a second ``Stream`` given the first one's state, gives the same
outputs as one run).

    from runtime.stream import Stream
    with Stream("model.onnx", max_steps=20) as stream:   # no events: the built-in synthetic stereo stream
        for step in stream:
            use(step.disparity)                            # float32 [H, W], pixels
        print(stream.report()["speed"]["fps_model"])
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from runtime.contract import ModelSpec
from runtime.errors import RuntimeInputError
from runtime.events import DataError
from runtime.metrics import (
    DEFAULT_MIN_DISPARITY,
    EnergyTable,
    StereoErrors,
    energy_metrics,
    fps,
    load_energy_table,
    percentiles_ms,
    sparsity_metrics,
    stereo_errors,
    summarize_errors,
)
from runtime.session import DEVICES, SNNSession

if TYPE_CHECKING:  # the data layer is imported when a stream first needs it
    from runtime.sources import Encoder, Window


@dataclass
class StepResult:
    """What one step of the stream produced."""

    step: int  # position in this Stream, from 0
    index: int  # the window's ground-truth index when it has one, else its window number
    t0_us: int
    t1_us: int
    disparity: np.ndarray  # float32 [H, W] (the model's data output, batch removed)
    gt: np.ndarray | None
    spikes: dict[str, float]
    counted: bool  # False during burn-in
    timings_s: dict[str, float] = field(default_factory=dict)  # decode, encode, model, metrics, total
    valid_pixels: int = 0
    mean_disparity_error_px: float | None = None
    left: np.ndarray | None = None


# --------------------------------------------------------------------------- sources
def open_source(
    events: str | Path | None, spec: ModelSpec, *, seed: int = 0, seconds: float | None = None
) -> Any:
    """Open a recording: None = the built-in synthetic stereo stream at the model's size."""
    from runtime import sources

    where = f"--events {events}" if events is not None else "synthetic source"
    if events is not None and not Path(events).exists():
        raise RuntimeInputError(where, "no such file or folder")
    kwargs: dict[str, Any] = {"seed": seed}
    if events is None:
        kwargs.update(height=spec.encoding.height, width=spec.encoding.width)
        if seconds is not None:
            kwargs["seconds"] = seconds
    try:
        return sources.open_recording(None if events is None else str(events), **kwargs)
    except RuntimeInputError:
        raise
    except DataError as exc:
        raise RuntimeInputError(where, str(exc).strip().splitlines()[0]) from None
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeInputError(where, f"cannot read it: {msg}") from None


def _crop_size(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], crop: str, where: str
) -> tuple[int, int] | None:
    """The centre crop (h, w) that fits a recording of ``src_hw`` to the model's ``dst_hw``, or None."""
    if src_hw == dst_hw:
        return None
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if crop != "center":
        raise RuntimeInputError(
            where,
            f"the recording is {sw}x{sh} but the model expects {dw}x{dh} (snn.encoding); "
            f"pass --crop center to take its centre {dw}x{dh}",
        )
    if sh < dh or sw < dw:
        raise RuntimeInputError(
            where,
            f"the recording ({sw}x{sh}) is smaller than the model's input ({dw}x{dh}); "
            "a centre crop cannot make it fit",
        )
    return dh, dw


# --------------------------------------------------------------------------- the stream
class Stream:
    """A model, a source and the metrics of the steps run so far.

    Iterate over it to stream its source (``events``: None = built-in synthetic stereo, or a path), or
    call ``feed``/``run`` with windows (``runtime.sources.Window``) of your own. The state carries over
    between calls.
    """

    def __init__(
        self,
        model: str | Path,
        events: str | Path | None = None,
        *,
        device: str = "auto",
        threads: int | None = None,
        burn_in: int = 0,
        max_steps: int | None = None,
        start_s: float | None = None,
        reset_every: int | None = None,
        energy_table: EnergyTable | str | Path | None = None,
        crop: str = "none",
        min_disparity: float = DEFAULT_MIN_DISPARITY,
        seed: int = 0,
        io_binding: bool | None = None,
        recording: Any = None,
        encoder: Encoder | None = None,
        keep_inputs: bool = False,
    ) -> None:
        for name, value, low in (
            ("--burn-in", burn_in, 0),
            ("--max-steps", max_steps, 1),
            ("--reset-every", reset_every, 1),
        ):
            if value is not None and value < low:
                raise RuntimeInputError(name, f"must be at least {low}, got {value}")
        if start_s is not None and start_s < 0:
            raise RuntimeInputError("--start", f"must be >= 0 seconds, got {start_s}")
        if crop not in ("none", "center"):
            raise RuntimeInputError("--crop", f"{crop!r} is not one of none, center")
        if not min_disparity > 0:
            raise RuntimeInputError("--min-disparity", f"must be positive, got {min_disparity}")
        if isinstance(energy_table, (str, Path)):
            energy_table = load_energy_table(energy_table)
        self.energy = energy_table or EnergyTable()
        self.session = SNNSession(model, device=device, threads=threads, io_binding=io_binding)
        self.spec = self.session.spec
        self.model_path = str(model)
        self.events = events
        self.burn_in, self.max_steps, self.start_s = burn_in, max_steps, start_s
        self.reset_every, self.crop, self.min_disparity, self.seed = reset_every, crop, min_disparity, seed
        self.keep_inputs = keep_inputs
        self._recording = recording
        self._owns_recording = False
        self._encoder = encoder
        self._steps = 0
        self._counted: list[StepResult] = []
        self._spikes = {layer.name: 0.0 for layer in self.spec.layers}
        self._errors: list[StereoErrors] = []
        self._had_gt = False
        self._fb: float | None = None

    # ------------------------------------------------------------ source
    @property
    def recording(self) -> Any:
        """The source recording, opened on first use."""
        if self._recording is None:
            seconds = None
            if self.events is None and self.max_steps is not None:
                seconds = (self.start_s or 0.0) + (self.max_steps + 1) * self.spec.encoding.window_ms / 1000.0
            self._recording = open_source(self.events, self.spec, seed=self.seed, seconds=seconds)
            self._owns_recording = True
        return self._recording

    @property
    def fb(self) -> float | None:
        """Focal length x baseline (px m) of the source, None when unknown."""
        fb = getattr(self._recording, "fb", None) if self._recording is not None else self._fb
        return float(fb) if fb is not None and np.isfinite(fb) and fb > 0 else None

    def windows(self) -> Iterator[Window]:
        """The source's windows (``runtime.sources.windows``) from ``start_s`` on (not limited by ``max_steps``)."""
        from runtime import sources

        rec, enc = self.recording, self.spec.encoding
        start_us = None if self.start_s is None else int(rec.t_start_us) + int(round(self.start_s * 1e6))
        where = f"--events {self.events}" if self.events is not None else "synthetic source"
        crop = _crop_size((int(rec.height), int(rec.width)), (enc.height, enc.width), self.crop, where)
        return sources.windows(
            rec,
            window_us=enc.window_us,
            bins=enc.bins,
            encoding=enc.kind,
            start_us=start_us,
            crop=crop,
            encoder=self._encoder,
        )

    def __iter__(self) -> Iterator[StepResult]:
        windows: Iterable[Window] = self.windows()
        if self.max_steps is not None:
            windows = itertools.islice(windows, max(self.max_steps - self._steps, 0))
        return self.run(windows)

    # ------------------------------------------------------------ stepping
    def run(self, windows: Iterable[Window]) -> Iterator[StepResult]:
        """Feed windows one after the other, yielding each step's result."""
        for window in windows:
            yield self.feed(window)

    def feed(self, window: Window) -> StepResult:
        """Run one step on one window, carrying the state, and account for it in the metrics.

        The step's end-to-end time is the window's decode and encode time plus this call's time.
        """
        start = time.perf_counter()
        if self.reset_every and self._steps > 0 and self._steps % self.reset_every == 0:
            self.session.reset()
        out = self.session.step({"left": window.left, "right": window.right})
        counted = self._steps >= self.burn_in
        m0 = time.perf_counter()
        disparity = out.output
        result = StepResult(
            self._steps,
            window.index if window.gt_index is None else window.gt_index,
            window.t0_us,
            window.t1_us,
            disparity,
            window.disparity,
            out.spikes,
            counted,
            left=window.left if self.keep_inputs else None,
        )
        if window.disparity is not None:
            self._had_gt = True
            err = stereo_errors(disparity, window.disparity, self.fb, self.min_disparity)
            result.valid_pixels = err.valid
            result.mean_disparity_error_px = float(err.disparity_px.mean()) if err.valid else None
            if counted:
                self._errors.append(err)
        if counted:
            for name, n in out.spikes.items():
                self._spikes[name] += n
        end = time.perf_counter()
        result.timings_s = {
            "decode": window.decode_s,
            "encode": window.encode_s,
            "model": out.model_s,
            "metrics": end - m0,
            "total": window.decode_s + window.encode_s + (end - start),
        }
        if counted:
            self._counted.append(result)
        self._steps += 1
        return result

    def feed_arrays(self, left: np.ndarray, right: np.ndarray, gt: np.ndarray | None = None) -> StepResult:
        """Run one step on encoded arrays [bins, H, W] of your own (an application's event pipeline)."""
        from runtime.sources import Window

        return self.feed(Window(self._steps, 0, 0, left, right, gt))

    # ------------------------------------------------------------ state
    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the carried state (name -> array with batch axis)."""
        return self.session.state

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from a state saved earlier (e.g. by another Stream at the end of a chunk)."""
        self.session.set_state(state)

    def reset(self) -> None:
        """Zero the state."""
        self.session.reset()

    def close(self) -> None:
        """Close the recording if this stream opened it."""
        if self._owns_recording and self._recording is not None and hasattr(self._recording, "close"):
            self._recording.close()
        self._recording = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ report
    def report(self) -> dict[str, Any]:
        """Every number of the run so far, under the stable keys documented in docs/runtime.md."""
        spec, counted = self.spec, self._counted
        n = len(counted)
        t = {k: [r.timings_s[k] for r in counted] for k in ("decode", "encode", "model", "metrics", "total")}
        per_step = {k: (float(np.mean(v)) * 1000.0 if v else None) for k, v in t.items() if k != "total"}
        total_mean = float(np.mean(t["total"])) * 1000.0 if n else None
        per_step["other"] = (total_mean - sum(v for v in per_step.values() if v is not None)) if n else None
        per_step["total"] = total_mean
        rec = self._recording
        source = {
            "kind": _source_kind(rec, self.events),
            "path": None if self.events is None else str(self.events),
            "height": int(rec.height) if rec is not None else spec.encoding.height,
            "width": int(rec.width) if rec is not None else spec.encoding.width,
            "fb": self.fb,
            "crop": self.crop,
        }
        accuracy = None
        if self._had_gt:
            accuracy = summarize_errors(self._errors)
            accuracy["min_disparity_px"] = self.min_disparity
            if self.fb is None:
                accuracy["note"] = "no focal length x baseline for this source: depth errors not computed"
        return {
            "schema": 1,
            "model": {
                "path": self.model_path,
                "task": spec.task,
                "encoding": spec.encoding.to_dict(),
                "max_disparity": spec.max_disparity,
                "layers": [lay.name for lay in spec.layers],
                "state_tensors": len(spec.states),
            },
            "runtime": {
                "device": self.session.device,
                "requested_device": self.session.requested_device,
                "providers": self.session.providers,
                "threads": self.session.threads,
                "io_binding": self.session.io_binding,
                "onnxruntime": ort.__version__,
            },
            "source": source,
            "steps": {
                "total": self._steps,
                "burn_in": min(self.burn_in, self._steps),
                "counted": n,
                "reset_every": self.reset_every,
            },
            "speed": {
                "fps_model": fps(t["model"]),
                "fps_end_to_end": fps(t["total"]),
                "latency_ms": {"model": percentiles_ms(t["model"]), "end_to_end": percentiles_ms(t["total"])},
                "time_per_step_ms": per_step,
            },
            "sparsity": sparsity_metrics(self._spikes, n, spec.layers),
            "energy": energy_metrics(self._spikes, n, spec.layers, spec.dense_macs_per_step, self.energy),
            "accuracy": accuracy,
        }


def _source_kind(rec: Any, events: str | Path | None) -> str:
    kind = getattr(rec, "kind", None)
    if kind:
        return str(kind)
    if rec is not None:
        name = type(rec).__name__.removesuffix("Recording").lower()
        if name:
            return name
    return "synthetic" if events is None else "file"


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runtime.stream",
        description="Stream event-camera stereo through a compiled SNN (ONNX contract, schema 1) and report "
        "speed, sparsity, energy and accuracy.",
    )
    p.add_argument("--onnx", required=True, metavar="MODEL", help="the compiled model (.onnx)")
    p.add_argument(
        "--events",
        metavar="PATH",
        help="MVSEC *_data.hdf5 (ground truth found beside it), our synthetic "
        "*_data.hdf5, or a DSEC sequence folder; default: the built-in synthetic stereo stream",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="execution provider (default auto: CUDA if it can start, else CPU; TensorRT only on request)",
    )
    p.add_argument(
        "--threads", type=int, metavar="N", help="intra-op threads (default: ONNX Runtime's choice)"
    )
    p.add_argument(
        "--burn-in", type=int, default=0, metavar="N", help="steps run before metrics count (default 0)"
    )
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps, burn-in included")
    p.add_argument(
        "--start",
        type=float,
        metavar="SECONDS",
        help="skip windows starting before this many seconds after the recording's start",
    )
    p.add_argument("--reset-every", type=int, metavar="N", help="zero the state every N steps")
    p.add_argument("--energy-table", metavar="JSON", help='cost table {"pj_per_ac": 0.9, "pj_per_mac": 4.6}')
    p.add_argument(
        "--crop",
        choices=("none", "center"),
        default="none",
        help="take the centre of a recording "
        "larger than the model's input (default: a size mismatch is an error)",
    )
    p.add_argument(
        "--min-disparity",
        type=float,
        default=DEFAULT_MIN_DISPARITY,
        metavar="PX",
        help="predicted disparities below this count as this for depth = fB / disparity (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream (default 0)")
    p.add_argument("--report", metavar="JSON", help="write every number to this JSON file")
    p.add_argument(
        "--save-dir",
        metavar="DIR",
        help="write predicted disparity maps as .npy and PNG (events | prediction | ground truth)",
    )
    p.add_argument(
        "--load-state", metavar="NPZ", help="start from a state saved by --save-state (chunked runs)"
    )
    p.add_argument("--save-state", metavar="NPZ", help="save the final state (to continue with --load-state)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


def _load_state(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise RuntimeInputError(f"--load-state {path}", f"cannot read it ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with a one-line message)."""
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except RuntimeInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:  # the data layer's one error type (a corrupt or truncated recording)
        where = args.events or "synthetic source"
        print(
            f"error: {where}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    from runtime.report import format_summary, save_step, write_report

    if args.threads is not None and args.threads < 1:
        raise RuntimeInputError("--threads", f"must be at least 1, got {args.threads}")
    energy = load_energy_table(args.energy_table) if args.energy_table else None
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeInputError(f"--save-dir {save_dir}", f"cannot create it ({exc.strerror})") from None
    stream = Stream(
        args.onnx,
        args.events,
        device=args.device,
        threads=args.threads,
        burn_in=args.burn_in,
        max_steps=args.max_steps,
        start_s=args.start,
        reset_every=args.reset_every,
        energy_table=energy,
        crop=args.crop,
        min_disparity=args.min_disparity,
        seed=args.seed,
        keep_inputs=save_dir is not None,
    )
    if stream.spec.task != "stereo":
        raise RuntimeInputError(
            args.onnx, f"snn.task is {stream.spec.task!r}; runtime.stream streams stereo models"
        )
    if args.load_state:
        stream.set_state(_load_state(args.load_state))
    with stream:
        steps: Iterable[StepResult] = stream
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=args.max_steps, unit="step", desc="streaming", file=sys.stderr, disable=None)
        for result in steps:
            if save_dir is not None:
                save_step(
                    save_dir,
                    result.index,
                    result.disparity,
                    max_disparity=stream.spec.max_disparity or 1.0,
                    gt=result.gt,
                    left=result.left,
                )
            if bar is not None:
                bar.update(1)
                if result.mean_disparity_error_px is not None:
                    bar.set_postfix(err_px=f"{result.mean_disparity_error_px:.2f}", refresh=False)
        if bar is not None:
            bar.close()
        if stream.report()["steps"]["total"] == 0:
            raise RuntimeInputError(
                args.events or "synthetic source",
                "no window to stream (recording too short, or --start past its end)",
            )
        report = stream.report()
        if args.save_state:
            try:
                np.savez(args.save_state, **stream.state)
            except OSError as exc:
                raise RuntimeInputError(
                    f"--save-state {args.save_state}", f"cannot write it ({exc.strerror})"
                ) from None
    if args.report:
        write_report(report, args.report)
    if not args.quiet:
        print(format_summary(report))
        if args.report:
            print(f"report    {args.report}")
        if save_dir is not None:
            print(f"saved     disparity maps in {save_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
