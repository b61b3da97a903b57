"""Surface textures: photographs shipped with the package and procedural textures with natural
(1/f) statistics, stored as mip pyramids and sampled with a per-pixel level of detail.

Photographs are lossless PNGs in ``photos/`` (package data; nothing downloads): eighteen of the
sample images scikit-image 0.26.0 bundles (``skimage.data``), the arrays its functions return, and two of
the sample data matplotlib 3.11.2 bundles (``photos/README.md`` says where each comes from and its
licence). Sixteen are split once into two disjoint sets, ``TRAIN_PHOTOS`` and ``HELDOUT_PHOTOS``, so
that held-out scenes can show photographs that training never saw; the set ``train_more`` adds
``MORE_TRAIN_PHOTOS`` to the training ones, ``train_most`` also ``MOST_TRAIN_PHOTOS``. The Middlebury
Motorcycle pair that scikit-image also bundles is in neither set: it is the transfer check
(``runtime.data.synth.pairpan``).

Procedural textures: ``pink`` (Gaussian noise with an amplitude spectrum ``1 / f^beta``, beta drawn
around 1, the statistics of natural images) and ``leaves`` (a dead-leaves image: opaque disks of
random gray with a power-law size distribution, which has the same 1/f spectrum and sharp edges).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .config import PHOTO_VARIATIONS, TEXTURE_SETS

PHOTOS = Path(__file__).resolve().parent / "photos"

# photos/<name>.png (skimage.data function names); chosen to mix natural and man-made content in both halves
TRAIN_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coins", "grass", "hubble_deep_field", "page")
HELDOUT_PHOTOS = ("coffee", "gravel", "rocket", "text", "clock", "moon", "cell", "immunohistochemistry")
# Two more training photographs for the ``train_more`` set (issue 22): mostly smooth, with sparse structure
# (vessels, lesions), as the smooth held-out photographs are; in no other set, so earlier data stays as it was
MORE_TRAIN_PHOTOS = ("microaneurysms", "retina")
# Two more for the ``train_most`` set (issue 22, twenty-second session), from matplotlib's sample data: a portrait
# (large smooth areas, sparse detail) and a terrain's elevation map (smooth slopes, branching valleys)
MOST_TRAIN_PHOTOS = ("grace_hopper", "jacksboro_fault_dem")
PROCEDURAL = ("pink", "leaves")


def photo_names(texture_set: str) -> tuple[str, ...]:
    """The photographs a texture set draws from."""
    if texture_set == "train":
        return TRAIN_PHOTOS
    if texture_set == "train_more":
        return TRAIN_PHOTOS + MORE_TRAIN_PHOTOS
    if texture_set == "train_most":
        return TRAIN_PHOTOS + MORE_TRAIN_PHOTOS + MOST_TRAIN_PHOTOS
    if texture_set == "heldout":
        return HELDOUT_PHOTOS
    if texture_set == "all":
        return TRAIN_PHOTOS + HELDOUT_PHOTOS
    raise ValueError(f"unknown texture set {texture_set!r}; use one of {', '.join(TEXTURE_SETS)}")


def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 gray or uint8 RGB(A) -> float32 luminance in [0, 1]."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    return a / float(np.iinfo(np.asarray(image).dtype).max)


def _normalize(a: np.ndarray) -> np.ndarray:
    """Robustly stretch to [0, 1] (1st and 99th percentiles)."""
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


@functools.cache
def photo_pyramid(name: str) -> tuple[np.ndarray, ...]:
    """The mip pyramid of one shipped photograph, gray in [0, 1], resampled to power-of-two sides and
    each level mirrored into a periodic texture twice its size (cached per process)."""
    with Image.open(PHOTOS / f"{name}.png") as image:
        photo = np.asarray(image)
    levels = pyramid(_pow2(_normalize(_gray(photo))))
    return tuple(_mirrored(level) for level in levels)


def _pow2(a: np.ndarray) -> np.ndarray:
    """Resample to the nearest power-of-two size in each axis (bilinear), so textures tile by masking."""
    h, w = (2 ** int(round(np.log2(n))) for n in a.shape)
    if (h, w) == a.shape:
        return a
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR), dtype=np.float32)


def _downsample(a: np.ndarray) -> np.ndarray:
    """Blur with the binomial kernel [1, 2, 1] / 4 (mirrored borders) and keep every other pixel."""
    p = np.pad(a, 1, mode="reflect")
    a = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    a = 0.25 * a[:, :-2] + 0.5 * a[:, 1:-1] + 0.25 * a[:, 2:]
    return np.ascontiguousarray(a[::2, ::2])


def pyramid(a: np.ndarray, min_size: int = 4) -> tuple[np.ndarray, ...]:
    """Mip levels: level k has 2^k times larger texels, band-limited accordingly."""
    levels = [np.ascontiguousarray(a, dtype=np.float32)]
    while min(levels[-1].shape) >= 2 * min_size:
        levels.append(_downsample(levels[-1]).astype(np.float32))
    return tuple(levels)


def pink_noise(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Periodic Gaussian noise with amplitude spectrum 1/f^beta, beta ~ U(0.8, 1.3), in [0, 1]."""
    beta = rng.uniform(0.8, 1.3)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f**beta
    spectrum[0, 0] = 0.0
    a = np.fft.irfft2(spectrum, s=(size, size))
    return _normalize(a)


def dead_leaves(rng: np.random.Generator, size: int = 256, n: int = 600) -> np.ndarray:
    """Dead leaves: ``n`` opaque disks of random gray, radii ~ r^-3 between 2 and size/4 px, in [0, 1].

    Later disks cover earlier ones; the power-law radii give the 1/f spectrum of natural images.
    """
    r_min, r_max = 2.0, size / 4
    u = rng.random(n)
    radii = 1.0 / np.sqrt(u / r_min**2 + (1 - u) / r_max**2)  # density ~ r^-3 on [r_min, r_max]
    radii = np.sort(radii)[::-1]  # big leaves first, so small ones stay visible
    out = np.full((size, size), rng.random(), dtype=np.float32)
    cx, cy, gray = rng.uniform(0, size, n), rng.uniform(0, size, n), rng.random(n).astype(np.float32)
    for r, x0, y0, g in zip(radii, cx, cy, gray, strict=True):
        r_i = int(np.ceil(r))
        ys = np.arange(int(y0) - r_i, int(y0) + r_i + 1)
        xs = np.arange(int(x0) - r_i, int(x0) + r_i + 1)
        dy = (ys - y0)[:, None]
        dx = (xs - x0)[None, :]
        inside = dx * dx + dy * dy <= r * r
        out[np.ix_(ys % size, xs % size)] = np.where(inside, g, out[np.ix_(ys % size, xs % size)])
    return out


@dataclass
class Texture:
    """A texture placed on a surface: surface coordinates (metres) -> reflectance in (0, 1].

    ``texel`` metres per level-0 texel; ``offset`` texel coordinates of the surface origin; every
    level repeats (photographs mirrored at their borders, procedural textures are periodic).
    """

    levels: tuple[np.ndarray, ...]
    texel: float
    offset: tuple[float, float]
    lo: float  # reflectance = lo + gain * value (a negative gain: the negative image)
    gain: float
    name: str
    transpose: bool = False  # the texture turned a quarter (with the mirrored levels: any multiple of 90 degrees)

    def sample(self, a: np.ndarray, b: np.ndarray, footprint: np.ndarray, bias: float) -> np.ndarray:
        """Reflectance at surface coordinates ``a`` (along) and ``b`` (across), metres, float32 [N].

        ``footprint`` is the surface length one image pixel covers there (metres); the level of
        detail is ``log2(footprint / texel) + bias``, blended between the two nearest levels.
        """
        if a.size == 0:
            return np.empty(0, np.float32)
        if self.transpose:
            a, b = b, a
        inv = 1.0 / self.texel
        u = (a * inv + self.offset[0]).astype(np.float32)
        v = (b * inv + self.offset[1]).astype(np.float32)
        level = np.log2(np.maximum(footprint * inv, 1e-9)).astype(np.float32) + np.float32(bias)
        np.clip(level, 0.0, len(self.levels) - 1.001, out=level)
        base = np.floor(level)
        k0, k1 = int(base.min()), int(base.max())
        if k0 == k1:  # one pair of levels for every pixel (the usual case): no masks
            return self.lo + self.gain * self._blend(k0, u, v, level - np.float32(k0))
        out = np.empty(a.shape, dtype=np.float32)
        for k in range(k0, k1 + 1):
            sel = np.flatnonzero(base == k)
            if sel.size:
                out[sel] = self._blend(k, u[sel], v[sel], level[sel] - np.float32(k))
        return self.lo + self.gain * out

    def _blend(self, k: int, u: np.ndarray, v: np.ndarray, frac: np.ndarray) -> np.ndarray:
        s = np.float32(0.5**k)
        lo = _bilinear(self.levels[k], u * s, v * s)
        s *= np.float32(0.5)
        hi = _bilinear(self.levels[k + 1], u * s, v * s)
        hi -= lo
        hi *= frac
        lo += hi
        return lo


def _bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample of the periodic ``tex`` [h, w] (powers of two) at texel coordinates (u column,
    v row): float32 [N]."""
    h, w = tex.shape
    flat = tex.ravel()
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    x0 = u0.astype(np.int32) & (w - 1)
    y0 = v0.astype(np.int32) & (h - 1)
    x1 = (x0 + 1) & (w - 1)
    y1 = (y0 + 1) & (h - 1)
    y0 *= w
    y1 *= w
    a = flat.take(y0 + x0)
    top = flat.take(y0 + x1)
    top -= a
    top *= fu
    top += a
    c = flat.take(y1 + x0)
    bottom = flat.take(y1 + x1)
    bottom -= c
    bottom *= fu
    bottom += c
    bottom -= top
    bottom *= fv
    bottom += top
    return bottom


def _mirrored(a: np.ndarray) -> np.ndarray:
    """``a`` and its mirror images side by side [2h, 2w]: periodic, without seams."""
    a = np.concatenate([a, a[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([a, a[::-1]], axis=0))


def make_texture(rng: np.random.Generator, texture_set: str, photo_fraction: float, px_metres: float,
                 photo_augment: float = 0.0, photo_variations: tuple[str, ...] = PHOTO_VARIATIONS) -> Texture:
    """A random texture for a surface on which one image pixel covers about ``px_metres``.

    With probability ``photo_fraction`` (always for the ``heldout`` set) a photograph of the set,
    otherwise a procedural texture; its scale puts 1.5-4 level-0 texels on a pixel (the level of
    detail then filters them), its contrast (0.6-0.97 of the range) and brightness are drawn so that
    reflectance stays in [0.03, 1]. With probability ``photo_augment`` a photograph is varied
    (``vary_photo``); at 0 nothing more is drawn, so every other texture of a seed stays as it was.
    ``photo_variations`` (of ``PHOTO_VARIATIONS``) are the variations applied; every one is drawn all the
    same, so a selection varies the photographs of a seed as all three do, less the others.
    """
    names = photo_names(texture_set)
    if texture_set == "heldout" or rng.random() < photo_fraction:
        name = str(names[rng.integers(len(names))])
        levels = photo_pyramid(name)
    else:
        name = str(PROCEDURAL[rng.integers(len(PROCEDURAL))])
        a = pink_noise(rng) if name == "pink" else dead_leaves(rng)
        levels = pyramid(a)
    texel = px_metres / rng.uniform(1.5, 4.0)
    h, w = levels[0].shape
    offset = (float(rng.uniform(0, 2 * w)), float(rng.uniform(0, 2 * h)))
    gain = float(rng.uniform(0.6, 0.97))
    lo = float(rng.uniform(0.03, 1.0 - gain))
    texture = Texture(levels, texel, offset, lo, gain, name)
    if name not in PROCEDURAL and photo_augment > 0 and rng.random() < photo_augment:
        turn, negative = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        drop = int(rng.integers(0, MAX_DETAIL_DROP + 1))
        texture = vary_photo(texture, transpose=turn and "turn" in photo_variations,
                             negative=negative and "negative" in photo_variations,
                             drop=drop if "coarser" in photo_variations else 0)
    return texture


MAX_DETAIL_DROP = 4  # vary_photo drops up to this many of a photograph's finest levels (up to 16x coarser detail)


def vary_photo(t: Texture, *, transpose: bool, negative: bool, drop: int) -> Texture:
    """The photograph of ``t`` varied as the world varies surfaces: turned a quarter (``transpose``),
    negative, and with its ``drop`` finest levels dropped at the same physical size, i.e. a surface with
    2^drop times less fine detail (smooth walls are common, and a stereo matcher must fill them in from
    their edges); at least two levels stay. Brightness range and placement are ``t``'s.
    ``make_texture`` draws each variation: turned and negative with probability 1/2, ``drop`` uniform
    in 0-``MAX_DETAIL_DROP``."""
    drop = max(0, min(drop, len(t.levels) - 2))
    lo, gain = (t.lo + t.gain, -t.gain) if negative else (t.lo, t.gain)
    scale = 2.0**drop
    return Texture(t.levels[drop:], t.texel * scale, (t.offset[0] / scale, t.offset[1] / scale), lo, gain,
                   t.name, t.transpose != transpose)
