"""Property tests (issue 12): hostile event tables.

``assemble`` (every reader's check) keeps exactly the rows a plain per-row reading of the policy keeps
and counts every other row under the first rule it breaks, whatever the values and dtypes. End to end,
``python -m runtime.stream`` on an MVSEC-layout file with hostile rows either refuses with one line or
reports a run whose data-quality counts agree with the table (and stay under --max-dropped)."""

from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pytest
from contract_models import stereo_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.data.events import DROP_REASONS, MAX_TIME_US, assemble
from runtime.data.synth import SynthConfig, write_mvsec
from runtime.stream import main

H, W = 6, 8
SPECIAL = [np.nan, np.inf, -np.inf, 1e18 * 1e6, 2.0**62, 2.0**63, -1.0, 0.5, 1.5, 2.0, 1e30, 65536.0, -0.4]


def oracle(x, y, t, p, height=H, width=W):
    """The policy, one row at a time (runtime/data/events.py's docstring and docs/reliability.md)."""
    counts = dict.fromkeys(DROP_REASONS, 0)
    kept, running = [], -math.inf
    for xv, yv, tv, pv in zip(x.tolist(), y.tolist(), t.tolist(), p.tolist(), strict=True):
        xf, yf, tf, pf = float(xv), float(yv), float(tv), float(pv)
        usable = math.isfinite(tf) and abs(tf) <= MAX_TIME_US
        if not all(math.isfinite(v) for v in (xf, yf, tf, pf)):
            reason = "non_finite"
        elif not usable:
            reason = "time_out_of_range"
        elif not (0 <= round(xf) < width and 0 <= round(yf) < height):
            reason = "out_of_sensor"
        elif pf not in (-1.0, 0.0, 1.0):
            reason = "bad_polarity"
        elif round(tf) < running:
            reason = "time_reversed"
        else:
            reason = None
        if reason:
            counts[reason] += 1
        else:
            kept.append((round(xf), round(yf), round(tf), 1 if pf == 1 else -1))
        if usable:
            running = max(running, round(tf))
    return kept, counts


@st.composite
def tables(draw):
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.cumsum(rng.integers(0, 30, n)).astype(np.float64)
    cols = [rng.integers(-1, W + 1, n).astype(np.float64), rng.integers(-1, H + 1, n).astype(np.float64), t,
            rng.choice([-1.0, 0.0, 1.0], n)]
    for _ in range(draw(st.integers(0, 8))):  # hostile values at random places
        if n:
            cols[draw(st.integers(0, 3))][draw(st.integers(0, n - 1))] = draw(st.sampled_from(SPECIAL))
    if draw(st.booleans()) and n:  # a stretch in reverse
        a, b = sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
        cols[2][a:b] = cols[2][a:b][::-1]
    kinds = draw(st.lists(st.sampled_from(["f8", "f4", "i8", "u2", "i1"]), min_size=4, max_size=4))
    out = []
    for col, kind in zip(cols, kinds, strict=True):
        if kind[0] in "iu":  # integer dtypes hold only what they can: the non-integers stay floating
            info = np.iinfo(kind)
            if not (np.isfinite(col).all() and (col == np.round(col)).all() and col.min(initial=0) >= info.min
                    and col.max(initial=0) <= info.max):
                kind = "f8"
        with np.errstate(all="ignore"):
            out.append(col.astype(kind))
    return out


@settings(max_examples=300, deadline=None)
@given(table=tables())
def test_assemble_keeps_and_counts_rows_as_the_policy_says(table):
    x, y, t, p = table
    with np.errstate(all="raise"):  # no floating-point warning on the way (they would leak onto stderr)
        events, counts = assemble(x, y, t, p, height=H, width=W)
    kept, expected = oracle(x, y, t, p)
    assert counts == expected
    assert [tuple(int(v) for v in e) for e in events[["x", "y", "t", "p"]].tolist()] == kept


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_events")
    stereo_model(d / "m.onnx", height=16, width=20)
    data, gt = write_mvsec(SynthConfig(seconds=0.5, height=16, width=20, seed=3), d, "base")
    with h5py.File(data) as f:
        table = f["davis/left/events"][:]
    return d, data, gt, table


CORRUPTIONS = {
    "nan": lambda e, m: np.where(m[:, None] & [True, False, False, False], np.nan, e),
    "off_sensor": lambda e, m: e + m[:, None] * [0, 500, 0, 0],
    "polarity": lambda e, m: np.where(m[:, None] & [False, False, False, True], 3.0, e),
    "late": lambda e, m: np.where(m[:, None] & [False, False, True, False], 1e21, e),
    "shuffle": lambda e, m: np.concatenate([e[~m], e[m][::-1]]),
}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(which=st.lists(st.sampled_from(sorted(CORRUPTIONS)), max_size=3), share=st.floats(0.0, 1.0),
       seed=st.integers(0, 1000), max_dropped=st.sampled_from([0.01, 0.5, 1.0]))
def test_stream_refuses_in_one_line_or_counts_what_it_dropped(recording, tmp_path, capsys, which, share, seed,
                                                             max_dropped):
    d, data, gt, table = recording
    rng = np.random.default_rng(seed)
    bad = table.copy()
    for name in which:
        bad = CORRUPTIONS[name](bad, rng.random(len(bad)) < share)
    path = tmp_path / f"x{seed}_data.hdf5"
    shutil.copy(data, path)
    shutil.copy(gt, tmp_path / f"x{seed}_gt.hdf5")
    with h5py.File(path, "a") as f:
        for side in ("left", "right"):
            del f[f"davis/{side}/events"]
            f[f"davis/{side}/events"] = bad
    report = tmp_path / f"r{seed}.json"
    report.unlink(missing_ok=True)
    rc = main(["--onnx", str(d / "m.onnx"), "--events", str(path), "--quiet", "--device", "cpu", "--report",
               str(report), "--max-dropped", str(max_dropped)])
    err = capsys.readouterr().err.strip()
    if rc != 0:
        *warnings, last = err.splitlines()
        assert rc == 2 and last.startswith("error: ") and str(path) in last, err
        assert all(w.startswith("warning: ") for w in warnings), err
        assert not report.exists() or json.loads(report.read_text())["accuracy"] is None
        return
    assert all(line.startswith("warning: ") for line in err.splitlines()), err
    dq = json.loads(report.read_text())["data_quality"]
    _, counts = oracle(bad[:, 0], bad[:, 1], bad[:, 2] * 1e6, bad[:, 3], 16, 20)  # a camera's whole table
    for reason in DROP_REASONS:
        assert dq["rows_dropped"][reason] <= 2 * counts[reason]  # two cameras, each read in part
    assert dq["bad_row_fraction"] <= max_dropped and dq["windows_without_events"] < dq["windows"]
