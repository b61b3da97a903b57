"""``python -m runtime.stream``: the command line of the streaming runtime (options in docs/runtime.md)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

from runtime.errors import ArgumentParser, RuntimeInputError, first_line, quiet_warnings
from runtime.events import DataError
from runtime.metrics import DEFAULT_MIN_DISPARITY, load_energy_table
from runtime.recording_options import add_recording_arguments
from runtime.report import DEFAULT_MAX_DROPPED
from runtime.session import DEVICES
from runtime.statefile import load_state, save_state

from .core import StepResult, Stream


def _parser() -> argparse.ArgumentParser:
    """Every option of ``python -m runtime.stream`` (a flat list, long by nature; docs/runtime.md)."""
    from runtime.synth.config import TEXTURE_SETS, SynthConfig  # the defaults of the synthetic source

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
    add_recording_arguments(p, "stream", ("calib", "rectify", "rectify_rounding", "fb", "gt_protocol"))
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
    add_recording_arguments(p, "stream", ("crop",))
    p.add_argument(
        "--min-disparity",
        type=float,
        default=DEFAULT_MIN_DISPARITY,
        metavar="PX",
        help="predicted disparities below this count as this for depth = fB / disparity (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream (default 0)")
    p.add_argument(
        "--textures",
        choices=TEXTURE_SETS,
        help=f"photographs of the synthetic stream: all, train or heldout (the half training never sees; "
        f"default {SynthConfig.textures})",
    )
    p.add_argument(
        "--scene-types",
        metavar="LIST",
        help="comma-separated scene types of the synthetic stream (default "
        f"{','.join(SynthConfig.scene_types)}; training never sees corridor)",
    )
    p.add_argument("--report", metavar="JSON", help="write every number to this JSON file")
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
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with a one-line message)."""
    args = _parser().parse_args(argv)
    try:
        with quiet_warnings():
            return _main(args)
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
        from runtime.synth.config import split_names

        options["scene_types"] = split_names(args.scene_types)
    return options


def _main(args: argparse.Namespace) -> int:
    """One run of the command line in order: options checked, stream opened, steps run with the progress
    bar and per-step files, report printed and written; long because it is that sequence."""
    from runtime.report import format_summary, quality_problem, save_step, write_report

    if not 0 <= args.max_dropped <= 1:
        raise RuntimeInputError("--max-dropped", f"must be a fraction from 0 to 1, got {args.max_dropped}")
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
        calib=args.calib,
        rectify=args.rectify,
        rectify_rounding=args.rectify_rounding,
        fb=args.fb,
        gt_protocol=args.gt,
        synth=_synth_options(args),
    )
    if stream.spec.task != "stereo":
        raise RuntimeInputError(
            args.onnx, f"snn.task is {stream.spec.task!r}; runtime.stream streams stereo models"
        )
    submission = None
    if args.dsec_submission:
        from .submission import prepare

        submission = prepare(stream, args.dsec_submission, args.dsec_timestamps)
        if stream.recording.gt_timestamps_us is not None:
            stream.warnings.append(f"--events {args.events}: its ground truth is not scored: the windows end at "
                                   "the --dsec-timestamps times")
    elif args.dsec_timestamps:
        raise RuntimeInputError("--dsec-timestamps", "applies with --dsec-submission DIR")
    if args.load_state:
        stream.set_state(load_state(args.load_state), where=f"--load-state {args.load_state}")
    with stream:
        with warnings.catch_warnings():  # said once below, as one line each
            warnings.simplefilter("ignore")
            steps: Iterable[StepResult] = iter(stream)
        for message in stream.warnings:
            print(f"warning: {message}", file=sys.stderr)
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=args.max_steps, unit="step", desc="streaming", file=sys.stderr, disable=None)
        for result in steps:
            if save_dir is not None:
                save_step(
                    save_dir,
                    result.window,
                    result.disparity,
                    max_disparity=stream.spec.max_disparity or 1.0,
                    gt=result.gt,
                    left=result.left,
                )
            if submission is not None:
                submission.write(result.t1_us, result.disparity)
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
        if submission is not None:  # present only with --dsec-submission
            report["dsec_submission"] = submission.section()
        problem = quality_problem(report, args.max_dropped)
        if problem:  # the report, if asked for, says why and withholds the accuracy; nothing else is written
            report.update(error=problem, accuracy=None)
            if args.report:
                write_report(report, args.report)
            raise RuntimeInputError(args.events or "synthetic source", problem)
        if args.save_state:
            save_state(args.save_state, stream.state)
    if args.report:
        write_report(report, args.report)
    if not args.quiet:
        print(format_summary(report))
        if args.report:
            print(f"report    {args.report}")
        if save_dir is not None:
            print(f"saved     disparity maps in {save_dir}/")
        if submission is not None:
            sub = report["dsec_submission"]
            print(f"dsec      {sub['written']} of {sub['expected']} predictions in {sub['folder']}/"
                  + ("" if sub["complete"] else " (incomplete: --max-steps or --start stopped it)"))
    if submission is not None and not report["dsec_submission"]["complete"]:
        print(f"warning: --dsec-submission: wrote {report['dsec_submission']['written']} of "
              f"{report['dsec_submission']['expected']} predictions; the submission is incomplete", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
