"""The synthetic stereo generator: ground truth by construction, ESIM behaviour, determinism, CLI."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from runtime.data.synth import Simulator, SynthConfig, generate
from runtime.synth.__main__ import main

SMALL = dict(height=48, width=64)


@pytest.fixture(scope="module")
def small_scene():
    return Simulator(SynthConfig(seconds=1.0, seed=3, **SMALL))


def _interp_right(right: np.ndarray, yy: np.ndarray, xr: np.ndarray) -> np.ndarray:
    x0 = np.floor(xr).astype(int)
    f = xr - x0
    return right[yy, x0] * (1 - f) + right[yy, x0 + 1] * f


@pytest.mark.parametrize("t_us", [200_000, 650_000])
def test_left_at_x_equals_right_at_x_minus_d(small_scene, t_us):
    scene = small_scene.scene
    left, right = scene.render(t_us, "left"), scene.render(t_us, "right")
    depth = scene.ground_truth(t_us)
    valid = np.isfinite(depth)
    assert 0.5 < valid.mean() < 1.0  # occlusions and borders are marked invalid, most is valid
    yy, xx = np.nonzero(valid)
    d = scene.fb / depth[valid]
    err = np.abs(left[valid] - _interp_right(right, yy, xx - d))
    assert np.median(err) < 0.004 and np.percentile(err, 99) < 0.03
    # the same comparison with a disparity 2 px off is far worse: the check can fail
    ok = xx - d - 2 >= 0
    wrong = np.abs(left[valid][ok] - _interp_right(right, yy[ok], xx[ok] - d[ok] - 2))
    assert np.median(wrong) > 5 * np.median(err)


def test_invalid_pixels_include_occlusions_and_left_border(small_scene):
    scene = small_scene.scene
    depth = scene.ground_truth(400_000)
    d = scene.fb / depth
    # a pixel whose match x - d would fall left of the right image is invalid
    assert not np.isfinite(depth[:, 0]).any()
    assert np.nanmin(np.arange(scene.width)[None, :] - d) >= 0


def test_default_size_is_mvsec_like():
    c = SynthConfig()
    assert (c.height, c.width) == (260, 346)
    assert c.focal_baseline == pytest.approx(19.941772)
    assert c.focal_baseline / c.min_depth_m == pytest.approx(36.9, abs=0.5)


def test_disparity_reaches_the_configured_maximum():
    data = generate(seconds=1.0, seed=0, images=False, noise_hz=0.0, **SMALL)
    c = data.config
    disp = c.focal_baseline / data.depth
    max_expected = c.focal_baseline / c.min_depth_m
    assert np.nanmax(disp) <= max_expected * 1.001
    assert np.nanmax(disp) > 0.6 * max_expected
    assert np.nanmin(disp) >= c.focal_baseline / c.background_depth_m[1] * 0.999


def test_polarity_follows_brightness_change():
    c = SynthConfig(seconds=0.6, seed=5, threshold_sigma=0.0, refractory_us=0, noise_hz=0.0, **SMALL)
    sim = Simulator(c)
    data = generate(c, images=False)
    ta, tb = int(sim.step_us[10]), int(sim.step_us[50])
    C = c.contrast_threshold
    for side in ("left", "right"):
        ev = data.events[side]
        ev = ev[(ev["t"] > ta) & (ev["t"] <= tb)]
        net = np.zeros(c.height * c.width)
        np.add.at(net, ev["y"].astype(int) * c.width + ev["x"], ev["p"])
        dl = (sim.log_intensity(tb, side) - sim.log_intensity(ta, side)).ravel()
        strong = np.abs(dl) >= 3 * C
        assert strong.sum() > 50
        assert np.all(np.sign(net[strong]) == np.sign(dl[strong]))
        # the summed polarity tracks the log change to within about two thresholds
        assert np.mean(np.abs(net * C - dl) < 2 * C + 1e-3) > 0.99


def test_static_scene_without_noise_is_silent():
    # background activity and hot pixels are the sensor's noise sources; a static scene has a
    # constant light too (``motion`` scales the lighting change)
    data = generate(seconds=0.5, motion=0.0, noise_hz=0.0, hot_pixel_fraction=0.0, images=False, **SMALL)
    assert len(data.events["left"]) == 0 and len(data.events["right"]) == 0


def test_static_scene_noise_rate_matches_the_knob():
    hz, seconds = 4.0, 0.5
    data = generate(seconds=seconds, motion=0.0, noise_hz=hz, hot_pixel_fraction=0.0, images=False, **SMALL)
    expected = hz * 48 * 64 * seconds
    for side in ("left", "right"):
        assert abs(len(data.events[side]) - expected) < 5 * np.sqrt(expected)


def test_leak_makes_on_events_in_a_static_scene():
    data = generate(
        seconds=0.5, motion=0.0, noise_hz=0.0, leak_hz=2.0, threshold_sigma=0.0, images=False, **SMALL
    )
    ev = data.events["left"]
    assert len(ev) > 0 and np.all(ev["p"] == 1)


def test_refractory_period_is_respected():
    data = generate(seconds=0.5, seed=2, noise_hz=0.0, refractory_us=2000, images=False, **SMALL)
    ev = data.events["left"]
    pix = ev["y"].astype(np.int64) * 64 + ev["x"]
    order = np.lexsort((ev["t"], pix))
    same = pix[order][1:] == pix[order][:-1]
    gaps = np.diff(ev["t"][order])[same]
    assert len(gaps) > 0 and gaps.min() >= 2000 - 1  # rounding to whole microseconds


def test_same_seed_same_recording_other_seed_differs():
    a = generate(seconds=0.4, seed=7, **SMALL)
    b = generate(seconds=0.4, seed=7, **SMALL)
    c = generate(seconds=0.4, seed=8, **SMALL)
    for side in ("left", "right"):
        np.testing.assert_array_equal(a.events[side], b.events[side])
        np.testing.assert_array_equal(a.images[side], b.images[side])
        assert np.all(np.diff(a.events[side]["t"]) >= 0)
    np.testing.assert_array_equal(a.depth, b.depth)  # NaNs in the same places
    assert len(a.events["left"]) != len(c.events["left"]) or not np.array_equal(
        a.events["left"], c.events["left"]
    )


def test_ground_truth_and_images_at_their_rates():
    data = generate(seconds=0.5, **SMALL)
    np.testing.assert_array_equal(
        data.gt_ts_us,
        [50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 350_000, 400_000, 450_000, 500_000],
    )
    assert data.depth.shape == (10, 48, 64) and data.depth.dtype == np.float32
    assert data.images["left"].shape == (11, 48, 64) and data.images["left"].dtype == np.uint8


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="seconds"):
        SynthConfig(seconds=0)
    with pytest.raises(ValueError, match="min_depth_m"):
        SynthConfig(min_depth_m=5.0)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run(
        [sys.executable, "-m", "runtime.synth", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_writes_an_mvsec_pair(tmp_path):
    r = _run_cli("-o", str(tmp_path), "--seconds", "0.3", "--seed", "1", "--height", "48", "--width", "64")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    data, gt = tmp_path / "synth_seed1_data.hdf5", tmp_path / "synth_seed1_gt.hdf5"
    with h5py.File(data) as f:
        for side in ("left", "right"):
            ev = f[f"davis/{side}/events"]
            assert ev.dtype == np.float64 and ev.shape[1] == 4 and ev.shape[0] > 0
            assert f[f"davis/{side}/image_raw"].shape[1:] == (48, 64)
            assert len(f[f"davis/{side}/image_raw_ts"]) == f[f"davis/{side}/image_raw"].shape[0]
    with h5py.File(gt) as f:
        assert f["davis/left/depth_image_rect"].shape == (6, 48, 64)
        np.testing.assert_allclose(f["davis/left/depth_image_rect_ts"][:], np.arange(1, 7) * 0.05)
    # the same recording as the in-memory generator
    mem = generate(seconds=0.3, seed=1, **SMALL)
    with h5py.File(data) as f:
        np.testing.assert_array_equal(np.rint(f["davis/left/events"][:, 2] * 1e6), mem.events["left"]["t"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "X", "--seconds", "-1"], "error: seconds must be positive"),
        (["-o", "X", "--seconds", "abc"], "error: argument --seconds"),
        (["--seconds", "1"], "error: the following arguments are required: -o/--out"),
    ],
)
def test_cli_bad_arguments_one_line_exit_2(args, message, tmp_path):
    args = [str(tmp_path / a) if a == "X" else a for a in args]
    r = _run_cli(*args)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(message) and len(r.stderr.strip().splitlines()) == 1


def test_cli_unwritable_output_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert (
        main(["-o", str(blocker / "sub"), "--seconds", "0.1", "--quiet", "--height", "16", "--width", "16"])
        == 2
    )


def test_a_longer_recording_starts_with_the_shorter_one():
    short = generate(seconds=0.3, seed=9, **SMALL)
    long = generate(seconds=0.5, seed=9, **SMALL)
    for side in ("left", "right"):
        a, b = short.events[side], long.events[side]
        cut = 250_000  # before the short recording's last (partial) step
        np.testing.assert_array_equal(a[a["t"] < cut], b[b["t"] < cut])
    np.testing.assert_array_equal(short.depth, long.depth[: len(short.depth)])
