"""One run of a ``Stream`` as ``python -m runtime.stream`` makes it, in the library: per-step files
(disparity maps, a DSEC benchmark submission), the state carried in and out, the data-quality refusal
and the report file.

    stream = Stream("model.onnx", "seq_folder", options=RecordingOptions(gt_protocol="ddes"))
    run = StreamRun(stream, RunOptions(dsec_submission="submission", report="report.json").check())
    with stream, run:                                     # a run that does not finish leaves no submission
        for step in run.steps():
            ...
        report = run.finish()

Bad options are ``OptionError``s naming the field (``max_dropped``, ``dsec_submission``, ...); a run
whose data are too bad to score (``runtime.report.quality_problem``) is refused with a
``RuntimeInputError`` after its report (with the reason, without accuracy) is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.core.errors import RuntimeInputError
from runtime.core.names import TASKS
from runtime.data.options import OptionError
from runtime.htmlreport import MAX_FRAMES, Series, write_html
from runtime.report import DEFAULT_MAX_DROPPED, quality_problem, save_step, step_picture, write_report
from runtime.statefile import load_state, save_state

from .core import Stream
from .opening import SYNTHETIC
from .result import StepResult
from .submission import Submission, prepare


@dataclass(frozen=True)
class RunOptions:
    """What a run writes besides its steps, and when it refuses its numbers."""

    save_dir: str | None = None  # disparity maps as .npy and PNG
    dsec_submission: str | None = None  # DSEC benchmark: DIR/<sequence>/<file_index>.png
    dsec_timestamps: str | None = None  # the evaluation CSV (default: <sequence folder>/<sequence>.csv)
    load_state: str | None = None  # start from a saved state (.npz)
    save_state: str | None = None  # save the final state (.npz)
    report: str | None = None  # the report as JSON
    report_html: str | None = None  # the report as one self-contained HTML page (runtime.htmlreport)
    max_dropped: float = DEFAULT_MAX_DROPPED  # refuse the run above this share of bad event rows

    def check(self) -> RunOptions:
        """Itself, once ``max_dropped`` is a fraction and ``save_dir`` exists (created); else ``OptionError``."""
        if not 0 <= self.max_dropped <= 1:
            raise OptionError("max_dropped", f"must be a fraction from 0 to 1, got {self.max_dropped}")
        if self.save_dir is not None:
            try:
                Path(self.save_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OptionError("save_dir", f"cannot create it ({exc.strerror})", value=self.save_dir) from None
        return self


class StreamRun:
    """A stream of a stereo model run to its end with ``RunOptions``: ``steps()``, then ``finish()``.

    Made before streaming: the model must be a stereo model, a DSEC submission's timestamps are read
    (the stream's windows then end at them), a saved state is loaded."""

    def __init__(self, stream: Stream, options: RunOptions) -> None:
        self.stream, self.options = stream, options
        if not TASKS[stream.spec.task].disparity:
            raise RuntimeInputError(stream.model_path,
                                    f"snn.task is {stream.spec.task!r}; runtime.stream streams stereo models")
        self.submission: Submission | None = None
        if options.dsec_submission:
            self.submission = prepare(stream, options.dsec_submission, options.dsec_timestamps)
            if stream.recording.gt_timestamps_us is not None:
                stream.warnings.append(f"--events {stream.events}: its ground truth is not scored: the windows end "
                                       "at the --dsec-timestamps times")
        elif options.dsec_timestamps:
            raise OptionError("dsec_timestamps", "applies with {dsec_submission} DIR", refs=("dsec_submission",))
        if options.load_state:
            try:
                stream.set_state(load_state(options.load_state), where=f"--load-state {options.load_state}")
            except BaseException:
                self.close()
                raise
        self.series = Series() if options.report_html else None

    def close(self) -> None:
        """Drop what a run that does not finish wrote to its stage (the DSEC submission's PNGs)."""
        if self.submission is not None:
            self.submission.discard()

    def __enter__(self) -> StreamRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def steps(self) -> Iterator[StepResult]:
        """The stream's steps, each one's files written (``save_dir``, ``dsec_submission``) before it is
        yielded; the source is opened (and ``stream.warnings`` filled) by this call."""
        return self._write(iter(self.stream))

    def _write(self, steps: Iterator[StepResult]) -> Iterator[StepResult]:
        save_dir, stream = self.options.save_dir, self.stream
        for result in steps:
            if save_dir is not None:
                save_step(save_dir, result.window, result.disparity, max_disparity=stream.spec.max_disparity or 1.0,
                          gt=result.gt, left=result.left)
            if self.submission is not None:
                self.submission.write(result.t1_us, result.disparity)
            if self.series is not None:
                self._record(result)
            yield result

    def _record(self, result: StepResult) -> None:
        """A step in the HTML report's series; a few of its frames (spread over ``max_steps``, if known)."""
        series, stream = self.series, self.stream
        series.add(result.step, result.timings_s.get("model", 0.0), result.mean_disparity_error_px,
                   sum(result.spikes.values()), stream.spec.total_neurons)
        every = max(1, (stream.max_steps or 4 * MAX_FRAMES) // MAX_FRAMES)
        if len(series.frames) < MAX_FRAMES and result.step % every == 0:
            series.frames.append((result.step, step_picture(result.disparity, max_disparity=stream.spec.max_disparity
                                                            or 1.0, gt=result.gt, left=result.left)))

    def finish(self) -> dict[str, Any]:
        """The report (with ``dsec_submission`` when one was written), written to ``report``; the final
        state saved. A run with no step, or whose data are too bad to score, is refused."""
        stream, options = self.stream, self.options
        source = str(stream.events) if stream.events is not None else SYNTHETIC
        if stream.tally.steps == 0:
            raise OptionError(source, "no window to stream (recording too short, or {start_s} past its end)",
                              refs=("start_s",))
        report = stream.report()
        if self.submission is not None:
            report["dsec_submission"] = self.submission.section()
        problem = quality_problem(report, options.max_dropped, stream.options.max_outside_rectify)
        if problem:  # the report, if asked for, says why and withholds the accuracy; nothing else is written
            self.close()
            report.update(error=problem, accuracy=None)
            if options.report:
                write_report(report, options.report)
            raise RuntimeInputError(source, problem)
        if self.submission is not None:  # accepted: the PNGs move in
            self.submission.commit()
            self.submission = None
        if options.save_state:
            save_state(options.save_state, stream.state)
        if options.report:
            write_report(report, options.report)
        if options.report_html:
            write_html(report, options.report_html, self.series,
                       title=f"runtime.stream: {Path(stream.model_path).name}")
        return report
