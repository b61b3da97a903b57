"""A full disk (a writer patched to fail with ENOSPC) or a crash while a file is written never leaves a
partial file or replaces a good one (issue 12, docs/reliability.md: every file is replaced atomically)."""

from __future__ import annotations

import errno

import h5py
import numpy as np
import pytest
from contract_models import stereo_model

import runtime.core.atomic
from runtime.core.atomic import write_text_atomic
from runtime.stream import main as stream_main


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


class Crash(BaseException):
    pass


def test_atomic_write_keeps_the_old_file_on_any_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    write_text_atomic(path, "old")
    for error in (OSError(errno.ENOSPC, "No space left on device"), Crash()):
        def failing(f, error=error):
            f.write(b"half of the new")
            raise error

        with pytest.raises(type(error)):
            runtime.core.atomic.write_atomic(path, failing)
        assert path.read_text() == "old" and leftovers(tmp_path) == []
    monkeypatch.setattr(runtime.core.atomic, "commit", full_disk)  # the rename itself fails
    with pytest.raises(OSError):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and leftovers(tmp_path) == []
    with pytest.raises(IsADirectoryError):
        write_text_atomic(tmp_path, "a folder is never replaced")


@pytest.fixture
def model(tmp_path):
    stereo_model(tmp_path / "m.onnx", height=8, width=12)
    return tmp_path / "m.onnx"


@pytest.mark.parametrize("option, name", [("--save-state", "s.npz"), ("--report", "r.json")])
def test_stream_outputs_on_a_full_disk(model, tmp_path, monkeypatch, capsys, option, name):
    target = tmp_path / name
    args = ["--onnx", str(model), "--quiet", "--device", "cpu", "--max-steps", "2", option, str(target)]
    assert stream_main(args) == 0
    before = target.read_bytes()
    original = np.savez if option == "--save-state" else None

    def partial_savez(f, **arrays):  # numpy writes half of the archive, then the disk is full
        original(f, **arrays)
        f.truncate(f.tell() // 2)
        full_disk()

    if option == "--save-state":
        monkeypatch.setattr(np, "savez", partial_savez)
    else:
        monkeypatch.setattr(runtime.core.atomic, "commit", full_disk)
    capsys.readouterr()
    assert stream_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {option} {target}: cannot write it (No space left") and "\n" not in err, err
    assert target.read_bytes() == before and leftovers(tmp_path) == []
    monkeypatch.undo()
    if option == "--save-state":  # the state file is still the good one
        assert stream_main(["--onnx", str(model), "--quiet", "--max-steps", "1", "--load-state", str(target)]) == 0


@pytest.mark.parametrize("failure", ["full disk", "crash"])
def test_synth_never_replaces_a_recording_with_a_partial_one(tmp_path, monkeypatch, capsys, failure):
    import runtime.data.synth.writer as writer
    from runtime.data.synth import SynthConfig, write_mvsec
    from runtime.synth.__main__ import main as synth_main

    data, gt = write_mvsec(SynthConfig(seconds=0.3, height=12, width=16, seed=0), tmp_path, "rec")
    before = {p: open(p, "rb").read() for p in (data, gt)}
    calls = {"n": 0}
    append = writer._append

    def failing_append(dset, values):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError(errno.ENOSPC, "No space left on device") if failure == "full disk" else Crash()
        append(dset, values)

    monkeypatch.setattr(writer, "_append", failing_append)
    args = ["-o", str(tmp_path), "--name", "rec", "--seconds", "0.3", "--height", "12", "--width", "16",
            "--seed", "1", "--quiet"]
    if failure == "full disk":
        assert synth_main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "No space left" in err and "\n" not in err
    else:
        with pytest.raises(Crash):
            synth_main(args)
    assert {p: open(p, "rb").read() for p in (data, gt)} == before and leftovers(tmp_path) == []
    with h5py.File(data) as f:
        assert f["davis/left/events"].shape[0] > 0


def test_checkpoint_strip_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import torch

    from training.checkpoint import main as checkpoint_main

    src = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.ones(2)}, "genotype": "", "config": {}}, src)
    (tmp_path / "out.pt").write_bytes(b"the old copy")
    monkeypatch.setattr(runtime.core.atomic, "commit", full_disk)
    assert checkpoint_main(["strip", str(src), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'out.pt'}: cannot write it (No space left") and "\n" not in err
    assert (tmp_path / "out.pt").read_bytes() == b"the old copy" and leftovers(tmp_path) == []


def test_atomic_files_get_the_permissions_a_new_file_would(tmp_path):
    """mkstemp's private 0600 must not leak into the files the project writes (an ONNX model for a
    server running as another user, a recording shared with a group); a replaced file keeps its mode."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.txt"
        write_text_atomic(fresh, "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        os.umask(0o027)
        other = tmp_path / "group.txt"
        write_text_atomic(other, "x")
        assert stat.S_IMODE(other.stat().st_mode) == 0o640
        os.chmod(fresh, 0o600)
        write_text_atomic(fresh, "y")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.read_text() == "y"
    finally:
        os.umask(old)


def test_exported_onnx_and_triton_model_are_readable_by_others(tmp_path):
    import os
    import stat

    from compiler.triton import write_repository

    old = os.umask(0o022)
    try:
        from compiler.export import save_onnx

        proto = stereo_model(tmp_path / "m.onnx")
        save_onnx(proto, tmp_path / "again.onnx")
        assert stat.S_IMODE((tmp_path / "again.onnx").stat().st_mode) == 0o644
        folder = write_repository(tmp_path / "repo", "m", lambda p: (save_onnx(proto, p), proto)[1])
        assert stat.S_IMODE((folder / "1" / "model.onnx").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_synth_pair_from_two_runs_is_refused_not_mixed(tmp_path, monkeypatch, capsys):
    """A crash between the ground truth's rename and the data file's leaves a new ground truth beside
    the old events; reading that pair must be a one-line error, never events scored against another
    scene's depth."""
    import runtime.core.atomic
    from runtime.data.events import DataError
    from runtime.data.sources import open_recording
    from runtime.data.synth import SynthConfig, write_mvsec

    data, gt = write_mvsec(SynthConfig(seconds=0.3, height=12, width=16, seed=0), tmp_path, "rec")
    commit = runtime.core.atomic.commit
    renamed = []

    def crash_after_first_rename(tmp, path):
        if renamed:
            raise Crash()
        commit(tmp, path)
        renamed.append(str(path))

    monkeypatch.setattr(runtime.core.atomic, "commit", crash_after_first_rename)
    with pytest.raises(Crash):
        write_mvsec(SynthConfig(seconds=0.3, height=12, width=16, seed=1), tmp_path, "rec")
    monkeypatch.undo()
    assert renamed == [gt]  # the ground truth is new, the data file old
    with pytest.raises(DataError, match="come from different runtime.synth runs"):
        open_recording(data)
    stereo_model(tmp_path / "m.onnx", height=12, width=16)
    rc = stream_main(["--onnx", str(tmp_path / "m.onnx"), "--events", data, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "different runtime.synth runs" in err and "\n" not in err
    # written again together, the pair reads
    write_mvsec(SynthConfig(seconds=0.3, height=12, width=16, seed=1), tmp_path, "rec")
    with open_recording(data) as rec:
        assert rec.fb is not None
