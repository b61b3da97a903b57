"""Synthetic stereo event streams with exact ground-truth disparity (pure numpy, seeded).

A scene is a stack of textured, fronto-parallel layers: a background plane and objects (tall
slabs, rectangles, ellipses) in front of it, at depths from ``min_depth_m`` up. The camera
translates and the objects move in 3-D on smooth sinusoidal paths. Both rectified views of a
pinhole stereo pair are rendered by sampling each layer's texture (bilinear, separable) and
compositing far to near with soft, one-pixel edges; a surface point at depth Z appears in the
right view ``d = fB / Z`` pixels to the left of its place in the left view, exactly.

Events come from the ESIM model on the log intensity ``L = log(I + eps)``: each pixel keeps a
reference level; whenever ``L`` moves a per-pixel contrast threshold ``C`` (normal around
``contrast_threshold`` with spread ``threshold_sigma``) away from it, an event of that sign is
emitted and the reference moves by ``C``, as often as the change allows within one simulation
step, with times interpolated linearly between the frames. A refractory period drops events that
follow the previous one of the same pixel too closely (the reference still moves). Optional shot
noise (random events) and leak (a slow drift of the reference that produces ON events).

Ground truth at ``gt_hz``: depth (metres) of the left view, NaN where a pixel is on a soft edge,
occluded in the right view or falls outside it. Files are written in the MVSEC layout::

    python -m runtime.synth -o data/ --seconds 10 --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.events import EVENT_DTYPE, make_events, to_mvsec

SIDES = ("left", "right")
HORIZON_S = 60.0  # scene extents and the fastest image motion are taken over this long
MVSEC_HEIGHT, MVSEC_WIDTH = 260, 346
MVSEC_FOCAL_PX = 199.653  # indoor_flying left camera fx
MVSEC_FB = 19.941772  # focal length x baseline, px*m


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the generator; the defaults give an MVSEC-like recording.

    ``focal_px`` and ``fb`` default to MVSEC's indoor_flying values scaled by ``width / 346``, so
    a smaller image keeps the same field of view and disparities shrink with it.
    """

    seconds: float = 2.0  # length of the recording
    seed: int = 0
    height: int = MVSEC_HEIGHT
    width: int = MVSEC_WIDTH
    focal_px: float | None = None  # focal length in pixels
    fb: float | None = None  # focal length x baseline in px*m; disparity = fb / depth
    n_objects: int = 4  # layers in front of the background (the first one is a tall slab)
    min_depth_m: float = 0.54  # the nearest object comes this close: max disparity ~ fb / 0.54 = 37 px
    max_object_depth_m: float = 3.0
    background_depth_m: tuple[float, float] = (4.0, 6.0)  # drawn uniformly
    motion: float = 1.0  # scales every motion amplitude; 0 gives a static scene
    camera_amplitude_m: float = 0.1  # camera translation amplitude (x; y and z are smaller)
    object_amplitude_px: float = 20.0  # object motion amplitude in the image at its depth
    contrast_threshold: float = 0.2  # mean C, in log intensity
    threshold_sigma: float = 0.03  # per-pixel spread of C (ON and OFF drawn separately)
    refractory_us: int = 200
    noise_hz: float = 0.1  # shot-noise events per pixel per second
    leak_hz: float = 0.0  # leak events per pixel per second (ON)
    log_eps: float = 1e-3  # L = log(I + eps), I in [0, 1]
    max_px_per_step: float = 1.5  # simulation rate: the fastest point moves at most this far per step
    min_sim_hz: float = 100.0
    gt_hz: float = 20.0  # ground-truth depth rate; windows end at these timestamps
    image_hz: float = 20.0  # gray image rate

    def __post_init__(self) -> None:
        checks = [
            (self.seconds > 0, "seconds must be positive"),
            (self.height >= 8 and self.width >= 8, "height and width must be at least 8"),
            (self.n_objects >= 0, "n_objects must be >= 0"),
            (
                0 < self.min_depth_m < self.max_object_depth_m < self.background_depth_m[0],
                "need 0 < min_depth_m < max_object_depth_m < background_depth_m[0]",
            ),
            (
                self.background_depth_m[0] <= self.background_depth_m[1],
                "background_depth_m must be (low, high)",
            ),
            (self.motion >= 0, "motion must be >= 0"),
            (self.contrast_threshold > 0, "contrast_threshold must be positive"),
            (self.threshold_sigma >= 0, "threshold_sigma must be >= 0"),
            (self.refractory_us >= 0, "refractory_us must be >= 0"),
            (self.noise_hz >= 0 and self.leak_hz >= 0, "noise_hz and leak_hz must be >= 0"),
            (
                self.max_px_per_step > 0 and self.min_sim_hz > 0,
                "max_px_per_step and min_sim_hz must be positive",
            ),
            (self.gt_hz > 0 and self.image_hz > 0, "gt_hz and image_hz must be positive"),
            (self.focal_px is None or self.focal_px > 0, "focal_px must be positive"),
            (self.fb is None or self.fb > 0, "fb must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def focal(self) -> float:
        return self.focal_px if self.focal_px is not None else MVSEC_FOCAL_PX * self.width / MVSEC_WIDTH

    @property
    def focal_baseline(self) -> float:
        return self.fb if self.fb is not None else MVSEC_FB * self.width / MVSEC_WIDTH

    @property
    def baseline_m(self) -> float:
        return self.focal_baseline / self.focal

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass
class _Path:
    """A smooth 1-D trajectory: ``center + sum_j amp_j * sin(2 pi freq_j t + phase_j)`` (t in s)."""

    center: float
    amp: np.ndarray = field(default_factory=lambda: np.zeros(0))
    freq: np.ndarray = field(default_factory=lambda: np.zeros(0))
    phase: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        out = np.full(t.shape, self.center, dtype=np.float64)
        for a, f, ph in zip(self.amp, self.freq, self.phase, strict=True):
            out = out + a * np.sin(2 * np.pi * f * t + ph)
        return out


@dataclass
class _Layer:
    """A textured fronto-parallel surface: world position (X, Y, Z paths) and texture in metres."""

    kind: str  # "plane" (infinite), "rect" or "ellipse"
    X: _Path
    Y: _Path
    Z: _Path
    half_w: float  # metres (inf for a plane)
    half_h: float
    texture: np.ndarray  # float32 [Th, Tw], reflectance in (0, 1]
    texel: float  # metres per texel
    a0: float  # texture index of the layer's origin, columns
    b0: float  # rows


def _blur(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur through the FFT."""
    h, w = noise.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(noise) * gain, s=(h, w))


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth multi-scale random texture with a few soft blocks: float32 [h, w] in [0.03, 1]."""
    tex = np.zeros((h, w))
    for sigma, weight in ((1.2, 0.6), (3.0, 1.0), (8.0, 1.0), (20.0, 0.7)):
        layer = _blur(rng.standard_normal((h, w)), sigma)
        tex += weight * layer / (layer.std() + 1e-12)
    blocks = np.zeros((h, w))
    for _ in range(rng.integers(3, 9)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        bh, bw = rng.integers(4, max(5, h // 3)), rng.integers(4, max(5, w // 3))
        blocks[y0 : y0 + bh, x0 : x0 + bw] += rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.5)
    tex += _blur(blocks, 1.0)
    tex = (tex - tex.mean()) / (tex.std() + 1e-12)
    out = rng.uniform(0.3, 0.6) + rng.uniform(0.10, 0.18) * tex
    return np.clip(out, 0.03, 1.0).astype(np.float32)


def _sample(tex: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``tex`` [Th, Tw] on the grid of rows ``ib`` [h] x columns ``ia`` [w] -> [h, w]."""
    th, tw = tex.shape
    ia = np.clip(ia, 0.0, tw - 1.000001)
    ib = np.clip(ib, 0.0, th - 1.000001)
    a0 = ia.astype(np.int64)
    b0 = ib.astype(np.int64)
    fa = (ia - a0).astype(np.float32)
    fb = (ib - b0).astype(np.float32)[:, None]
    lo, hi = int(a0.min()), int(a0.max()) + 2
    sub = tex[:, lo:hi]
    rows = sub[b0]  # [h, hi - lo], then interpolated in place
    nxt = sub[b0 + 1]
    nxt -= rows
    nxt *= fb
    rows += nxt
    a0 = a0 - lo
    out = rows[:, a0]  # [h, w]
    nxt = rows[:, a0 + 1]
    nxt -= out
    nxt *= fa
    out += nxt
    return out


class StereoScene:
    """The layered 3-D scene of a config, rendered to both rectified views at any time."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.height, self.width = config.height, config.width
        self.f = config.focal
        self.fb = config.focal_baseline
        self.baseline = config.baseline_m
        self.cx, self.cy = (self.width - 1) / 2, (self.height - 1) / 2
        self._pose_cache: tuple | None = None
        rng = np.random.default_rng([config.seed, 0])
        self._build(rng)

    # ---- scene construction ----------------------------------------------------------------
    def _build(self, rng: np.random.Generator) -> None:
        c = self.config
        m = c.motion
        H, W, f = self.height, self.width, self.f
        amp = c.camera_amplitude_m * m

        def path(center: float, amplitude: float, n: int = 2) -> _Path:
            weights = rng.dirichlet(np.ones(n)) if n > 1 else np.ones(1)
            return _Path(center, amplitude * weights, rng.uniform(0.1, 0.3, n), rng.uniform(0, 2 * np.pi, n))

        self.cam = (path(0.0, amp), path(0.0, 0.4 * amp), path(0.0, 0.25 * amp))
        # Everything about the scene is independent of the recording's length, so a longer recording
        # with the same seed starts with the shorter one; extents and speeds are taken over a horizon.
        self._grid = np.arange(0.0, HORIZON_S, 0.005)
        cz_max = float(np.sum(np.abs(self.cam[2].amp)))

        layers: list[_Layer] = []
        zb = rng.uniform(*c.background_depth_m)
        layers.append(self._make_layer(rng, "plane", _Path(0.0), _Path(0.0), _Path(zb), math.inf, math.inf))

        depths = np.sort(rng.uniform(c.min_depth_m * 1.3, c.max_object_depth_m, c.n_objects))[::-1]
        for i, zc in enumerate(depths):
            nearest = i == len(depths) - 1
            k0 = zc / f  # metres per pixel at the object's depth
            if i == 0:  # a tall slab: a wall-like plane in front of the background
                kind = "rect"
                half_w, half_h = rng.uniform(0.12, 0.25) * W * k0, 0.8 * H * k0
                u0, v0 = rng.choice([rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.9)]) * W, 0.5 * H
            else:
                kind = str(rng.choice(["rect", "ellipse"]))
                half_w, half_h = rng.uniform(0.08, 0.2) * W * k0, rng.uniform(0.1, 0.3) * H * k0
                u0, v0 = rng.uniform(0.2, 0.8) * W, rng.uniform(0.25, 0.75) * H
            axy = c.object_amplitude_px * m * k0
            zpath = path(zc, 0.06 * zc * m, 1)
            if nearest:  # its depth relative to the camera reaches down to min_depth_m, never below
                zpath.center = c.min_depth_m + float(zpath.amp[0]) + cz_max
            X = path((u0 - self.cx) * k0, axy)
            Y = path((v0 - self.cy) * k0, 0.5 * axy)
            X.center -= float(X(0.0)) - X.center  # the object starts where it was placed
            Y.center -= float(Y(0.0)) - Y.center
            layers.append(self._make_layer(rng, kind, X, Y, zpath, half_w, half_h))
        self.layers = layers

    def _make_layer(
        self, rng: np.random.Generator, kind: str, X: _Path, Y: _Path, Z: _Path, half_w: float, half_h: float
    ) -> _Layer:
        """Size the texture so that it covers every place either view can see on the layer."""
        f, W, H = self.f, self.width, self.height
        t = self._grid
        depth = Z(t) - self.cam[2](t)
        if np.any(depth <= 0.05):
            raise ValueError("a layer passes behind the camera; reduce camera_amplitude_m or motion")
        k = depth / f
        texel = float(depth[0] / f)  # one texel per pixel at the start
        if math.isinf(half_w):  # the background: what the image can see over the whole path
            a_lo = np.min(-self.cx * k + self.cam[0](t) - X(t))
            a_hi = np.max((W - 1 - self.cx) * k + self.cam[0](t) + self.baseline - X(t))
            b_lo = np.min(-self.cy * k + self.cam[1](t) - Y(t))
            b_hi = np.max((H - 1 - self.cy) * k + self.cam[1](t) - Y(t))
        else:
            a_lo, a_hi, b_lo, b_hi = -half_w, half_w, -half_h, half_h
        margin = 4 * texel
        tw = int(math.ceil((a_hi - a_lo + 2 * margin) / texel)) + 2
        th = int(math.ceil((b_hi - b_lo + 2 * margin) / texel)) + 2
        tex = _texture(rng, th, tw)
        return _Layer(
            kind, X, Y, Z, half_w, half_h, tex, texel, (margin - a_lo) / texel, (margin - b_lo) / texel
        )

    # ---- geometry ------------------------------------------------------------------------------
    def depths(self, t_s: float) -> np.ndarray:
        """Depth of each layer relative to the camera at time ``t_s``: float64 [n_layers]."""
        return self._pose(t_s)[2]

    def _pose(self, t_s: float) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
        """Camera x, y and each layer's depth, X and Y at ``t_s`` (cached for the last time asked)."""
        if self._pose_cache is not None and self._pose_cache[0] == t_s:
            return self._pose_cache[1]
        cz = float(self.cam[2](t_s))
        pose = (
            float(self.cam[0](t_s)),
            float(self.cam[1](t_s)),
            np.array([float(layer.Z(t_s)) - cz for layer in self.layers]),
            np.array([float(layer.X(t_s)) for layer in self.layers]),
            np.array([float(layer.Y(t_s)) for layer in self.layers]),
        )
        self._pose_cache = (t_s, pose)
        return pose

    def max_speed_px(self) -> float:
        """The fastest image motion of any layer corner or centre, pixels per second."""
        t = self._grid
        if len(t) < 2:
            return 0.0
        cam_x, cam_y, cam_z = (p(t) for p in self.cam)
        best = 0.0
        for layer in self.layers:
            k = (layer.Z(t) - cam_z) / self.f
            hw = self.cx * k if math.isinf(layer.half_w) else layer.half_w
            hh = self.cy * k if math.isinf(layer.half_h) else layer.half_h
            for a in (-hw, 0.0, hw):
                for b in (-hh, 0.0, hh):
                    u = (a + layer.X(t) - cam_x) / k
                    v = (b + layer.Y(t) - cam_y) / k
                    speed = np.hypot(np.diff(u), np.diff(v)) / np.diff(t)
                    best = max(best, float(speed.max()))
        return best

    # ---- rendering ---------------------------------------------------------------------------
    def _layer_patch(
        self, i: int, t_s: float, side: str, want_texture: bool = True
    ) -> tuple[slice, slice, np.ndarray | None, np.ndarray | None] | None:
        """The image patch layer ``i`` covers: (rows, cols, texture [h, w] or None, coverage [h, w]).

        The coverage of the background plane is None (it covers everything).
        """
        layer = self.layers[i]
        cam_x, cam_y, depths, lx, ly = self._pose(t_s)
        k = depths[i] / self.f
        shift = cam_x + (self.baseline if side == "right" else 0.0) - lx[i]
        shift_b = cam_y - ly[i]
        if math.isinf(layer.half_w):
            cols, rows = slice(0, self.width), slice(0, self.height)
        else:
            # pixel x sees a = (x - cx) k + shift; the layer spans |a| <= half_w (+1 px soft edge)
            x_lo = math.ceil((-layer.half_w - k - shift) / k + self.cx)
            x_hi = math.floor((layer.half_w + k - shift) / k + self.cx) + 1
            y_lo = math.ceil((-layer.half_h - k - shift_b) / k + self.cy)
            y_hi = math.floor((layer.half_h + k - shift_b) / k + self.cy) + 1
            cols = slice(max(0, x_lo), min(self.width, x_hi))
            rows = slice(max(0, y_lo), min(self.height, y_hi))
            if cols.start >= cols.stop or rows.start >= rows.stop:
                return None
        a = (np.arange(cols.start, cols.stop) - self.cx) * k + shift  # [w] metres
        b = (np.arange(rows.start, rows.stop) - self.cy) * k + shift_b  # [h]
        tex = (
            _sample(layer.texture, a / layer.texel + layer.a0, b / layer.texel + layer.b0)
            if want_texture
            else None
        )
        if layer.kind == "plane":
            cov = None
        elif layer.kind == "rect":
            cx = np.clip(0.5 + (layer.half_w - np.abs(a)) / k, 0, 1)
            cy = np.clip(0.5 + (layer.half_h - np.abs(b)) / k, 0, 1)
            cov = (cy[:, None] * cx[None, :]).astype(np.float32)
        else:
            r = np.sqrt((b[:, None] / layer.half_h) ** 2 + (a[None, :] / layer.half_w) ** 2)
            cov = np.clip(0.5 + (1 - r) * min(layer.half_w, layer.half_h) / k, 0, 1).astype(np.float32)
        return rows, cols, tex, cov

    def _order(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        depths = self.depths(t_s)
        return np.argsort(-depths, kind="stable"), depths  # far to near

    def render(self, t_us: int, side: str) -> np.ndarray:
        """Intensity of one rectified view at time ``t_us``: float32 [H, W] in (0, 1]."""
        t_s = t_us * 1e-6
        order, depths = self._order(t_s)
        image = np.empty((self.height, self.width), dtype=np.float32)
        for i in order:
            patch = self._layer_patch(i, t_s, side)
            if patch is None:
                continue
            rows, cols, tex, cov = patch
            if cov is None:  # the background covers the whole image
                image = tex
            else:
                region = image[rows, cols]
                region += cov * (tex - region)
        return image

    def visibility(self, t_us: int, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Front layer index int16 [H, W], whether it covers the pixel fully bool [H, W], depths [n]."""
        t_s = t_us * 1e-6
        order, depths = self._order(t_s)
        front = np.zeros((self.height, self.width), dtype=np.int16)
        full = np.zeros((self.height, self.width), dtype=bool)
        for i in order:
            patch = self._layer_patch(i, t_s, side, want_texture=False)
            if patch is None:
                continue
            rows, cols, _, cov = patch
            if cov is None:
                front[rows, cols] = i
                full[rows, cols] = True
                continue
            hit = cov > 0
            front[rows, cols][hit] = i
            full[rows, cols][hit] = cov[hit] >= 1.0 - 1e-6
        return front, full, depths

    def ground_truth(self, t_us: int) -> np.ndarray:
        """Left-view depth in metres at ``t_us``: float32 [H, W], NaN where invalid.

        Valid: the front surface fully covers the left pixel (no soft edge) and the two right-view
        pixels either side of ``x - d`` show the same surface, fully, inside the image.
        """
        front_l, full_l, depths = self.visibility(t_us, "left")
        front_r, full_r, _ = self.visibility(t_us, "right")
        depth = depths[front_l]  # float64 [H, W]
        xr = np.arange(self.width)[None, :] - self.fb / depth  # [H, W]
        x0 = np.floor(xr).astype(np.int64)
        valid = full_l & (x0 >= 0) & (x0 + 1 <= self.width - 1)
        rows = np.broadcast_to(np.arange(self.height)[:, None], x0.shape)
        for dx in (0, 1):
            xi = np.clip(x0 + dx, 0, self.width - 1)
            valid &= (front_r[rows, xi] == front_l) & full_r[rows, xi]
        return np.where(valid, depth, np.nan).astype(np.float32)


class _Esim:
    """ESIM event generation for one camera: per-pixel reference levels and thresholds."""

    def __init__(self, config: SynthConfig, log0: np.ndarray, rng: np.random.Generator) -> None:
        n = log0.size
        c, s = config.contrast_threshold, config.threshold_sigma
        floor = max(0.01, 0.1 * c)
        self.c_on = np.maximum(rng.normal(c, s, n), floor).astype(np.float32)  # [H*W]
        self.c_off = np.maximum(rng.normal(c, s, n), floor).astype(np.float32)
        self.ref = log0.ravel().astype(np.float32)  # [H*W]
        self.prev = self.ref.copy()
        self.last = np.full(n, -np.inf)  # time of each pixel's last event, us
        self.width = log0.shape[1]
        self.refractory = float(config.refractory_us)
        self.noise_hz, self.leak_hz = config.noise_hz, config.leak_hz
        self.rng = rng

    def step(self, log_now: np.ndarray, t0: int, t1: int) -> np.ndarray:
        """Events of the interval (t0, t1] as the log intensity goes from the last frame to ``log_now``."""
        L = log_now.ravel()
        dt = float(t1 - t0)
        if self.leak_hz:
            self.ref -= np.float32(self.leak_hz * dt * 1e-6) * self.c_on
        diff = L - self.ref
        pix, times, pols = [], [], []
        idx = np.flatnonzero((diff >= self.c_on) | (diff <= -self.c_off))  # pixels with events
        if idx.size:
            d = diff[idx]
            sign = np.where(d > 0, np.float32(1), np.float32(-1))
            c = np.where(d > 0, self.c_on[idx], self.c_off[idx])
            n = np.maximum(np.floor(np.abs(d) / c).astype(np.int64), 1)  # events per pixel
            ref0 = self.ref[idx]
            self.ref[idx] = ref0 + sign * n * c
            g = np.repeat(np.arange(idx.size), n)  # group (pixel) of each event
            start = np.cumsum(n) - n
            k = np.arange(g.size) - start[g] + 1  # 1..n within each pixel
            lp = self.prev[idx]
            dl = L[idx] - lp
            level = ref0[g] + sign[g] * k * c[g]  # the log level each event crosses
            dlg = dl[g]
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(dlg != 0, (level - lp[g]) / dlg, 1.0)
            t = t0 + np.clip(frac, 0.0, 1.0) * dt  # float64 us
            keep = self._refractory(idx, g, k, n, c, dl, t, dt)
            pix.append(idx[g[keep]])
            times.append(t[keep])
            pols.append(sign[g[keep]].astype(np.int8))
        if self.noise_hz:
            count = self.rng.poisson(self.noise_hz * L.size * dt * 1e-6)
            pix.append(self.rng.integers(0, L.size, count))
            times.append(t0 + (1.0 - self.rng.random(count)) * dt)
            pols.append(self.rng.choice(np.array([-1, 1], dtype=np.int8), count))
        self.prev = L.astype(np.float32, copy=True)
        if not pix:
            return np.empty(0, dtype=EVENT_DTYPE)
        pix_a, p_a = np.concatenate(pix), np.concatenate(pols)
        t_a = np.rint(np.concatenate(times)).astype(np.int64)
        offset = t_a - t0
        # a stable sort by time; on 16-bit keys numpy uses a radix sort
        order = np.argsort(offset.astype(np.uint16) if dt < 65536 else offset, kind="stable")
        y, x = np.divmod(pix_a[order], self.width)
        return make_events(x, y, t_a[order], p_a[order])

    def _refractory(
        self,
        idx: np.ndarray,
        g: np.ndarray,
        k: np.ndarray,
        n: np.ndarray,
        c: np.ndarray,
        dl: np.ndarray,
        t: np.ndarray,
        dt: float,
    ) -> np.ndarray:
        """Greedy refractory filter for evenly spaced crossings; updates each pixel's last event time."""
        if self.refractory <= 0:
            keep = np.ones(g.size, dtype=bool)
        else:
            ok = t >= (self.last[idx] + self.refractory)[g]
            k0 = n - np.bincount(g, weights=ok, minlength=idx.size).astype(np.int64) + 1  # first allowed k
            with np.errstate(divide="ignore"):
                spacing = np.where(dl != 0, dt * c / np.abs(dl), 0.0)  # us between crossings
            step = np.where(spacing > 0, np.ceil(self.refractory / np.maximum(spacing, 1e-9)), n + 1)
            step = np.maximum(step, 1).astype(np.int64)
            keep = ok & ((k - k0[g]) % step[g] == 0)
        kept_g = g[keep]
        if kept_g.size:
            last_of_group = np.r_[kept_g[1:] != kept_g[:-1], True]
            self.last[idx[kept_g[last_of_group]]] = t[keep][last_of_group]
        return keep


@dataclass
class SynthChunk:
    """Output of the simulation up to ``t_us``: new events per side, ground truth and images."""

    t_us: int
    events: dict[str, np.ndarray]  # side -> EVENT_DTYPE [N]
    gt_ts_us: np.ndarray  # int64 [n]
    depth: np.ndarray  # float32 [n, H, W]
    image_ts_us: np.ndarray  # int64 [m]
    images: dict[str, np.ndarray]  # side -> uint8 [m, H, W]


class Simulator:
    """Runs the scene through ESIM for both cameras, yielding chunks in time order."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.scene = StereoScene(config)
        speed = self.scene.max_speed_px()
        rate = max(config.min_sim_hz, speed / config.max_px_per_step)
        self.duration_us = int(round(config.seconds * 1e6))
        step = max(1, int(1e6 // rate))  # whole microseconds, the same for any recording length
        self.step_us = np.append(np.arange(0, self.duration_us, step), self.duration_us).astype(np.int64)
        self.sim_hz = 1e6 / step
        n_gt = int(math.floor(config.seconds * config.gt_hz + 1e-9))
        self.gt_ts_us = np.rint(np.arange(1, n_gt + 1) * 1e6 / config.gt_hz).astype(np.int64)
        n_img = int(math.floor(config.seconds * config.image_hz + 1e-9)) + 1
        self.image_ts_us = np.rint(np.arange(n_img) * 1e6 / config.image_hz).astype(np.int64)

    def log_intensity(self, t_us: int, side: str) -> np.ndarray:
        """ESIM's input ``log(I + eps)``: float32 [H, W]."""
        image = self.scene.render(t_us, side)
        image += np.float32(self.config.log_eps)
        return np.log(image, out=image)

    def gray(self, t_us: int, side: str) -> np.ndarray:
        """The camera's gray image: uint8 [H, W]."""
        return np.clip(np.rint(self.scene.render(t_us, side) * 255), 0, 255).astype(np.uint8)

    def run(
        self, chunk_us: int = 500_000, progress: bool = False, images: bool = True
    ) -> Iterator[SynthChunk]:
        """Simulate the whole recording, yielding about every ``chunk_us`` of simulated time.

        ``images=False`` skips the gray images (their arrays are then empty).
        """
        from tqdm import tqdm

        c = self.config
        esim = {
            side: _Esim(c, self.log_intensity(0, side), np.random.default_rng([c.seed, 1 + j]))
            for j, side in enumerate(SIDES)
        }
        bar = tqdm(total=self.duration_us // 1000, unit="sim ms", disable=not progress, desc="simulating")
        pending: dict[str, list[np.ndarray]] = {side: [] for side in SIDES}
        done_until = 0
        gt_i = img_i = 0
        for i in range(1, len(self.step_us)):
            t0, t1 = int(self.step_us[i - 1]), int(self.step_us[i])
            for side in SIDES:
                pending[side].append(esim[side].step(self.log_intensity(t1, side), t0, t1))
            last = i == len(self.step_us) - 1
            if t1 - done_until >= chunk_us or last:
                gt_j = int(np.searchsorted(self.gt_ts_us, t1, side="right"))
                img_j = (
                    int(np.searchsorted(self.image_ts_us, t1, side="right"))
                    if not last
                    else len(self.image_ts_us)
                )
                gt_ts = self.gt_ts_us[gt_i:gt_j]
                img_ts = self.image_ts_us[img_i:img_j] if images else self.image_ts_us[:0]
                depth = np.empty((len(gt_ts), c.height, c.width), dtype=np.float32)
                for j, ts in enumerate(gt_ts):
                    depth[j] = self.scene.ground_truth(int(ts))
                gray = {
                    side: np.stack([self.gray(int(ts), side) for ts in img_ts])
                    if len(img_ts)
                    else np.empty((0, c.height, c.width), np.uint8)
                    for side in SIDES
                }
                events = {side: _concat(pending[side]) for side in SIDES}
                pending = {side: [] for side in SIDES}
                yield SynthChunk(t1, events, gt_ts, depth, img_ts, gray)
                bar.update(t1 // 1000 - done_until // 1000)
                done_until, gt_i, img_i = t1, gt_j, img_j
        bar.close()


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)


@dataclass
class SynthData:
    """A whole synthetic recording in memory."""

    config: SynthConfig
    events: dict[str, np.ndarray]  # side -> EVENT_DTYPE [N], sorted by t
    gt_ts_us: np.ndarray  # int64 [n]
    depth: np.ndarray  # float32 [n, H, W], metres, NaN invalid
    image_ts_us: np.ndarray  # int64 [m]
    images: dict[str, np.ndarray]  # side -> uint8 [m, H, W]
    duration_us: int
    sim_hz: float


def generate(
    config: SynthConfig | None = None, *, progress: bool = False, images: bool = True, **overrides: object
) -> SynthData:
    """Simulate a recording in memory; ``overrides`` replace fields of ``config`` (or the defaults).

    ``images=False`` skips the gray images (faster; ``images`` and ``image_ts_us`` are then empty).
    """
    config = dataclasses.replace(config or SynthConfig(), **overrides)  # type: ignore[arg-type]
    sim = Simulator(config)
    chunks = list(sim.run(progress=progress, images=images))
    return SynthData(
        config=config,
        events={side: _concat([ch.events[side] for ch in chunks]) for side in SIDES},
        gt_ts_us=np.concatenate([ch.gt_ts_us for ch in chunks]),
        depth=np.concatenate([ch.depth for ch in chunks]),
        image_ts_us=np.concatenate([ch.image_ts_us for ch in chunks]),
        images={side: np.concatenate([ch.images[side] for ch in chunks]) for side in SIDES},
        duration_us=sim.duration_us,
        sim_hz=sim.sim_hz,
    )


def write_mvsec(
    config: SynthConfig, out_dir: str | os.PathLike, name: str | None = None, *, progress: bool = False
) -> tuple[str, str]:
    """Simulate ``config`` and write ``NAME_data.hdf5`` and ``NAME_gt.hdf5`` in the MVSEC layout.

    Data file: ``davis/{left,right}/events`` float64 [N, 4] (x, y, t seconds, p -1/+1),
    ``davis/{left,right}/image_raw`` uint8 [n, H, W] and ``image_raw_ts`` float64 [n] seconds.
    Ground-truth file: ``davis/left/depth_image_rect`` float32 [m, H, W] metres (NaN invalid) and
    ``depth_image_rect_ts`` float64 [m] seconds. Both carry the config as attributes (``fb``,
    ``synth_config``). Streams to disk chunk by chunk. Returns the two paths.
    """
    import h5py

    name = name or f"synth_seed{config.seed}"
    os.makedirs(out_dir, exist_ok=True)
    data_path = os.path.join(out_dir, f"{name}_data.hdf5")
    gt_path = os.path.join(out_dir, f"{name}_gt.hdf5")
    H, W = config.height, config.width
    sim = Simulator(config)
    with h5py.File(data_path, "w") as fd, h5py.File(gt_path, "w") as fg:
        for fh in (fd, fg):
            fh.attrs["fb"] = config.focal_baseline
            fh.attrs["focal_px"] = config.focal
            fh.attrs["baseline_m"] = config.baseline_m
            fh.attrs["synth_config"] = config.to_json()
            fh.attrs["source"] = "runtime.synth"
        dsets = {}
        for side in SIDES:
            g = fd.create_group(f"davis/{side}")
            dsets[side, "events"] = g.create_dataset(
                "events", (0, 4), np.float64, maxshape=(None, 4), chunks=(32768, 4)
            )
            dsets[side, "image_raw"] = g.create_dataset(
                "image_raw", (0, H, W), np.uint8, maxshape=(None, H, W), chunks=(1, H, W)
            )
            dsets[side, "image_raw_ts"] = g.create_dataset(
                "image_raw_ts", (0,), np.float64, maxshape=(None,), chunks=(1024,)
            )
        gl = fg.create_group("davis/left")
        dsets["depth"] = gl.create_dataset(
            "depth_image_rect", (0, H, W), np.float32, maxshape=(None, H, W), chunks=(1, H, W)
        )
        dsets["depth_ts"] = gl.create_dataset(
            "depth_image_rect_ts", (0,), np.float64, maxshape=(None,), chunks=(1024,)
        )
        for chunk in sim.run(progress=progress):
            for side in SIDES:
                _append(dsets[side, "events"], to_mvsec(chunk.events[side]))
                _append(dsets[side, "image_raw"], chunk.images[side])
                _append(dsets[side, "image_raw_ts"], chunk.image_ts_us / 1e6)
            _append(dsets["depth"], chunk.depth)
            _append(dsets["depth_ts"], chunk.gt_ts_us / 1e6)
    return data_path, gt_path


def _append(dset, values: np.ndarray) -> None:
    n = dset.shape[0]
    if len(values):
        dset.resize(n + len(values), axis=0)
        dset[n:] = values


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2, no usage block
        self.exit(2, f"error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runtime.synth -o DIR --seconds S --seed N``: write an MVSEC-layout recording."""
    d = SynthConfig()
    ap = _ArgumentParser(prog="python -m runtime.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True, help="output folder")
    ap.add_argument("--name", default=None, help="file name stem (default synth_seed<SEED>)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the recording (default 10)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--height", type=int, default=d.height)
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--objects", type=int, default=d.n_objects, help="layers in front of the background")
    ap.add_argument("--motion", type=float, default=d.motion, help="motion scale, 0 = static scene")
    ap.add_argument("--contrast", type=float, default=d.contrast_threshold, help="contrast threshold C")
    ap.add_argument("--sigma", type=float, default=d.threshold_sigma, help="per-pixel spread of C")
    ap.add_argument("--refractory-us", type=int, default=d.refractory_us)
    ap.add_argument("--noise-hz", type=float, default=d.noise_hz, help="shot noise per pixel per second")
    ap.add_argument("--leak-hz", type=float, default=d.leak_hz)
    ap.add_argument("--min-depth", type=float, default=d.min_depth_m, help="nearest depth in metres")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        config = SynthConfig(
            seconds=args.seconds,
            seed=args.seed,
            height=args.height,
            width=args.width,
            n_objects=args.objects,
            motion=args.motion,
            contrast_threshold=args.contrast,
            threshold_sigma=args.sigma,
            refractory_us=args.refractory_us,
            noise_hz=args.noise_hz,
            leak_hz=args.leak_hz,
            min_depth_m=args.min_depth,
        )
        data_path, gt_path = write_mvsec(config, args.out, args.name, progress=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {data_path} and {gt_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
