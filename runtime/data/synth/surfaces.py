"""The surfaces of the synthetic world and their intersection with camera rays.

A ray of a pixel is ``P(Z) = C + Z * D`` with ``C`` the camera centre and ``D = R @ (x, y, 1)`` (``x,
y`` normalised image coordinates, ``R`` the camera's rotation, columns = camera axes in the world):
the ray parameter ``Z`` *is* the depth of the point in that camera's frame. Every surface returns,
for the rays it may touch, that depth, its coverage of the pixel (1 inside, ramping to 0 over about
one pixel at its silhouette, so edges are anti-aliased), its reflectance (texture) and its shading.
Coordinates: x right, y down, z forward (the camera's frame at time 0 is the world frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .textures import Texture


@dataclass
class Path:
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

    def rate(self, t: np.ndarray | float) -> np.ndarray:
        """The time derivative, per second."""
        t = np.asarray(t, dtype=np.float64)
        out = np.zeros(t.shape, dtype=np.float64)
        for a, f, ph in zip(self.amp, self.freq, self.phase, strict=True):
            out = out + a * 2 * np.pi * f * np.cos(2 * np.pi * f * t + ph)
        return out


def _rot(a, i: int, j: int) -> np.ndarray:
    """Rotation by ``a`` (scalar or array [T]) in the (i, j) coordinate plane: [3, 3] or [T, 3, 3]."""
    a = np.asarray(a, dtype=np.float64)
    m = np.zeros(a.shape + (3, 3))
    k = 3 - i - j
    m[..., k, k] = 1.0
    m[..., i, i] = m[..., j, j] = np.cos(a)
    m[..., i, j], m[..., j, i] = -np.sin(a), np.sin(a)
    return m


def rot_y(a) -> np.ndarray:
    """Yaw: turns the z axis towards x."""
    return _rot(a, 2, 0)


def rot_x(a) -> np.ndarray:
    """Pitch: turns the y axis towards z."""
    return _rot(a, 1, 2)


def rot_z(a) -> np.ndarray:
    """Roll: turns the x axis towards y."""
    return _rot(a, 0, 1)


def dot(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``A @ v`` for rays ``A`` [n, 3] and a vector ``v`` [3], without BLAS (whose threads spin on a
    busy machine and can cost 100x on these thin products); in ``A``'s precision."""
    v = np.asarray(v, dtype=A.dtype)
    return A[:, 0] * v[0] + A[:, 1] * v[1] + A[:, 2] * v[2]


def mat(A: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``A @ M`` for rays ``A`` [n, 3] and ``M`` [3, k], without BLAS, in ``A``'s precision."""
    M = np.asarray(M, dtype=A.dtype)
    return A[:, 0:1] * M[0] + A[:, 1:2] * M[1] + A[:, 2:3] * M[2]


@dataclass
class Hit:
    """What a surface shows on the rays ``idx`` (indices into the image's pixels)."""

    idx: np.ndarray  # int64 [n]
    z: np.ndarray  # float64 [n] depth in the camera frame (inf: no hit)
    cov: np.ndarray  # float32 [n] coverage in [0, 1]
    value: np.ndarray  # float32 [n] reflectance x shading


class Surface:
    """Base: ``hit(t, C, D, f, light, bias)``; ``moving`` surfaces have a centre path and a spin."""

    texture: Texture
    bound: float = np.inf  # radius of a sphere around ``center(t)`` holding the surface
    closed: bool = False  # a closed surface is lit on its outside only

    def center(self, t: np.ndarray | float) -> np.ndarray:  # [..., 3]
        raise NotImplementedError

    def hit(self, t: float, C: np.ndarray, D: np.ndarray, f: float, light: np.ndarray, bias: float) -> Hit | None:
        raise NotImplementedError

    def _shade(self, normal: np.ndarray, light: np.ndarray) -> np.ndarray:
        lam = dot(normal, light)
        lam = np.maximum(lam, 0.0) if self.closed else np.abs(lam)
        return (0.45 + 0.55 * lam).astype(np.float32)


class Plane(Surface):
    """An infinite plane ``n . P = c`` with texture axes ``e1``, ``e2`` through ``origin``."""

    def __init__(self, normal: np.ndarray, origin: np.ndarray, e1: np.ndarray, texture: Texture) -> None:
        self.n = normal / np.linalg.norm(normal)
        self.origin = np.asarray(origin, dtype=np.float64)
        e1 = e1 - (e1 @ self.n) * self.n
        self.e1 = e1 / np.linalg.norm(e1)
        self.e2 = np.cross(self.n, self.e1)
        self.c = float(self.n @ self.origin)
        self.texture = texture

    def inverse_depth(self, C: np.ndarray, D: np.ndarray) -> np.ndarray:
        """1 / Z of the rays ``D`` [..., 3] from ``C`` [..., 3] (<= 0: the ray misses the plane)."""
        return (D @ self.n) / (self.c - C @ self.n)[..., None]

    def depth(self, C: np.ndarray, D: np.ndarray) -> np.ndarray:
        """Depth along every ray [N] (inf where the ray misses the plane)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = float(self.c - C @ self.n) / dot(D, self.n)
        return np.where(z > 0, z, np.inf)

    def values(self, C: np.ndarray, D: np.ndarray, z: np.ndarray, norm: np.ndarray, f: float,
               light: np.ndarray, bias: float) -> np.ndarray:
        """Reflectance x shading where the rays ``D`` [n, 3] (lengths ``norm``) meet the plane at depths ``z``."""
        axes = np.stack([self.e1, self.e2, self.n], axis=1)
        De = mat(D, axes)  # [n, 3]: along e1, e2 and the normal
        a0, b0, _ = (float(v) for v in (C - self.origin) @ axes)
        cos = np.abs(De[:, 2]) / norm
        foot = z * norm / (f * np.maximum(cos, 0.1))
        value = self.texture.sample(a0 + z * De[:, 0], b0 + z * De[:, 1], foot, bias)
        return value * self._shade(self.n[None, :], light)

    def hit(self, t, C, D, f, light, bias):
        z = self.depth(C, D)
        idx = np.flatnonzero(np.isfinite(z))
        if idx.size == 0:
            return None
        norm = np.sqrt(np.einsum("ij,ij->i", D[idx], D[idx]))
        return Hit(idx, z[idx], np.ones(idx.size, np.float32), self.values(C, D[idx], z[idx], norm, f, light, bias))


class _Moving(Surface):
    """A rigid object: centre ``(X(t), Y(t), Z(t))``, orientation ``rot_y(spin(t)) @ base``.

    ``grid`` (set by the renderer before ``hit``): the camera's rotation ``R``, image ``width``,
    ``height`` and principal point ``cx``, ``cy``, to find the pixels the object may cover.
    """

    grid = None

    def __init__(self, X: Path, Y: Path, Z: Path, spin: Path, base: np.ndarray, texture: Texture) -> None:
        self.paths = (X, Y, Z)
        self.spin = spin
        self.base = base
        self.texture = texture

    def center(self, t):
        return np.stack([p(t) for p in self.paths], axis=-1)

    def velocity(self, t):
        return np.stack([p.rate(t) for p in self.paths], axis=-1)

    def frame(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Centre [3] and the object's axes as columns [3, 3] at time ``t``."""
        return self.center(t), rot_y(float(self.spin(t))) @ self.base

    def corners(self, S: np.ndarray, axes: np.ndarray) -> np.ndarray:
        """Points whose convex hull holds the object [k, 3] (default: the cube around its bounding sphere)."""
        return S + self.bound * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)

    def rays(self, t: float, C: np.ndarray, D: np.ndarray, f: float):
        """What every ``hit`` starts from: centre ``S`` and ``axes`` at ``t`` in the rays' dtype (float32
        when rendering, float64 for ground truth), the candidate pixels ``idx`` and their rays ``D[idx]``;
        None when no pixel can see the object."""
        S, axes = self.frame(t)
        idx = self.candidates(S, axes, C, D, f)
        if idx.size == 0:
            return None
        return S.astype(D.dtype), axes.astype(D.dtype), idx, D[idx]

    def candidates(self, S: np.ndarray, axes: np.ndarray, C: np.ndarray, D: np.ndarray, f: float) -> np.ndarray:
        """The pixels of the box around the image of the object's ``corners``, plus two pixels (the hull
        of the projected corners holds the object's image while every corner is in front of the
        camera). ``grid``, set by ``StereoScene``: rotation, size and principal point."""
        g = self.grid
        p = (self.corners(S, axes) - C) @ g.R  # camera frame [k, 3]
        if np.any(p[:, 2] <= 1e-3):  # cannot happen for placed objects (depth stays >= min_depth_m)
            return np.arange(len(D))
        u = f * p[:, 0] / p[:, 2] + g.cx
        v = f * p[:, 1] / p[:, 2] + g.cy
        c0, c1 = max(0, int(np.floor(u.min() - 2))), min(g.width, int(np.ceil(u.max() + 2)) + 1)
        r0, r1 = max(0, int(np.floor(v.min() - 2))), min(g.height, int(np.ceil(v.max() + 2)) + 1)
        if c0 >= c1 or r0 >= r1:
            return np.empty(0, np.int64)
        return (np.arange(r0, r1)[:, None] * g.width + np.arange(c0, c1)[None, :]).ravel()


class Patch(_Moving):
    """A flat rectangle or ellipse (half sizes ``hw`` x ``hh``, metres), any orientation (base[:, 2] = normal)."""

    def __init__(self, shape: str, hw: float, hh: float, *args) -> None:
        super().__init__(*args)
        self.shape, self.hw, self.hh = shape, hw, hh
        self.bound = float(np.hypot(hw, hh))

    def corners(self, S, axes):
        return S + np.array([[a * self.hw, b * self.hh] for a in (-1, 1) for b in (-1, 1)]) @ axes[:, :2].T

    def hit(self, t, C, D, f, light, bias):
        rays = self.rays(t, C, D, f)
        if rays is None:
            return None
        S, axes, idx, Di = rays
        n = axes[:, 2]
        nd = dot(Di, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = ((S - C) @ n) / nd
        ok = np.isfinite(z) & (z > 0)
        idx, z, Di = idx[ok], z[ok], Di[ok]
        rel = C - S + z[:, None] * Di
        a, b = dot(rel, axes[:, 0]), dot(rel, axes[:, 1])
        px = z * np.linalg.norm(Di, axis=1) / f  # metres per pixel across the ray
        if self.shape == "rect":
            sd = np.minimum(self.hw - np.abs(a), self.hh - np.abs(b))
        else:
            r = np.sqrt((a / self.hw) ** 2 + (b / self.hh) ** 2)
            sd = (1.0 - r) * min(self.hw, self.hh)
        cov = np.clip(0.5 + sd / px, 0.0, 1.0).astype(np.float32)
        keep = cov > 0
        idx, z, a, b, px, cov = idx[keep], z[keep], a[keep], b[keep], px[keep], cov[keep]
        cos = np.abs(nd[ok][keep]) / np.linalg.norm(Di[keep], axis=1)
        value = self.texture.sample(a, b, px / np.maximum(cos, 0.1), bias)
        value *= self._shade(np.broadcast_to(n, (idx.size, 3)), light)
        return Hit(idx, z, cov, value)


class Sphere(_Moving):
    """A sphere of radius ``r``; its texture is projected along the object's z axis."""

    closed = True

    def __init__(self, r: float, *args) -> None:
        super().__init__(*args)
        self.r = self.bound = r

    def hit(self, t, C, D, f, light, bias):
        rays = self.rays(t, C, D, f)
        if rays is None:
            return None
        S, axes, idx, Di = rays
        o = C - S
        A = np.einsum("ij,ij->i", Di, Di)
        B = dot(Di, o)
        zc = -B / A  # closest approach of the ray to the centre
        dist = np.sqrt(np.maximum(o @ o - B * B / A, 0.0))
        disc = B * B - A * (o @ o - self.r**2)
        z = np.where(disc >= 0, (-B - np.sqrt(np.maximum(disc, 0.0))) / A, zc)
        px = zc * np.sqrt(A) / f
        cov = np.clip(0.5 + (self.r - dist) / px, 0.0, 1.0).astype(np.float32)
        keep = (cov > 0) & (z > 0)
        idx, z, Di, cov = idx[keep], z[keep], Di[keep], cov[keep]
        point = o + z[:, None] * Di  # relative to the centre; outside the sphere on the soft edge
        normal = point / np.linalg.norm(point, axis=1, keepdims=True)
        local = mat(normal, axes) * self.r
        cos = np.abs(np.einsum("ij,ij->i", normal, Di)) / np.linalg.norm(Di, axis=1)
        value = self.texture.sample(local[:, 0], local[:, 1], px[keep] / np.maximum(cos, 0.1), bias)
        value *= self._shade(normal, light)
        return Hit(idx, z, cov, value)


class Cylinder(_Moving):
    """An upright (world y axis) cylinder of radius ``r`` and half height ``hh``, open at both ends.

    Only the side nearer the camera is drawn (a ray that misses it there misses the cylinder).
    """

    closed = True

    def __init__(self, r: float, hh: float, *args) -> None:
        super().__init__(*args)
        self.r, self.hh = r, hh
        self.bound = float(np.hypot(r, hh))

    def corners(self, S, axes):
        return S + np.array([[x * self.r, y * self.hh, z * self.r] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])

    def hit(self, t, C, D, f, light, bias):
        rays = self.rays(t, C, D, f)
        if rays is None:
            return None
        S, axes, idx, Di = rays
        o = C - S
        dx, dz = Di[:, 0], Di[:, 2]
        A = dx * dx + dz * dz
        B = dx * o[0] + dz * o[2]
        zc = -B / np.maximum(A, 1e-12)
        dist = np.sqrt(np.maximum(o[0] ** 2 + o[2] ** 2 - B * B / np.maximum(A, 1e-12), 0.0))
        disc = B * B - A * (o[0] ** 2 + o[2] ** 2 - self.r**2)
        z = np.where(disc >= 0, (-B - np.sqrt(np.maximum(disc, 0.0))) / np.maximum(A, 1e-12), zc)
        px = np.maximum(z, 1e-6) * np.linalg.norm(Di, axis=1) / f
        y = o[1] + z * Di[:, 1]
        cov = np.clip(0.5 + (self.r - dist) / px, 0.0, 1.0) * np.clip(0.5 + (self.hh - np.abs(y)) / px, 0.0, 1.0)
        cov = cov.astype(np.float32)
        keep = (cov > 0) & (z > 0)
        idx, z, Di, cov, y, px = idx[keep], z[keep], Di[keep], cov[keep], y[keep], px[keep]
        point = o + z[:, None] * Di
        normal = point * np.array([1.0, 0.0, 1.0], dtype=point.dtype)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        local_x = dot(normal, axes[:, 0]) * self.r
        cos = np.abs(np.einsum("ij,ij->i", normal, Di)) / np.linalg.norm(Di, axis=1)
        value = self.texture.sample(local_x, y, px / np.maximum(cos, 0.1), bias)
        value *= self._shade(normal, light)
        return Hit(idx, z, cov, value)
