"""A deployment install: the runtime's commands run with only the base dependencies.

``pyproject.toml``'s base dependencies name no torch, scikit-learn, scikit-image, matplotlib, scipy,
onnx, networkx or nir; these tests run ``python -m runtime.stream``, ``python -m runtime.serve`` (and
``python -m runtime.calibrate``, which needs the ``[int8]`` extra: onnx) in a subprocess where those
modules cannot be imported, and check that what the synthetic world and the PNGs need ships with
the package (the photographs, the colour map) equals what the libraries give.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tomllib
from helpers import ROOT, SMALL

from compiler.build import main as build_main

NOT_IN_A_DEPLOYMENT = ("torch", "sklearn", "skimage", "matplotlib", "scipy", "onnx", "networkx", "nir")

# python -c BLOCKED MODULE ARGS...: runs ``python -m MODULE ARGS...`` with the blocked modules unimportable
BLOCKED = """
import importlib.abc, runpy, sys
BLOCKED = set(sys.argv.pop(1).split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this deployment host (blocked by the test)")
        return None
sys.meta_path.insert(0, Blocker())
module = sys.argv.pop(1)
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, f"imported {loaded}"
"""


def _run_blocked(module: str, *args: str, allow: tuple[str, ...] = (), path=None) -> subprocess.CompletedProcess:
    blocked = ",".join(m for m in NOT_IN_A_DEPLOYMENT if m not in allow)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, path) if p is not None)}
    return subprocess.run([sys.executable, "-c", BLOCKED, blocked, module, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The small stereo genotype, exported by the compiler."""
    path = tmp_path_factory.mktemp("deploy") / "stereo_small.onnx"
    sets = [f"--set={k}={v}" for k, v in SMALL["stereo_small"].items()]
    assert build_main([str(ROOT / "genotypes/stereo_small.yaml"), *sets, "-o", str(path), "--quiet"]) == 0
    return path


def test_the_base_install_names_none_of_them():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split("=")[0].split("<")[0].split(">")[0].split("[")[0].strip().lower() for d in meta["dependencies"]}
    assert not names & {"torch", "scikit-learn", "scikit-image", "matplotlib", "scipy", "onnx", "networkx", "nir"}
    assert {"compile", "train", "int8", "dev", "test"} <= set(meta["optional-dependencies"])


def test_no_runtime_module_imports_them(tmp_path):
    """Every module of runtime/ (core, data, deployment) imports without them (onnx: only the int8 passes)."""
    script = tmp_path / "import_all.py"
    script.write_text("import importlib, pkgutil, runtime\n"
                      "for m in pkgutil.walk_packages(runtime.__path__, 'runtime.'):\n"
                      "    if not m.name.endswith('__main__'):\n"
                      "        importlib.import_module(m.name)\n")
    proc = _run_blocked("import_all", allow=("onnx",), path=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_stream_and_serve_run_without_them(model, tmp_path):
    report = tmp_path / "stream.json"
    proc = _run_blocked("runtime.stream", "--onnx", str(model), "--max-steps", "2", "--device", "cpu",
                        "--report", str(report), "--save-dir", str(tmp_path / "maps"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["steps"]["counted"] == 2 and "firing rate" in proc.stdout
    assert len(list((tmp_path / "maps").glob("*.png"))) == 2
    report = tmp_path / "serve.json"
    proc = _run_blocked("runtime.serve", "--onnx", str(model), "--streams", "2", "--max-steps", "2", "--quiet",
                        "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["aggregate"]["steps"] == 4


def test_a_deployment_host_quantises_with_the_int8_extra(model, tmp_path):
    out = tmp_path / "int8.onnx"
    proc = _run_blocked("runtime.calibrate", str(model), "-o", str(out), "--calib-windows", "2", allow=("onnx",))
    assert proc.returncode == 0, proc.stderr
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["snn.quantization"])["calibration"]["windows"] == 2
    proc = _run_blocked("runtime.calibrate", str(tmp_path / "missing.onnx"), "-o", str(out), allow=("onnx",))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_every_shipped_photograph_is_in_a_set_and_each_set_draws_it_in_the_range_of_its_type():
    """photos/ holds the photographs the texture sets name and no others; 8-bit and 16-bit files alike reach the
    texture pyramid as gray in [0, 1] with their contrast (``textures._gray`` scales by the file's type)."""
    from PIL import Image

    from runtime.data.synth.textures import (
        HELDOUT_PHOTOS,
        MORE_TRAIN_PHOTOS,
        MOST_TRAIN_PHOTOS,
        PHOTOS,
        TRAIN_PHOTOS,
        photo_pyramid,
    )

    every = TRAIN_PHOTOS + HELDOUT_PHOTOS + MORE_TRAIN_PHOTOS + MOST_TRAIN_PHOTOS
    assert len(set(every)) == len(every)
    assert sorted(p.stem for p in PHOTOS.glob("*.png")) == sorted(every)
    with Image.open(PHOTOS / "jacksboro_fault_dem.png") as image:
        dem = np.asarray(image)
    assert dem.dtype == np.uint16 and dem.shape == (344, 403) and (dem.min(), dem.max()) == (236, 1076)
    for name in MOST_TRAIN_PHOTOS + ("camera",):
        top = photo_pyramid(name)[0]
        assert top.dtype == np.float32 and 0.0 <= top.min() and top.max() <= 1.0 and top.std() > 0.1, name


def test_the_matplotlib_photographs_are_its_sample_data():
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    from runtime.data.synth.textures import PHOTOS

    with Image.open(PHOTOS / "jacksboro_fault_dem.png") as image:
        dem = np.asarray(image)
    assert np.array_equal(dem.astype(np.int64), cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"])
    with Image.open(PHOTOS / "grace_hopper.png") as image, Image.open(cbook.get_sample_data("grace_hopper.jpg")) as jpg:
        assert np.array_equal(np.asarray(image), np.asarray(jpg))


def test_the_shipped_photographs_are_scikit_images():
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from runtime.data.synth.textures import HELDOUT_PHOTOS, MORE_TRAIN_PHOTOS, PHOTOS, TRAIN_PHOTOS

    for name in TRAIN_PHOTOS + HELDOUT_PHOTOS + MORE_TRAIN_PHOTOS:
        with Image.open(PHOTOS / f"{name}.png") as image:
            assert np.array_equal(np.asarray(image), getattr(skimage_data, name)()), name


def test_the_shipped_colour_map_is_matplotlibs(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    mpl_image = pytest.importorskip("matplotlib.image")
    from PIL import Image

    from runtime.report import save_step

    rng = np.random.default_rng(1)
    disparity = (rng.random((30, 40)) * 40).astype(np.float32)
    gt = np.where(rng.random(disparity.shape) < 0.2, np.nan, disparity)
    left = rng.integers(-2, 3, (5, 30, 40)).astype(np.float32)
    png = save_step(tmp_path, 0, disparity, max_disparity=36.0, gt=gt, left=left)[1]
    # as the report drew it with matplotlib: colormaps["magma"] and imsave
    from runtime.report import events_image

    def colour(v):
        rgb = matplotlib.colormaps["magma"](np.clip(np.nan_to_num(v, nan=0.0) / 36.0, 0.0, 1.0))[..., :3]
        rgb[~np.isfinite(v)] = 0.0
        return rgb

    gap = np.ones((30, 4, 3), np.float32)
    picture = np.concatenate([events_image(left), gap, colour(disparity), gap, colour(gt)], axis=1)
    mpl_image.imsave(tmp_path / "want.png", np.clip(picture, 0.0, 1.0), format="png")
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(tmp_path / "want.png")))
