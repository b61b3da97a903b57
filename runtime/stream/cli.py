"""``python -m runtime.stream``: the command line of the streaming runtime (options in docs/runtime.md)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from runtime.core.errors import ArgumentParser, RuntimeInputError, first_line, quiet_warnings
from runtime.data.events import DataError
from runtime.data.options import FLAGS, OptionError, add_recording_arguments, recording_options
from runtime.htmlreport import write_html
from runtime.metrics import DEFAULT_MIN_DISPARITY, load_energy_table
from runtime.report import DEFAULT_MAX_DROPPED, format_summary, write_report
from runtime.session import DEVICES

from .core import Stream
from .result import StepResult
from .run import RunOptions, StreamRun
from .tensors import html_view, stream_tensors, tensor_series


def _source_and_output_options(p: argparse.ArgumentParser) -> None:
    """The synthetic source's options and what a run writes (in --help order)."""
    from runtime.data.synth.config import TEXTURE_SETS, SynthConfig  # the defaults of the synthetic source

    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream (default 0)")
    p.add_argument(
        "--textures",
        choices=TEXTURE_SETS,
        help=f"photographs of the synthetic stream: all, train, heldout (the half training never sees) or "
        f"train_more / train_most (train and two / four more; default {SynthConfig.textures})",
    )
    p.add_argument(
        "--scene-types",
        metavar="LIST",
        help="comma-separated scene types of the synthetic stream (default "
        f"{','.join(SynthConfig.scene_types)}; training never sees corridor)",
    )
    p.add_argument("--report", metavar="JSON", help="write every number to this JSON file")
    p.add_argument("--report-html", metavar="HTML", help="write a self-contained HTML page of the run: summary, "
                   "firing rates, latency, accuracy and sparsity over time, a few frames")
    p.add_argument(
        "--save-dir",
        metavar="DIR",
        help="write predicted disparity maps as .npy and PNG (events | prediction | ground truth)",
    )
    p.add_argument(
        "--dsec-submission",
        metavar="DIR",
        help="DSEC disparity benchmark: write DIR/<sequence>/<file_index>.png (uint16, disparity * 256) for "
        "each timestamp of the sequence's evaluation CSV, windows ending there (docs/runtime.md)",
    )
    p.add_argument(
        "--dsec-timestamps",
        metavar="CSV",
        help="the evaluation timestamps (timestamp_us, file_index), a CSV or the unzipped "
        "test_disparity_timestamps folder (default: <sequence folder>/<sequence>.csv)",
    )
    p.add_argument(
        "--load-state", metavar="NPZ", help="start from a state saved by --save-state (chunked runs)"
    )
    p.add_argument("--save-state", metavar="NPZ", help="save the final state (to continue with --load-state)")
    p.add_argument(
        "--max-dropped",
        type=float,
        default=DEFAULT_MAX_DROPPED,
        metavar="FRACTION",
        help=f"refuse the run when more than this share of the event rows are bad data (default "
        f"{DEFAULT_MAX_DROPPED:g}; 1 accepts any loss; docs/reliability.md)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def _parser() -> argparse.ArgumentParser:
    """Every option of ``python -m runtime.stream`` (docs/runtime.md)."""
    p = ArgumentParser(
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
    p.add_argument("--tensors", metavar="NPY", help="a model of tensors (classification, an imported NIR graph): "
                   "stream this [T, *input shape] array, one input per step, instead of events")
    p.add_argument("--labels", metavar="NPY", help="with --tensors: one integer label per step, to score outputs")
    add_recording_arguments(p, "stream", ("calib", "rectify", "rectify_rounding", "fb", "gt_protocol",
                                          "max_outside_rectify"))
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="execution provider (default auto: CUDA if it can start, else CPU; TensorRT only on request)",
    )
    p.add_argument(
        "--threads", type=int, metavar="N", help="intra-op threads (default: the cores available)"
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
    add_recording_arguments(p, "stream", ("crop",))
    p.add_argument(
        "--min-disparity",
        type=float,
        default=DEFAULT_MIN_DISPARITY,
        metavar="PX",
        help="predicted disparities below this count as this for depth = fB / disparity (default 1)",
    )
    _source_and_output_options(p)
    return p


# field -> flag of every option this command line's errors may name (the recording's: FLAGS)
STREAM_FLAGS = {**FLAGS, "events": "--events", "burn_in": "--burn-in", "max_steps": "--max-steps", "start_s": "--start",
                "reset_every": "--reset-every", "min_disparity": "--min-disparity", "seed": "--seed",
                "textures": "--textures", "scene_types": "--scene-types", "max_dropped": "--max-dropped",
                "save_dir": "--save-dir", "dsec_submission": "--dsec-submission",
                "dsec_timestamps": "--dsec-timestamps"}


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with a one-line message)."""
    args = _parser().parse_args(argv)
    try:
        with quiet_warnings():
            return _main(args)
    except OptionError as exc:  # named by its field: said with its flag
        print(f"error: {exc.render(STREAM_FLAGS)}", file=sys.stderr)
        return 2
    except RuntimeInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:  # the data layer's one error type (a corrupt or truncated recording)
        where = args.events or "synthetic source"
        print(
            f"error: {where}: {first_line(exc)}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _synth_options(args: argparse.Namespace) -> dict:
    """The synthetic source's ``SynthConfig`` fields given on the command line."""
    options: dict = {}
    if args.textures is not None:
        options["textures"] = args.textures
    if args.scene_types is not None:
        from runtime.data.synth.config import split_names

        options["scene_types"] = split_names(args.scene_types)
    return options


def _main(args: argparse.Namespace) -> int:
    """Parsed options to a ``StreamRun`` (runtime.stream.run), run with a progress bar, then printed."""
    if args.tensors is not None or args.labels is not None:
        return _main_tensors(args)
    run_options = RunOptions(save_dir=args.save_dir, dsec_submission=args.dsec_submission,
                             dsec_timestamps=args.dsec_timestamps, load_state=args.load_state,
                             save_state=args.save_state, report=args.report, max_dropped=args.max_dropped,
                             report_html=args.report_html).check()
    energy = load_energy_table(args.energy_table) if args.energy_table else None
    stream = Stream(args.onnx, args.events, options=recording_options(args), device=args.device, threads=args.threads,
                    burn_in=args.burn_in, max_steps=args.max_steps, start_s=args.start, reset_every=args.reset_every,
                    energy_table=energy, min_disparity=args.min_disparity, seed=args.seed,
                    keep_inputs=args.save_dir is not None or args.report_html is not None, synth=_synth_options(args))
    run = StreamRun(stream, run_options)
    with stream, run:
        with warnings.catch_warnings():  # said once, after the run, as one line each
            warnings.simplefilter("ignore")
            steps = run.steps()
        try:
            _progress(steps, args)
            report = run.finish()
        except RuntimeInputError as exc:  # one line: the error, then what the warnings said
            if not stream.warnings:
                raise
            text = exc.render(STREAM_FLAGS) if isinstance(exc, OptionError) else str(exc)
            where, what = text.split(": ", 1) if ": " in text else ("error", text)
            raise RuntimeInputError(where, what + "".join(f" (warning: {w})" for w in stream.warnings)) from None
    for message in stream.warnings:  # after the run: a refused run says one line, its error
        print(f"warning: {message}", file=sys.stderr)
    if not args.quiet:
        _print_summary(report, args)
    sub = report.get("dsec_submission")
    if sub is not None and not sub["complete"]:
        print(f"warning: --dsec-submission: wrote {sub['written']} of {sub['expected']} predictions; the submission "
              "is incomplete", file=sys.stderr)
    return 0


def _main_tensors(args: argparse.Namespace) -> int:
    """``--tensors``: a model of tensors stepped through its inputs (runtime.stream.tensors)."""
    if args.tensors is None:
        raise RuntimeInputError("--labels", "scores --tensors; give --tensors too")
    if args.events is not None:
        raise RuntimeInputError("--tensors", "streams tensors instead of --events; give one of them")
    report = stream_tensors(args.onnx, args.tensors, args.labels, device=args.device, threads=args.threads,
                            max_steps=args.max_steps)
    if args.report:
        write_report(report, args.report)
    if args.report_html:
        write_html(html_view(report), args.report_html, tensor_series(report),
                   title=f"runtime.stream --tensors: {Path(args.onnx).name}")
    if not args.quiet:
        acc = report.get("classification", {}).get("accuracy")
        print(f"model     {report['model']} ({report['task']}, {report['device']})\n"
              f"steps     {report['steps']} at {report['steps_per_s']:.1f} steps/s; latency p50 "
              f"{report['latency_ms']['p50']:.3f} ms, p99 {report['latency_ms']['p99']:.3f} ms"
              + ("" if acc is None else f"\naccuracy  {acc:.1%} of steps"))
    return 0


def _progress(steps: Iterator[StepResult], args: argparse.Namespace) -> None:
    """Run the steps, with a progress bar unless --quiet."""
    if args.quiet:
        for _ in steps:
            pass
        return
    from tqdm import tqdm

    with tqdm(total=args.max_steps, unit="step", desc="streaming", file=sys.stderr, disable=None) as bar:
        for result in steps:
            bar.update(1)
            if result.mean_disparity_error_px is not None:
                bar.set_postfix(err_px=f"{result.mean_disparity_error_px:.2f}", refresh=False)


def _print_summary(report: dict, args: argparse.Namespace) -> None:
    print(format_summary(report))
    if args.report:
        print(f"report    {args.report}")
    if args.save_dir is not None:
        print(f"saved     disparity maps in {Path(args.save_dir)}/")
    sub = report.get("dsec_submission")
    if sub is not None:
        print(f"dsec      {sub['written']} of {sub['expected']} predictions in {sub['folder']}/"
              + ("" if sub["complete"] else " (incomplete: --max-steps or --start stopped it)"))


if __name__ == "__main__":
    sys.exit(main())
