"""``python -m runtime.serve``: many stereo event streams through one ONNX Runtime session
(``runtime.multistream``), each stream in its own batch slot, with per-stream and aggregate reports.

    python -m runtime.serve --onnx build/stereo_small.onnx --streams 4 --max-steps 20 --stagger 5 --report serve.json

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
from runtime.metrics import DEFAULT_MIN_DISPARITY, load_energy_table
from runtime.session import DEVICES


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", required=True, metavar="MODEL", help="the compiled stereo model (.onnx)")
    p.add_argument("--events", action="append", default=[], metavar="PATH",
                   help="a recording (MVSEC/our *_data.hdf5 or a DSEC folder) to serve as one stream (repeatable)")
    p.add_argument("--streams", type=int, metavar="N",
                   help="built-in synthetic streams to add (default 4 without --events, else 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first synthetic stream (default 0)")
    p.add_argument("--max-steps", type=int, metavar="N", help="windows per stream, burn-in included")
    p.add_argument("--stagger", type=int, default=0, metavar="K", help="stream i joins at step i*K (default 0)")
    p.add_argument("--max-streams", type=int, metavar="M", help="slots in the batch; later streams wait")
    p.add_argument("--burn-in", type=int, default=0, metavar="N", help="steps per stream before metrics count")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="execution provider (default cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: ONNX Runtime's choice)")
    p.add_argument("--energy-table", metavar="JSON", help='cost table {"pj_per_ac": 0.9, "pj_per_mac": 4.6}')
    add_recording_arguments(p, "serve", ("crop",))
    p.add_argument("--min-disparity", type=float, default=DEFAULT_MIN_DISPARITY, metavar="PX",
                   help="floor of predicted disparity for depth (default 1)")
    add_recording_arguments(p, "serve", ("calib", "rectify", "rectify_rounding", "fb", "gt_protocol"))
    p.add_argument("--report", metavar="JSON", help="write the per-stream and aggregate reports to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


MAX_STREAMS = 4096
# field -> flag of every option this command line's errors may name (the recording's: FLAGS)
SERVE_FLAGS = {**FLAGS, "events": "--events", "burn_in": "--burn-in", "max_steps": "--max-steps",
               "min_disparity": "--min-disparity", "seed": "--seed"}


def _plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The streams to serve, in join order: name, source and the step at which each joins."""
    for flag, value, low in (("--streams", args.streams, 0), ("--max-steps", args.max_steps, 1),
                             ("--stagger", args.stagger, 0), ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise RuntimeInputError(flag, f"must be at least {low}, got {value}")
    for flag, value in (("--streams", args.streams), ("--max-streams", args.max_streams)):
        if value is not None and value > MAX_STREAMS:  # a million streams is a hang, not a server (issue 12)
            raise RuntimeInputError(flag, f"must be at most {MAX_STREAMS}, got {value}")
    synthetic = args.streams if args.streams is not None else (0 if args.events else 4)
    sources = [{"events": e} for e in args.events] + [{"seed": args.seed + k} for k in range(synthetic)]
    if not sources:
        raise RuntimeInputError("--streams", "nothing to serve: give --events PATH or --streams N >= 1")
    return [{"name": f"cam{i}", "at": i * args.stagger, **src} for i, src in enumerate(sources)]


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """Run the plan to its end and return the report (the loop of the command line)."""
    from runtime.multistream import MultiStream

    energy = load_energy_table(args.energy_table) if args.energy_table else None
    server = MultiStream(args.onnx, device=args.device, threads=args.threads, max_streams=args.max_streams,
                         burn_in=args.burn_in, energy_table=energy, min_disparity=args.min_disparity,
                         options=recording_options(args))
    pending = _plan(args)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(unit="step", desc="serving", file=sys.stderr, disable=None)
    tick = 0
    try:
        while pending or server.active:
            while pending and pending[0]["at"] <= tick and (args.max_streams is None
                                                            or len(server.active) < args.max_streams):
                s = pending.pop(0)
                server.join(s["name"], s.get("events"), seed=s.get("seed", 0), max_steps=args.max_steps)
            if not server.active:  # nobody to serve until the next stream joins
                tick = pending[0]["at"]
                continue
            results = server.step()
            tick += 1
            if bar is not None:
                bar.update(len(results))
    finally:
        if bar is not None:
            bar.close()
        server.close()
    return server.report()


def format_serve(report: dict[str, Any]) -> str:
    """A table of the streams and the aggregate, for people."""
    def f(v, fmt=".1f"):
        return "n/a" if v is None else format(v, fmt)

    rows = [("stream", "source", "joined", "left", "steps", "steps/s model", "1PA %", "disp. err px")]
    for name, r in report["streams"].items():
        sv, acc = r["serve"], r["accuracy"] or {}
        source = sv["events"] or f"synthetic seed {sv['seed']}"
        rows.append((name, source, str(sv["joined_at_tick"]), str(sv["left_at_tick"]), str(r["steps"]["total"]),
                     f(r["speed"]["fps_model"]), f(acc.get("one_pixel_accuracy_pct"), ".2f"),
                     f(acc.get("mean_disparity_error_px"), ".3f")))
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
    """The command line; 2 with a one-line ``error: ...`` for bad input."""
    args = _parser().parse_args(argv)

    def body() -> int:
        from runtime.report import write_report

        try:
            report = serve(args)
        except DataError as exc:
            raise RuntimeInputError("events", first_line(exc)) from None
        except OptionError as exc:  # named by its field: said with its flag
            raise RuntimeInputError(*exc.render(SERVE_FLAGS).split(": ", 1)) from None
        if args.report:
            write_report(report, args.report)
        if not args.quiet:
            print(format_serve(report))
            if args.report:
                print(f"report    {args.report}")
        return 0

    return run_main(body, (RuntimeInputError,))


if __name__ == "__main__":
    sys.exit(main())
