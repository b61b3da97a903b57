"""``python -m runtime.stream --dsec-submission``: DSEC disparity benchmark PNGs on tiny test-layout
sequences (no ground truth, an evaluation-timestamp CSV) written here."""

from __future__ import annotations

import errno
import io
import json

import numpy as np
import pytest
from contract_models import stereo_model
from PIL import Image
from test_data_dsec import identity_map, write_sequence
from test_data_mvsec import H, W

import runtime.core.atomic
from runtime.data.sources import open_recording, windows
from runtime.stream import Stream, main
from runtime.stream.submission import encode_png, read_timestamps_csv

NAME = "zurich_city_14_c"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path, height=H, width=W)
    return path


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """A test sequence of DSEC's layout (events and rectify maps, no disparity) at the model's size."""
    mem = open_recording(seed=5, seconds=0.5, height=H, width=W)
    folder = tmp_path_factory.mktemp("test") / NAME
    write_sequence(folder, mem.data.events, H, W, maps=identity_map(H, W))
    with open_recording(folder) as rec:
        start, end = int(rec.t_start_us), int(rec.t_end_us)
    return folder, start, end


def write_csv(path, ts, idx, header="# timestamp_us, file_index"):
    lines = [header] + [f"{t}, {i}" for t, i in zip(ts, idx, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(argv, tmp_path, capsys):
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    rc = main([*argv, "--device", "cpu", "--report", str(report)])
    out = capsys.readouterr()
    return rc, out.err.strip().splitlines(), out.out, json.loads(report.read_text()) if report.exists() else None


def png_values(path):
    with Image.open(path) as img:
        return np.asarray(img)


def test_timestamps_a_whole_number_of_windows_apart_give_the_streams_outputs(model_path, sequence, tmp_path, capsys):
    folder, start, _ = sequence
    ts = start + 50_000 * np.array([2, 4, 7])  # window ends of the plain back-to-back tiling
    idx = [20, 40, 70]
    write_csv(folder / f"{NAME}.csv", ts, idx)  # SE-CFF's place: the default
    try:
        rc, err, out, report = run(["--onnx", str(model_path), "--events", str(folder), "--dsec-submission",
                                    str(tmp_path / "sub")], tmp_path, capsys)
    finally:
        (folder / f"{NAME}.csv").unlink()
    assert rc == 0 and err == [], err
    files = sorted(p.name for p in (tmp_path / "sub" / NAME).iterdir())
    assert files == ["000020.png", "000040.png", "000070.png"]
    with Stream(model_path, folder, device="cpu") as stream:  # no submission: plain windows from the start
        by_end = {r.t1_us: r.disparity for r in stream}
    for t, i in zip(ts, idx, strict=True):
        raw = png_values(tmp_path / "sub" / NAME / f"{i:06d}.png")
        assert raw.dtype == np.uint16 and raw.shape == (H, W)
        want = np.clip(np.rint(by_end[int(t)].astype(np.float64) * 256), 0, 65535).astype(np.uint16)
        np.testing.assert_array_equal(raw, want)
    assert np.any(raw > 0)
    sub = report["dsec_submission"]
    assert sub == {"folder": str(tmp_path / "sub" / NAME), "timestamps": str(folder / f"{NAME}.csv"),
                   "expected": 3, "written": 3, "complete": True}
    assert report["source"]["windows"]["policy"].endswith("DSEC benchmark timestamps (--dsec-timestamps)")
    assert report["accuracy"] is None
    assert f"dsec      3 of 3 predictions in {tmp_path / 'sub' / NAME}/" in out


def test_timestamps_between_windows_end_windows_with_state_carried(model_path, sequence, tmp_path, capsys):
    folder, start, _ = sequence
    ts = start + np.array([120_000, 230_000, 400_000])  # not whole windows apart (as 10 Hz GT is handled)
    csv = write_csv(tmp_path / "ts.csv", ts, [3, 1, 2])
    rc, err, _, report = run(["--onnx", str(model_path), "--events", str(folder), "--dsec-submission",
                              str(tmp_path / "sub"), "--dsec-timestamps", str(csv), "--quiet"], tmp_path, capsys)
    assert rc == 0 and err == [] and report["dsec_submission"]["written"] == 3
    with Stream(model_path, folder, device="cpu") as stream, open_recording(folder) as rec:
        ws = list(windows(rec, anchors_us=ts))
        assert all(a.t1_us == b.t0_us for a, b in zip(ws[:-1], ws[1:], strict=True))  # back to back
        # windows step back from the first timestamp while a whole one fits (as from a first GT map)
        assert ws[0].t0_us == start + 20_000 and set(ts.tolist()) <= {w.t1_us for w in ws}
        assert all(w.disparity is None and w.gt_index is None for w in ws)
        outputs = {w.t1_us: stream.feed(w).disparity for w in ws}  # one stream: the state carried
    for t, i in zip(ts, [3, 1, 2], strict=True):
        want = np.clip(np.rint(outputs[int(t)].astype(np.float64) * 256), 0, 65535).astype(np.uint16)
        np.testing.assert_array_equal(png_values(tmp_path / "sub" / NAME / f"{i:06d}.png"), want)


def test_png_encoding_rounds_clips_and_zeroes_nan():
    d = np.array([[0.0, 1.0 / 512, 3.0 / 512, 1.5], [-2.0, np.nan, 255.99, 400.0]], np.float32)
    raw = np.asarray(Image.open(io.BytesIO(encode_png(d))))
    assert raw.dtype == np.uint16
    assert raw.tolist() == [[0, 0, 2, 384], [0, 0, 65533, 65535]]  # round half to even, clipped, NaN 0


def test_writes_are_atomic(model_path, sequence, tmp_path, capsys, monkeypatch):
    folder, start, _ = sequence
    csv = write_csv(tmp_path / "ts.csv", start + np.array([100_000, 200_000]), [0, 1])
    argv = ["--onnx", str(model_path), "--events", str(folder), "--dsec-submission", str(tmp_path / "sub"),
            "--dsec-timestamps", str(csv), "--quiet"]
    assert run(argv, tmp_path, capsys)[0] == 0
    target = tmp_path / "sub" / NAME / "000000.png"
    before = target.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runtime.core.atomic, "commit", full_disk)
    rc, err, _, _ = run(argv, tmp_path, capsys)
    assert rc == 2 and len(err) == 1
    assert err[0] == f"error: --dsec-submission {target}: cannot write it (No space left on device)"
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["000000.png", "000001.png"]  # no temp file left


def test_refusals_are_one_line(model_path, sequence, tmp_path, capsys):
    folder, start, end = sequence
    base = ["--onnx", str(model_path), "--events", str(folder), "--dsec-submission", str(tmp_path / "sub"), "--quiet"]

    def refused(extra, *want, argv=None):
        rc, err, _, report = run((argv or base) + extra, tmp_path, capsys)
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
        for part in want:
            assert part in err[0], err[0]
        return err[0]

    refused([], f"no {folder / (NAME + '.csv')}; pass --dsec-timestamps")
    bad = tmp_path / "bad.csv"
    bad.write_text("# timestamp_us, file_index\n123, 4\n456; 5\n")
    refused(["--dsec-timestamps", str(bad)], f"--dsec-timestamps {bad}: line 3: expected 'timestamp_us, file_index'")
    bad.write_text("# timestamp_us, file_index\n")
    refused(["--dsec-timestamps", str(bad)], "no timestamp in it")
    csv = write_csv(tmp_path / "back.csv", start + np.array([200_000, 100_000]), [0, 1])
    refused(["--dsec-timestamps", str(csv)], "timestamps must increase: row 2")
    csv = write_csv(tmp_path / "dup.csv", start + np.array([100_000, 200_000]), [7, 7])
    refused(["--dsec-timestamps", str(csv)], "file indices repeat")
    for t in (start + 10_000, end + 1):  # no whole window before it; after the events
        csv = write_csv(tmp_path / "out.csv", [t], [0])
        refused(["--dsec-timestamps", str(csv)], f"timestamp {t} (row 1) is outside the events")
    csv = write_csv(tmp_path / "near.csv", start + np.array([100_000, 130_000]), [0, 1])
    refused(["--dsec-timestamps", str(csv)], "less than 3/4 of a 50 ms window apart")
    refused(["--dsec-timestamps", str(tmp_path / "none.csv")], "no such file")
    csv = write_csv(tmp_path / "ok.csv", start + np.array([100_000]), [0])
    (tmp_path / "sub" / NAME).mkdir(parents=True)
    (tmp_path / "sub" / NAME / "000009.png").write_bytes(b"old")
    refused(["--dsec-timestamps", str(csv)], "holds 1 PNGs not in", "000009.png")
    (tmp_path / "sub" / NAME / "000009.png").unlink()
    small = tmp_path / "small.onnx"
    stereo_model(small, height=H - 4, width=W - 4)
    refused(["--dsec-timestamps", str(csv), "--crop", "center"], "the model's output is 12x8 but the sequence is 16x12",
            argv=["--onnx", str(small), *base[2:]])
    refused([], "error: --dsec-submission: needs a DSEC sequence folder",
            argv=["--onnx", str(model_path), "--dsec-submission", str(tmp_path / "sub"), "--quiet"])
    refused([], "error: --dsec-timestamps: applies with --dsec-submission DIR",
            argv=["--onnx", str(model_path), "--events", str(folder), "--dsec-timestamps", str(csv), "--quiet"])
    assert read_timestamps_csv(csv)[1].tolist() == [0]


def test_a_folder_of_timestamp_csvs_and_an_incomplete_run(model_path, sequence, tmp_path, capsys):
    folder, start, _ = sequence
    (tmp_path / "test_disparity_timestamps").mkdir()
    write_csv(tmp_path / "test_disparity_timestamps" / f"{NAME}.csv", start + np.array([100_000, 300_000]), [5, 9])
    rc, err, _, report = run(["--onnx", str(model_path), "--events", str(folder), "--dsec-submission",
                              str(tmp_path / "sub"), "--dsec-timestamps", str(tmp_path / "test_disparity_timestamps"),
                              "--max-steps", "3", "--quiet"], tmp_path, capsys)
    assert rc == 0 and report["dsec_submission"]["written"] == 1 and not report["dsec_submission"]["complete"]
    assert err == ["warning: --dsec-submission: wrote 1 of 2 predictions; the submission is incomplete"]
    assert sorted(p.name for p in (tmp_path / "sub" / NAME).iterdir()) == ["000005.png"]
