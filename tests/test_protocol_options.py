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
    from runtime.sources import open_recording

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
    rc = main([*base, "--data", "synthetic", "--dsec-split", "se-cff"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "apply to MVSEC and DSEC data" in err


def test_dsec_split_is_refused_for_mvsec_and_reaches_search(tmp_path):
    from tests.test_data_mvsec import write_mvsec_like
    from training.data import RealOptions, stereo_data
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
    from runtime.mvsec import INDOOR_FLYING_FB, fb_from_camchain
    from runtime.sources import open_recording
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
    from runtime.mvsec import INDOOR_FLYING_FB
    from runtime.sources import open_recording
    from tests.test_data_mvsec import write_maps, write_mvsec_like
    from training.data import RealOptions, _open

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
    with _open(path, RealOptions(), str(calib), notes), _open(path, RealOptions(), str(calib), notes):
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
