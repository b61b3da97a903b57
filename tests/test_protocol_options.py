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
