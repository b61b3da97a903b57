"""The synthetic world: textured layers at known depths, their motion, and the rendering of both
rectified views with exact depth of the left view."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import HORIZON_S, SynthConfig


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
