"""Messages name the cause, in one line, and a suggestion is something the tool accepts (issue 23,
class 6): a genotype name with letters outside ASCII was told to rename itself to itself (``e.g. nö``);
a file's NaN or negative fB ended as "no valid ground-truth pixel", never naming fB."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_data_mvsec import write_mvsec_like

from compiler.errors import GenotypeError
from compiler.reader import NAME_RE, RESERVED_NAMES, Ctx, check_name
from runtime.data.events import DataError
from runtime.data.sources import open_recording


@pytest.mark.parametrize("name", ["nö", "Zürich", "1st", "a.b", "日本", "x" * 70 + "é", "-", "keys", "training"])
def test_the_suggested_name_is_accepted(name):
    with pytest.raises(GenotypeError) as info:
        check_name(Ctx("g.yaml", {}, {}), "cells[0].name", name, "cell")
    suggestion = str(info.value).rsplit("e.g. ", 1)[1].rstrip(")")
    assert NAME_RE.fullmatch(suggestion) and suggestion not in RESERVED_NAMES, (name, str(info.value))
    assert check_name(Ctx("g.yaml", {}, {}), "cells[0].name", suggestion, "cell") == suggestion


@pytest.mark.parametrize("fb", [np.nan, -3.0, 0.0, np.inf])
def test_a_files_bad_fb_is_refused_naming_fb(tmp_path, fb):
    path = write_mvsec_like(str(tmp_path), maps=True)
    with h5py.File(path, "a") as f:
        f.attrs["fb"] = fb
    with pytest.raises(DataError, match=r"'fb' attribute \(focal length x baseline\).*--fb"):
        open_recording(path)
    open_recording(path, fb=20.0).close()  # --fb given: the file's is not used


@pytest.mark.parametrize("line, words", [("1²0, 1", "two non-negative integers"),
                                         ("12345678901234567890123, 1", "18 digits"),
                                         ("100, ٣", "two non-negative integers")])
def test_odd_numbers_in_a_timestamps_csv_are_one_error(tmp_path, line, words):
    from runtime.data.options import OptionError
    from runtime.stream.submission import read_timestamps_csv

    csv = tmp_path / "t.csv"
    csv.write_text(f"# timestamp_us, file_index\n{line}\n", encoding="utf-8")
    with pytest.raises(OptionError, match=words):
        read_timestamps_csv(csv)


def test_calibration_windows_are_limited_by_memory(tmp_path, capsys):
    """--calib-windows 1000000000 asked for 37 GB; now refused in one line before a window is read."""
    from contract_models import stereo_model

    from runtime.calibrate import main as calibrate_main

    model = tmp_path / "m.onnx"
    stereo_model(model)
    assert calibrate_main([str(model), "-o", str(tmp_path / "q.onnx"), "--calib-windows", "1000000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --calib-windows 1000000000: ") and "at most" in err and err.count("\n") == 1, err
    assert not (tmp_path / "q.onnx").exists()
