"""The streaming runtime's Python API: ``Stream`` (a model, a source, the metrics of the steps run so
far) and ``StepResult``; the package docstring (``runtime.stream``) shows its use."""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import runtime.data.sources  # looked up at each use: tests put a fake data layer there
from runtime.data.options import OptionError, RecordingOptions
from runtime.data.protocol import describe
from runtime.data.recording import Recording
from runtime.metrics import DEFAULT_MIN_DISPARITY, EnergyTable, StereoErrors, load_energy_table, stereo_errors
from runtime.session import SNNSession, StepOutput, StepSession
from runtime.statefile import check_state

from .opening import crop_size, open_source
from .reporting import Tally, source_section, stream_report
from .result import StepResult

MAX_START_S = 10**9  # seconds into a recording (30 years)
MAX_SYNTHETIC_S = 3600.0  # the built-in synthetic stream is generated in memory


def check_run_options(*, burn_in: int, max_steps: int | None, reset_every: int | None, start_s: float | None,
                      min_disparity: float, seed: int) -> None:
    """A ``Stream``'s own options (those not of the recording); ``OptionError`` names the first bad one."""
    for name, value, low in (("burn_in", burn_in, 0), ("max_steps", max_steps, 1), ("reset_every", reset_every, 1)):
        if value is not None and value < low:
            raise OptionError(name, f"must be at least {low}, got {value}")
    if start_s is not None and not 0 <= start_s <= MAX_START_S:
        raise OptionError("start_s", f"must be from 0 to {MAX_START_S:g} seconds, got {start_s}")
    if not 0 < min_disparity < math.inf:
        raise OptionError("min_disparity", f"must be positive and finite, got {min_disparity}")
    if seed < 0:
        raise OptionError("seed", f"must be >= 0, got {seed}")


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
        options: RecordingOptions | None = None,
        device: str = "auto",
        threads: int | None = None,
        burn_in: int = 0,
        max_steps: int | None = None,
        start_s: float | None = None,
        reset_every: int | None = None,
        energy_table: EnergyTable | str | Path | None = None,
        min_disparity: float = DEFAULT_MIN_DISPARITY,
        seed: int = 0,
        io_binding: bool | None = None,
        recording: Recording | None = None,
        encoder: runtime.data.sources.Encoder | None = None,
        keep_inputs: bool = False,
        session: StepSession | None = None,
        synth: Mapping[str, Any] | None = None,
    ) -> None:
        """``options``: how the recording is read (``RecordingOptions``: calibration, rectification, fB,
        ground-truth protocol, crop); ``synth``: ``SynthConfig`` fields of the built-in synthetic source;
        ``recording``/``encoder``: a recording of your own instead of ``events``; ``session``: anything
        with ``StepSession``'s interface (``runtime.multistream`` gives a stream one slot of a shared
        session), by default a session of its own. Bad values: ``OptionError`` naming the field."""
        check_run_options(burn_in=burn_in, max_steps=max_steps, reset_every=reset_every, start_s=start_s,
                          min_disparity=min_disparity, seed=seed)
        self.options = (options or RecordingOptions()).check()
        if isinstance(energy_table, (str, Path)):
            energy_table = load_energy_table(energy_table)
        self.energy = energy_table or EnergyTable()
        self.session: StepSession = session if session is not None else SNNSession(
            model, device=device, threads=threads, io_binding=io_binding)
        self.spec = self.session.spec
        self.model_path, self.events = str(model), events
        self.burn_in, self.max_steps, self.start_s = burn_in, max_steps, start_s
        self.reset_every, self.min_disparity, self.seed = reset_every, min_disparity, seed
        self.keep_inputs = keep_inputs
        self.synth = dict(synth or {})  # SynthConfig fields of the built-in synthetic source
        self._protocol: dict[str, Any] | None = None  # runtime.data.protocol.describe of the source
        self.warnings: list[str] = []  # what the user should know about the data, one sentence each
        self._recording = recording
        self._owns_recording = False
        self._encoder = encoder
        self.tally = Tally.of(self.spec)  # the steps run so far and their metrics
        # times the windows must end at in place of the ground truth's (int64 [n], increasing; set before
        # streaming): the DSEC benchmark timestamps of runtime.stream.submission; ground truth is then not read
        self.window_anchors_us: np.ndarray | None = None

    @property
    def crop(self) -> str:
        """How a recording larger than the model is fitted (``options.crop``)."""
        return self.options.crop

    # ------------------------------------------------------------ source
    @property
    def recording(self) -> Recording:
        """The source recording, opened on first use."""
        if self._recording is None:
            seconds = None
            if self.events is None and self.max_steps is not None:
                seconds = (self.start_s or 0.0) + (self.max_steps + 1) * self.spec.encoding.window_ms / 1000.0
                if seconds > MAX_SYNTHETIC_S:
                    raise OptionError(
                        "synthetic source",
                        f"{{start_s}} and {{max_steps}} ask for {seconds:.4g} s of the built-in stream, which is "
                        f"generated in memory: at most {MAX_SYNTHETIC_S:g} s (write a recording with python -m "
                        "runtime.synth)", refs=("start_s", "max_steps"),
                    )
            self._recording = open_source(
                self.events, self.spec, self.options, seed=self.seed, seconds=seconds, synth=self.synth
            )
            self._owns_recording = True
        return self._recording

    @property
    def fb(self) -> float | None:
        """Focal length x baseline (px m) of the source, None when unknown."""
        fb = getattr(self._recording, "fb", None) if self._recording is not None else None
        return float(fb) if fb is not None and np.isfinite(fb) and fb > 0 else None

    def windows(self) -> Iterator[runtime.data.sources.Window]:
        """The source's windows (``runtime.data.sources.windows``) from ``start_s`` on (not limited by
        ``max_steps``)."""
        rec, enc = self.recording, self.spec.encoding
        start_us = None if self.start_s is None else int(rec.t_start_us) + int(round(self.start_s * 1e6))
        where = f"--events {self.events}" if self.events is not None else "synthetic source"
        crop = crop_size((int(rec.height), int(rec.width)), (enc.height, enc.width), self.crop, self.events)
        self._describe(rec, start_us, where)
        return runtime.data.sources.windows(
            rec,
            window_us=enc.window_us,
            bins=enc.bins,
            encoding=enc.kind,
            start_us=start_us,
            crop=crop,
            encoder=self._encoder,
            gt_protocol=self.options.gt_protocol,
            anchors_us=self.window_anchors_us,
        )

    def _describe(self, rec: Recording, start_us: int | None, where: str) -> None:
        """Record the source's protocol (report ``source``) and warn when its ground truth lies
        outside its events (a run would otherwise score empty windows in silence) or when its
        calibration file's fB differs from the one in use."""
        if self._protocol is not None:
            return
        self._protocol = describe(
            rec, window_us=self.spec.encoding.window_us, start_us=start_us, gt_protocol=self.options.gt_protocol,
            anchors_us=self.window_anchors_us,
        )
        for check in (self._protocol["fb_check"], self._protocol["gt_overlap"]):
            if check and check["warning"]:
                message = f"{where}: {check['warning']}"
                self.warnings.append(message)
                warnings.warn(message, stacklevel=3)

    def __iter__(self) -> Iterator[StepResult]:
        windows: Iterable[runtime.data.sources.Window] = self.windows()
        if self.max_steps is not None:
            windows = itertools.islice(windows, max(self.max_steps - self.tally.steps, 0))
        return self.run(windows)

    # ------------------------------------------------------------ stepping
    def run(self, windows: Iterable[runtime.data.sources.Window]) -> Iterator[StepResult]:
        """Feed windows one after the other, yielding each step's result."""
        for window in windows:
            yield self.feed(window)

    def feed(self, window: runtime.data.sources.Window) -> StepResult:
        """Run one step on one window, carrying the state, and account for it in the metrics.

        The step's end-to-end time is the window's decode and encode time plus this call's time.
        """
        start = time.perf_counter()
        out = self.session.step(self.inputs(window))
        return self.record(window, out, start)

    def inputs(self, window: runtime.data.sources.Window) -> dict[str, np.ndarray]:
        """The model inputs of the next step (zeroing the state first when ``reset_every`` says so)."""
        if self.reset_every and self.tally.steps > 0 and self.tally.steps % self.reset_every == 0:
            self.session.reset()
        return {"left": window.left, "right": window.right}

    def record(self, window: runtime.data.sources.Window, out: StepOutput, start: float) -> StepResult:
        """Account for a step the session ran on ``inputs(window)`` (``start``: when the step began)."""
        tally = self.tally
        counted = tally.steps >= self.burn_in
        m0 = time.perf_counter()
        disparity = out.output
        result = StepResult(
            tally.steps,
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
            tally.had_gt = True
            err = stereo_errors(disparity, window.disparity, self.fb, self.min_disparity)
            result.valid_pixels = err.valid
            result.mean_disparity_error_px = float(err.disparity_px.mean()) if err.valid else None
            if counted:
                tally.errors.append(err)
        if counted:
            tally.quality.account(result.has_events, result.non_finite_pixels, result.disparity.size, out.spikes,
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
            tally.counted.append(result)
        tally.steps += 1
        return result

    def feed_arrays(self, left: np.ndarray, right: np.ndarray, gt: np.ndarray | None = None) -> StepResult:
        """Run one step on encoded arrays [bins, H, W] of your own (an application's event pipeline)."""
        return self.feed(runtime.data.sources.Window(self.tally.steps, 0, 0, left, right, gt))

    def totals(self) -> tuple[dict[str, float], int, list[StereoErrors]]:
        """Spikes per layer, counted steps and per-window stereo errors so far (to pool over streams)."""
        t = self.tally
        return dict(t.spikes), len(t.counted), list(t.errors)

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
        source = source_section(self._recording, self.events, self.spec, fb=self.fb, crop=self.crop, seed=self.seed,
                                synth=self.synth, protocol=self._protocol)
        return stream_report(self.tally, model_path=self.model_path, spec=self.spec, session=self.session,
                             source=source, burn_in=self.burn_in, reset_every=self.reset_every, energy=self.energy,
                             min_disparity=self.min_disparity, fb=self.fb, data_quality=self.data_quality())

    def data_quality(self) -> dict[str, Any]:
        """What was dropped or could not be scored (``runtime.stream.quality``, docs/reliability.md)."""
        return self.tally.quality.section(self._recording, self.tally.errors)
