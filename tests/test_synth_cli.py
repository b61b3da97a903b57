"""The generator's knobs on the command lines: ``python -m runtime.synth`` (every knob, its default from
``SynthConfig``, the DSEC profile, one-line errors) and the synthetic source of ``python -m runtime.stream``
(held-out textures and scene types)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from contract_models import stereo_model

from runtime.data.synth import SynthConfig, generate
from runtime.synth.__main__ import KNOBS, PROFILES, build_config, main, parser

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seconds", "0.2", "--height", "32", "--width", "48", "--quiet"]

# a value other than the default for every knob: (option, value on the command line, SynthConfig value)
NON_DEFAULT = [
    ("--seed", "3", 3), ("--height", "24", 24), ("--width", "40", 40),
    ("--scene-types", "corridor,room", ("corridor", "room")), ("--textures", "heldout", "heldout"),
    ("--photo-fraction", "0.8", 0.8), ("--photo-augment", "0.5", 0.5),
    ("--photo-variations", "coarser,turn", ("coarser", "turn")), ("--objects", "3", 3),
    ("--thin-fraction", "0.5", 0.5),
    ("--max-slant", "30", 30.0), ("--min-depth", "0.7", 0.7), ("--motion", "0.5", 0.5),
    ("--camera-amplitude", "0.1", 0.1), ("--camera-rotation", "2", 2.0), ("--object-amplitude", "10", 10.0),
    ("--object-spin", "10", 10.0), ("--light-change", "0.3", 0.3), ("--lod-bias", "0.5", 0.5),
    ("--contrast", "0.25", 0.25), ("--sigma", "0.05", 0.05), ("--refractory-us", "500", 500),
    ("--noise-hz", "2", 2.0), ("--leak-hz", "0.5", 0.5), ("--hot-pixel-fraction", "0.01", 0.01),
    ("--hot-pixel-hz", "50", 50.0),
]


def _events(path: Path, side: str = "left") -> np.ndarray:
    with h5py.File(path) as f:
        return f[f"davis/{side}/events"][:]


def _config(path: Path) -> dict:
    with h5py.File(path) as f:
        return json.loads(f.attrs["synth_config"])


def _write(tmp_path: Path, *args: str) -> tuple[Path, Path]:
    assert main(["-o", str(tmp_path), "--name", "r", *args]) == 0
    return tmp_path / "r_data.hdf5", tmp_path / "r_gt.hdf5"


def test_every_knob_is_an_option_listed_in_the_docs_with_the_config_default(monkeypatch, capsys):
    assert {flag for flag, _, _ in NON_DEFAULT} == set(KNOBS)
    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    assert all(field in fields for field, _, _ in KNOBS.values())
    docs = (ROOT / "docs" / "data.md").read_text()
    table = docs[docs.index("### Knobs"):docs.index("### Disparity histograms")]
    for flag, (field, _, _) in KNOBS.items():  # the knob table names each option beside its field
        row = next((line for line in table.splitlines() if f"`{field}`" in line.split(" | ")[0]), "")
        assert f"`{flag}`" in row, (flag, field)
    # the help's defaults are SynthConfig's (and dsec_like's): change one and the help follows
    monkeypatch.setitem(PROFILES, "mvsec", functools.partial(SynthConfig, hot_pixel_hz=33.0))
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ON events per second of each hot pixel (default 33; dsec: 20)" in text
    assert "image width, px (focal length and fB scale with it) (default 346; dsec: 640)" in text
    assert "share of hot pixels (default 0.0002)" in text and "--profile {mvsec,dsec}" in text


def test_every_knob_reaches_the_written_recording(tmp_path):
    """All options at once: the file records each value, and holds exactly what the in-memory
    generator makes of that config."""
    args = [a for flag, value, _ in NON_DEFAULT for a in (flag, value)]
    data, gt = _write(tmp_path, *TINY, *args)
    stored = _config(data)
    for flag, _, value in NON_DEFAULT:
        field = KNOBS[flag][0]
        got = tuple(stored[field]) if isinstance(value, tuple) else stored[field]
        assert got == value, (flag, got, value)
    expected = SynthConfig(seconds=0.2, **{KNOBS[flag][0]: value for flag, _, value in NON_DEFAULT})
    mem = generate(expected, images=False)
    assert mem.kind in ("corridor", "room")
    for side in ("left", "right"):
        ev = _events(data, side)
        np.testing.assert_array_equal(np.rint(ev[:, 2] * 1e6).astype(np.int64), mem.events[side]["t"])
        np.testing.assert_array_equal(ev[:, 0].astype(int), mem.events[side]["x"])
    with h5py.File(gt) as f:
        np.testing.assert_array_equal(f["davis/left/depth_image_rect"][:], mem.depth)
        assert f["davis/left/depth_image_rect"].shape[1:] == (24, 40)


def test_hot_pixels_on_the_command_line_fire_at_fixed_pixels(tmp_path):
    static = ["--motion", "0", "--noise-hz", "0", "--refractory-us", "0"]
    silent, _ = _write(tmp_path / "off", *TINY, *static, "--hot-pixel-fraction", "0")
    assert len(_events(silent)) == 0
    hot, _ = _write(tmp_path / "on", *TINY, *static, "--hot-pixel-fraction", "0.01", "--hot-pixel-hz", "200")
    for side in ("left", "right"):
        ev = _events(hot, side)
        pixels = np.unique(ev[:, 1].astype(int) * 48 + ev[:, 0].astype(int))
        n_hot = round(0.01 * 32 * 48)
        assert len(pixels) == n_hot and np.all(ev[:, 3] == 1)
        expected = n_hot * 200 * 0.2
        assert abs(len(ev) - expected) < 5 * np.sqrt(expected)


def test_dsec_profile_on_the_command_line(tmp_path):
    config = build_config(parser().parse_args(["-o", "x", "--profile", "dsec"]))
    assert config == SynthConfig.dsec_like(seconds=10.0) and (config.width, config.height) == (640, 480)
    assert build_config(parser().parse_args(["-o", "x"])) == SynthConfig(seconds=10.0)
    data, gt = _write(tmp_path, "--profile", "dsec", "--seconds", "0.1", "--height", "24", "--width", "32",
                      "--camera-rotation", "1", "--quiet")
    stored = _config(data)
    assert stored["min_depth_m"] == 1.8 and stored["camera_rotation_deg"] == 1.0
    with h5py.File(gt) as f:
        assert f.attrs["fb"] == pytest.approx(341.4 * 32 / 640)
        depth = f["davis/left/depth_image_rect"][:]
    assert np.nanmin(depth) >= 1.8 * 0.999 and np.nanmax(depth) > SynthConfig().background_depth_m[1]


@pytest.mark.parametrize(
    "args, piece",
    [
        (["--photo-fraction", "1.5"], "photo_fraction, photo_augment and thin_fraction must be in [0, 1]"),
        (["--photo-augment", "-0.5"], "photo_fraction, photo_augment and thin_fraction must be in [0, 1]"),
        (["--photo-augment", "1", "--photo-variations", "blur"], "photo_variations must be a non-empty selection"),
        (["--photo-augment", "1", "--photo-variations", "turn,turn"], "of turn, negative, coarser, each once"),
        (["--photo-variations", "coarser"], "give --photo-augment above 0"),
        (["--scene-types", "garden"], "scene_types must be a non-empty selection of room, street"),
        (["--scene-types", ","], "scene_types must be a non-empty selection"),
        (["--textures", "mine"], "argument --textures: invalid choice: 'mine'"),
        (["--profile", "kitti"], "argument --profile: invalid choice: 'kitti'"),
        (["--hot-pixel-fraction", "-0.1"], "hot_pixel_fraction must be in [0, 1]"),
        (["--hot-pixel-hz", "inf"], "--hot-pixel-hz must be >= 0.0 and <= 1000.0, got inf"),
        (["--camera-rotation", "nan"], "camera_rotation_deg and object_spin_deg must be >= 0"),
        (["--camera-rotation", "90"], "--camera-rotation must be >= 0.0 and <= 45.0, got 90.0"),
        (["--camera-amplitude", "-1"], "--camera-amplitude must be >= 0.0"),
        (["--light-change", "1"], "light_change must be in [0, 1)"),
        (["--lod-bias", "nan"], "--lod-bias must be"),
        (["--sigma", "-0.1"], "threshold_sigma must be >= 0"),
        (["--refractory-us", "1.5"], "argument --refractory-us: invalid int value: '1.5'"),
        (["--hot-pixel-fraction", "1", "--hot-pixel-hz", "900", "--seconds", "3000"], "would add about"),
        (["--profile", "dsec", "--min-depth", "30"], "need 0 < min_depth_m < max_object_depth_m"),
    ],
)
def test_bad_knob_values_are_one_line_exit_2(args, piece, tmp_path, capsys):
    out = tmp_path / "o"
    try:
        rc = main(["-o", str(out), "--quiet", *args])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and piece in err, (args, err)
    assert not out.exists()


# ---- python -m runtime.stream: the synthetic source's textures and scene types --------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path, height=16, width=20)
    return path


def test_stream_selects_held_out_textures_and_scene_types(model, tmp_path, capsys):
    from runtime.data.sources import open_recording, windows
    from runtime.stream import Stream
    from runtime.stream import main as stream_main

    report = tmp_path / "r.json"
    args = ["--onnx", str(model), "--max-steps", "2", "--quiet", "--report", str(report), "--seed", "2"]
    assert stream_main([*args, "--textures", "heldout", "--scene-types", "corridor"]) == 0, capsys.readouterr().err
    source = json.loads(report.read_text())["source"]
    assert source["synthetic"] == {"seed": 2, "textures": "heldout", "scene_types": ["corridor"]}
    assert stream_main(args) == 0
    assert json.loads(report.read_text())["source"]["synthetic"] == {"seed": 2}
    options = {"textures": "heldout", "scene_types": ("corridor",)}
    stream = Stream(model, seed=2, max_steps=2, synth=options)
    rec = stream.recording
    assert rec.data.kind == "corridor" and rec.config.textures == "heldout"
    ref = open_recording(seed=2, seconds=rec.config.seconds, height=16, width=20, **options)
    a, b = next(iter(stream.windows())), next(iter(windows(ref)))
    np.testing.assert_array_equal(a.left, b.left)
    plain = Stream(model, seed=2, max_steps=2).recording
    assert not np.array_equal(plain.events("left", 0, 100_000), rec.events("left", 0, 100_000))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scene-types", "garden"], "error: synthetic source: scene_types must be a non-empty selection"),
        (["--textures", "heldout", "--events", "MODEL"],
         "error: --textures: applies to the built-in synthetic source (no --events)"),
        (["--textures", "mine"], "error: argument --textures: invalid choice"),
    ],
)
def test_stream_bad_synthetic_options_are_one_line(model, args, message, capsys):
    from runtime.stream import main as stream_main

    args = [str(model) if a == "MODEL" else a for a in args]
    try:
        rc = stream_main(["--onnx", str(model), "--quiet", "--max-steps", "1", *args])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(message) and "\n" not in err, err
    assert not re.search(r"Traceback", err)
