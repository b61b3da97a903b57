"""The generator's knobs (``SynthConfig``) and the MVSEC constants it imitates."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from runtime.mvsec import INDOOR_FLYING_FB

HORIZON_S = 60.0  # scene extents and the fastest image motion are taken over this long
MVSEC_HEIGHT, MVSEC_WIDTH = 260, 346
MVSEC_FOCAL_PX = 199.653  # indoor_flying left camera fx
MVSEC_FB = INDOOR_FLYING_FB  # focal length x baseline, px*m


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
