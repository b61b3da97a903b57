"""The report a person can look at: one self-contained HTML page (``runtime.stream --report-html OUT.html``,
``runtime.serve --report-html``): the run's summary, firing rate per layer (bars), the latency distribution
(a histogram), accuracy and sparsity over time (lines) and a few frames (events | prediction | ground truth).

Everything is inside the page: the charts are SVG written here as text, the frames PNG (pillow) as data URLs;
no script, no font, no request at view time. numpy and pillow only (the deployment install). Written
atomically (``runtime.core.atomic``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime.core.atomic import write_text_atomic
from runtime.core.errors import RuntimeInputError

MAX_FRAMES = 4
W, H, PAD = 640, 220, 44
STYLE = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;font-size:13px}
svg text{font-family:sans-serif}figure{display:inline-block;margin:6px}figcaption{font-size:12px;color:#555}
img{image-rendering:pixelated;border:1px solid #ccc}"""


@dataclass
class Series:
    """What a stream's steps said, step by step, and a few of its frames (``runtime.stream.run``)."""

    steps: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    error_px: list[float | None] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)
    frames: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (step, uint8 [H, W, 3])
    quality: tuple[str, str] = ("mean disparity error per step", "error (px)")  # what error_px holds: title, axis

    def add(self, step: int, latency_s: float, error_px: float | None, spikes: float, neurons: int) -> None:
        self.steps.append(step)
        self.latency_ms.append(latency_s * 1000)
        self.error_px.append(error_px)
        self.sparsity.append(1 - spikes / neurons if neurons else 1.0)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg(body: list[str], title: str, width: int = W, height: int = H) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{_esc(title)}</title>' + "".join(body) + "</svg>")


def _axes(height: int, x_label: str, y_label: str, y_max: float, y_min: float = 0.0) -> list[str]:
    out = [f'<line x1="{PAD}" y1="{height - PAD}" x2="{W - 10}" y2="{height - PAD}" stroke="#444"/>',
           f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{height - PAD}" stroke="#444"/>',
           f'<text x="{(W + PAD) // 2}" y="{height - 8}" font-size="12" text-anchor="middle">{_esc(x_label)}</text>',
           f'<text x="12" y="{height // 2}" font-size="12" transform="rotate(-90 12 {height // 2})" '
           f'text-anchor="middle">{_esc(y_label)}</text>']
    for frac in (0.0, 0.5, 1.0):
        y = height - PAD - frac * (height - PAD - 10)
        out.append(f'<text x="{PAD - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                   f'{y_min + frac * (y_max - y_min):.4g}</text>')
    return out


def bar_chart(values: Mapping[str, float], title: str) -> str:
    """Horizontal bars, one per entry (a layer's firing rate)."""
    items = [(k, float(v)) for k, v in values.items() if v is not None and math.isfinite(float(v))]
    top = max((v for _, v in items), default=0.0) or 1.0
    row, label_w = 14, 230
    height = row * len(items) + 30
    body = []
    for i, (name, v) in enumerate(items):
        y = 10 + i * row
        width = (W - label_w - 70) * v / top
        body.append(f'<text x="{label_w - 6}" y="{y + 10}" font-size="10" text-anchor="end">{_esc(name)}</text>'
                    f'<rect class="bar" x="{label_w}" y="{y}" width="{width:.1f}" height="{row - 3}" fill="#3b7dd8">'
                    f'<title>{_esc(name)}: {v:.4g}</title></rect>'
                    f'<text x="{label_w + width + 4:.1f}" y="{y + 10}" font-size="10">{v:.3g}</text>')
    return _svg(body, title, height=height)


def histogram(values: Sequence[float], title: str, x_label: str, bins: int = 30) -> str:
    """A histogram of ``values`` (a latency distribution)."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if data.size == 0:
        return _svg(['<text x="20" y="40">no data</text>'], title)
    counts, edges = np.histogram(data, bins=bins)
    top = int(counts.max()) or 1
    body = _axes(H, x_label, "steps", top)
    span = W - 10 - PAD
    for i, c in enumerate(counts):
        h = (H - PAD - 10) * c / top
        body.append(f'<rect class="bin" x="{PAD + i * span / bins:.1f}" y="{H - PAD - h:.1f}" '
                    f'width="{span / bins - 1:.1f}" height="{h:.1f}" fill="#d8843b"><title>{edges[i]:.3g}-'
                    f'{edges[i + 1]:.3g}: {c}</title></rect>')
    body += [f'<text x="{PAD}" y="{H - PAD + 14}" font-size="10">{edges[0]:.3g}</text>',
             f'<text x="{W - 10}" y="{H - PAD + 14}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text>']
    return _svg(body, title)


def line_chart(xs: Sequence[int], ys: Sequence[float | None], title: str, y_label: str) -> str:
    """A line over the steps (gaps where a value is None)."""
    pts = [(x, float(y)) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(float(y))]
    if not pts:
        return _svg(['<text x="20" y="40">no data</text>'], title)
    lo, hi = min(y for _, y in pts), max(y for _, y in pts)
    lo, hi = (lo - 0.5, hi + 0.5) if hi == lo else (lo, hi)
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    body = _axes(H, "step", y_label, hi, lo)

    def at(x: float, y: float) -> str:
        px, py = PAD + (x - x0) / (x1 - x0) * (W - 10 - PAD), H - PAD - (y - lo) / (hi - lo) * (H - PAD - 10)
        return f"{px:.1f},{py:.1f}"

    body.append(f'<polyline class="line" fill="none" stroke="#2a9d55" stroke-width="1.5" '
                f'points="{" ".join(at(x, y) for x, y in pts)}"/>')
    body += [f'<text x="{PAD}" y="{H - PAD + 14}" font-size="10">{x0}</text>',
             f'<text x="{W - 10}" y="{H - PAD + 14}" font-size="10" text-anchor="end">{x1}</text>']
    return _svg(body, title)


def png_data_url(picture: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


SUMMARY = (  # label, key path in the report, format (None: the p50 / p99 of a latency section)
    ("model", ("model", "path"), "{}"), ("task", ("model", "task"), "{}"), ("device", ("runtime", "device"), "{}"),
    ("source", ("source", "kind"), "{}"), ("steps", ("steps", "total"), "{}"),
    ("steps/s (model)", ("speed", "fps_model"), "{:.2f}"),
    ("steps/s (end to end)", ("speed", "fps_end_to_end"), "{:.2f}"),
    ("latency p50 / p99 ms", ("speed", "latency_ms", "model"), None),
    ("network sparsity", ("sparsity", "network_sparsity"), "{:.4f}"),
    ("energy per step (uJ)", ("energy", "energy_per_step_uj"), "{:.4g}"),
    ("1-pixel accuracy %", ("accuracy", "one_pixel_accuracy_pct"), "{:.2f}"),
    ("mean disparity error px", ("accuracy", "mean_disparity_error_px"), "{:.3f}"),
    ("streams", ("aggregate", "streams"), "{}"), ("steps/s (all streams)", ("aggregate", "steps_per_s"), "{:.2f}"),
    ("network sparsity (all streams)", ("aggregate", "sparsity", "network_sparsity"), "{:.4f}"),
    ("accuracy % (all streams)", ("aggregate", "accuracy_pct"), "{:.2f}"),
)


def _get(d: Any, keys: Sequence[str]) -> Any:
    """``d[k0][k1]...``, or None where a key is missing."""
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Label, value of the report's headline numbers, whichever it has (a stream's or a server's)."""
    rows: list[tuple[str, str]] = []
    for label, keys, fmt in SUMMARY:
        v = _get(report, keys)
        if v is None:
            continue
        text = f"{v['p50']:.2f} / {v['p99']:.2f}" if fmt is None else fmt.format(v)
        rows.append((label, text))
    return rows


# a server's table of streams: header, keys into each stream's report
STREAM_COLUMNS = (("steps", ("steps", "total")), ("steps/s model", ("speed", "fps_model")),
                  ("1-pixel accuracy %", ("accuracy", "one_pixel_accuracy_pct")),
                  ("mean disparity error px", ("accuracy", "mean_disparity_error_px")))


def _stream_table(streams: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, tuple[str, ...]]]) -> str:
    """One row per stream; a value a stream lacks (one that failed before its first step) is n/a."""
    def cell(value: Any) -> str:
        text = "n/a" if value is None else value if isinstance(value, str) else f"{value:.4g}"
        return f"<td>{_esc(text)}</td>"

    rows = ['<h2 id="streams">Streams</h2><table><tr><th>stream</th>'
            + "".join(f"<th>{_esc(h)}</th>" for h, _ in columns) + "</tr>"]
    for name, r in streams.items():
        rows.append(f"<tr><th>{_esc(name)}</th>" + "".join(cell(_get(r, keys)) for _, keys in columns) + "</tr>")
    return "".join(rows) + "</table>"


def page(report: Mapping[str, Any], series: Series | None = None, title: str = "SNN run report",
         columns: Sequence[tuple[str, tuple[str, ...]]] = STREAM_COLUMNS) -> str:
    """The HTML page of a run's ``report`` (and its steps' ``series``, if recorded); a server's report has a
    table of its streams with ``columns``."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{_esc(title)}</h1>", '<h2 id="summary">Summary</h2><table>']
    parts += [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _summary_rows(report)]
    parts.append("</table>")
    streams = report.get("streams") or {}
    if streams:  # a server's report: one row per stream
        parts.append(_stream_table(streams, columns))
    rates = (report.get("sparsity") or {}).get("firing_rate") or next(
        ((r.get("sparsity") or {}).get("firing_rate") for r in streams.values()), None) or {}
    parts += ['<h2 id="firing">Firing rate per layer' + (" (first stream)" if streams and not report.get("sparsity")
                                                         else "") + "</h2>", bar_chart(rates, "firing rate per layer")]
    if series is not None and series.steps:
        parts += ['<h2 id="latency">Latency</h2>',
                  histogram(series.latency_ms, "model latency per step", "model latency (ms)"),
                  '<h2 id="over-time">Accuracy and sparsity over time</h2>',
                  line_chart(series.steps, series.error_px, *series.quality),
                  line_chart(series.steps, series.sparsity, "sparsity per step", "sparsity")]
        if series.frames:
            parts.append('<h2 id="frames">Frames: events | prediction | ground truth</h2>')
            parts += [f'<figure class="frame"><img alt="step {s}" src="{png_data_url(p)}" width="{p.shape[1]}" '
                      f'height="{p.shape[0]}"><figcaption>step {s}</figcaption></figure>' for s, p in series.frames]
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(report: Mapping[str, Any], path: str | Path, series: Series | None = None,
               columns: Sequence[tuple[str, tuple[str, ...]]] = STREAM_COLUMNS, title: str = "SNN run report") -> None:
    """Write ``page(...)`` to ``path`` atomically; a path that cannot be written is a ``RuntimeInputError``."""
    try:
        write_text_atomic(path, page(report, series, title, columns))
    except OSError as exc:
        raise RuntimeInputError(f"--report-html {path}", f"cannot write it ({exc.strerror or exc})") from None
