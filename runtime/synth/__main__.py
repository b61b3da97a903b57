"""``python -m runtime.synth -o DIR --seconds S --seed N``: write a synthetic recording."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from runtime.errors import quiet_warnings

from .config import SynthConfig
from .writer import check_name, write_mvsec

# Bounds of the command line's numbers (docs/reliability.md): beyond them a run would not finish or not fit.
LIMITS = {
    "seconds": (0.0, 3600.0, False),  # (low, high, low included)
    "height": (8, 2048, True),
    "width": (8, 2048, True),
    "objects": (0, 64, True),
    "motion": (0.0, 100.0, True),
    "contrast": (0.0, 10.0, False),
    "sigma": (0.0, 10.0, True),
    "refractory_us": (0, 10_000_000, True),
    "noise_hz": (0.0, 1000.0, True),
    "leak_hz": (0.0, 1000.0, True),
    "min_depth": (0.0, 1000.0, False),
    "seed": (0, 2**63 - 1, True),
}
MAX_NOISE_EVENTS = 1e9  # expected noise and leak events of both cameras


def check_args(args: argparse.Namespace) -> None:
    """Every number finite and within ``LIMITS``, the expected noise within ``MAX_NOISE_EVENTS`` and the
    name a plain file stem; raises ValueError with a one-line message naming the option."""
    for key, (low, high, closed) in LIMITS.items():
        value = getattr(args, key)
        ok = math.isfinite(value) and (value >= low if closed else value > low) and value <= high
        if not ok:
            bound = f"{'>=' if closed else '>'} {low} and <= {high}"
            raise ValueError(f"--{key.replace('_', '-')} must be {bound}, got {value}")
    noise = 2 * (args.noise_hz + args.leak_hz) * args.height * args.width * args.seconds
    if noise > MAX_NOISE_EVENTS:
        raise ValueError(f"--noise-hz/--leak-hz would add about {noise:.3g} events, more than "
                         f"{MAX_NOISE_EVENTS:.0e}: lower them, the size or --seconds")
    if args.name is not None:
        check_name(args.name)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2, no usage block
        self.exit(2, f"error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runtime.synth -o DIR --seconds S --seed N``: write an MVSEC-layout recording."""
    d = SynthConfig()
    ap = _ArgumentParser(prog="python -m runtime.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True, help="output folder")
    ap.add_argument("--name", default=None, help="file name stem (default synth_seed<SEED>)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the recording (default 10)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--height", type=int, default=d.height)
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--objects", type=int, default=d.n_objects, help="layers in front of the background")
    ap.add_argument("--motion", type=float, default=d.motion, help="motion scale, 0 = static scene")
    ap.add_argument("--contrast", type=float, default=d.contrast_threshold, help="contrast threshold C")
    ap.add_argument("--sigma", type=float, default=d.threshold_sigma, help="per-pixel spread of C")
    ap.add_argument("--refractory-us", type=int, default=d.refractory_us)
    ap.add_argument("--noise-hz", type=float, default=d.noise_hz, help="shot noise per pixel per second")
    ap.add_argument("--leak-hz", type=float, default=d.leak_hz)
    ap.add_argument("--min-depth", type=float, default=d.min_depth_m, help="nearest depth in metres")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        config = SynthConfig(
            seconds=args.seconds,
            seed=args.seed,
            height=args.height,
            width=args.width,
            n_objects=args.objects,
            motion=args.motion,
            contrast_threshold=args.contrast,
            threshold_sigma=args.sigma,
            refractory_us=args.refractory_us,
            noise_hz=args.noise_hz,
            leak_hz=args.leak_hz,
            min_depth_m=args.min_depth,
        )
        check_args(args)  # after SynthConfig's own checks, which say what they say
        with quiet_warnings():
            data_path, gt_path = write_mvsec(config, args.out, args.name, progress=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (nothing was written)", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"wrote {data_path} and {gt_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
