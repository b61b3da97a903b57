"""Checks of a recording's calibration when it is read: rectification maps (``check_map``) and a
file's own fB (``attribute_fb``). What they refuse would otherwise drop or misplace events, or make every
ground-truth pixel invalid, without a word (docs/reliability.md)."""

from __future__ import annotations

import math

import numpy as np

from runtime.data.events import DataError

MAP_MARGIN = 1.0  # a map value may lie this many image sizes outside the image (the rest is a broken map)


def check_map(values: np.ndarray, path: str, what: str, limits: tuple[float, float] | None) -> None:
    """Refuse a rectification map with non-finite values, or (``limits``: the image's width or height,
    per axis) values more than ``MAP_MARGIN`` image sizes outside the image; the ``DataError`` names the
    file and the count (such a map would drop or misplace events in silence)."""
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise DataError(f"{path}: {bad:,} of {values.size:,} values of {what} are NaN or infinite: a "
                        "rectification map must be finite everywhere")
    if limits is None:
        return
    for axis, size in enumerate(limits):
        v = values[..., axis] if values.ndim == 3 else values
        far = int(np.count_nonzero((v < -MAP_MARGIN * size) | (v > (1 + MAP_MARGIN) * size)))
        if far:
            raise DataError(f"{path}: {far:,} of {v.size:,} values of {what} lie more than {MAP_MARGIN:g} image "
                            f"sizes outside the image ({size} px): not a rectification map of this sensor")
        if values.ndim != 3:
            return


def attribute_fb(value: object, path: str) -> float:
    """A file's ``fb`` attribute as a positive finite float; anything else is a ``DataError`` naming fB."""
    try:
        fb = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        fb = math.nan
    if not (math.isfinite(fb) and fb > 0):
        raise DataError(f"{path}: its 'fb' attribute (focal length x baseline) is {value!r}, not a positive number "
                        "of px*m; give the right one with --fb")
    return fb
