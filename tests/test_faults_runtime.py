"""Hostile inputs of ``python -m runtime.stream`` and ``python -m runtime.synth`` (issue 12): bad event
files give an error that names the cause, or a result whose data-quality section counts what was
dropped; bad model metadata and state files are one line before the first step; non-finite outputs
are counted, never scored; library warnings stay off stderr; nothing is written outside -o."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from contract_models import stereo_model
from helpers import ROOT

from runtime.data.synth import SynthConfig, write_mvsec
from runtime.stream import main

H, W = 16, 20


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 1 s synthetic recording at 16 x 20 (MVSEC layout, exact ground truth) and a model of its size."""
    d = tmp_path_factory.mktemp("base")
    stereo_model(d / "m.onnx", height=H, width=W)
    data, gt = write_mvsec(SynthConfig(seconds=1.0, height=H, width=W, seed=0), d, "base")
    return d, data, gt


def variant(base, tmp_path, events=None, gt=None, name="v"):
    """A copy of the base recording with its event table (both cameras) or ground truth changed."""
    d, data, gt_path = base
    out = tmp_path / f"{name}_data.hdf5"
    shutil.copy(data, out)
    shutil.copy(gt_path, tmp_path / f"{name}_gt.hdf5")
    if events is not None:
        with h5py.File(out, "a") as f:
            for side in ("left", "right"):
                table = events(f[f"davis/{side}/events"][:])
                del f[f"davis/{side}/events"]
                f[f"davis/{side}/events"] = table
    if gt is not None:
        with h5py.File(tmp_path / f"{name}_gt.hdf5", "a") as f:
            depth, ts = gt(f["davis/left/depth_image_rect"][:], f["davis/left/depth_image_rect_ts"][:])
            for key, value in (("depth_image_rect", depth), ("depth_image_rect_ts", ts)):
                del f[f"davis/left/{key}"]
                f[f"davis/left/{key}"] = value
    return out


def stream(capsys, model, *args):
    rc = main(["--onnx", str(model), "--quiet", "--device", "cpu", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.err.strip()


def one_line(rc, err, *pieces):
    """Exit status 2 and one error line (after the data's ``warning:`` lines, if any: runtime.data.protocol)."""
    *warnings, last = err.splitlines() or [""]
    assert rc == 2 and last.startswith("error: ") and "Traceback" not in err, err
    assert all(w.startswith("warning: ") for w in warnings), err
    for piece in pieces:
        assert piece in last, err


RNG = np.random.default_rng(0)


def _some(table, share):
    return RNG.random(len(table)) < share


BAD_FILES = {  # every event invalid, or a large part of them: the run is refused and says why
    "x beyond the sensor": (lambda e: e + [1000, 0, 0, 0], "out_of_sensor"),
    "polarity 0.5": (lambda e: np.where([False, False, False, True], 0.5, e), "bad_polarity"),
    "polarity 2": (lambda e: np.where([False, False, False, True], 2.0, e), "bad_polarity"),
    "columns swapped": (lambda e: e[:, [2, 1, 0, 3]], "time_reversed"),
    "time reversed": (lambda e: e[::-1], "time_reversed"),
    "shuffled times": (lambda e: e[RNG.permutation(len(e))], "time_reversed"),
    "30 % NaN rows": (lambda e: np.where(_some(e, 0.3)[:, None], np.nan, e), "non_finite"),
    "90 % off-sensor": (lambda e: e + _some(e, 0.9)[:, None] * [1000, 0, 0, 0], "out_of_sensor"),
    "long before the ground truth": (lambda e: e - [0, 0, 100.0, 0], "windows with ground truth holds an event"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_event_files_are_refused_with_their_cause(base, tmp_path, capsys, case):
    change, cause = BAD_FILES[case]
    path = variant(base, tmp_path, events=change)
    rc, err = stream(capsys, base[0] / "m.onnx", "--events", path, "--report", tmp_path / "r.json")
    one_line(rc, err, str(path), cause)
    report = json.loads((tmp_path / "r.json").read_text())  # says why, and scores nothing
    assert report["error"] in err and report["accuracy"] is None


def test_an_accepted_loss_is_counted_in_the_report_and_the_summary(base, tmp_path, capsys):
    nan = {}

    def change(e):
        bad = _some(e, 0.3)
        nan[len(nan)] = int(bad.sum())
        return np.where(bad[:, None], np.nan, e)

    path = variant(base, tmp_path, events=change)
    rc = main(["--onnx", str(base[0] / "m.onnx"), "--events", str(path), "--max-dropped", "1", "--report",
               str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0
    dq = json.loads((tmp_path / "r.json").read_text())["data_quality"]
    with h5py.File(path) as f:
        total = sum(f[f"davis/{s}/events"].shape[0] for s in ("left", "right"))
    assert dq["rows_dropped"]["non_finite"] == sum(nan.values())  # every row is read once
    assert dq["rows_checked"] == total and dq["bad_row_fraction"] == pytest.approx(sum(nan.values()) / total)
    assert f"{sum(nan.values()):,} non_finite" in out and "data      " in out


def test_an_event_at_1e18_seconds_is_dropped_and_counted_without_warnings(base, tmp_path, capsys):
    def change(e):
        e = e.copy()
        e[5, 2] = 1e18
        return e

    path = variant(base, tmp_path, events=change)
    rc, err = stream(capsys, base[0] / "m.onnx", "--events", path, "--report", tmp_path / "r.json")
    assert rc == 0 and err == ""  # no numpy warning on stderr
    dq = json.loads((tmp_path / "r.json").read_text())["data_quality"]
    assert dq["rows_dropped"]["time_out_of_range"] == 2  # one per camera


def test_half_of_the_ground_truth_maps_dropped_is_reported(base, tmp_path, capsys):
    path = variant(base, tmp_path, gt=lambda d, ts: (d[::2], ts[::2]))
    rc, err = stream(capsys, base[0] / "m.onnx", "--events", path, "--report", tmp_path / "r.json")
    assert rc == 0, err
    dq = json.loads((tmp_path / "r.json").read_text())["data_quality"]
    # windows tile the recording back to back; half of them now end at a ground-truth map
    assert dq["ground_truth_maps"] == 10 and dq["windows"] == 20 and dq["windows_with_ground_truth"] == 10


def _nan_model(path, where):
    """The tiny model with NaN put into its disparity output or into one layer's spike count."""
    import onnx
    from onnx import helper, numpy_helper

    m = stereo_model(height=H, width=W)
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
    target = "disparity" if where == "output" else "spikes.layer1"
    for node in g.node:
        node.output[:] = [o + "_raw" if o == target else o for o in node.output]
    g.node.append(helper.make_node("Mul", [target + "_raw", "nan"], [target]))
    onnx.save(m, str(path))
    return path


def test_a_model_whose_output_is_all_nan_is_not_scored(tmp_path, capsys):
    model = _nan_model(tmp_path / "nan.onnx", "output")
    rc, err = stream(capsys, model, "--max-steps", "3")
    one_line(rc, err, "NaN or inf in every one of the 3 counted windows")


def test_non_finite_spike_counts_are_counted_not_averaged(tmp_path):
    from runtime.stream import Stream

    with Stream(_nan_model(tmp_path / "nan.onnx", "spikes"), max_steps=3, device="cpu") as s:
        list(s)
        report = s.report()
    assert report["data_quality"]["non_finite_spike_windows"] == 3
    assert report["sparsity"]["network_sparsity"] is None and report["energy"]["synops_per_step"] is None


def test_non_finite_predictions_are_invalid_pixels_not_zero_errors():
    from runtime.metrics import stereo_errors, summarize_errors

    gt = np.array([[2.0, 2.0, 2.0, np.nan]], np.float32)
    pred = np.array([[np.nan, np.inf, 2.5, np.nan]], np.float32)
    s = summarize_errors([stereo_errors(pred, gt, 20.0)])
    assert s["valid_pixels"] == 1 and s["invalid_prediction_pixels"] == 2
    assert s["one_pixel_accuracy_pct"] == 100.0 and s["mean_disparity_error_px"] == pytest.approx(0.5)
    nothing = summarize_errors([stereo_errors(np.full_like(gt, np.nan), gt, 20.0)])
    assert nothing["one_pixel_accuracy_pct"] is None and nothing["invalid_prediction_pixels"] == 3


def _encoding(**change):
    return json.dumps({"kind": "sbt", "window_ms": 50.0, "bins": 5, "height": H, "width": W, **change})


@pytest.mark.parametrize("encoding, piece", [
    (_encoding(kind="xyz"), "unknown encoding kind 'xyz'"),
    (_encoding(kind="count"), "snn.encoding (count, 5 bins) says [batch, 10,"),  # the kind does not fit the input
    (_encoding(window_ms=1e300), "window_ms 1e+300 is outside"),
    (_encoding(window_ms=1e-6), "window_ms 1e-06 is outside"),
    (_encoding(window_ms=0.002), "cannot hold 5 bins"),
    (_encoding(bins=10**9), "bins 1000000000 is outside"),
    (_encoding(height=10**6), "beyond any event sensor"),
])
def test_bad_model_metadata_is_one_line_before_the_first_step(tmp_path, capsys, encoding, piece):
    model = tmp_path / "m.onnx"
    stereo_model(model, height=H, width=W, metadata_override={"snn.encoding": encoding})
    rc, err = stream(capsys, model, "--max-steps", "1")
    one_line(rc, err, str(model), piece)


def _npy(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _state_files(folder, good):
    """Bad --load-state files: name -> (writer, expected piece of the message)."""
    mem0, mem1 = good["mem0"], good["mem1"]
    return {
        "npy": (lambda p: p.write_bytes(_npy(mem0)), "holds one array (.npy)"),
        "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
        "truncated": (lambda p: p.write_bytes((folder / "good.npz").read_bytes()[:300]), "not a state file"),
        "strings": (lambda p: np.savez(p, mem0=np.array(["a"]), mem1=mem1), "holds <U1 values"),
        "nan": (lambda p: np.savez(p, mem0=mem0 * np.nan, mem1=mem1), "non-finite values"),
        "ints": (lambda p: np.savez(p, mem0=mem0.astype(np.int64), mem1=mem1), "holds int64 values"),
        "shape": (lambda p: np.savez(p, mem0=mem0[..., :3], mem1=mem1), "has shape (1, 4, 16, 3)"),
        "missing": (lambda p: np.savez(p, mem0=mem0), "state 'mem1' missing"),
        "extra": (lambda p: np.savez(p, mem0=mem0, mem1=mem1, other=mem1), "unexpected array 'other'"),
        "objects": (lambda p: np.savez(p, mem0=np.array([{}], dtype=object), mem1=mem1), "cannot read its arrays"),
        "folder": (lambda p: p.mkdir(), "not a file"),
    }


def test_bad_state_files_are_one_line(base, tmp_path, capsys):
    model = base[0] / "m.onnx"
    rc, err = stream(capsys, model, "--max-steps", "2", "--save-state", tmp_path / "good.npz")
    assert rc == 0, err
    good = dict(np.load(tmp_path / "good.npz"))
    for name, (write, piece) in _state_files(tmp_path, good).items():
        path = tmp_path / f"{name}.npz"
        write(path)
        rc, err = stream(capsys, model, "--max-steps", "1", "--load-state", path)
        one_line(rc, err, f"--load-state {path}", piece)


def test_synth_command_line_refuses_absurd_values_and_paths_outside_out(tmp_path):
    out = tmp_path / "o"
    for args, piece in ((["--seconds", "inf"], "--seconds must be"), (["--seconds", "nan"], "seconds must be"),
                        (["--height", "1000000000"], "--height must be"),
                        (["--noise-hz", "1e9"], "--noise-hz must be"),
                        (["--noise-hz", "900", "--seconds", "3000"], "would add about"),
                        (["--name", "../../x"], "plain file name stem"), (["--name", "/tmp/x"], "plain file name")):
        r = subprocess.run([sys.executable, "-m", "runtime.synth", "-o", str(out), "--quiet", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        err = r.stderr.strip()
        assert r.returncode == 2 and err.startswith("error: ") and "\n" not in err and piece in err, (args, err)
    assert not out.exists() and not list(tmp_path.parent.glob("x_*.hdf5"))


def test_options_that_would_hang_or_exhaust_memory_are_one_line(base, capsys):
    from runtime.serve import main as serve_main

    model = base[0] / "m.onnx"
    for args, piece in ((["--threads", "1000000"], "--threads: must be at most 1024"),
                        (["--max-steps", "1000000000"], "at most 3600 s"), (["--start", "inf"], "--start: must be"),
                        (["--min-disparity", "inf"], "positive and finite"),
                        (["--seed", "-1"], "--seed: must be >= 0")):
        one_line(*stream(capsys, model, *args), piece)
    assert serve_main(["--onnx", str(model), "--quiet", "--streams", "1000000"]) == 2
    one_line(2, capsys.readouterr().err.strip(), "--streams: must be at most 4096")
    with pytest.raises(SystemExit) as exit_:  # argparse errors are one line too
        main(["--onnx", str(model), "--max-steps", "x"])
    one_line(exit_.value.code, capsys.readouterr().err.strip(), "argument --max-steps: invalid int value")
