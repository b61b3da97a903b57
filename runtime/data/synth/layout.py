"""Scene types: where the walls, floors and objects of one synthetic scene go.

A scene is one of ``SCENE_TYPES`` (drawn per seed from ``SynthConfig.scene_types``):

- ``room``: a back wall (tilted up to 25 degrees), usually a floor, sometimes a side wall, and objects;
  the layout of MVSEC's indoor_flying.
- ``street``: a ground plane, a far background, facades along one or both sides, poles and objects.
- ``clutter``: a tilted background and twice as many objects, overlapping, many of them thin.
- ``corridor``: floor, ceiling, two side walls and an end wall: long slanted planes in perspective,
  a few objects. (Training leaves it out by default: the held-out scene type.)

Everything is placed at time 0 through the camera's view (image position, disparity), then walls
are moved so that, over the whole motion, every visible point stays between ``min_depth_m`` and the
far end of ``background_depth_m``, and objects so that none comes nearer than ``min_depth_m``; the
first object is then moved so that it reaches ``min_depth_m`` (the largest disparity) once.
"""

from __future__ import annotations

import math

import numpy as np

from .config import SCENE_TYPES
from .surfaces import Cylinder, Patch, Path, Plane, Sphere, Surface, rot_x, rot_y, rot_z
from .textures import make_texture

OBJECT_KINDS = ("rect", "ellipse", "sphere", "cylinder")
THIN_KINDS = ("pole", "bar")


class Layout:
    """Builds the surfaces of one scene; ``scene`` is the ``StereoScene`` (camera, optics, config)."""

    def __init__(self, scene, rng: np.random.Generator) -> None:
        self.s, self.c, self.rng = scene, scene.config, rng
        self.t = np.arange(0.0, scene.horizon_s, 0.02)
        self.C, self.R = scene.camera.poses(self.t)  # [T, 3], [T, 3, 3]
        W, H, f = scene.width, scene.height, scene.f
        corners = np.array([[-scene.cx, -scene.cy], [W - 1 - scene.cx, -scene.cy],
                            [-scene.cx, H - 1 - scene.cy], [W - 1 - scene.cx, H - 1 - scene.cy]]) / f
        cam = np.concatenate([corners, np.ones((4, 1))], axis=1)  # [4, 3]
        self.D = np.einsum("tij,kj->tki", self.R, cam)  # corner rays in the world [T, 4, 3]
        self.near, self.far = self.c.min_depth_m, self.c.background_depth_m[1]

    # ---- textures and placement -----------------------------------------------------------------
    def texture(self, depth: float):
        return make_texture(self.rng, self.c.textures, self.c.photo_fraction, depth / self.s.f,
                            self.c.photo_augment, self.c.photo_variations)

    def point(self, u: float, v: float, z: float) -> np.ndarray:
        """The world point seen at pixel (u, v) at depth z at time 0."""
        s = self.s
        C, R = s.camera.pose(0.0)
        return C + z * (R @ np.array([(u - s.cx) / s.f, (v - s.cy) / s.f, 1.0]))

    # ---- planes ----------------------------------------------------------------------------------
    def plane(self, normal: np.ndarray, origin: np.ndarray, e1: np.ndarray, depth: float, far: bool = False,
              texture=None) -> Plane | None:
        """A plane moved along its normal until no visible point is nearer than ``min_depth_m``
        (and, for a wall that must close the scene, ``far``, until every ray hits it no farther than
        the far background depth; None if some ray, at some time, misses it)."""
        p = Plane(normal, origin, e1, texture if texture is not None else self.texture(depth))
        delta = p.c - self.C @ p.n  # [T] signed distance of the camera to the plane
        nd = self.D @ p.n  # [T, 4]
        sign = math.copysign(1.0, float(delta[0]))
        hits = nd * sign > 0
        need = np.where(hits, self.near * np.abs(nd) - np.abs(delta)[:, None], -np.inf).max()
        move = max(0.0, float(need)) * 1.02
        if far:
            if not hits.all():
                return None
            room = float((self.far * np.abs(nd) - np.abs(delta)[:, None]).min())
            if room < 0:  # part of it is beyond the far background depth: bring it nearer
                move = 1.02 * room
        p.origin = p.origin + sign * move * p.n
        p.c = float(p.n @ p.origin)
        return p

    def back_wall(self, max_tilt_deg: float = 25.0) -> Plane:
        """The wall that closes the scene, tilted up to ``max_tilt_deg`` (yaw) and 8 degrees (pitch);
        the tilt is halved until every ray of a wide field of view meets it."""
        rng = self.rng
        z = rng.uniform(*self.c.background_depth_m)
        yaw, pitch = math.radians(rng.uniform(-max_tilt_deg, max_tilt_deg)), math.radians(rng.uniform(-8, 8))
        texture = self.texture(z)
        for k in range(12):
            n = rot_y(yaw * 0.5**k) @ rot_x(pitch * 0.5**k) @ np.array([0.0, 0.0, -1.0])
            p = self.plane(n, self.point(self.s.cx, self.s.cy, z), np.array([1.0, 0.0, 0.0]), z, far=True,
                           texture=texture)
            if p is not None:
                return p
        raise ValueError("the camera sees beyond 90 degrees from its axis: no wall closes the scene; "
                         "use a longer focal length or less camera rotation")

    def floor(self, ceiling: bool = False) -> Plane:
        """A horizontal plane below (or above) the camera; the image's bottom (top) row sees it
        ``wall_depth_factor`` (1.8-4 by default) times ``min_depth_m`` away."""
        s = self.s
        z_edge = self.near * self.rng.uniform(*self.c.wall_depth_factor)
        h = z_edge * s.cy / s.f * (-1.0 if ceiling else 1.0)
        return self.plane(np.array([0.0, -1.0, 0.0]), np.array([0.0, h, 0.0]), np.array([1.0, 0.0, 0.0]), z_edge)

    def side_wall(self, side: float, yaw_deg: float = 0.0) -> Plane:
        """A vertical wall on the left (side -1) or right (+1), seen at the image border
        ``wall_depth_factor`` (1.8-4 by default) times ``min_depth_m`` away, turned by ``yaw_deg``."""
        s = self.s
        z_edge = self.near * self.rng.uniform(*self.c.wall_depth_factor)
        x = side * z_edge * s.cx / s.f
        n = rot_y(math.radians(yaw_deg)) @ np.array([1.0, 0.0, 0.0])
        return self.plane(n, np.array([x, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), z_edge)

    # ---- objects ---------------------------------------------------------------------------------
    def object_depth(self) -> float:
        """Inverse depth (disparity) between ``1 / max_object_depth_m`` and ``1 / (1.15 min_depth_m)``,
        at a fraction ``u^object_depth_power`` (u uniform; 2 by default) of that range: more far objects
        than near ones."""
        lo, hi = 1.0 / self.c.max_object_depth_m, 1.0 / (1.15 * self.near)
        return 1.0 / (lo + (hi - lo) * self.rng.random() ** self.c.object_depth_power)

    def obj(self, kind: str, u: float, v: float, z: float) -> Surface:
        """An object of ``kind`` seen at (u, v) at depth z at time 0, moving on its own."""
        rng, c, s = self.rng, self.c, self.s
        k = z / s.f  # metres per pixel at its depth
        size = rng.uniform(0.05, 0.16) * s.width * k
        m = c.motion
        axy = c.object_amplitude_px * m * k

        def path(center: float, amplitude: float, n: int = 2) -> Path:
            w = rng.dirichlet(np.ones(n)) if n > 1 else np.ones(1)
            p = Path(center, amplitude * w, rng.uniform(0.05, 0.3, n), rng.uniform(0, 2 * np.pi, n))
            p.center -= float(p(0.0)) - center  # the object starts where it was placed
            return p

        P = self.point(u, v, z)
        X, Y, Z = path(P[0], axy), path(P[1], 0.5 * axy), path(P[2], 0.06 * z * m, 1)
        spin = path(0.0, math.radians(c.object_spin_deg) * m, 1)
        tex = self.texture(z)
        tilt = math.radians(c.max_slant_deg)
        base = rot_y(rng.uniform(-tilt, tilt)) @ rot_x(rng.uniform(-0.7 * tilt, 0.7 * tilt)) @ rot_z(
            rng.uniform(-np.pi, np.pi))
        if kind in ("rect", "ellipse"):
            return Patch(kind, size, size * rng.uniform(0.5, 2.0), X, Y, Z, spin, base, tex)
        if kind == "bar":  # a thin strip, 1-3 px wide, at any angle in its plane
            return Patch("rect", rng.uniform(0.15, 0.5) * s.height * k, rng.uniform(0.5, 1.5) * k,
                         X, Y, Z, spin, base, tex)
        if kind == "sphere":
            return Sphere(size, X, Y, Z, spin, np.eye(3), tex)
        if kind == "pole":  # a thin upright cylinder, 2-5 px across, tall
            return Cylinder(rng.uniform(1.0, 2.5) * k, rng.uniform(0.3, 0.8) * s.height * k,
                            X, Y, Z, spin, np.eye(3), tex)
        return Cylinder(0.6 * size, size * rng.uniform(1.0, 3.0), X, Y, Z, spin, np.eye(3), tex)

    def objects(self, n: int, thin_fraction: float) -> list[Surface]:
        """``n`` objects; about a third overlap the one placed before them, nearer to the camera."""
        rng, s = self.rng, self.s
        out: list[Surface] = []
        for _ in range(n):
            thin = rng.random() < thin_fraction
            kind = str(rng.choice(THIN_KINDS if thin else OBJECT_KINDS))
            z = self.object_depth()
            if out and rng.random() < 0.35:  # in front of the previous object, overlapping it
                prev = out[-1].center(0.0)
                uv = self._project(prev)
                u, v = uv[0] + rng.uniform(-0.1, 0.1) * s.width, uv[1] + rng.uniform(-0.1, 0.1) * s.height
                z = max(self.near * 1.15, min(z, float(self._depth(prev)) * rng.uniform(0.5, 0.85)))
            else:
                u, v = rng.uniform(0.1, 0.9) * s.width, rng.uniform(0.15, 0.85) * s.height
            out.append(self.keep_away(self.obj(kind, u, v, z)))
        if out:
            self.reach_nearest(out[0])
        return out

    def _project(self, P: np.ndarray) -> np.ndarray:
        s = self.s
        C, R = s.camera.pose(0.0)
        p = R.T @ (P - C)
        return np.array([s.f * p[0] / p[2] + s.cx, s.f * p[1] / p[2] + s.cy])

    def _depth(self, P: np.ndarray) -> float:
        C, R = self.s.camera.pose(0.0)
        return float((R.T @ (P - C))[2])

    def nearest(self, o: Surface) -> float:
        """The least depth any point of ``o`` can have over the motion (a lower bound)."""
        z = np.einsum("ti,ti->t", self.R[:, :, 2], o.center(self.t) - self.C)
        return float(z.min() - o.bound)

    def keep_away(self, o: Surface) -> Surface:
        short = self.near - self.nearest(o)
        if short > 0:
            o.paths[2].center += 1.02 * short
        return o

    def reach_nearest(self, o: Surface) -> None:
        o.paths[2].center += self.near - self.nearest(o)
        o.paths[2].center += max(0.0, self.near - self.nearest(o))  # rotation: one more, outward only


def build(scene, rng: np.random.Generator, kind: str) -> list[Surface]:
    """The surfaces of a scene of type ``kind`` (far to near is not required: depth is per pixel)."""
    lay = Layout(scene, rng)
    c = scene.config
    n, thin = c.n_objects, c.thin_fraction
    if kind == "room":
        out = [lay.back_wall()]
        if rng.random() < 0.85:
            out.append(lay.floor())
        if rng.random() < 0.4:
            out.append(lay.side_wall(float(rng.choice([-1.0, 1.0])), rng.uniform(-20, 20)))
        return out + lay.objects(n, thin)
    if kind == "street":
        out = [lay.back_wall(10.0), lay.floor()]
        for side in (-1.0, 1.0):
            if rng.random() < 0.6:
                out.append(lay.side_wall(side, rng.uniform(-10, 10)))
        return out + lay.objects(max(1, n // 2), thin) + lay.objects(max(1, n // 3), 1.0)
    if kind == "clutter":
        return [lay.back_wall(35.0)] + lay.objects(2 * n, max(thin, 0.35))
    if kind == "corridor":
        out = [lay.back_wall(8.0), lay.floor(), lay.floor(ceiling=True)]
        out += [lay.side_wall(-1.0, rng.uniform(-8, 8)), lay.side_wall(1.0, rng.uniform(-8, 8))]
        return out + lay.objects(max(1, n // 2), thin)
    raise ValueError(f"unknown scene type {kind!r}; use one of {', '.join(SCENE_TYPES)}")
