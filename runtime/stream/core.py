"""The streaming runtime's Python API: ``Stream`` (a model, a source, the metrics of the steps run so
far) and ``StepResult``; the package docstring (``runtime.stream``) shows its use."""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.core.errors import RuntimeInputError
from runtime.metrics import (
    DEFAULT_MIN_DISPARITY,
    EnergyTable,
    StereoErrors,
    load_energy_table,
    stereo_errors,
)
from runtime.session import SNNSession, StepOutput
from runtime.statefile import check_state

from .opening import crop_size, open_source
from .quality import Quality

MAX_START_S = 10**9  # seconds into a recording (30 years)
MAX_SYNTHETIC_S = 3600.0  # the built-in synthetic stream is generated in memory

if TYPE_CHECKING:  # the data layer is imported when a stream first needs it
    from runtime.data.sources import Encoder, Window


@dataclass
class StepResult:
    """What one step of the stream produced."""

    step: int  # position in this Stream, from 0
    index: int  # the window's ground-truth index when it has one, else its window number (``window``)
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
    window: int = 0  # the window's number in its recording (runtime.data.tiling.window_ends)
    has_events: bool = True  # False when both inputs are all zero (no event, or events that cancel)
    non_finite_pixels: int = 0  # pixels of the output that are NaN or inf (never scored)


# --------------------------------------------------------------------------- the stream
class Stream:
    """A model, a source and the metrics of the steps run so far.

    Iterate over it to stream its source (``events``: None = built-in synthetic stereo, or a path), or
    call ``feed``/``run`` with windows (``runtime.data.sources.Window``) of your own. The state carries over
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
        calib: str | Path | None = None,
        rectify: bool = True,
        fb: float | None = None,
        gt_protocol: str = "full",
        session: Any = None,
        rectify_rounding: str = "round",
        synth: Mapping[str, Any] | None = None,
    ) -> None:
        for name, value, low in (
            ("--burn-in", burn_in, 0),
            ("--max-steps", max_steps, 1),
            ("--reset-every", reset_every, 1),
        ):
            if value is not None and value < low:
                raise RuntimeInputError(name, f"must be at least {low}, got {value}")
        if start_s is not None and not 0 <= start_s <= MAX_START_S:
            raise RuntimeInputError("--start", f"must be from 0 to {MAX_START_S:g} seconds, got {start_s}")
        if crop not in ("none", "center"):
            raise RuntimeInputError("--crop", f"{crop!r} is not one of none, center")
        if not 0 < min_disparity < math.inf:
            raise RuntimeInputError("--min-disparity", f"must be positive and finite, got {min_disparity}")
        if seed < 0:
            raise RuntimeInputError("--seed", f"must be >= 0, got {seed}")
        if fb is not None and not (np.isfinite(fb) and fb > 0):
            raise RuntimeInputError("--fb", f"must be a positive number of px*m, got {fb}")
        from runtime.data.protocol import GT_PROTOCOLS
        from runtime.data.recording import RECTIFY_ROUNDINGS

        if gt_protocol not in GT_PROTOCOLS:
            raise RuntimeInputError("--gt", f"{gt_protocol!r} is not one of {', '.join(GT_PROTOCOLS)}")
        if rectify_rounding not in RECTIFY_ROUNDINGS:
            raise RuntimeInputError("--rectify-rounding",
                                    f"{rectify_rounding!r} is not one of {', '.join(RECTIFY_ROUNDINGS)}")
        if isinstance(energy_table, (str, Path)):
            energy_table = load_energy_table(energy_table)
        self.energy = energy_table or EnergyTable()
        # ``session``: anything with SNNSession's step/reset/state/set_state (runtime.multistream gives a
        # stream one slot of a shared session); by default the stream opens a session of its own
        self.session = session if session is not None else SNNSession(model, device=device, threads=threads,
                                                                       io_binding=io_binding)
        self.spec = self.session.spec
        self.model_path = str(model)
        self.events = events
        self.burn_in, self.max_steps, self.start_s = burn_in, max_steps, start_s
        self.reset_every, self.crop, self.min_disparity, self.seed = reset_every, crop, min_disparity, seed
        self.keep_inputs = keep_inputs
        self.calib, self.rectify, self.fb_override, self.gt_protocol = calib, rectify, fb, gt_protocol
        self.rectify_rounding = rectify_rounding
        self.synth = dict(synth or {})  # SynthConfig fields of the built-in synthetic source
        self._protocol: dict[str, Any] | None = None  # runtime.data.protocol.describe of the source
        self.warnings: list[str] = []  # what the user should know about the data, one sentence each
        self._recording = recording
        self._owns_recording = False
        self._encoder = encoder
        self._steps = 0
        self._counted: list[StepResult] = []
        self._spikes = {layer.name: 0.0 for layer in self.spec.layers}
        self._errors: list[StereoErrors] = []
        self._had_gt = False
        self._fb: float | None = None
        self._quality = Quality(self._spikes)
        # times the windows must end at in place of the ground truth's (int64 [n], increasing; set before
        # streaming): the DSEC benchmark timestamps of runtime.stream.submission; ground truth is then not read
        self.window_anchors_us: np.ndarray | None = None

    # ------------------------------------------------------------ source
    @property
    def recording(self) -> Any:
        """The source recording, opened on first use."""
        if self._recording is None:
            seconds = None
            if self.events is None and self.max_steps is not None:
                seconds = (self.start_s or 0.0) + (self.max_steps + 1) * self.spec.encoding.window_ms / 1000.0
                if seconds > MAX_SYNTHETIC_S:
                    raise RuntimeInputError(
                        "synthetic source",
                        f"--start and --max-steps ask for {seconds:.4g} s of the built-in stream, which is generated "
                        f"in memory: at most {MAX_SYNTHETIC_S:g} s (write a recording with python -m runtime.synth)",
                    )
            self._recording = open_source(
                self.events, self.spec, seed=self.seed, seconds=seconds, calib=self.calib,
                rectify=self.rectify, fb=self.fb_override, rectify_rounding=self.rectify_rounding,
                synth=self.synth,
            )
            self._owns_recording = True
        return self._recording

    @property
    def fb(self) -> float | None:
        """Focal length x baseline (px m) of the source, None when unknown."""
        fb = getattr(self._recording, "fb", None) if self._recording is not None else self._fb
        return float(fb) if fb is not None and np.isfinite(fb) and fb > 0 else None

    def windows(self) -> Iterator[Window]:
        """The source's windows (``runtime.data.sources.windows``) from ``start_s`` on (not limited by max_steps)."""
        from runtime.data import sources

        rec, enc = self.recording, self.spec.encoding
        start_us = None if self.start_s is None else int(rec.t_start_us) + int(round(self.start_s * 1e6))
        where = f"--events {self.events}" if self.events is not None else "synthetic source"
        crop = crop_size((int(rec.height), int(rec.width)), (enc.height, enc.width), self.crop, where)
        self._describe(rec, start_us, where)
        return sources.windows(
            rec,
            window_us=enc.window_us,
            bins=enc.bins,
            encoding=enc.kind,
            start_us=start_us,
            crop=crop,
            encoder=self._encoder,
            gt_protocol=self.gt_protocol,
            anchors_us=self.window_anchors_us,
        )

    def _describe(self, rec: Any, start_us: int | None, where: str) -> None:
        """Record the source's protocol (report ``source``) and warn when its ground truth lies
        outside its events (a run would otherwise score empty windows in silence) or when its
        calibration file's fB differs from the one in use."""
        from runtime.data.protocol import describe

        if self._protocol is not None:
            return
        self._protocol = describe(
            rec, window_us=self.spec.encoding.window_us, start_us=start_us, gt_protocol=self.gt_protocol,
            anchors_us=self.window_anchors_us,
        )
        for check in (self._protocol["fb_check"], self._protocol["gt_overlap"]):
            if check and check["warning"]:
                message = f"{where}: {check['warning']}"
                self.warnings.append(message)
                warnings.warn(message, stacklevel=3)

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
        out = self.session.step(self.inputs(window))
        return self.record(window, out, start)

    def inputs(self, window: Window) -> dict[str, np.ndarray]:
        """The model inputs of the next step (zeroing the state first when ``reset_every`` says so)."""
        if self.reset_every and self._steps > 0 and self._steps % self.reset_every == 0:
            self.session.reset()
        return {"left": window.left, "right": window.right}

    def record(self, window: Window, out: StepOutput, start: float) -> StepResult:
        """Account for a step the session ran on ``inputs(window)`` (``start``: when the step began)."""
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
            window=window.index,
            has_events=bool(np.any(window.left) or np.any(window.right)),
            non_finite_pixels=int(disparity.size - np.count_nonzero(np.isfinite(disparity))),
        )
        if window.disparity is not None:
            self._had_gt = True
            err = stereo_errors(disparity, window.disparity, self.fb, self.min_disparity)
            result.valid_pixels = err.valid
            result.mean_disparity_error_px = float(err.disparity_px.mean()) if err.valid else None
            if counted:
                self._errors.append(err)
        if counted:
            self._quality.account(result.has_events, result.non_finite_pixels, result.disparity.size, out.spikes,
                                  has_gt=window.disparity is not None)
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
        from runtime.data.sources import Window

        return self.feed(Window(self._steps, 0, 0, left, right, gt))

    def totals(self) -> tuple[dict[str, float], int, list[StereoErrors]]:
        """Spikes per layer, counted steps and per-window stereo errors so far (to pool over streams)."""
        return dict(self._spikes), len(self._counted), list(self._errors)

    # ------------------------------------------------------------ state
    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the carried state (name -> array with batch axis)."""
        return self.session.state

    def set_state(self, state: Mapping[str, np.ndarray], where: str = "state") -> None:
        """Continue from a state saved earlier (e.g. by another Stream at the end of a chunk); its arrays
        are checked first (``runtime.statefile.check_state``: names, dtypes, shapes, finite values)."""
        self.session.set_state(check_state(self.spec, state, where, batch=self.session.batch))

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
        """Every number of the run so far, under the stable keys documented in docs/runtime.md
        (built by ``runtime.stream.reporting.stream_report``)."""
        from .reporting import stream_report

        return stream_report(self)

    def data_quality(self) -> dict[str, Any]:
        """What was dropped or could not be scored (``runtime.stream.quality``, docs/reliability.md)."""
        return self._quality.section(self._recording, self._errors)
