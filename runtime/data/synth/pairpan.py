"""A real rectified stereo pair with ground-truth disparity turned into a stereo event recording.

``PairPanScene`` shows a window of the model's input size that a virtual camera pans over the
pair, as the generator pans its synthetic scenes: at time t both views are the pair sampled at
``(x + ox(t), y + oy(t))`` (bilinear), the same offset for both, so the disparity of every pixel stays
that of the pair, exactly, and the events come from the same ESIM camera as the synthetic world's.
Panning both views together is a shift of the rectified image plane (a moving principal point):
rows stay epipolar lines and ``left(x) = right(x - d)`` holds at every time.

Before panning, the pair is reduced by an area average so that its largest ground-truth disparity
equals the largest disparity of the generator's default world at the window width (MVSEC's ~37 px at
346 px, i.e. ``SynthConfig(width=W).focal_baseline / min_depth_m``); a reduced pixel's disparity is
the mean of its block divided by the factor, valid where the whole block is valid and spans at most
one reduced pixel (no depth edge inside). Ground truth at a sub-pixel offset is the bilinear
interpolation of the four reduced pixels around it, valid where all four are valid and within one
pixel of each other.

``motorcycle_recording`` does this for the Middlebury 2014 Motorcycle pair bundled with
scikit-image (``skimage.data.stereo_motorcycle``): a validation of transfer, never training data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import SynthConfig
from .surfaces import Path


def _blocks(n: int, factor: float) -> np.ndarray:
    """Start index of each of the ``floor(n / factor)`` blocks of about ``factor`` source pixels."""
    m = int(n // factor)
    return np.floor(np.arange(m) * factor).astype(np.int64)


def reduce_pair(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, factor: float):
    """Area-average both views by ``factor`` (>= 1); disparity: block mean / factor, NaN where the
    block holds an invalid pixel or a range of more than ``factor`` source pixels."""
    rows, cols = _blocks(left.shape[0], factor), _blocks(left.shape[1], factor)
    r_end = np.r_[rows[1:], min(left.shape[0], int(round(len(rows) * factor)))]
    c_end = np.r_[cols[1:], min(left.shape[1], int(round(len(cols) * factor)))]
    count = np.outer(r_end - rows, c_end - cols)

    def mean(a: np.ndarray) -> np.ndarray:
        a = a[: r_end[-1], : c_end[-1]]
        return np.add.reduceat(np.add.reduceat(a, rows, axis=0), cols, axis=1) / count

    bad = ~np.isfinite(disparity)
    d = np.where(bad, 0.0, disparity)
    crop = (slice(0, r_end[-1]), slice(0, c_end[-1]))
    hi = np.maximum.reduceat(np.maximum.reduceat(np.where(bad, -np.inf, d)[crop], rows, 0), cols, 1)
    lo = np.minimum.reduceat(np.minimum.reduceat(np.where(bad, np.inf, d)[crop], rows, 0), cols, 1)
    nbad = np.add.reduceat(np.add.reduceat(bad[crop].astype(np.int64), rows, 0), cols, 1)
    disp = mean(d) / factor
    disp[(nbad > 0) | (hi - lo > factor)] = np.nan
    return mean(left).astype(np.float32), mean(right).astype(np.float32), disp.astype(np.float32)


def _bilinear(a: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    top = a[y0, x0] * (1 - fx) + a[y0, x0 + 1] * fx
    bottom = a[y0 + 1, x0] * (1 - fx) + a[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


class PairPanScene:
    """A window of ``config.height`` x ``config.width`` panned over a reduced stereo pair.

    ``left``/``right`` intensities in (0, 1] and ``disparity`` (left view, px, NaN invalid) at the
    reduced size, which must exceed the window by at least 2 px in both axes. The pan: sinusoidal
    offsets within the margin, periods 8-12 s (x) and 10-16 s (y) drawn from ``config.seed``, scaled by
    ``config.motion`` (image speeds up to about 10 px/s at 128 px wide, those of the synthetic
    world's camera); the window starts centred.
    """

    horizon_s = 60.0

    def __init__(self, left: np.ndarray, right: np.ndarray, disparity: np.ndarray, config: SynthConfig) -> None:
        self.config = config
        self.height, self.width = config.height, config.width
        self.fb = config.focal_baseline
        H, W = left.shape
        if H < self.height + 2 or W < self.width + 2:
            raise ValueError(f"the pair ({W}x{H}) must be at least 2 px larger than the window "
                             f"({self.width}x{self.height})")
        self.views = {"left": left, "right": right}
        self.disparity = disparity
        rng = np.random.default_rng([config.seed, 5])
        mx, my = (W - 1 - self.width) / 2 - 0.01, (H - 1 - self.height) / 2 - 0.01
        m = config.motion
        self.ox = Path(mx, np.array([mx * m]), np.array([1 / rng.uniform(8, 12)]), np.zeros(1))
        self.oy = Path(my, np.array([my * m]), np.array([1 / rng.uniform(10, 16)]), np.array([np.pi / 2]))
        self.oy.center -= float(self.oy(0.0)) - my  # starts centred in y as in x
        self._yy, self._xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)

    def _grid(self, t_us: int) -> tuple[np.ndarray, np.ndarray]:
        t = t_us * 1e-6
        return self._yy + float(self.oy(t)), self._xx + float(self.ox(t))

    def render(self, t_us: int, side: str) -> np.ndarray:
        y, x = self._grid(t_us)
        return _bilinear(self.views[side], y, x).astype(np.float32)

    def ground_truth(self, t_us: int) -> np.ndarray:
        """Left-view depth ``fb / d`` in metres: float32 [H, W], NaN where invalid."""
        y, x = self._grid(t_us)
        y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
        corners = np.stack([self.disparity[y0 + a, x0 + b] for a in (0, 1) for b in (0, 1)])
        with np.errstate(invalid="ignore"):
            ok = np.all(np.isfinite(corners), axis=0) & (np.ptp(corners, axis=0) <= 1.0)
        d = _bilinear(np.nan_to_num(self.disparity, nan=0.0), y, x)
        ok &= (d > 0) & (np.arange(self.width)[None, :] - d >= 0)
        return np.where(ok, self.fb / np.where(ok, d, 1.0), np.nan).astype(np.float32)

    def max_speed_px(self) -> float:
        t = np.arange(0.0, self.horizon_s, 0.01)
        return float(np.max(np.hypot(self.ox.rate(t), self.oy.rate(t))))


def motorcycle_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Middlebury 2014 Motorcycle as bundled with scikit-image (quarter size, 741 x 500): left and
    right gray in [0, 1] and the left view's disparity (px, NaN invalid); ``right(x - d) = left(x)``."""
    import skimage.data

    left, right, disp = skimage.data.stereo_motorcycle()
    gray = np.array([0.2126, 0.7152, 0.0722])
    disp = np.where(np.isfinite(disp), disp, np.nan)
    return (left[..., :3] @ gray) / 255.0, (right[..., :3] @ gray) / 255.0, disp.astype(np.float64)


def pair_config(height: int, width: int, seconds: float, seed: int = 0, **overrides: object) -> SynthConfig:
    """The generator's default camera at this window size (same fB, ESIM and sensor knobs)."""
    return dataclasses.replace(SynthConfig(height=height, width=width), seconds=seconds, seed=seed,
                               **overrides)  # type: ignore[arg-type]


def pan_scene(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, config: SynthConfig) -> PairPanScene:
    """Reduce the pair so its largest disparity is the default world's largest at this width; pan it."""
    d_max = config.focal_baseline / config.min_depth_m
    factor = max(1.0, float(np.nanmax(disparity)) / d_max)
    l_r, r_r, d_r = reduce_pair(left, right, disparity, factor)
    floor = 0.02  # keep the log intensity finite on black pixels
    return PairPanScene(np.maximum(l_r, floor), np.maximum(r_r, floor), d_r, config)


def motorcycle_recording(height: int = 96, width: int = 128, seconds: float = 4.0, seed: int = 0,
                         **overrides: object):
    """The Motorcycle pair as a stereo event recording (``runtime.data.sources.SyntheticRecording``)."""
    from runtime.data.sources import SyntheticRecording

    from .simulate import generate

    config = pair_config(height, width, seconds, seed, **overrides)
    scene = pan_scene(*motorcycle_pair(), config)
    rec = SyntheticRecording(generate(config, images=False, scene=scene))
    rec.name = f"motorcycle(seed={seed})"
    return rec


__all__ = ["PairPanScene", "reduce_pair", "pan_scene", "motorcycle_pair", "motorcycle_recording"]
