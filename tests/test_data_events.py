"""The common event representation: converters by field name, and the drop-and-count policy."""

import numpy as np
import pytest

from runtime.data.events import (
    EVENT_DTYPE,
    DataError,
    EventStream,
    clean,
    from_dsec,
    from_mvsec,
    from_tonic,
    make_events,
    to_dsec,
    to_mvsec,
    to_tonic,
    validate,
)


def sample_events() -> np.ndarray:
    return make_events(
        x=np.array([0, 5, 9, 3]),
        y=np.array([0, 2, 7, 1]),
        t=np.array([10, 20, 20, 1_000_000]),
        p=np.array([1, -1, 1, -1]),
    )


def test_dtype_fields():
    assert EVENT_DTYPE.names == ("x", "y", "t", "p")
    assert EVENT_DTYPE["t"] == np.int64 and EVENT_DTYPE["p"] == np.int8 and EVENT_DTYPE["x"] == np.uint16


def test_mvsec_round_trip_uses_seconds():
    ev = sample_events()
    arr = to_mvsec(ev)
    assert arr.dtype == np.float64 and arr.shape == (4, 4)
    assert arr[3, 2] == pytest.approx(1.0)  # column 2 is time in seconds
    stats = {}
    back = from_mvsec(arr, height=8, width=10, stats=stats)
    np.testing.assert_array_equal(back, ev)
    assert sum(stats.values()) == 0


def test_mvsec_absolute_unix_times_survive_float64():
    ev = sample_events()
    ev["t"] += 1_504_645_177_123_456  # MVSEC clocks are unix time
    np.testing.assert_array_equal(from_mvsec(to_mvsec(ev))["t"], ev["t"])


def test_dsec_round_trip_with_offset_and_binary_polarity():
    ev = sample_events()
    cols = to_dsec(ev, t_offset=5)
    assert cols["t"].dtype == np.uint32 and set(np.unique(cols["p"])) == {0, 1}
    back = from_dsec(cols["x"], cols["y"], cols["t"], cols["p"], t_offset=cols["t_offset"])
    np.testing.assert_array_equal(back, ev)


def test_tonic_by_field_name_not_position():
    ev = sample_events()
    tonic = to_tonic(ev)
    assert set(np.unique(tonic["p"])) == {0, 1}
    # the same data with the fields in another order must give the same events
    shuffled = np.empty(len(ev), dtype=[("p", np.int8), ("t", np.int64), ("y", np.int16), ("x", np.int16)])
    for name in ("x", "y", "t", "p"):
        shuffled[name] = tonic[name]
    np.testing.assert_array_equal(from_tonic(shuffled), ev)
    np.testing.assert_array_equal(from_tonic(tonic), ev)


def test_tonic_missing_field_is_named():
    bad = np.zeros(3, dtype=[("x", int), ("y", int), ("ts", int), ("p", int)])
    with pytest.raises(DataError, match="missing \\['t'\\]"):
        from_tonic(bad)


def test_mvsec_wrong_shape_is_refused():
    with pytest.raises(DataError, match="shape"):
        from_mvsec(np.zeros((5, 3)))


def test_bad_rows_are_dropped_and_counted():
    arr = np.array(
        [
            [1, 1, 0.000010, 1],  # ok
            [np.nan, 1, 0.000011, 1],  # non-finite
            [1, 1, np.inf, -1],  # non-finite
            [10, 1, 0.000012, 1],  # x outside a 10-wide sensor
            [-1, 1, 0.000012, 1],  # negative x
            [1, 8, 0.000012, 1],  # y outside an 8-high sensor
            [2, 2, 0.000013, 0.5],  # bad polarity
            [3, 3, 0.000020, -1],  # ok
            [4, 4, 0.000015, 1],  # time goes backwards
            [5, 5, 0.000020, 1],  # ok (equal times are fine)
        ]
    )
    stats = {}
    ev = from_mvsec(arr, height=8, width=10, stats=stats)
    assert stats == {"non_finite": 2, "time_out_of_range": 0, "out_of_sensor": 3, "bad_polarity": 1, "time_reversed": 1}
    np.testing.assert_array_equal(ev["t"], [10, 20, 20])
    np.testing.assert_array_equal(ev["x"], [1, 3, 5])


def test_drops_without_stats_warn_instead_of_silence():
    arr = np.array([[1, 1, 0.0, 1], [1, 1, np.nan, 1]])
    with pytest.warns(UserWarning, match="1 non_finite"):
        from_mvsec(arr)


def test_clean_and_validate():
    ev = sample_events()
    assert sum(validate(ev, height=8, width=10).values()) == 0
    counts = validate(ev, height=5, width=10)  # y=7 is outside a 5-high sensor
    assert counts["out_of_sensor"] == 1
    cleaned, counts = clean(ev[::-1].copy(), height=8, width=10)  # reversed: only the first survives
    assert counts["time_reversed"] == 3 and len(cleaned) == 1


def test_event_stream_slices_half_open():
    s = EventStream(sample_events(), height=8, width=10)
    assert len(s) == 4
    np.testing.assert_array_equal(s.slice(10, 20)["t"], [10])
    np.testing.assert_array_equal(s.slice(20, 21)["t"], [20, 20])
    with pytest.raises(DataError):
        EventStream(np.zeros(3), 8, 10)
