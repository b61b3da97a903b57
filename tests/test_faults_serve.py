"""Hostile inputs to serving (issue 23, class 1): each stream isolated. A stream whose source fails
mid-run is reported as failed (why, where) and removed while the others go on; a stream that
``runtime.stream`` would refuse (--max-dropped) is refused and the others are scored alone; streams open
when they join, within a stated memory budget, up to the documented maximum (--streams 4096)."""

from __future__ import annotations

import json
import sys

import pytest
from contract_models import stereo_model
from fake_source import FakeRecording, patch_in

from runtime.data.events import DataError
from runtime.serve import main as serve_main
from runtime.serving import MAX_STREAMS, ServeOptions, serve


class BrokenRecording(FakeRecording):
    """Its file becomes unreadable after ``fail_after_us``."""

    fail_after_us = 150_000

    def events(self, side, t0, t1):
        if t1 > self.fail_after_us:
            raise DataError(f"/data/cam.hdf5: cannot read 'events' rows {t0}-{t1} (file truncated)")
        return super().events(side, t0, t1)


class DirtyRecording(FakeRecording):
    """30 % of its event rows were dropped as NaN (runtime.stream refuses it)."""

    rows_checked = 1000
    stats = {"non_finite": 300}


@pytest.fixture
def model(tmp_path, monkeypatch):
    patch_in(monkeypatch)
    path = tmp_path / "tiny.onnx"
    stereo_model(path)
    return path


def _bad_seed(monkeypatch, cls, seed=1):
    sources = sys.modules["runtime.data.sources"]
    real = sources.open_recording

    def open_recording(path=None, *, seed=0, **kw):
        rec = real(path, seed=seed, **kw)
        return cls(height=rec.height, width=rec.width, seconds=1.0, seed=seed) if seed == 1 else rec

    monkeypatch.setattr(sources, "open_recording", open_recording)


def test_a_stream_that_breaks_mid_run_is_reported_and_the_others_finish(model, monkeypatch, tmp_path, capsys):
    _bad_seed(monkeypatch, BrokenRecording)
    out = tmp_path / "serve.json"
    rc = serve_main(["--onnx", str(model), "--streams", "3", "--max-steps", "6", "--threads", "1", "--quiet",
                     "--report", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "cam1" in err and "truncated" in err, err
    report = json.loads(out.read_text())
    streams = report["streams"]
    assert [streams[k]["status"] for k in ("cam0", "cam1", "cam2")] == ["ok", "failed", "ok"]
    assert "truncated" in streams["cam1"]["error"] and streams["cam1"]["failed_at"]["step"] == 3
    assert streams["cam0"]["steps"]["total"] == streams["cam2"]["steps"]["total"] == 6
    agg = report["aggregate"]
    assert (agg["ok"], agg["failed"], agg["counted_steps"]) == (2, 1, 12)


def test_a_stream_that_cannot_open_is_reported_and_the_others_run(model, tmp_path, capsys):
    out = tmp_path / "serve.json"
    rc = serve_main(["--onnx", str(model), "--events", str(tmp_path / "missing_data.hdf5"), "--streams", "1",
                     "--max-steps", "2", "--threads", "1", "--quiet", "--report", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "missing_data.hdf5" in err, err
    streams = json.loads(out.read_text())["streams"]
    assert streams["cam0"]["status"] == "failed" and streams["cam1"]["status"] == "ok"


def test_a_stream_that_runtime_stream_refuses_is_refused_and_the_others_scored_alone(model, monkeypatch, tmp_path,
                                                                                      capsys):
    _bad_seed(monkeypatch, DirtyRecording)
    out = tmp_path / "serve.json"
    rc = serve_main(["--onnx", str(model), "--streams", "2", "--max-steps", "3", "--threads", "1", "--quiet",
                     "--report", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "refused" in err and "--max-dropped" in err and err.count("\n") == 1, err
    report = json.loads(out.read_text())
    cam1 = report["streams"]["cam1"]
    assert cam1["status"] == "refused" and cam1["accuracy"] is None and "30.0%" in cam1["error"]
    assert report["aggregate"]["counted_steps"] == 3  # cam0 alone
    alone = serve(ServeOptions(str(model), streams=1, max_steps=3, threads=1))
    assert report["aggregate"]["accuracy"] == alone["aggregate"]["accuracy"]
    rc = serve_main(["--onnx", str(model), "--streams", "2", "--max-steps", "3", "--threads", "1", "--quiet",
                     "--max-dropped", "0.5"])
    assert rc == 0
    # every stream refused: nothing served, one error line, exit 2
    rc = serve_main(["--onnx", str(model), "--streams", "1", "--seed", "1", "--max-steps", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: no stream served") and err.count("\n") == 1, err


def test_the_documented_maximum_opens_streams_lazily_within_the_budget(model, monkeypatch):
    import runtime.multistream as ms

    opened, peak = [0], [0]
    real_open = ms.MultiSession.open

    def counting_open(self, key):
        real_open(self, key)
        opened[0] += 1
        peak[0] = max(peak[0], len(self._keys))

    monkeypatch.setattr(ms.MultiSession, "open", counting_open)
    report = serve(ServeOptions(str(model), streams=MAX_STREAMS, max_steps=1, threads=1, memory_mb=600))
    memory = report["aggregate"]["memory"]
    assert opened[0] == MAX_STREAMS and len(report["streams"]) == MAX_STREAMS
    assert peak[0] == memory["slots"] < 100 and memory["budget_bytes"] == 600 << 20
    assert report["aggregate"]["ok"] == MAX_STREAMS


def test_limits_are_refused_by_name(model, capsys):
    for argv, flag in ((["--streams", str(MAX_STREAMS + 1)], "--streams"), (["--max-dropped", "1.5"], "--max-dropped"),
                       (["--memory-mb", "0"], "--memory-mb"), (["--memory-mb", "nan"], "--memory-mb"),
                       (["--max-streams", "4000", "--memory-mb", "10"], "--max-streams"),
                       (["--seed", "-1"], "--seed"), (["--burn-in", "-2"], "--burn-in")):
        assert serve_main(["--onnx", str(model), "--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag}") and err.count("\n") == 1, (argv, err)
