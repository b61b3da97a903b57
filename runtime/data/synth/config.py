"""The generator's knobs (``SynthConfig``) and the MVSEC and DSEC constants it imitates."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from runtime.data.mvsec import INDOOR_FLYING_FB

HORIZON_S = 60.0  # scene extents and the fastest image motion are taken over this long
MVSEC_HEIGHT, MVSEC_WIDTH = 260, 346
MVSEC_FOCAL_PX = 199.653  # indoor_flying left camera fx
MVSEC_FB = INDOOR_FLYING_FB  # focal length x baseline, px*m
# DSEC (640 x 480 event cameras): approximate rectified focal length and stereo baseline of a
# typical sequence's calibration/cam_to_cam.yaml; disparities reach ~190 px (depth ~1.8 m)
DSEC_HEIGHT, DSEC_WIDTH = 480, 640
DSEC_FOCAL_PX = 569.0
DSEC_FB = DSEC_FOCAL_PX * 0.6
SCENE_TYPES = ("room", "street", "clutter", "corridor")
TEXTURE_SETS = ("all", "train", "heldout", "train_more", "train_most")
# those a training run's scenes may draw (never a held-out photograph)
TRAIN_TEXTURE_SETS = ("train", "train_more", "train_most")
# What a varied photograph may draw (textures.vary_photo): a quarter turn, its negative, coarser detail
PHOTO_VARIATIONS = ("turn", "negative", "coarser")


def split_names(text: str) -> tuple[str, ...]:
    """A comma-separated list from a command line, ``room,corridor`` -> ("room", "corridor");
    ``SynthConfig`` checks the names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


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
    scene_types: tuple[str, ...] = SCENE_TYPES  # each seed draws its layout from these (runtime.data.synth.layout)
    textures: str = "all"  # photographs used: one of TEXTURE_SETS (runtime.data.synth.textures.photo_names)
    photo_fraction: float = 0.5  # share of surfaces textured with a photograph (others: 1/f procedural)
    photo_augment: float = 0.0  # share of photographs varied: turned, negative, less fine detail (textures.vary_photo)
    photo_variations: tuple[str, ...] = PHOTO_VARIATIONS  # what a varied photograph may draw
    n_objects: int = 6  # objects in front of the walls (twice as many in a clutter scene)
    thin_fraction: float = 0.2  # share of objects that are thin: poles and bars 1-5 px across
    max_slant_deg: float = 60.0  # flat objects are turned up to this much away from facing the camera
    min_depth_m: float = 0.54  # the nearest object comes this close: max disparity ~ fb / 0.54 = 37 px
    max_object_depth_m: float = 3.0  # far end of the objects' depth range
    object_depth_power: float = 2.0  # an object's disparity lies at a fraction u^power (u uniform) of its range
    wall_depth_factor: tuple[float, float] = (1.8, 4.0)  # floors and side walls meet the image border this
    # many times min_depth_m away (drawn per wall)
    background_depth_m: tuple[float, float] = (4.0, 6.0)  # the back wall; no visible point is farther
    motion: float = 1.0  # scales every motion amplitude and the lighting change; 0 gives a static scene
    camera_amplitude_m: float = 0.25  # camera translation amplitude (x; y and z are smaller)
    camera_rotation_deg: float = 4.0  # camera yaw amplitude (pitch 0.7x, roll 0.5x); the rig stays rectified
    object_amplitude_px: float = 20.0  # object motion amplitude in the image at its depth
    object_spin_deg: float = 30.0  # objects turn about the vertical axis by up to this much
    light_change: float = 0.2  # the illumination gain varies by this fraction; the light direction moves
    lod_bias: float = 0.0  # texture level of detail: + 1 halves the finest texture detail (optics blur)
    contrast_threshold: float = 0.2  # mean C, in log intensity
    threshold_sigma: float = 0.03  # per-pixel spread of C (ON and OFF drawn separately): mismatch
    refractory_us: int = 200  # a pixel emits no event this soon after its previous one (any cause)
    noise_hz: float = 0.1  # background activity: random events per pixel per second
    leak_hz: float = 0.0  # leak events per pixel per second (ON)
    hot_pixel_fraction: float = 2e-4  # share of pixels that are hot
    hot_pixel_hz: float = 20.0  # ON events per second of each hot pixel
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
            (len(self.scene_types) > 0 and all(k in SCENE_TYPES for k in self.scene_types),
             f"scene_types must be a non-empty selection of {', '.join(SCENE_TYPES)}"),
            (self.textures in TEXTURE_SETS, f"textures must be one of {', '.join(TEXTURE_SETS)}"),
            (len(self.photo_variations) > 0 and all(k in PHOTO_VARIATIONS for k in self.photo_variations)
             and len(set(self.photo_variations)) == len(self.photo_variations),
             f"photo_variations must be a non-empty selection of {', '.join(PHOTO_VARIATIONS)}, each once"),
            (0 <= self.photo_fraction <= 1 and 0 <= self.thin_fraction <= 1 and 0 <= self.photo_augment <= 1,
             "photo_fraction, photo_augment and thin_fraction must be in [0, 1]"),
            (0 <= self.max_slant_deg < 85, "max_slant_deg must be in [0, 85)"),
            (self.camera_rotation_deg >= 0 and self.object_spin_deg >= 0,
             "camera_rotation_deg and object_spin_deg must be >= 0"),
            (0 <= self.light_change < 1, "light_change must be in [0, 1)"),
            (0 <= self.hot_pixel_fraction <= 1 and self.hot_pixel_hz >= 0,
             "hot_pixel_fraction must be in [0, 1] and hot_pixel_hz >= 0"),
            (
                0 < self.min_depth_m < self.max_object_depth_m < self.background_depth_m[0],
                "need 0 < min_depth_m < max_object_depth_m < background_depth_m[0]",
            ),
            (
                self.background_depth_m[0] <= self.background_depth_m[1],
                "background_depth_m must be (low, high)",
            ),
            (self.object_depth_power > 0, "object_depth_power must be positive"),
            (1 <= self.wall_depth_factor[0] <= self.wall_depth_factor[1],
             "wall_depth_factor must be (low, high) with 1 <= low <= high"),
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

    @classmethod
    def dsec_like(cls, height: int = DSEC_HEIGHT, width: int = DSEC_WIDTH, **overrides: object) -> SynthConfig:
        """A DSEC-like camera and depth range: DSEC's focal length and fB scaled by ``width / 640``,
        depths from 1.8 m (disparity ~190 px at 640 px wide) to a 25-80 m background, floors and side
        walls 2.5-10 times 1.8 m away at the image border and objects mostly far (disparity at a fraction
        u^4 of their range): about a quarter of the disparities in each of [0, 10), [10, 20), [20, 40) px
        (docs/data.md, benchmarks/bench_synth_hist.py)."""
        scale = width / DSEC_WIDTH
        fields = dict(height=height, width=width, focal_px=DSEC_FOCAL_PX * scale, fb=DSEC_FB * scale,
                      min_depth_m=1.8, max_object_depth_m=24.0, background_depth_m=(25.0, 80.0),
                      wall_depth_factor=(2.5, 10.0), object_depth_power=4.0, camera_amplitude_m=0.4)
        fields.update(overrides)
        return cls(**fields)  # type: ignore[arg-type]

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
