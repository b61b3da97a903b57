"""``python -m runtime.synth -o DIR --seconds S --seed N [knobs]``: write a synthetic recording.

Every knob of the world and of the sensor that a user would set is an option (``KNOBS``; the table
in docs/data.md); its default is ``SynthConfig``'s, or ``SynthConfig.dsec_like``'s with
``--profile dsec``, and ``--help`` shows both. Bad values give one line ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence

from runtime.core.errors import ArgumentParser, run_main
from runtime.data.synth.config import SCENE_TYPES, TEXTURE_SETS, SynthConfig, split_names
from runtime.data.synth.writer import check_name, write_mvsec

CLI_SECONDS = 10.0  # the command line writes longer recordings than SynthConfig's in-memory default
PROFILES: dict[str, Callable[..., SynthConfig]] = {"mvsec": SynthConfig, "dsec": SynthConfig.dsec_like}


# option -> (SynthConfig field, parser of its value, help); the default is the profile's field
KNOBS: dict[str, tuple[str, Callable[[str], object], str]] = {
    "--seed": ("seed", int, "everything random derives from it"),
    "--height": ("height", int, "image height, px"),
    "--width": ("width", int, "image width, px (focal length and fB scale with it)"),
    "--scene-types": ("scene_types", split_names, f"comma-separated scene types drawn from ({', '.join(SCENE_TYPES)})"),
    "--textures": ("textures", str, "photographs: all, train, heldout (held-out half), train_more (train + two), "
                                      "train_most (train + four)"),
    "--photo-fraction": ("photo_fraction", float, "share of surfaces with a photograph; 0: procedural 1/f only"),
    "--photo-augment": ("photo_augment", float, "share of photographs varied: turned, negative, less fine detail"),
    "--photo-variations": ("photo_variations", split_names, "what --photo-augment varies, of turn, negative, coarser"),
    "--objects": ("n_objects", int, "objects in front of the walls (twice as many in a clutter scene)"),
    "--thin-fraction": ("thin_fraction", float, "share of thin objects (bars, poles)"),
    "--max-slant": ("max_slant_deg", float, "flat objects turn up to this many degrees from facing the camera"),
    "--min-depth": ("min_depth_m", float, "nearest depth in metres (largest disparity fB / min depth)"),
    "--motion": ("motion", float, "scales every motion and the lighting change; 0: a static scene"),
    "--camera-amplitude": ("camera_amplitude_m", float, "camera translation amplitude in metres"),
    "--camera-rotation": ("camera_rotation_deg", float, "camera yaw amplitude in degrees (pitch 0.7x, roll 0.5x)"),
    "--object-amplitude": ("object_amplitude_px", float, "object motion amplitude in pixels"),
    "--object-spin": ("object_spin_deg", float, "objects turn about the vertical axis by up to this many degrees"),
    "--light-change": ("light_change", float, "the illumination gain varies by this fraction"),
    "--lod-bias": ("lod_bias", float, "texture level of detail: +1 halves the finest detail (blurrier optics)"),
    "--contrast": ("contrast_threshold", float, "mean contrast threshold C, log intensity"),
    "--sigma": ("threshold_sigma", float, "threshold mismatch: per-pixel spread of C"),
    "--refractory-us": ("refractory_us", int, "refractory period in microseconds, every event"),
    "--noise-hz": ("noise_hz", float, "background activity: events per pixel per second"),
    "--leak-hz": ("leak_hz", float, "leak ON events per pixel per second"),
    "--hot-pixel-fraction": ("hot_pixel_fraction", float, "share of hot pixels"),
    "--hot-pixel-hz": ("hot_pixel_hz", float, "ON events per second of each hot pixel"),
}
METAVARS: dict[Callable[[str], object], str] = {int: "N", float: "X", split_names: "LIST"}
FLAGS = {field: flag for flag, (field, _, _) in KNOBS.items()} | {"seconds": "--seconds"}

# Bounds of the numbers (docs/reliability.md), beyond SynthConfig's own checks: beyond them a run
# would not finish or not fit. field -> (low, high, low included)
LIMITS = {
    "seconds": (0.0, 3600.0, False),
    "height": (8, 2048, True),
    "width": (8, 2048, True),
    "n_objects": (0, 64, True),
    "motion": (0.0, 100.0, True),
    "camera_amplitude_m": (0.0, 10.0, True),
    "camera_rotation_deg": (0.0, 45.0, True),
    "object_amplitude_px": (0.0, 1000.0, True),
    "object_spin_deg": (0.0, 360.0, True),
    "lod_bias": (-8.0, 8.0, True),
    "contrast_threshold": (0.0, 10.0, False),
    "threshold_sigma": (0.0, 10.0, True),
    "refractory_us": (0, 10_000_000, True),
    "noise_hz": (0.0, 1000.0, True),
    "leak_hz": (0.0, 1000.0, True),
    "hot_pixel_hz": (0.0, 1000.0, True),
    "min_depth_m": (0.0, 1000.0, False),
    "seed": (0, 2**63 - 1, True),
}
MAX_NOISE_EVENTS = 1e9  # expected background, leak and hot-pixel events of both cameras


def check_limits(config: SynthConfig) -> None:
    """Every bounded number finite and within ``LIMITS`` and the expected sensor noise within
    ``MAX_NOISE_EVENTS``; raises ValueError with a one-line message naming the option."""
    for field, (low, high, closed) in LIMITS.items():
        value = getattr(config, field)
        ok = math.isfinite(value) and (value >= low if closed else value > low) and value <= high
        if not ok:
            bound = f"{'>=' if closed else '>'} {low} and <= {high}"
            raise ValueError(f"{FLAGS[field]} must be {bound}, got {value}")
    c = config
    rate = c.noise_hz + c.leak_hz + c.hot_pixel_fraction * c.hot_pixel_hz  # per pixel per second
    noise = 2 * rate * c.height * c.width * c.seconds
    if noise > MAX_NOISE_EVENTS:
        raise ValueError(f"--noise-hz/--leak-hz/--hot-pixel-hz would add about {noise:.3g} events, more than "
                         f"{MAX_NOISE_EVENTS:.0e}: lower them, the size or --seconds")


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def parser() -> argparse.ArgumentParser:
    """Every option; the defaults in the help come from the profiles' ``SynthConfig``."""
    ap = ArgumentParser(prog="python -m runtime.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True, help="output folder")
    ap.add_argument("--name", default=None, help="file name stem (default synth_seed<SEED>)")
    ap.add_argument("--seconds", type=float, default=CLI_SECONDS, help=f"length (default {CLI_SECONDS:g})")
    ap.add_argument("--profile", choices=tuple(PROFILES), default="mvsec",
                    help="camera and depth range: mvsec (default: SynthConfig, MVSEC indoor_flying at 346x260) or "
                    "dsec (SynthConfig.dsec_like: DSEC's camera at 640x480, depths from 1.8 m); the knobs below "
                    "override it")
    mvsec, dsec = PROFILES["mvsec"](), PROFILES["dsec"]()
    for flag, (field, parse, text) in KNOBS.items():
        a, b = getattr(mvsec, field), getattr(dsec, field)
        default = f"default {_shown(a)}" + ("" if a == b else f"; dsec: {_shown(b)}")
        extra = {"choices": TEXTURE_SETS} if field == "textures" else {"metavar": METAVARS[parse]}
        ap.add_argument(flag, dest=field, type=parse, default=None, help=f"{text} ({default})".replace("%", "%%"),
                        **extra)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def build_config(args: argparse.Namespace) -> SynthConfig:
    """The profile's ``SynthConfig`` with the options given; SynthConfig's checks, then ``LIMITS``; a
    ``--photo-variations`` without ``--photo-augment`` is refused (it would change nothing)."""
    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    config = PROFILES[args.profile](**given)
    check_limits(config)
    if "photo_variations" in given and not config.photo_augment:
        raise ValueError("--photo-variations chooses what --photo-augment varies; give --photo-augment above 0")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runtime.synth -o DIR ...``: write an MVSEC-layout recording; exit status 2 with one
    line for bad options or an unwritable output, 130 after Ctrl-C (nothing written)."""
    args = parser().parse_args(argv)

    def body() -> int:
        config = build_config(args)
        if args.name is not None:
            check_name(args.name)
        data_path, gt_path = write_mvsec(config, args.out, args.name, progress=not args.quiet)
        if not args.quiet:
            print(f"wrote {data_path} and {gt_path}")
        return 0

    return run_main(body, (ValueError, OSError), interrupted="interrupted (nothing was written)")


if __name__ == "__main__":
    sys.exit(main())
