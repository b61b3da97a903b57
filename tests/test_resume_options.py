"""``--resume`` continues a run with the configuration it was started with: an option given again with
another value used to be ignored without a word; now it is a one-line error naming it, while the same
value (the whole first command line again) and the options that may change pass."""

from __future__ import annotations

import torch

from tests.helpers import GENOTYPES
from tests.test_faults_searchfolder import _cli as search_cli
from tests.test_faults_searchfolder import space  # noqa: F401 (fixture)

torch.set_num_threads(1)

FIRST = [str(GENOTYPES / "cifar10.yaml"), "--data", "digits", "--epochs", "2", "--timesteps", "2",
         "--max-batches", "2", "--batch-size", "16", "--no-augment", "--quiet", "--no-tensorboard",
         "--set", "input.height=8", "--set", "input.width=8", "--set", "input.channels=1",
         "--set", "networks.backbone.node_channels=[4,4,8]", "--set", "networks.backbone.layers[0].channels=8"]


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_train_resume_refuses_a_changed_option_and_takes_the_same_command(tmp_path, capsys):
    from training.train import main

    out = str(tmp_path / "run")
    assert main([*FIRST, "--out", out, "--stop-after", "1", "--lr", "0.01"]) == 0
    capsys.readouterr()
    for changed, name in ((["--lr", "0.5"], "--lr"), (["--set", "input.height=16"], "--overrides"),
                          (["--seed", "3"], "--seed"), (["--no-augment", "--augment"], "--augment"),
                          (["--ema", "0.9"], "--ema"), (["--optimizer-impl", "foreach"], "--optimizer-impl")):
        assert main([str(GENOTYPES / "cifar10.yaml"), "--out", out, "--resume", *changed]) == 2
        err = _one_line(capsys)
        assert name in err and "started with" in err, err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1  # nothing ran
    # the first command line again, with --resume, continues; --epochs may change
    assert main([*FIRST, "--out", out, "--lr", "0.01", "--resume", "--epochs", "3"]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 3


def test_search_resume_refuses_a_changed_option(space, tmp_path, capsys):  # noqa: F811 (fixture)
    out = tmp_path / "s"
    assert search_cli(space, out, "--stop-after", "1") == 0
    capsys.readouterr()
    assert search_cli(space, out, "--resume", "--seed", "7") == 2
    err = _one_line(capsys)
    assert "--seed" in err and "started with" in err
    assert search_cli(space, out, "--resume") == 0  # the same options: continues to the end
    assert (out / "searched.yaml").exists()
