"""Hostile inputs to training's run folders (issue 23, classes 3-5): a user's own config.yaml in --out
is not overwritten without --overwrite; --resume checks the genotype file given again and says what a
changed --epochs does to the schedule (a finished cosine run extended used to train at lr 0); a full
disk in torch.save's zip writer (a RuntimeError, not an OSError) is one line with the old checkpoint
intact and no temporary file."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import GENOTYPES
from tests.test_resume_options import FIRST

torch.set_num_threads(1)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_a_users_own_config_yaml_in_out_is_refused_without_overwrite(tmp_path, capsys):
    from training.train import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("lr: 0.1  # my notes\n")
    assert main([*FIRST, "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "config.yaml" in err and "--overwrite" in err, err
    assert (out / "config.yaml").read_text() == "lr: 0.1  # my notes\n"
    assert main([*FIRST, "--out", str(out), "--overwrite", "--stop-after", "1"]) == 0
    # a run's own restated files (a start refused later) are written again without a word
    for name in ("last.pt", "best.pt", "metrics.jsonl", "metrics.csv"):
        (out / name).unlink(missing_ok=True)
    assert main([*FIRST, "--out", str(out), "--stop-after", "1"]) == 0


def test_resume_checks_the_genotype_file_given_again(tmp_path, capsys):
    from training.train import main

    out = str(tmp_path / "run")
    assert main([*FIRST, "--out", out, "--stop-after", "1"]) == 0
    other = tmp_path / "other.yaml"
    text = (GENOTYPES / "cifar10.yaml").read_text()
    other.write_text(text.replace("timesteps: 6}", "timesteps: 5}", 1))
    assert other.read_text() != text
    assert main([str(other), *FIRST[1:], "--out", out, "--resume"]) == 2
    err = _one_line(capsys)
    assert str(other) in err and "differs from the genotype the run" in err, err
    assert main([*FIRST, "--out", out, "--resume"]) == 0  # the same file: continues


def test_resume_extending_a_cosine_run_recomputes_the_schedule_and_says_so(tmp_path, capsys):
    from training.train import main

    out = tmp_path / "run"
    assert main([*FIRST, "--out", str(out), "--lr", "0.1"]) == 0  # 2 epochs, cosine: lr 0 at the end
    assert torch.load(out / "last.pt", weights_only=False)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0)
    capsys.readouterr()
    assert main([*FIRST, "--out", str(out), "--lr", "0.1", "--resume", "--epochs", "4"]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    want = 0.1 * (1 + math.cos(math.pi * 2 / 4)) / 2  # epoch 3 of a 4-epoch cosine schedule
    assert "cosine schedule is recomputed for 4 epochs" in text and f"lr {want:.4g}" in text, text
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["epoch"] == 4 and ck["scheduler"]["T_max"] == 4


def test_torch_save_running_out_of_disk_in_its_zip_writer_is_one_line(tmp_path, capsys, monkeypatch):
    from training.train import main

    out = tmp_path / "run"
    assert main([*FIRST, "--out", str(out), "--stop-after", "1"]) == 0
    before = (out / "last.pt").read_bytes()
    real_save = torch.save

    def full(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1536 vs 1430")

    monkeypatch.setattr(torch, "save", full)
    capsys.readouterr()
    assert main([*FIRST, "--out", str(out), "--resume"]) == 2
    err = _one_line(capsys)
    assert ("last.pt" in err or "best.pt" in err) and "cannot write" in err, err
    assert (out / "last.pt").read_bytes() == before
    assert not list(out.glob(".*.tmp"))
