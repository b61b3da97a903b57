"""``python -m runtime.serve``: many streams through one ONNX Runtime session (``runtime.multistream``), each
stream in its own batch slot, with per-stream and aggregate reports: stereo event streams, or streams of
tensors for a model of tensors (``--tensors``, ``runtime.tensorserve``).

    python -m runtime.serve --onnx build/stereo_small.onnx --streams 4 --max-steps 20 --stagger 5 --report serve.json
    python -m runtime.serve --onnx build/cifar10.onnx --tensors a.npy,b.npy --labels la.npy,lb.npy

Streams: every ``--events PATH`` (one stream each), then ``--streams N`` built-in synthetic streams (seeds
``--seed``, ``--seed`` + 1, ...); named cam0, cam1, ... in that order. Stream i joins at step
``i * --stagger`` (or when a slot frees up, with ``--max-streams``) and leaves after ``--max-steps``
windows or at the end of its source, freeing its slot. Options and report keys: docs/deploy.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from runtime.core.errors import ArgumentParser, RuntimeInputError, first_line, run_main
from runtime.data.events import DataError
from runtime.data.options import FLAGS, OptionError, add_recording_arguments, recording_options
from runtime.htmlreport import write_html
from runtime.metrics import DEFAULT_MIN_DISPARITY
from runtime.report import DEFAULT_MAX_DROPPED, write_report
from runtime.serving import MAX_STREAMS, ServeOptions, failures, serve
from runtime.session import DEVICES
from runtime.tensorserve import FLAGS as TENSOR_FLAGS
from runtime.tensorserve import HTML_COLUMNS, TensorServeOptions, format_tensor_serve, serve_tensors, tensor_html


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", required=True, metavar="MODEL",
                   help="the compiled model (.onnx): stereo (event streams) or of tensors (--tensors)")
    p.add_argument("--events", action="append", default=[], metavar="PATH",
                   help="a recording (MVSEC/our *_data.hdf5 or a DSEC folder) to serve as one stream (repeatable)")
    p.add_argument("--tensors", action="append", default=[], metavar="NPY",
                   help="a model of tensors (classification, an imported NIR graph): serve each [T, *input] array "
                   "as one stream (repeatable; a comma-separated list, or a folder: its *.npy by name), instead of "
                   "events")
    p.add_argument("--labels", action="append", default=[], metavar="NPY",
                   help="with --tensors: one integer label per step, a file per stream in the same order ('-' for "
                   "none), or a folder holding the labels of X.npy as X.npy")
    p.add_argument("--streams", type=int, metavar="N",
                   help=f"built-in synthetic streams to add (default 4 without --events, else 0; at most "
                   f"{MAX_STREAMS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the first synthetic stream (default 0)")
    p.add_argument("--max-steps", type=int, metavar="N", help="windows per stream, burn-in included")
    p.add_argument("--stagger", type=int, default=0, metavar="K", help="stream i joins at step i*K (default 0)")
    p.add_argument("--max-streams", type=int, metavar="M", help="slots in the batch; later streams wait")
    p.add_argument("--burn-in", type=int, default=0, metavar="N", help="steps per stream before metrics count")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="execution provider (default cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: the cores available)")
    p.add_argument("--energy-table", metavar="JSON", help='cost table {"pj_per_ac": 0.9, "pj_per_mac": 4.6}')
    add_recording_arguments(p, "serve", ("crop",))
    p.add_argument("--min-disparity", type=float, default=DEFAULT_MIN_DISPARITY, metavar="PX",
                   help="floor of predicted disparity for depth (default 1)")
    add_recording_arguments(p, "serve", ("calib", "rectify", "rectify_rounding", "fb", "gt_protocol",
                                         "max_outside_rectify"))
    p.add_argument("--max-dropped", type=float, default=DEFAULT_MAX_DROPPED, metavar="FRACTION",
                   help=f"refuse a stream when more than this share of its event rows are bad data (default "
                   f"{DEFAULT_MAX_DROPPED:g}; as runtime.stream; the others are scored alone)")
    p.add_argument("--memory-mb", type=float, metavar="MB",
                   help="memory budget of the open streams: streams open when they join, at most as many at once "
                   "as fit (default a quarter of the available memory; the report's aggregate.memory)")
    p.add_argument("--report", metavar="JSON", help="write the per-stream and aggregate reports to this file")
    p.add_argument("--report-html", metavar="HTML", help="write them as one self-contained HTML page")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


def options_of(args: argparse.Namespace) -> ServeOptions:
    """The parsed command line as ``ServeOptions``."""
    return ServeOptions(args.onnx, events=tuple(args.events), streams=args.streams, seed=args.seed,
                        max_steps=args.max_steps, stagger=args.stagger, max_streams=args.max_streams,
                        burn_in=args.burn_in, device=args.device, threads=args.threads,
                        energy_table=args.energy_table, min_disparity=args.min_disparity,
                        max_dropped=args.max_dropped, memory_mb=args.memory_mb)


def format_serve(report: dict[str, Any]) -> str:
    """A table of the streams and the aggregate, for people."""
    def f(v, fmt=".1f"):
        return "n/a" if v is None else format(v, fmt)

    rows = [("stream", "source", "joined", "left", "steps", "steps/s model", "1PA %", "disp. err px", "status")]
    for name, r in report["streams"].items():
        sv, acc = r["serve"], r["accuracy"] or {}
        source = sv["events"] or f"synthetic seed {sv['seed']}"
        steps, speed = r.get("steps", {}).get("total", 0), r.get("speed", {}).get("fps_model")
        rows.append((name, source, str(sv["joined_at_tick"]), str(sv["left_at_tick"]), str(steps),
                     f(speed), f(acc.get("one_pixel_accuracy_pct"), ".2f"),
                     f(acc.get("mean_disparity_error_px"), ".3f"), r.get("status", "ok")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    a = report["aggregate"]
    acc = a["accuracy"] or {}
    lines += ["", f"aggregate {a['streams']} streams, {a['steps']} steps in {a['runs']} runs (batch mean "
              f"{f(a['batch_size']['mean'], '.2f')}, max {a['batch_size']['max']}): {f(a['steps_per_s'])} steps/s "
              f"end to end, {f(a['model_steps_per_s'])} steps/s model only ({a['runtime']['device']}, threads "
              f"{a['runtime']['threads'] or 'default'})",
              f"          sparsity {f(a['sparsity']['network_sparsity'], '.4f')}, energy "
              f"{f(a['energy']['energy_per_step_uj'], '.4g')} uJ/step, 1PA "
              f"{f(acc.get('one_pixel_accuracy_pct'), '.2f')} %, mean disparity error "
              f"{f(acc.get('mean_disparity_error_px'), '.3f')} px"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when every stream was served; 1 when some failed or were refused (the others'
    report and summary written, one ``error: ...`` line naming them); 2 with a one-line ``error: ...`` for
    bad input or when no stream could be served."""
    args = _parser().parse_args(argv)

    def body() -> int:
        tensors = bool(args.tensors or args.labels)
        try:
            report = _serve_tensors(args) if tensors else _serve(args)
        except DataError as exc:
            raise RuntimeInputError("--onnx", first_line(exc)) from None
        except OptionError as exc:  # named by its field: said with its flag
            raise RuntimeInputError(*exc.render(TENSOR_FLAGS).split(": ", 1)) from None
        if args.report:
            write_report(report, args.report)
        if args.report_html:
            if tensors:
                write_html(tensor_html(report), args.report_html, columns=HTML_COLUMNS,
                           title=f"runtime.serve --tensors: {args.onnx}")
            else:
                write_html(report, args.report_html, title=f"runtime.serve: {args.onnx}")
        bad = failures(report)
        if bad and len(bad) == len(report["streams"]):
            raise RuntimeInputError(f"no stream served ({len(bad)} failed or refused)", "; ".join(bad))
        if not args.quiet:
            print(format_tensor_serve(report) if tensors else format_serve(report))
            if args.report:
                print(f"report    {args.report}")
        if bad:
            print(f"error: {len(bad)} of {len(report['streams'])} streams not served: {'; '.join(bad)}",
                  file=sys.stderr)
            return 1
        return 0

    return run_main(body, (RuntimeInputError,))


def _serve_tensors(args: argparse.Namespace) -> dict[str, Any]:
    """``tensorserve.serve_tensors`` of the command line; the event streams' own options are refused."""
    if not args.tensors:
        raise OptionError("labels", "scores {tensors}; give {tensors} too", refs=("tensors",))
    given = [flag for flag, value, default in (
        ("--events", args.events, []), ("--streams", args.streams, None), ("--burn-in", args.burn_in, 0),
        ("--max-dropped", args.max_dropped, DEFAULT_MAX_DROPPED), ("--energy-table", args.energy_table, None),
        ("--min-disparity", args.min_disparity, DEFAULT_MIN_DISPARITY), ("--gt", args.gt, "full")) if value != default]
    given += [FLAGS[f] for f in recording_options(args).file_only() + (["crop"] if args.crop != "none" else [])]
    if given:
        raise OptionError("tensors", f"serves tensors; {', '.join(given)} applies to event streams")
    options = TensorServeOptions(args.onnx, tuple(args.tensors), tuple(args.labels), max_steps=args.max_steps,
                                 stagger=args.stagger, max_streams=args.max_streams, device=args.device,
                                 threads=args.threads, memory_mb=args.memory_mb)
    if args.quiet:
        return serve_tensors(options)
    from tqdm import tqdm

    with tqdm(unit="step", desc="serving", file=sys.stderr, disable=None) as bar:
        return serve_tensors(options, on_step=bar.update)


def _serve(args: argparse.Namespace) -> dict[str, Any]:
    """``serving.serve`` with a progress bar unless --quiet."""
    if args.quiet:
        return serve(options_of(args), recording_options(args))
    from tqdm import tqdm

    with tqdm(unit="step", desc="serving", file=sys.stderr, disable=None) as bar:
        return serve(options_of(args), recording_options(args), on_step=bar.update)


if __name__ == "__main__":
    sys.exit(main())
