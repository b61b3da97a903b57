"""Full disks (issue 23, class 5): every writer ends in one line, the old files intact and no temporary
file left. ``runtime.synth`` on a full disk used to crash in HDF5 (a segfault, its temporary files left
to fill the disk). Where this process may mount a small tmpfs (root), the disk is really full; else the
free space the writer sees is made small."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

import runtime.data.synth.writer as writer
from runtime.synth.__main__ import main as synth_main

ARGS = ["--seconds", "0.3", "--height", "32", "--width", "48", "--quiet"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_synth_on_a_really_full_disk_is_one_line_and_leaves_nothing(tiny_disk):
    (tiny_disk / "synth_seed0_data.hdf5").write_bytes(b"old data")
    proc = subprocess.run([sys.executable, "-m", "runtime.synth", "-o", str(tiny_disk), *ARGS], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "No space" in proc.stderr
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["synth_seed0_data.hdf5"]
    assert (tiny_disk / "synth_seed0_data.hdf5").read_bytes() == b"old data"


def test_synth_stops_before_the_disk_is_full(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert synth_main(["-o", str(out), *ARGS]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = os.statvfs

    class Full:
        def __init__(self, st):
            self.f_frsize, self.f_bavail = st.f_frsize, 10

    monkeypatch.setattr(writer.os, "statvfs", lambda path: Full(real(path)))
    assert synth_main(["-o", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left" in err and str(out) in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temporary file
    assert Path(out).is_dir()


@pytest.mark.parametrize("where", ["file", "proc", "lock_is_a_folder"])
def test_odd_run_folders_are_one_line(tmp_path, capsys, where):
    from tests.test_resume_options import FIRST
    from training.train import main

    out = {"file": tmp_path / "afile", "proc": Path("/proc/w23-no-such-run"),
           "lock_is_a_folder": tmp_path / "run"}[where]
    if where == "file":
        out.write_text("mine")
    if where == "lock_is_a_folder":
        (out / ".run.lock").mkdir(parents=True)
    assert main([*FIRST, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(out) in err, err
    if where == "file":
        assert out.read_text() == "mine"


@pytest.mark.parametrize("where", ["file", "proc"])
def test_odd_synth_folders_are_one_line(tmp_path, capsys, where):
    out = tmp_path / "afile" if where == "file" else Path("/proc/w23-no-such-folder")
    if where == "file":
        out.write_text("mine")
    assert synth_main(["-o", str(out), *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: -o {out}: ") and "\n" not in err and "Errno" not in err, err


def test_synth_stops_when_the_disk_fills_during_the_run(tmp_path, monkeypatch, capsys):
    """Another process fills the disk while the recording is written: the check before each chunk sees it
    (not only the one before writing starts), so the run ends in one line, the old files as they were and
    no temporary file left (h5py's own ENOSPC mid-write crashed the process)."""
    out, args = tmp_path / "out", [*ARGS[2:], "--seconds", "1.6"]  # 4 chunks of 0.5 s simulated
    assert synth_main(["-o", str(out), *args]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = os.statvfs, []

    class Filling:  # plenty of room for the first two chunks, then the other writer has taken it all
        def __init__(self, st):
            calls.append(1)
            self.f_frsize, self.f_bavail = st.f_frsize, (st.f_bavail if len(calls) <= 2 else 10)

    monkeypatch.setattr(writer.os, "statvfs", lambda path: Filling(real(path)))
    assert synth_main(["-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert len(calls) == 3, "the free space is checked again before every chunk"
    assert err.startswith("error: ") and err.count("\n") == 1 and "No space left" in err and str(out) in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temporary file
