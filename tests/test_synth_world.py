"""The synthetic world: exact ground truth on slanted and curved surfaces and under camera rotation,
what each knob does, the texture and scene-type hold-out, the Motorcycle conversion."""

import dataclasses

import numpy as np
import pytest

from runtime.data.synth import SynthConfig, generate
from runtime.data.synth.esim import _Esim
from runtime.data.synth.scene import StereoScene
from runtime.data.synth.surfaces import Cylinder, Patch, Plane, Sphere
from runtime.data.synth.textures import HELDOUT_PHOTOS, PROCEDURAL, TRAIN_PHOTOS, photo_names

SMALL = dict(height=48, width=64)


def _world_points(scene: StereoScene, t_us: int, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Back-project the valid ground-truth pixels through the left camera: (pixel mask, points [n, 3])."""
    C, R = scene.camera.pose(t_us * 1e-6)
    valid = np.isfinite(depth)
    yy, xx = np.nonzero(valid)
    z = depth[valid].astype(np.float64)
    rays = np.stack([(xx - scene.cx) / scene.f, (yy - scene.cy) / scene.f, np.ones_like(z)], 1)
    return valid, C + z[:, None] * (rays @ R.T)


@pytest.mark.parametrize("seed", [0, 4, 5])
def test_ground_truth_points_lie_on_their_surfaces_and_project_exactly(seed):
    """Every valid pixel's depth puts its point on the surface it shows (planes, patches, spheres,
    cylinders), and the right camera of the rotated rig sees that point on the same row at x - fB/Z."""
    c = SynthConfig(seed=seed, camera_rotation_deg=6.0, **SMALL)
    scene = StereoScene(c)
    t = 700_000
    depth = scene.ground_truth(t)
    front = scene.trace(t, "left").front
    valid, P = _world_points(scene, t, depth)
    ids = front[valid]
    kinds = set()
    for i, s in enumerate(scene.surfaces):
        pts = P[ids == i]
        if not len(pts):
            continue
        if isinstance(s, Plane):
            resid = pts @ s.n - s.c
        else:
            S, axes = s.frame(t * 1e-6)
            rel = pts - S
            if isinstance(s, Sphere):
                resid = np.linalg.norm(rel, axis=1) - s.r
            elif isinstance(s, Cylinder):
                resid = np.hypot(rel[:, 0], rel[:, 2]) - s.r
            else:
                resid = rel @ axes[:, 2]
        kinds.add(type(s).__name__)
        assert np.abs(resid).max() < 1e-6 * max(1.0, np.abs(pts).max()), type(s).__name__
    assert "Plane" in kinds and len(kinds) >= 2
    # the right camera: same rotation, centre moved by the baseline along the rig's x axis
    C, R = scene.camera.pose(t * 1e-6)
    Cr = C + scene.baseline * R[:, 0]
    p = (P - Cr) @ R  # right-camera frame
    u = scene.f * p[:, 0] / p[:, 2] + scene.cx
    v = scene.f * p[:, 1] / p[:, 2] + scene.cy
    yy, xx = np.nonzero(valid)
    np.testing.assert_allclose(v, yy, atol=1e-6)
    np.testing.assert_allclose(u, xx - scene.fb / depth[valid].astype(np.float64), atol=1e-3)
    angles = [float(a(t * 1e-6)) for a in scene.camera.angles]
    assert max(abs(a) for a in angles) > 1e-3  # the rig really is rotated at this time


@pytest.mark.parametrize("kind", [Plane, Patch, Sphere, Cylinder])
def test_photometric_match_on_each_surface_kind(kind):
    """left(x) = right(x - d) on the pixels of slanted planes, patches, spheres and cylinders."""
    errs, wrong = [], []
    for seed in range(8):
        scene = StereoScene(SynthConfig(seed=seed, scene_types=("clutter", "room"), **SMALL))
        t = 300_000
        depth = scene.ground_truth(t)
        left, right = scene.render(t, "left"), scene.render(t, "right")
        front = scene.trace(t, "left", exact=True).front
        mine = np.isfinite(depth) & np.isin(front, [i for i, s in enumerate(scene.surfaces) if isinstance(s, kind)])
        yy, xx = np.nonzero(mine)
        xr = xx - scene.fb / depth[mine]
        ok = xr - 3 >= 0
        x0 = np.floor(xr).astype(int)
        f = xr - x0
        match = right[yy, x0] * (1 - f) + right[yy, x0 + 1] * f
        errs.append(np.abs(left[mine] - match))
        wrong.append(np.abs(left[mine][ok] - right[yy[ok], x0[ok] - 2]))
    err, wrong = np.concatenate(errs), np.concatenate(wrong)
    assert err.size > 200
    assert np.median(err) < 0.006 and np.percentile(err, 95) < 0.03
    assert np.median(wrong) > 4 * np.median(err)


def test_camera_rotation_knob():
    still = StereoScene(SynthConfig(seed=1, camera_rotation_deg=0.0, **SMALL))
    t = np.linspace(0, 5, 50)
    _, R = still.camera.poses(t)
    np.testing.assert_allclose(R, np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    turning = StereoScene(SynthConfig(seed=1, camera_rotation_deg=4.0, **SMALL))
    yaw = turning.camera.angles[0](np.linspace(0, 60, 3000))
    assert 0.3 * np.radians(4.0) < np.abs(yaw).max() <= 2 * np.radians(4.0) + 1e-9


def test_lighting_change_is_a_global_gain_of_the_knob_size():
    """A still wall under a changing light: every pixel's intensity scales by the same factor."""
    c = SynthConfig(seed=2, scene_types=("clutter",), n_objects=0, camera_amplitude_m=0.0, camera_rotation_deg=0.0,
                    light_change=0.4, **SMALL)
    scene = StereoScene(c)
    gains = np.array([scene.light(t)[1] for t in np.linspace(0, 20, 400)])
    assert gains.min() >= 0.6 - 1e-9 and gains.max() <= 1.0 + 1e-9 and np.ptp(gains) > 0.2
    a, b = scene.render(0, "left"), scene.render(2_500_000, "left")
    ratio = b / a
    assert np.std(ratio) < 1e-3 * np.mean(ratio) + 0.05 * abs(np.mean(ratio) - 1)
    flat = StereoScene(dataclasses.replace(c, light_change=0.0))
    assert np.allclose(flat.render(0, "left"), flat.render(2_500_000, "left"))


def test_hot_pixels_fire_on_events_at_their_rate():
    c = SynthConfig(seconds=0.4, motion=0.0, noise_hz=0.0, hot_pixel_fraction=0.01, hot_pixel_hz=100.0,
                    refractory_us=0, **SMALL)
    ev = generate(c, images=False).events["left"]
    pix = np.unique(ev["y"].astype(int) * 64 + ev["x"])
    n_hot = round(0.01 * 48 * 64)
    assert len(pix) == n_hot and np.all(ev["p"] == 1)
    expected = n_hot * 100.0 * 0.4
    assert abs(len(ev) - expected) < 5 * np.sqrt(expected)


def test_threshold_mismatch_knob():
    rng = np.random.default_rng(0)
    log0 = np.zeros((64, 64), np.float32)
    for sigma in (0.0, 0.05):
        esim = _Esim(SynthConfig(threshold_sigma=sigma, contrast_threshold=0.25, **SMALL), log0, rng)
        assert np.mean(esim.c_on) == pytest.approx(0.25, abs=0.01)
        assert np.std(esim.c_on) == pytest.approx(sigma, abs=0.005)


def test_thin_objects_and_scene_type_knobs():
    scene = StereoScene(SynthConfig(seed=3, scene_types=("clutter",), thin_fraction=1.0, **SMALL))
    assert scene.kind == "clutter"
    objects = [s for s in scene.surfaces if not isinstance(s, Plane)]
    assert len(objects) == 12
    for s in objects:  # poles are cylinders of 1-2.5 px radius, bars patches 0.5-1.5 px half-width
        k = s.center(0.0)[2] / scene.f
        thin = s.r if isinstance(s, Cylinder) else min(s.hw, s.hh)
        assert thin <= 2.6 * k
    corridor = StereoScene(SynthConfig(seed=3, scene_types=("corridor",), **SMALL))
    assert corridor.kind == "corridor" and sum(isinstance(s, Plane) for s in corridor.surfaces) == 5


def test_texture_sets_are_disjoint_and_respected():
    assert not set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS)
    assert not any("motorcycle" in n for n in TRAIN_PHOTOS + HELDOUT_PHOTOS)
    assert set(photo_names("all")) == set(TRAIN_PHOTOS) | set(HELDOUT_PHOTOS)
    for seed in range(3):
        train = StereoScene(SynthConfig(seed=seed, textures="train", **SMALL))
        assert {s.texture.name for s in train.surfaces} <= set(TRAIN_PHOTOS) | set(PROCEDURAL)
        held = StereoScene(SynthConfig(seed=seed, textures="heldout", **SMALL))
        assert {s.texture.name for s in held.surfaces} <= set(HELDOUT_PHOTOS)
    procedural = StereoScene(SynthConfig(seed=0, photo_fraction=0.0, **SMALL))
    assert {s.texture.name for s in procedural.surfaces} <= set(PROCEDURAL)


def test_varied_photographs_are_turned_negative_or_coarser_and_nothing_else():
    """vary_photo: a quarter turn reads the surface's axes swapped, the negative mirrors reflectance in its
    range, dropping k levels keeps the photograph where the level of detail is k or coarser and smooths
    it where it is finer; at photo_augment 0 make_texture draws exactly what it drew before."""
    from runtime.data.synth.textures import make_texture, photo_pyramid, vary_photo

    t = make_texture(np.random.default_rng(5), "train", 1.0, 0.01)
    assert t.name in TRAIN_PHOTOS and not t.transpose
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 2, 4000), rng.uniform(0, 2, 4000)
    fine = np.full(a.shape, t.texel)  # level of detail 0: every texel
    coarse = np.full(a.shape, t.texel * 2**3)
    same = vary_photo(t, transpose=False, negative=False, drop=0)
    assert np.array_equal(same.sample(a, b, fine, 0.0), t.sample(a, b, fine, 0.0))
    turned = vary_photo(t, transpose=True, negative=False, drop=0)
    assert np.array_equal(turned.sample(a, b, fine, 0.0), t.sample(b, a, fine, 0.0))
    assert not np.allclose(turned.sample(a, b, fine, 0.0), t.sample(a, b, fine, 0.0))
    neg = vary_photo(t, transpose=False, negative=True, drop=0)
    np.testing.assert_allclose(neg.sample(a, b, fine, 0.0), 2 * t.lo + t.gain - t.sample(a, b, fine, 0.0),
                               atol=1e-5)
    coarser = vary_photo(t, transpose=False, negative=False, drop=3)
    assert len(coarser.levels) == len(t.levels) - 3 and coarser.texel == t.texel * 8
    np.testing.assert_allclose(coarser.sample(a, b, coarse, 0.0), t.sample(a, b, coarse, 0.0), atol=1e-5)
    x = np.linspace(0, 0.5, 4000)  # along a line, texel by texel: the coarser surface changes less
    y = np.full(x.shape, 0.3)
    def step(tex):
        return np.abs(np.diff(tex.sample(x, y, fine, 0.0))).mean()

    assert step(coarser) < 0.5 * step(t)
    assert vary_photo(t, transpose=False, negative=False, drop=99).levels == t.levels[-2:]  # two levels stay
    # photo_augment 0 draws nothing more; 1 varies photographs only, after the same first draws
    for seed in range(20):
        r0, r1, r2 = (np.random.default_rng(seed) for _ in range(3))
        plain, zero, varied = make_texture(r0, "train", 0.5, 0.01), make_texture(r1, "train", 0.5, 0.01, 0.0), \
            make_texture(r2, "train", 0.5, 0.01, 1.0)
        assert r0.random() == r1.random() and (plain.name, plain.texel, plain.lo) == (zero.name, zero.texel, zero.lo)
        assert varied.name == plain.name and varied.texel >= plain.texel
        if plain.name in PROCEDURAL:
            assert (varied.lo, varied.gain, varied.transpose) == (plain.lo, plain.gain, False)
    scenes = [StereoScene(SynthConfig(seed=s, textures="train", photo_fraction=1.0, photo_augment=1.0, **SMALL))
              for s in range(3)]
    textures = [x.texture for sc in scenes for x in sc.surfaces]
    assert any(x.transpose for x in textures) and any(x.gain < 0 for x in textures)
    assert any(len(x.levels) < len(photo_pyramid(x.name)) for x in textures)


def test_a_selection_of_variations_varies_the_same_photographs_at_the_same_draws():
    """photo_variations: every variation is drawn as with all three, and only the chosen ones applied, so
    ``coarser`` alone gives each texture of a seed all three's level of detail, unturned and positive,
    and the textures after it are drawn exactly as with all three."""
    from runtime.data.synth.textures import make_texture, photo_pyramid

    coarser_seen = 0
    for seed in range(40):
        r_all, r_one, r_two = (np.random.default_rng(seed) for _ in range(3))
        every = make_texture(r_all, "train", 1.0, 0.01, 1.0)
        coarser = make_texture(r_one, "train", 1.0, 0.01, 1.0, ("coarser",))
        turned = make_texture(r_two, "train", 1.0, 0.01, 1.0, ("turn", "negative"))
        assert r_all.random() == r_one.random() == r_two.random()  # the same draws, in the same number
        assert (coarser.name, coarser.texel, coarser.offset) == (every.name, every.texel, every.offset)
        assert len(coarser.levels) == len(every.levels) and not coarser.transpose
        assert (coarser.lo, coarser.gain) == pytest.approx((every.lo + every.gain, -every.gain) if every.gain < 0
                                                           else (every.lo, every.gain), abs=1e-12)
        assert (turned.transpose, turned.lo, turned.gain) == (every.transpose, every.lo, every.gain)
        assert len(turned.levels) == len(photo_pyramid(every.name))
        coarser_seen += len(coarser.levels) < len(photo_pyramid(every.name))
    assert coarser_seen >= 10
    scenes = [StereoScene(SynthConfig(seed=s, textures="train", photo_fraction=1.0, photo_augment=1.0,
                                      photo_variations=("coarser",), **SMALL)) for s in range(3)]
    textures = [x.texture for sc in scenes for x in sc.surfaces]
    assert not any(x.transpose or x.gain < 0 for x in textures)
    assert any(len(x.levels) < len(photo_pyramid(x.name)) for x in textures)
    for bad in ((), ("blur",), ("coarser", "coarser")):
        with pytest.raises(ValueError, match="photo_variations"):
            SynthConfig(photo_variations=bad)


def test_training_and_held_out_specs_are_disjoint():
    from training.data import SyntheticSpec

    spec = SyntheticSpec()
    assert spec.train_textures == "train" and spec.val_textures == "heldout"
    assert "corridor" in spec.val_scene_types and "corridor" not in spec.train_scene_types
    assert not set(spec.train_seeds) & set(spec.val_seeds)


def test_dsec_profile_scales_with_width():
    c = SynthConfig.dsec_like(height=48, width=64, seed=1)
    assert c.focal_baseline == pytest.approx(341.4 * 64 / 640)
    depth = StereoScene(c).ground_truth(500_000)
    disp = c.focal_baseline / depth
    assert np.nanmax(disp) <= c.focal_baseline / c.min_depth_m * 1.001
    assert np.nanmin(disp) >= c.focal_baseline / c.background_depth_m[1] * 0.999


def test_bad_new_knobs_are_refused():
    with pytest.raises(ValueError, match="scene_types"):
        SynthConfig(scene_types=("garden",))
    with pytest.raises(ValueError, match="textures"):
        SynthConfig(textures="mine")
    with pytest.raises(ValueError, match="hot_pixel"):
        SynthConfig(hot_pixel_fraction=2.0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="photo_augment"):
            SynthConfig(photo_augment=bad)


def test_depth_layout_knobs_of_the_dsec_profile():
    """``wall_depth_factor``: floors meet the image's bottom row that many times ``min_depth_m`` away;
    ``object_depth_power``: a larger power puts the objects farther (the DSEC profile sets both; the
    defaults are the MVSEC world's)."""
    base = dict(seed=3, motion=0.0, **SMALL)
    for factor in ((2.0, 2.0), (5.0, 6.0)):
        scene = StereoScene(SynthConfig(scene_types=("corridor",), wall_depth_factor=factor, **base))
        # floor and ceiling: y = h, normal (0, -1, 0), c = -h; the floor is below (y down), the ceiling above
        heights = sorted(-s.c for s in scene.surfaces if isinstance(s, Plane) and s.n[1] < -0.99)
        assert len(heights) == 2 and heights[0] < 0 < heights[1]
        for h in (-heights[0], heights[1]):  # seen at the top and bottom rows at h f / cy
            assert factor[0] - 1e-9 <= h * scene.f / scene.cy / scene.config.min_depth_m <= factor[1] + 1e-9
    disparity = {}
    for power in (1.0, 6.0):
        scene = StereoScene(SynthConfig(scene_types=("clutter",), object_depth_power=power, **base))
        C, R = scene.camera.pose(0.0)
        z = [(R.T @ (s.center(0.0) - C))[2] for s in scene.surfaces if not isinstance(s, Plane)]
        disparity[power] = np.median(scene.fb / np.array(z[1:]))  # the first object is moved to min_depth_m
    assert disparity[6.0] < 0.6 * disparity[1.0]
    with pytest.raises(ValueError, match="wall_depth_factor"):
        SynthConfig(wall_depth_factor=(0.5, 2.0))
    with pytest.raises(ValueError, match="object_depth_power"):
        SynthConfig(object_depth_power=0.0)
