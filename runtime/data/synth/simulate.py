"""Synthetic stereo event streams with exact ground-truth disparity (pure numpy, seeded).

A scene (``scene.py``, ``layout.py``, ``surfaces.py``, ``textures.py``) is a room, street, clutter or
corridor of walls, floors and objects (slanted patches, spheres, cylinders, thin bars and poles)
textured with photographs and 1/f procedural textures, seen by a rectified stereo rig that
translates and rotates slightly while the objects move and the light changes. Every pixel of both
views is ray cast: a surface point at depth Z (in the left camera's frame) appears in the right view
``d = fB / Z`` pixels to the left of its place in the left view, exactly.

Events come from the ESIM model on the log intensity ``L = log(I + eps)`` (``esim.py``): each pixel
keeps a reference level; whenever ``L`` moves a per-pixel contrast threshold ``C`` (normal around
``contrast_threshold`` with spread ``threshold_sigma``) away from it, an event of that sign is
emitted and the reference moves by ``C``, as often as the change allows within one simulation
step, with times interpolated linearly between the frames; then DAVIS-like background activity,
hot pixels, leak and a refractory period.

Ground truth at ``gt_hz``: depth (metres) of the left view, NaN where a pixel is on a soft edge,
occluded in the right view or falls outside it. Files are written in the MVSEC layout::

    python -m runtime.synth -o data/ --seconds 10 --seed 0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from runtime.data.events import EVENT_DTYPE
from runtime.data.recording import SIDES

from .config import SynthConfig
from .esim import _Esim
from .scene import StereoScene


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

    def __init__(self, config: SynthConfig, scene=None) -> None:
        """``scene``: anything with ``render(t_us, side)``, ``ground_truth(t_us)`` and ``max_speed_px()``
        at the config's size (default: the ``StereoScene`` of ``config``; e.g. ``pairpan.PairPanScene``)."""
        self.config = config
        self.scene = StereoScene(config) if scene is None else scene
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
    kind: str = ""  # the scene type (runtime.data.synth.layout), or "" for another scene


def generate(
    config: SynthConfig | None = None,
    *,
    progress: bool = False,
    images: bool = True,
    scene=None,
    **overrides: object,
) -> SynthData:
    """Simulate a recording in memory; ``overrides`` replace fields of ``config`` (or the defaults).

    ``images=False`` skips the gray images (faster; ``images`` and ``image_ts_us`` are then empty).
    ``scene`` replaces the config's synthetic world (see ``Simulator``).
    """
    config = dataclasses.replace(config or SynthConfig(), **overrides)  # type: ignore[arg-type]
    sim = Simulator(config, scene)
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
        kind=str(getattr(sim.scene, "kind", "")),
    )
