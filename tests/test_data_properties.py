"""Property tests: windowed reading equals reading everything; encodings equal a plain loop."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.data.encoding import event_count, sbt
from runtime.data.events import assemble, empty_counts, make_events, time_slice
from runtime.data.recording import ColumnReader, scan_index


@st.composite
def tables(draw):
    """A raw event table with mostly increasing times, some going back, some NaN, some off-sensor."""
    n = draw(st.integers(0, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, 50, n)).astype(np.float64)
    back = rng.random(n) < 0.05
    t[back] -= rng.integers(1, 200, back.sum())
    t[rng.random(n) < 0.02] = np.nan
    x = rng.integers(0, 9, n).astype(np.float64)  # 8 wide: x = 8 is outside
    y = rng.integers(0, 6, n).astype(np.float64)
    p = rng.choice([-1.0, 1.0], n)
    return x, y, t, p


@settings(max_examples=80, deadline=None)
@given(
    table=tables(),
    block=st.integers(1, 40),
    chunk=st.integers(1, 100),
    cuts=st.lists(st.integers(-100, 8000), min_size=2, max_size=6),
)
def test_windowed_reads_equal_one_full_read(table, block, chunk, cuts):
    x, y, t, p = table
    n = len(t)
    cuts = sorted(set(cuts))
    reference, ref_counts = assemble(x, y, t, p, height=6, width=8)
    stats = empty_counts()
    index = scan_index(n, lambda lo, hi: t[lo:hi], block=block, chunk=chunk)
    reader = ColumnReader(
        lambda lo, hi: (x[lo:hi], y[lo:hi], t[lo:hi], p[lo:hi]), index, height=6, width=8, stats=stats
    )
    for t0, t1 in zip(cuts[:-1], cuts[1:], strict=True):
        np.testing.assert_array_equal(reader.events(t0, t1), time_slice(reference, t0, t1))
    # reading the whole table in order counts every bad row exactly once
    reader.events(-(10**9), 10**9)
    assert stats == ref_counts


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200), bins=st.integers(1, 6))
def test_encodings_equal_a_plain_loop(seed, n, bins):
    rng = np.random.default_rng(seed)
    H, W, t0, t1 = 4, 5, 1000, 1000 + int(rng.integers(1, 5000))
    ev = make_events(
        rng.integers(0, W, n),
        rng.integers(0, H, n),
        np.sort(rng.integers(0, 7000, n)),
        rng.choice([-1, 1], n),
    )
    total = np.zeros((bins, H, W))
    counts = np.zeros((2 * bins, H, W))
    for e in ev:
        if t0 <= e["t"] < t1:
            b = int((int(e["t"]) - t0) * bins // (t1 - t0))
            total[b, e["y"], e["x"]] += e["p"]
            counts[2 * b + (e["p"] < 0), e["y"], e["x"]] += 1
    np.testing.assert_array_equal(sbt(ev, t0, t1, bins, H, W), np.sign(total))
    np.testing.assert_array_equal(event_count(ev, t0, t1, bins, H, W), counts)
