"""runtime.core.spans: integer lists as spans in log lines (training's data line, bench_transfer's header)."""

import random

from runtime.core.spans import spans
from training.train import int_ranges


def test_spans_examples():
    assert spans([1000, 1001, 1002, 1005]) == "1000-1002,1005"
    assert spans(range(100, 612)) == "100-611"
    assert spans([7]) == "7"
    assert spans([]) == ""
    assert spans([3, 2, 1]) == "3,2,1"  # order kept: only ascending runs join


def test_spans_read_back_by_the_seed_option():
    rng = random.Random(5)
    for _ in range(200):
        values = sorted(rng.sample(range(0, 60), rng.randint(1, 30)))
        assert int_ranges(spans(values)) == values
