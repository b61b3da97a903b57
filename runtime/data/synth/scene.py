"""The synthetic world seen by a moving rectified stereo rig: ray casting of every pixel, exact depth.

Both cameras share one rotation ``R(t)`` (small yaw, pitch and roll oscillations) and the right
centre is the left one moved by the baseline along the rig's own x axis, ``C_r = C + B * R[:, 0]``.
A world point at depth ``Z`` in the left camera's frame therefore has the same depth in the right
camera's frame and appears ``d = f * B / Z`` pixels to the left there, on the same row: the pair
stays rectified under any rotation, and the ground truth is the per-pixel ray depth of the surface
each left pixel sees, exactly. Surfaces (``surfaces.py``): infinite planes (walls, floors, slanted),
flat rectangles and ellipses at any orientation, spheres and upright cylinders (curved, per-pixel
depth), thin bars and poles; they are composited per pixel from near to far with anti-aliased
silhouettes. The illumination changes over time: a global gain and a moving light direction
(Lambertian shading, the same for both views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import HORIZON_S, SynthConfig
from .layout import build
from .surfaces import Path, Plane, mat, rot_x, rot_y, rot_z


class Camera:
    """The left camera's centre (three sinusoidal paths) and rotation (yaw, pitch, roll paths)."""

    def __init__(self, rng: np.random.Generator, config: SynthConfig) -> None:
        m = config.motion
        amp = config.camera_amplitude_m * m
        rot = math.radians(config.camera_rotation_deg) * m

        def path(amplitude: float, n: int = 2) -> Path:
            w = rng.dirichlet(np.ones(n))
            p = Path(0.0, amplitude * w, rng.uniform(0.1, 0.3, n), rng.uniform(0, 2 * np.pi, n))
            p.center = -float(p(0.0))  # starts at the origin, unrotated: the world frame
            return p

        self.position = (path(amp), path(0.4 * amp), path(0.25 * amp))
        self.angles = (path(rot), path(0.7 * rot), path(0.5 * rot))  # yaw, pitch, roll

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Centre [3] and rotation [3, 3] (columns: the camera's axes in the world) at time ``t``."""
        yaw, pitch, roll = (float(a(t)) for a in self.angles)
        return np.array([float(p(t)) for p in self.position]), rot_y(yaw) @ rot_x(pitch) @ rot_z(roll)

    def poses(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres [T, 3] and rotations [T, 3, 3]."""
        C = np.stack([p(t) for p in self.position], axis=-1)
        yaw, pitch, roll = (a(t) for a in self.angles)
        return C, rot_y(yaw) @ rot_x(pitch) @ rot_z(roll)

    def max_rate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Speed of the centre (m/s) and an upper bound of the angular speed (rad/s) at times ``t``."""
        v = np.sqrt(sum(p.rate(t) ** 2 for p in self.position))
        w = np.sqrt(sum(a.rate(t) ** 2 for a in self.angles))
        return v, w


@dataclass
class _Grid:
    """What an object needs to find its pixels: the camera's rotation, the image size and centre."""

    R: np.ndarray
    width: int
    height: int
    cx: float
    cy: float


@dataclass
class Frame:
    """One camera's view: intensity and, per pixel, the front surface, its depth and full coverage."""

    image: np.ndarray  # float32 [H, W] in (0, 1]
    depth: np.ndarray  # float64 [H, W] depth of the front surface in this camera's frame
    front: np.ndarray  # int16 [H, W] index of the front surface (-1: none)
    full: np.ndarray  # bool [H, W] the front surface covers the whole pixel


class StereoScene:
    """The scene of a config (type drawn per seed), rendered to both rectified views at any time."""

    horizon_s = HORIZON_S

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.height, self.width = config.height, config.width
        self.f = config.focal
        self.fb = config.focal_baseline
        self.baseline = config.baseline_m
        self.cx, self.cy = (self.width - 1) / 2, (self.height - 1) / 2
        rng = np.random.default_rng([config.seed, 0])
        self.kind = str(config.scene_types[rng.integers(len(config.scene_types))])
        self.camera = Camera(rng, config)
        self._light(rng)
        self.surfaces = build(self, rng, self.kind)
        yy, xx = np.mgrid[0 : self.height, 0 : self.width]
        rays = np.stack([(xx.ravel() - self.cx) / self.f, (yy.ravel() - self.cy) / self.f,
                         np.ones(xx.size)], axis=1)  # [N, 3] in the camera frame
        norms = np.linalg.norm(rays, axis=1)  # ray lengths (rotations keep them)
        self._rays = {t: (rays.astype(t), norms.astype(t)) for t in (np.float32, np.float64)}
        self._planes = [i for i, s in enumerate(self.surfaces) if isinstance(s, Plane)]
        self._objects = [i for i, s in enumerate(self.surfaces) if not isinstance(s, Plane)]
        self._cache: dict[tuple[int, str], Frame] = {}

    def _light(self, rng: np.random.Generator) -> None:
        m = self.config.motion * self.config.light_change
        self._gain = Path(1.0 - 0.5 * m, np.array([0.5 * m]), rng.uniform(0.1, 0.5, 1), rng.uniform(0, 2 * np.pi, 1))
        self._azimuth = Path(rng.uniform(-0.6, 0.6), np.array([0.6 * min(m * 4, 1.0)]), rng.uniform(0.05, 0.2, 1),
                             rng.uniform(0, 2 * np.pi, 1))
        self._elevation = rng.uniform(0.2, 0.8)

    def light(self, t_s: float) -> tuple[np.ndarray, float]:
        """Direction towards the light (world, unit) and the global illumination gain at ``t_s``."""
        az, el = float(self._azimuth(t_s)), self._elevation
        return np.array([math.sin(az) * math.cos(el), -math.sin(el), -math.cos(az) * math.cos(el)]), float(
            self._gain(t_s))

    # ---- rendering ---------------------------------------------------------------------------------
    def trace(self, t_us: int, side: str, exact: bool = False) -> Frame:
        """Cast every pixel's ray at ``t_us`` from the ``side`` camera (the last few are cached).

        Planes are opaque, so only the nearest plane of each pixel is textured; where objects
        (anti-aliased, hence partly transparent at their silhouettes) touch a pixel, everything
        there is sorted by depth and composited from near to far. ``exact``: in float64 (ground
        truth); otherwise in float32 (rendering for the event camera, twice as fast).
        """
        key = (int(t_us), side, exact)
        if key in self._cache:
            return self._cache[key]
        t = t_us * 1e-6
        C, R = self.camera.pose(t)
        if side == "right":
            C = C + self.baseline * R[:, 0]
        dtype = np.float64 if exact else np.float32
        rays, norms = self._rays[dtype]
        D = mat(rays, np.ascontiguousarray(R.T))  # [N, 3] world rays, parameter = depth
        C = C.astype(dtype)
        light, gain = self.light(t)
        light = light.astype(dtype)
        bias = self.config.lod_bias
        n_pix = len(D)
        planes = self._planes
        Nm = np.stack([self.surfaces[i].n for i in planes], axis=1)  # [3, P]
        num = (np.array([self.surfaces[i].c for i in planes]) - C @ Nm).astype(dtype)  # [P]
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = num / mat(D, Nm)  # [N, P] depth of each plane along each ray
        zp[~(zp > 0)] = np.inf
        near = np.argmin(zp, axis=1)
        cols = np.arange(n_pix)
        depth = zp[cols, near]
        front = np.asarray(planes, np.int16)[near]
        image = np.full(n_pix, 0.5, np.float32)  # nothing behind: the layouts close every scene
        full = np.isfinite(depth)
        for k, i in enumerate(planes):
            sel = np.flatnonzero((near == k) & full)
            if sel.size:
                image[sel] = self.surfaces[i].values(C, D[sel], depth[sel], norms[sel], self.f, light, bias)
        front[~full] = -1
        grid = _Grid(R, self.width, self.height, self.cx, self.cy)
        hits = []
        for i in self._objects:
            surface = self.surfaces[i]
            surface.grid = grid
            hit = surface.hit(t, C, D, self.f, light, bias)
            if hit is not None and hit.idx.size:
                hits.append((i, hit))
        if hits:
            self._composite(hits, image, depth, front, full)
        shape = (self.height, self.width)
        frame = Frame((image * np.float32(gain)).reshape(shape), depth.reshape(shape), front.reshape(shape),
                      full.reshape(shape))
        if len(self._cache) >= 4:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = frame
        return frame

    @staticmethod
    def _composite(hits: list, image: np.ndarray, depth: np.ndarray, front: np.ndarray, full: np.ndarray) -> None:
        """Objects over the plane layer, in place, on the pixels they touch: per pixel, near to far."""
        mask = np.zeros(len(image), bool)
        for _, h in hits:
            mask[h.idx] = True
        touched = np.flatnonzero(mask)
        pos = np.full(len(image), -1, np.int64)
        pos[touched] = np.arange(touched.size)
        n = touched.size
        z = np.full((len(hits) + 1, n), np.inf)
        cov = np.zeros((len(hits) + 1, n), np.float32)
        val = np.zeros((len(hits) + 1, n), np.float32)
        ids = np.zeros((len(hits) + 1, n), np.int16)
        z[0], cov[0], val[0], ids[0] = depth[touched], full[touched], image[touched], front[touched]
        for k, (i, h) in enumerate(hits, start=1):
            j = pos[h.idx]
            z[k, j], cov[k, j], val[k, j], ids[k, j] = h.z, h.cov, h.value, i
        order = np.argsort(z, axis=0, kind="stable")  # near to far
        cov_s = np.take_along_axis(cov, order, 0)
        val_s = np.take_along_axis(val, order, 0)
        out = np.zeros(n, np.float32)
        trans = np.ones(n, np.float32)
        for k in range(len(hits) + 1):
            out += trans * cov_s[k] * val_s[k]
            trans *= 1.0 - cov_s[k]
        image[touched] = out + trans * 0.5
        first = np.argmax(cov_s > 0, axis=0)
        cols = np.arange(n)
        seen = cov_s[first, cols] > 0
        layer = order[first, cols]
        front[touched] = np.where(seen, ids[layer, cols], -1)
        depth[touched] = np.where(seen, z[layer, cols], np.inf)
        full[touched] = seen & (cov_s[first, cols] >= 1.0 - 1e-6)

    def render(self, t_us: int, side: str) -> np.ndarray:
        """Intensity of one rectified view at time ``t_us``: float32 [H, W] in (0, 1]."""
        return self.trace(t_us, side).image.copy()

    def ground_truth(self, t_us: int) -> np.ndarray:
        """Left-view depth in metres at ``t_us``: float32 [H, W], NaN where invalid.

        Valid: the front surface fully covers the left pixel (no soft edge), and the two right-view
        pixels either side of ``x - d`` lie inside the image and show the same surface, fully, at a
        disparity within 1 px of ``d`` (so a point that the surface itself hides from the right
        camera, e.g. near a sphere's silhouette, is not counted).
        """
        left, right = self.trace(t_us, "left", exact=True), self.trace(t_us, "right", exact=True)
        depth = left.depth
        d = self.fb / depth
        xr = np.arange(self.width)[None, :] - d
        x0 = np.floor(np.where(np.isfinite(xr), xr, -1)).astype(np.int64)
        valid = left.full & (x0 >= 0) & (x0 + 1 <= self.width - 1)
        rows = np.broadcast_to(np.arange(self.height)[:, None], x0.shape)
        for dx in (0, 1):
            xi = np.clip(x0 + dx, 0, self.width - 1)
            d_r = self.fb / right.depth[rows, xi]
            valid &= (right.front[rows, xi] == left.front) & right.full[rows, xi] & (np.abs(d_r - d) <= 1.0)
        return np.where(valid, depth, np.nan).astype(np.float32)

    def max_speed_px(self) -> float:
        """The fastest image motion of sampled scene points, pixels per second (sets the simulation rate).

        Points: where a 5 x 5 grid of rays meets the walls every 5 s, and each object's centre and the
        six points of its bounding sphere on its axes (plus ``spin rate x bound / depth`` for its spin),
        followed over the horizon every 10 ms while they are in view.
        """
        t = np.arange(0.0, self.horizon_s, 0.01)
        C, R = self.camera.poses(t)  # [T, 3], [T, 3, 3]
        planes = [s for s in self.surfaces if isinstance(s, Plane)]
        gu, gv = np.meshgrid(np.linspace(0, self.width - 1, 5), np.linspace(0, self.height - 1, 5))
        rays = np.stack([(gu.ravel() - self.cx) / self.f, (gv.ravel() - self.cy) / self.f, np.ones(25)], 1)
        static = []
        for k in range(0, len(t), 500):
            D = mat(rays, np.ascontiguousarray(R[k].T))
            z = np.min(np.stack([p.depth(C[k], D) for p in planes]), axis=0)
            ok = np.isfinite(z)
            static.append(C[k] + z[ok, None] * D[ok])
        best = self._fastest(t, C, R, np.concatenate(static)[None, :, :])
        offsets = np.concatenate([np.zeros((1, 3)), np.eye(3), -np.eye(3)])
        for s in self.surfaces:
            if isinstance(s, Plane):
                continue
            pts = s.center(t)[:, None, :] + s.bound * offsets[None]  # [T, 7, 3]
            depth = np.einsum("ti,ti->t", R[:, :, 2], s.center(t) - C) - s.bound
            spin = np.abs(s.spin.rate(t)) * s.bound / np.maximum(depth, self.config.min_depth_m) * self.f
            best = max(best, self._fastest(t, C, R, pts, spin))
        return best

    def _fastest(self, t: np.ndarray, C: np.ndarray, R: np.ndarray, pts: np.ndarray, extra=0.0) -> float:
        """Largest image speed of world points ``pts`` [T or 1, P, 3] while in view, px/s."""
        p = np.einsum("tji,tpj->tpi", R, pts - C[:, None, :])  # camera frame [T, P, 3]
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.f * p[..., 0] / z + self.cx
            v = self.f * p[..., 1] / z + self.cy
        inside = (z > 0) & (u >= 0) & (u <= self.width - 1) & (v >= 0) & (v <= self.height - 1)
        speed = np.hypot(np.diff(u, axis=0), np.diff(v, axis=0)) / np.diff(t)[:, None]
        speed = np.where(inside[1:] & inside[:-1], speed, 0.0)
        extra = np.broadcast_to(np.asarray(extra, dtype=np.float64), t.shape)[1:, None]
        return float(np.max(speed + extra * (inside[1:] & inside[:-1]), initial=0.0))
