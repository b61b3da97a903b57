"""Integer lists written as spans, for log lines and reports: [1000, 1001, 1002, 1005] -> '1000-1002,1005'."""

from __future__ import annotations

from collections.abc import Sequence


def spans(values: Sequence[int]) -> str:
    """Runs of consecutive integers as ``lo-hi`` (a single value alone), in the given order, comma-separated."""
    values = list(values)
    parts, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[i - 1] + 1:
            parts.append(f"{values[start]}" + (f"-{values[i - 1]}" if i - 1 > start else ""))
            start = i
    return ",".join(parts)
