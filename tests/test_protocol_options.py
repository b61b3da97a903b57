"""The published protocols offered as options, on small files of the real layouts: SE-CFF's DSEC
held-out list (``--dsec-split``), fB from MVSEC's camchain file, and the rectification rounding."""

from __future__ import annotations

import pytest

from tests.helpers import GENOTYPES, SMALL
from tests.test_data_dsec import T_OFFSET, identity_map, write_sequence
from training.dsec_data import SECFF_TRAIN, SECFF_VALIDATION, dsec_split
from training.errors import TrainError


@pytest.fixture(scope="module")
def tiny_dsec():
    """One short synthetic recording as DSEC writes it (events, rectify maps, 10 Hz disparity PNGs)."""
    from runtime.data.sources import open_recording

    mem = open_recording(seed=5, seconds=0.3, height=24, width=32)
    keep = list(range(1, len(mem.gt_timestamps_us), 2))
    return mem.data.events, [mem.disparity(k) for k in keep], mem.gt_timestamps_us[keep] + T_OFFSET


def write_dsec_root(root, names, tiny):
    events, disparities, ts = tiny
    for name in names:
        write_sequence(str(root / name), events, 24, 32, maps=identity_map(24, 32), disparities=disparities,
                       disp_ts=ts)
    return root


def test_secff_lists_are_its_split_of_dsec_train():
    # yonseivnl/se-cff src/components/datasets/dsec/constant.py: 31 training + 10 validation = the
    # 41 sequences of DSEC's train/ ('trainval'), disjoint
    assert len(SECFF_TRAIN) == 31 and len(SECFF_VALIDATION) == 10 and not set(SECFF_TRAIN) & set(SECFF_VALIDATION)
    assert SECFF_VALIDATION[:3] == ("interlaken_00_f", "interlaken_00_g", "thun_00_a")
    assert SECFF_VALIDATION[-1] == "zurich_city_10_b" and "zurich_city_09_d" in SECFF_VALIDATION
    assert list(SECFF_TRAIN) == sorted(SECFF_TRAIN) and list(SECFF_VALIDATION) == sorted(SECFF_VALIDATION)


def test_dsec_split_by_name():
    names = sorted(["zurich_city_11_c", "extra_seq", *SECFF_VALIDATION, "interlaken_00_c"])
    train, val, unused = dsec_split(names, "se-cff")
    assert [names[i] for i in val] == list(SECFF_VALIDATION)
    assert [names[i] for i in train] == ["interlaken_00_c", "zurich_city_11_c"]
    assert [names[i] for i in unused] == ["extra_seq"]
    # the default is unchanged: the last 20 % by name (at least one), a single sequence is both
    assert dsec_split(["a", "b", "c", "d", "e"]) == ([0, 1, 2, 3], [4], [])
    assert dsec_split(["a"]) == ([0], [0], [])
    with pytest.raises(TrainError, match="2 are missing: thun_00_a, zurich_city_10_b"):
        dsec_split([n for n in names if n not in ("thun_00_a", "zurich_city_10_b")], "se-cff", where="D")
    with pytest.raises(TrainError, match="none is there"):
        dsec_split(list(SECFF_VALIDATION), "se-cff")
    with pytest.raises(TrainError, match="thun_00_a appear more than once"):
        dsec_split(sorted([*names, "thun_00_a"]), "se-cff")
    with pytest.raises(TrainError, match="unknown DSEC split 'random'"):
        dsec_split(names, "random")


def test_dsec_stereo_holds_out_secff_validation(tmp_path, tiny_dsec):
    from training.data import RealOptions
    from training.dsec_data import dsec_stereo

    root = write_dsec_root(tmp_path, [*SECFF_VALIDATION, "zurich_city_00_a", "zurich_city_12_a"], tiny_dsec)
    opts = dict(encoding="sbt", bins=5, window_us=50_000, length=2, stride=1, burn_in=1)
    data = dsec_stereo(root, real=RealOptions(dsec_split="se-cff"), **opts)
    assert [s.name for s in data.train] == ["zurich_city_00_a"]
    assert [s.name for s in data.val] == list(SECFF_VALIDATION) and len(data.val_segments) == 10
    assert "held-out (SE-CFF's validation list)" in data.description
    assert "not used (in neither SE-CFF list) ['zurich_city_12_a']" in data.description
    last20 = dsec_stereo(root, **opts)  # the default: the last 20 % of the 12 by name
    assert [s.name for s in last20.val] == ["zurich_city_10_b", "zurich_city_12_a"]


def test_cli_refuses_a_missing_validation_sequence(tmp_path, tiny_dsec, capsys):
    from training.train import main

    root = write_dsec_root(tmp_path / "dsec", [*SECFF_VALIDATION[1:], "zurich_city_00_a"], tiny_dsec)
    small = [a for k, v in SMALL["stereo_small"].items() for a in ("--set", f"{k}={v}")]
    base = [str(GENOTYPES / "stereo_small.yaml"), *small, "--out", str(tmp_path / "r"), "--epochs", "1"]
    rc = main([*base, "--data", str(root), "--dsec-split", "se-cff"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("error: ")
    assert "--dsec-split se-cff holds out 10 sequences and 1 are missing: interlaken_00_f" in err
    for option in (["--dsec-split", "se-cff"], ["--rectify-rounding", "floor"]):
        rc = main([*base, "--data", "synthetic", *option])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "apply to MVSEC and DSEC data" in err


def test_dsec_split_is_refused_for_mvsec_and_reaches_search(tmp_path):
    from tests.test_data_mvsec import write_mvsec_like
    from training.data import RealOptions
    from training.datasets import stereo_data
    from training.search.bilevel import SearchConfig
    from training.search.cli import parser
    from training.search.snasnet import _real

    write_mvsec_like(tmp_path, maps=True)
    g = type("G", (), {"input": type("I", (), {"encoding": "sbt", "bins": 5, "window_ms": 50, "height": 12,
                                                "width": 16})})
    with pytest.raises(TrainError, match="--dsec-split applies to DSEC data"):
        stereo_data(str(tmp_path), g, length=2, stride=1, burn_in=0, synthetic=None,
                    real=RealOptions(dsec_split="se-cff"))
    args = parser().parse_args(["snasnet", "g.yaml", "--cell", "c", "--out", "o", "--dsec-split", "se-cff"])
    assert _real(args) == RealOptions(dsec_split="se-cff")
    args = parser().parse_args(["spikedhs", "s.yaml", "--out", "o", "--dsec-split", "se-cff"])
    fields = SearchConfig.__dataclass_fields__
    sc = SearchConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    assert sc.dsec_split == "se-cff"


# ----------------------------------------------------------------- fB from MVSEC's camchain file
def write_camchain(folder, family="indoor_flying", fb=19.941772, fx=199.6530123165822, text=None):
    """MVSEC's ``camchain-imucam-<family>.yaml`` (kalibr layout, rectified projection matrices as
    nested 3x4 lists, ``cam1``'s ``P[0][3] = -f_x B``), reduced to what is read."""
    if text is None:
        text = "\n".join([
            "cam0:", "  camera_model: pinhole", "  projection_matrix:", f"  - [{fx}, 0.0, 177.0, 0.0]",
            f"  - [0.0, {fx}, 126.0, 0.0]", "  - [0.0, 0.0, 1.0, 0.0]", "  resolution: [346, 260]",
            "cam1:", "  camera_model: pinhole", "  projection_matrix:", f"  - [{fx}, 0.0, 177.0, {-fb}]",
            f"  - [0.0, {fx}, 126.0, 0.0]", "  - [0.0, 0.0, 1.0, 0.0]", "  resolution: [346, 260]", ""])
    path = folder / f"camchain-imucam-{family}.yaml"
    path.write_text(text)
    return path


def test_camchain_fb_is_compared_with_the_family_constant(tmp_path):
    from runtime.data.mvsec import INDOOR_FLYING_FB, fb_from_camchain
    from runtime.data.sources import open_recording
    from tests.test_data_mvsec import write_maps, write_mvsec_like

    calib = write_maps(tmp_path / "calib")
    path = write_mvsec_like(tmp_path)
    with open_recording(path, calib=calib) as rec:  # no camchain file: nothing compared
        assert rec.fb == INDOOR_FLYING_FB and rec.fb_check is None
    yaml_path = write_camchain(calib)
    assert fb_from_camchain(str(yaml_path)) == pytest.approx(19.941772)
    with open_recording(path, calib=calib) as rec:  # DDES's constant is |P[0][3]| of this file
        assert rec.fb == INDOOR_FLYING_FB and rec.fb_source.startswith("MVSEC indoor_flying")
        assert rec.fb_check == {"file": str(yaml_path), "fb": pytest.approx(19.941772),
                                "difference_pct": pytest.approx(0.0, abs=1e-9), "warning": None}
        assert "camchain-imucam-indoor_flying.yaml gives 19.9418 (+0.00 %)" in rec.fb_source
    write_camchain(calib, fb=21.0)  # 5 % off: the constant stays, with a warning
    with open_recording(path, calib=calib) as rec:
        assert rec.fb == INDOOR_FLYING_FB and rec.fb_check["difference_pct"] == pytest.approx(-5.0392, abs=1e-3)
        assert rec.fb_check["warning"] == (f"{yaml_path} gives fB 21 px*m, -5.04 % from the 19.9418 in use "
                                           f"(MVSEC indoor_flying (DDES dataset_constants.py)); pass --fb 21 to "
                                           "use the file's")
    write_camchain(calib, fb=20.0)  # 0.29 % off: within 0.5 %, no warning
    with open_recording(path, calib=calib) as rec:
        assert rec.fb_check["warning"] is None
    write_camchain(calib, fb=21.0)
    with open_recording(path, calib=calib, fb=21.0) as rec:  # --fb: the user's choice, compared silently
        assert rec.fb == 21.0 and rec.fb_check["difference_pct"] == 0.0 and rec.fb_check["warning"] is None
    with open_recording(path, calib=calib, rectify=False) as rec:  # --calib still names the folder
        assert rec.fb_check["fb"] == pytest.approx(21.0)


def test_camchain_fb_without_a_family_constant_and_a_bad_file(tmp_path):
    from runtime.data.mvsec import INDOOR_FLYING_FB
    from runtime.data.sources import open_recording
    from tests.test_data_mvsec import write_maps, write_mvsec_like
    from training.data import RealOptions, open_real

    calib = write_maps(tmp_path / "calib")
    yaml_path = write_camchain(calib, fb=18.5)
    path = write_mvsec_like(tmp_path, name="flight7")  # no family in the name: the maps' family's file
    with open_recording(path, calib=calib) as rec:
        assert rec.fb == pytest.approx(18.5) and rec.fb_source == f"{yaml_path} (cam1.projection_matrix)"
        assert rec.fb_check["warning"] is None
    write_camchain(calib, text="cam1:\n  projection_matrix: [[1, 2], [3, 4]]\n")
    path = write_mvsec_like(tmp_path)
    with open_recording(path, calib=calib) as rec:  # unreadable: said, and the constant stays
        assert rec.fb == INDOOR_FLYING_FB and rec.fb_check["fb"] is None
        assert rec.fb_check["warning"] == (f"{yaml_path}: 'cam1.projection_matrix' is not a 3x4 matrix with "
                                           "P[0][3] != 0: fB not compared")
    write_camchain(calib, fb=21.0)
    notes = []
    with open_real(path, RealOptions(), str(calib), notes), open_real(path, RealOptions(), str(calib), notes):
        assert len(notes) == 1 and "gives fB 21 px*m" in notes[0]  # training says it once in its data line


def test_stream_reports_the_camchain_check(tmp_path, capsys):
    import json

    from contract_models import stereo_model

    from runtime.stream import main
    from tests.test_data_mvsec import H, W, write_maps, write_mvsec_like

    model = tmp_path / "tiny.onnx"
    stereo_model(model, height=H, width=W)
    calib = write_maps(tmp_path / "calib")
    yaml_path = write_camchain(calib, fb=21.0)
    path = write_mvsec_like(tmp_path)
    report = tmp_path / "report.json"
    rc = main(["--onnx", str(model), "--events", str(path), "--calib", str(calib), "--device", "cpu",
               "--report", str(report)])
    captured = capsys.readouterr()
    src = json.loads(report.read_text())["source"]
    assert rc == 0 and src["fb_check"]["file"] == str(yaml_path) and src["fb_check"]["fb"] == pytest.approx(21.0)
    assert "camchain-imucam-indoor_flying.yaml gives 21 (-5.04 %)" in src["fb_source"]
    warned = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert warned == [f"warning: --events {path}: {src['fb_check']['warning']}"]
    assert f"warning: {src['fb_check']['warning']}" in captured.out  # and in the summary


# ----------------------------------------------------------------- rectification rounding
def test_round_and_floor_put_events_in_different_pixels(tmp_path):
    import numpy as np

    from runtime.data.events import make_events
    from runtime.data.sources import open_recording
    from tests.test_data_mvsec import T0, W, write_maps, write_mvsec_like

    calib = write_maps(tmp_path / "calib", dx=0.6, dy=-0.4)  # x_rect = x + 0.6, y_rect = y - 0.4
    ev = np.array([[3, 5, T0 + 0.01, 1], [W - 1, 5, T0 + 0.02, -1], [4, 0, T0 + 0.03, 1]], dtype=np.float64)
    path = write_mvsec_like(tmp_path, events=ev, depth=False)
    t0, t1 = int(T0 * 1e6), int(T0 * 1e6) + 100_000
    got = {}
    for rounding in ("round", "floor"):
        with open_recording(path, calib=calib, rectify_rounding=rounding) as rec:
            e = rec.events("left", t0, t1)
            got[rounding] = (e["x"].tolist(), e["y"].tolist(), rec.stats["outside_after_rectify"])
            assert rec.rectify_rounding == rounding
    # (3, 5) -> (3.6, 4.6); (15, 5) -> (15.6, 4.6); (4, 0) -> (4.6, -0.4)
    assert got["round"] == ([4, 5], [5, 0], 1)  # nearest: 15.6 -> 16 leaves the 16-wide image
    assert got["floor"] == ([3, 15], [4, 4], 1)  # below: -0.4 -> -1 leaves it
    # DSEC's rectify_map.h5, the same rule
    dsec = tmp_path / "zurich_city_00_a"
    ev = make_events([3, 11], [4, 4], [100, 2500], [1, -1])
    write_sequence(dsec, {"left": ev, "right": ev}, 8, 12, maps=identity_map(8, 12, dx=0.6, dy=-0.4))
    for rounding, x, y in (("round", [4], [4]), ("floor", [3, 11], [3, 3])):
        with open_recording(dsec, rectify_rounding=rounding) as rec:
            e = rec.events("left", T_OFFSET, T_OFFSET + 3000)
            assert (e["x"].tolist(), e["y"].tolist(), rec.rectify_rounding) == (x, y, rounding)


def test_rounding_needs_maps_and_is_checked(tmp_path):
    import numpy as np

    from runtime.data.events import DataError
    from runtime.data.recording import rectifier
    from runtime.data.sources import open_recording
    from tests.test_data_mvsec import write_mvsec_like

    path = write_mvsec_like(tmp_path)
    with pytest.raises(DataError, match="--rectify-rounding floor applies to rectification maps and none are applied "
                                        r"here \(none: events used as stored"):
        open_recording(path, rectify=False, rectify_rounding="floor")
    with open_recording(path, rectify=False) as rec:
        assert rec.rectify_rounding is None
    with pytest.raises(TypeError, match="apply to recordings read from files"):
        open_recording(None, rectify_rounding="floor")
    with pytest.raises(ValueError, match="unknown rectification rounding 'trunc'"):
        open_recording(path, rectify=False, rectify_rounding="trunc")
    with pytest.raises(ValueError, match="unknown rectification rounding"):
        rectifier(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), 2, 2, rounding="ceil")


def test_stream_serve_and_training_take_the_rounding(tmp_path, capsys):
    import json

    from contract_models import stereo_model

    from runtime.serve import main as serve_main
    from runtime.stream import main
    from tests.test_data_mvsec import H, W, write_maps, write_mvsec_like
    from training.data import RealOptions, open_real
    from training.search.cli import parser
    from training.search.snasnet import _real

    model = tmp_path / "tiny.onnx"
    stereo_model(model, height=H, width=W)
    calib = write_maps(tmp_path / "calib", dx=0.6)
    path = write_mvsec_like(tmp_path)
    report = tmp_path / "report.json"
    base = ["--onnx", str(model), "--events", str(path), "--calib", str(calib), "--device", "cpu", "--report",
            str(report)]
    for argv, want in (([], "round"), (["--rectify-rounding", "floor"], "floor")):
        assert main([*base, *argv]) == 0
        assert json.loads(report.read_text())["source"]["rectify_rounding"] == want
    out = capsys.readouterr().out
    assert f"rectification: maps {calib / 'indoor_flying'}_{{left,right}}_{{x,y}}_map.txt (to the nearest pixel)" in out
    assert "_map.txt (rounded down: floor)" in out
    for argv, message in ((["--onnx", str(model), "--rectify-rounding", "floor"],
                           "error: --rectify-rounding: applies to recordings read from files (--events)"),
                          ([*base[:4], "--no-rectify", "--rectify-rounding", "floor"],
                           "--rectify-rounding floor applies to rectification maps and none are applied here")):
        assert main([*argv, "--device", "cpu", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err
    assert serve_main([*base[:6], "--rectify-rounding", "floor", "--max-steps", "2", "--quiet", "--report",
                       str(report)]) == 0
    assert json.loads(report.read_text())["streams"]["cam0"]["source"]["rectify_rounding"] == "floor"
    with open_real(path, RealOptions(rectify_rounding="floor"), str(calib)) as rec:  # training reads as it says
        assert rec.rectify_rounding == "floor"
    assert "rectification from C (floor)" in RealOptions(calib="C", rectify_rounding="floor").describe()
    args = parser().parse_args(["snasnet", "g.yaml", "--cell", "c", "--out", "o", "--rectify-rounding", "floor"])
    assert _real(args) == RealOptions(rectify_rounding="floor")
