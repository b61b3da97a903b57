"""The HTML report (runtime.htmlreport): ``runtime.stream --report-html`` and ``runtime.serve --report-html`` write
one self-contained page (summary, firing-rate bars, latency histogram, accuracy and sparsity over time, frames)
with nothing fetched at view time; the default suite checks its structure, a slow test loads it in headless
Chromium (Debian's package) and checks there are no console errors and the elements are there."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from contract_models import stereo_model
from fake_source import patch_in

from runtime.serve import main as serve_main
from runtime.stream import main as stream_main


class _Elements(HTMLParser):
    """Tags with their attributes, and every URL the page would fetch."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.fetches: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith(("data:", "#")):
                self.fetches.append(a[key])

    def count(self, tag: str, cls: str | None = None) -> int:
        return sum(1 for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split()))


def _parse(text: str) -> _Elements:
    p = _Elements()
    p.feed(text)
    return p


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path, height=16, width=20)
    return path


@pytest.fixture(scope="module")
def stream_page(model_path, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    patch_in(mp)
    try:
        out = tmp_path_factory.mktemp("html") / "run.html"
        assert stream_main(["--onnx", str(model_path), "--device", "cpu", "--max-steps", "8", "--threads", "1",
                            "--report-html", str(out), "--quiet"]) == 0
    finally:
        mp.undo()
    return out


def test_stream_page_holds_every_section_and_fetches_nothing(stream_page):
    text = stream_page.read_text()
    page = _parse(text)
    ids = {a.get("id") for t, a in page.tags if t == "h2"}
    assert {"summary", "firing", "latency", "over-time", "frames"} <= ids
    assert page.count("svg", "chart") == 4  # firing rates, latency, accuracy and sparsity over time
    assert page.count("rect", "bar") >= 1 and page.count("rect", "bin") >= 1 and page.count("polyline", "line") == 2
    assert page.count("img") == 4 and all(a["src"].startswith("data:image/png;base64,") for t, a in page.tags
                                          if t == "img")
    assert page.fetches == [] and "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert not list(stream_page.parent.glob(".*.tmp"))  # written atomically


def test_serve_page_has_a_row_per_stream(model_path, tmp_path, monkeypatch):
    patch_in(monkeypatch)
    out = tmp_path / "serve.html"
    assert serve_main(["--onnx", str(model_path), "--streams", "2", "--max-steps", "3", "--threads", "1",
                       "--report-html", str(out), "--quiet"]) == 0
    text = out.read_text()
    assert 'id="streams"' in text and text.count("<th>cam") == 2 and _parse(text).count("svg", "chart") == 1


def test_an_unwritable_page_is_one_line(model_path, tmp_path, monkeypatch, capsys):
    patch_in(monkeypatch)
    (tmp_path / "a_file").write_text("")
    assert stream_main(["--onnx", str(model_path), "--device", "cpu", "--max-steps", "2", "--threads", "1",
                        "--report-html", str(tmp_path / "a_file" / "r.html"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--report-html" in err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_loads_in_headless_chromium_without_errors(stream_page, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
           stream_page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    dom = _parse(done.stdout)
    assert dom.count("svg", "chart") == 4 and dom.count("img") == 4 and dom.count("rect", "bar") >= 1
    assert re.search(r"<h1>runtime\.stream: tiny\.onnx</h1>", done.stdout)
