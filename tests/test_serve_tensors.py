"""``python -m runtime.serve --tensors``: several streams of tensors through a model of tensors (issue 24),
each isolated as the event streams are (ok / refused / failed; only ok pooled; exit 0 / 1 / 2), with
per-stream and pooled accuracy where labels are given (absent with the reason otherwise) and the HTML
report. The model is a small classification genotype, compiled."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from helpers import small_genotype
from test_htmlreport import CHROMIUM

from compiler import build_model, export_onnx
from runtime.serve import main as serve_main
from runtime.stream import main as stream_main

STEPS = 6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "cifar.onnx"
    export_onnx(build_model(small_genotype("cifar10")).eval(), path)
    return path


@pytest.fixture
def files(tmp_path):
    """Three streams of [STEPS, 3, 8, 8] inputs; labels for the first two."""
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("a", "b", "c"):
        np.save(tmp_path / f"{name}.npy", rng.random((STEPS, 3, 8, 8), dtype=np.float32) * 2)
        paths[name] = str(tmp_path / f"{name}.npy")
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}_labels.npy", rng.integers(0, 10, STEPS))
        paths[f"{name}_labels"] = str(tmp_path / f"{name}_labels.npy")
    return paths


def _serve(argv, tmp_path, capsys):
    out = tmp_path / "serve.json"
    out.unlink(missing_ok=True)
    rc = serve_main([*argv, "--threads", "1", "--quiet", "--report", str(out)])
    err = capsys.readouterr().err
    return rc, err, json.loads(out.read_text()) if out.exists() else None


def _alone(model, tensors, labels, tmp_path):
    """runtime.stream --tensors's report of one stream alone."""
    out = tmp_path / "alone.json"
    assert stream_main(["--onnx", str(model), "--tensors", tensors, "--labels", labels, "--threads", "1", "--quiet",
                        "--report", str(out)]) == 0
    return json.loads(out.read_text())


def test_streams_of_tensors_are_served_and_scored_as_each_alone(model, files, tmp_path, capsys):
    argv = ["--onnx", str(model), "--tensors", f"{files['a']},{files['b']}", "--tensors", files["c"],
            "--labels", f"{files['a_labels']},{files['b_labels']},-", "--stagger", "2", "--max-streams", "2"]
    rc, err, report = _serve(argv, tmp_path, capsys)
    assert rc == 0 and err == "", err
    s, agg = report["streams"], report["aggregate"]
    assert list(s) == ["stream0", "stream1", "stream2"] and all(r["status"] == "ok" for r in s.values())
    assert s["stream2"]["serve"]["joined_at_tick"] >= STEPS  # waited for a slot (--max-streams 2)
    assert agg["batch_size"]["max"] == 2 and agg["steps"] == 3 * STEPS and agg["ok"] == 3
    for name, key in (("stream0", "a"), ("stream1", "b")):  # batched = alone, step by step
        alone = _alone(model, files[key], files[f"{key}_labels"], tmp_path)
        assert s[name]["classification"]["correct_per_step"] == alone["classification"]["correct_per_step"]
        assert s[name]["firing_rate"] == pytest.approx(alone["firing_rate"], rel=1e-6)
    assert s["stream2"]["classification"] is None and s["stream2"]["classification_absent"] == "'-' in --labels"
    correct = s["stream0"]["classification"]["correct"] + s["stream1"]["classification"]["correct"]
    assert agg["classification"] == {"accuracy": correct / (2 * STEPS), "correct": correct, "steps": 2 * STEPS,
                                     "streams": 2}
    assert serve_main([*argv, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "stream2" in out and f"accuracy {100 * correct / (2 * STEPS):.2f} % of {2 * STEPS} steps" in out


def test_a_folder_of_tensors_with_a_folder_of_labels(model, files, tmp_path, capsys):
    inputs, labels = tmp_path / "inputs", tmp_path / "labels"
    inputs.mkdir()
    labels.mkdir()
    for key in ("a", "b"):
        (inputs / f"{key}.npy").write_bytes(open(files[key], "rb").read())
    (labels / "b.npy").write_bytes(open(files["b_labels"], "rb").read())
    rc, err, report = _serve(["--onnx", str(model), "--tensors", str(inputs), "--labels", str(labels),
                              "--max-steps", "4"], tmp_path, capsys)
    s = report["streams"]
    assert rc == 0 and s["stream0"]["serve"]["tensors"] == str(inputs / "a.npy") and s["stream0"]["steps"] == 4
    assert s["stream0"]["classification"] is None and s["stream0"]["classification_absent"] == f"no {labels / 'a.npy'}"
    assert s["stream1"]["serve"]["labels"] == str(labels / "b.npy") and s["stream1"]["classification"]["accuracy"] >= 0
    rc, _, report = _serve(["--onnx", str(model), "--tensors", str(inputs)], tmp_path, capsys)
    assert rc == 0 and report["aggregate"]["classification"] is None
    assert report["aggregate"]["classification_absent"] == "no stream that was served has labels"


def test_a_broken_stream_fails_alone_and_the_others_are_pooled(model, files, tmp_path, capsys):
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"\x93NUMPY this is not an array")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((STEPS, 5), np.float32))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((STEPS, 3, 8, 8), np.nan, np.float32))
    short = tmp_path / "short_labels.npy"
    np.save(short, np.zeros(2, np.int64))
    argv = ["--onnx", str(model), "--tensors", ",".join([files["a"], str(broken), str(wrong), str(nan), files["b"]]),
            "--labels", ",".join([files["a_labels"], "-", "-", "-", str(short)])]
    rc, err, report = _serve(argv, tmp_path, capsys)
    assert rc == 1 and err.count("\n") == 1 and err.startswith("error: 4 of 5 streams not served: "), err
    s = report["streams"]
    assert [r["status"] for r in s.values()] == ["ok", "failed", "failed", "failed", "failed"]
    assert f"stream1 ({broken}) failed: --tensors {broken}: not a readable .npy array" in err
    assert f"stream2 ({wrong}) failed: --tensors {wrong}: holds (6, 5); the model takes" in err
    assert "(192 values per step)" in err
    assert "holds non-finite values" in s["stream3"]["error"]
    assert f"--labels {short}: holds int64 (2,)" in s["stream4"]["error"]
    assert all(r["failed_at"] == {"tick": r["serve"]["left_at_tick"], "step": None} for r in list(s.values())[1:])
    agg = report["aggregate"]
    assert agg["ok"] == 1 and agg["failed"] == 4 and agg["classification"]["streams"] == 1
    assert agg["classification"]["accuracy"] == s["stream0"]["classification"]["accuracy"]
    rc, err, report = _serve(["--onnx", str(model), "--tensors", str(broken)], tmp_path, capsys)
    assert rc == 2 and err.startswith("error: no stream served (1 failed or refused)") and err.count("\n") == 1


def test_a_stream_whose_output_is_never_finite_is_refused(model, files, tmp_path, monkeypatch, capsys):
    from runtime.multistream import MultiSession

    step = MultiSession.step

    def nan_for_stream1(self, inputs):
        outs = step(self, inputs)
        if "stream1" in outs:
            outs["stream1"].output[:] = np.nan
        return outs

    monkeypatch.setattr(MultiSession, "step", nan_for_stream1)
    rc, err, report = _serve(["--onnx", str(model), "--tensors", f"{files['a']},{files['b']}", "--labels",
                              f"{files['a_labels']},{files['b_labels']}"], tmp_path, capsys)
    s = report["streams"]
    assert rc == 1 and "stream1" in err and s["stream1"]["status"] == "refused"
    assert s["stream1"]["error"] == f"the model's output is NaN or inf in every one of the {STEPS} steps"
    assert s["stream1"]["classification"] is None and s["stream1"]["non_finite_output_steps"] == STEPS
    assert report["aggregate"]["classification"]["streams"] == 1 and report["aggregate"]["refused"] == 1


@pytest.mark.parametrize("extra, words", [
    (["--labels", "x.npy,y.npy"], "--labels x.npy,y.npy: 2 labels files for 1 tensor streams"),
    (["--events", "e_data.hdf5"], "--tensors: serves tensors; --events applies to event streams"),
    (["--calib", "somewhere"], "--calib applies to event streams"),
    (["--max-steps", "0"], "--max-steps: must be at least 1, got 0"),
])
def test_bad_options_are_one_line(model, files, tmp_path, capsys, extra, words):
    rc, err, _ = _serve(["--onnx", str(model), "--tensors", files["a"], *extra], tmp_path, capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and words in err, err


def test_models_and_modes_that_do_not_match(model, files, tmp_path, capsys):
    from contract_models import stereo_model

    stereo = tmp_path / "stereo.onnx"
    stereo_model(stereo)
    rc, err, _ = _serve(["--onnx", str(stereo), "--tensors", files["a"]], tmp_path, capsys)
    assert rc == 2 and err.count("\n") == 1 and "model of event windows" in err, err
    rc, err, _ = _serve(["--onnx", str(model), "--streams", "1"], tmp_path, capsys)
    assert rc == 2 and err.count("\n") == 1 and "served with --tensors" in err, err
    rc, err, _ = _serve(["--onnx", str(model), "--labels", files["a_labels"]], tmp_path, capsys)
    assert rc == 2 and err.strip() == "error: --labels: scores --tensors; give --tensors too"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.fetches, self.rows = [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.rows += tag == "tr"
        self.fetches += [a[k] for k in ("src", "href") if a.get(k) and not a[k].startswith(("data:", "#"))]

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_of_tensor_streams(model, files, tmp_path, capsys):
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"nothing")
    page = tmp_path / "serve.html"
    assert serve_main(["--onnx", str(model), "--tensors", f"{files['a']},{broken}", "--labels",
                       f"{files['a_labels']},-", "--threads", "1", "--quiet", "--report-html", str(page)]) == 1
    p = _Page()
    p.feed(page.read_text())
    text = " ".join(p.text)
    assert p.fetches == [] and "Streams" in text and "Firing rate per layer" in text and "failed" in text
    assert "accuracy % (all streams)" in text and "stream0" in text and "stream1" in text


def test_report_html_of_event_streams_with_one_that_cannot_open(tmp_path, monkeypatch, capsys):
    """A failed stream has no steps: the page used to end in a KeyError traceback."""
    from contract_models import stereo_model
    from fake_source import patch_in

    patch_in(monkeypatch)
    stereo = tmp_path / "stereo.onnx"
    stereo_model(stereo)
    page = tmp_path / "serve.html"
    assert serve_main(["--onnx", str(stereo), "--events", str(tmp_path / "missing_data.hdf5"), "--streams", "1",
                       "--max-steps", "2", "--threads", "1", "--quiet", "--report-html", str(page)]) == 1
    assert "cam0" in page.read_text() and "n/a" in page.read_text()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_tensor_serve_page_loads_in_headless_chromium(model, files, tmp_path):
    page = tmp_path / "serve.html"
    assert serve_main(["--onnx", str(model), "--tensors", f"{files['a']},{files['b']}", "--labels",
                       f"{files['a_labels']},-", "--threads", "1", "--quiet", "--report-html", str(page)]) == 0
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line] == []
    assert 'id="streams"' in done.stdout and "<th>stream1</th>" in done.stdout and 'class="chart"' in done.stdout
