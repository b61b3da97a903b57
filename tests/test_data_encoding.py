"""SBT and count encodings against hand-computed examples."""

import numpy as np
import pytest

from runtime.data.encoding import channels, encode, event_count, sbt
from runtime.data.events import DataError, make_events


def events_for_hand_example() -> np.ndarray:
    # window [1000, 1100) us, 2 bins of 50 us, sensor 2 x 3 (H x W)
    rows = [
        # x, y, t, p
        (0, 0, 990, 1),  # before the window: ignored
        (0, 0, 1000, 1),  # bin 0, pixel (0,0): +1
        (0, 0, 1010, 1),  # bin 0, pixel (0,0): +1 -> sum +2 -> +1
        (2, 1, 1020, -1),  # bin 0, pixel (1,2): -1
        (1, 0, 1030, 1),  # bin 0, pixel (0,1): +1 ...
        (1, 0, 1049, -1),  # ... and -1 -> sum 0 -> 0
        (1, 0, 1050, -1),  # bin 1, pixel (0,1): -1 (50 us is the first of bin 1)
        (2, 1, 1060, 1),  # bin 1, pixel (1,2): +1
        (2, 1, 1070, 1),
        (2, 1, 1080, -1),  # sum +1 -> +1
        (0, 1, 1100, 1),  # t1 itself: outside [t0, t1)
    ]
    x, y, t, p = (np.array(col) for col in zip(*rows, strict=True))
    return make_events(x, y, t, p)


def test_sbt_hand_example():
    out = sbt(events_for_hand_example(), 1000, 1100, bins=2, height=2, width=3)
    expected = np.array(
        [
            [[1, 0, 0], [0, 0, -1]],
            [[0, -1, 0], [0, 0, 1]],
        ],
        dtype=np.float32,
    )
    assert out.dtype == np.float32 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, expected)


def test_count_hand_example():
    out = event_count(events_for_hand_example(), 1000, 1100, bins=2, height=2, width=3)
    assert out.shape == (4, 2, 3)
    on0, off0, on1, off1 = out
    assert on0[0, 0] == 2 and on0[0, 1] == 1 and off0[0, 1] == 1 and off0[1, 2] == 1
    assert off1[0, 1] == 1 and on1[1, 2] == 2 and off1[1, 2] == 1
    assert out.sum() == 9  # the 9 events inside the window


def test_sbt_is_sign_of_count_difference():
    rng = np.random.default_rng(1)
    n = 5000
    ev = make_events(
        rng.integers(0, 7, n),
        rng.integers(0, 5, n),
        np.sort(rng.integers(0, 50_000, n)),
        rng.choice([-1, 1], n),
    )
    counts = encode("count", ev, 0, 50_000, 5, 5, 7)
    np.testing.assert_array_equal(encode("sbt", ev, 0, 50_000, 5, 5, 7), np.sign(counts[0::2] - counts[1::2]))
    assert counts.sum() == n


def test_bins_split_evenly_in_time():
    ev = make_events([0] * 5, [0] * 5, [0, 9_999, 10_000, 39_999, 49_999], [1] * 5)
    out = sbt(ev, 0, 50_000, 5, 1, 1)
    np.testing.assert_array_equal(out[:, 0, 0], [1, 1, 0, 1, 1])


def test_channels_and_unknown_encoding():
    assert channels("sbt", 5) == 5 and channels("count", 5) == 10
    with pytest.raises(ValueError, match="unknown encoding 'voxel'"):
        encode("voxel", events_for_hand_example(), 0, 1, 1, 2, 3)


def test_out_of_sensor_events_are_refused_not_wrapped():
    ev = make_events([3], [0], [5], [1])  # x = 3 on a 3-wide sensor would wrap into the next row
    with pytest.raises(DataError, match="outside"):
        sbt(ev, 0, 10, 1, 2, 3)


def test_empty_window_is_refused():
    with pytest.raises(ValueError, match="empty window"):
        sbt(events_for_hand_example(), 10, 10, 1, 2, 3)
