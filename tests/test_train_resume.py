"""Exact resume: 1 epoch + --resume ends bit for bit where 2 uninterrupted epochs end."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import GENOTYPES

torch.set_num_threads(1)


def _cfg(out, **kw):
    from training.config import TrainConfig

    return TrainConfig(genotype=str(GENOTYPES / "cifar10.yaml"), out=str(out), data="digits", epochs=2,
                       timesteps=2, max_batches=3, batch_size=16, augment=True, quiet=True, tensorboard=False,
                       overrides=["input.height=8", "input.width=8", "input.channels=1",
                                  "networks.backbone.node_channels=[4,4,8]",
                                  "networks.backbone.layers[0].channels=8"], **kw)


@pytest.mark.parametrize("layout", ["auto", "channels-last"])
def test_resume_is_exact(tmp_path, layout):
    from training.train import run

    run(_cfg(tmp_path / "full", layout=layout), log=lambda s: None)
    run(_cfg(tmp_path / "half", stop_after=1, layout=layout), log=lambda s: None)
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert half["epoch"] == 1
    run(_cfg(tmp_path / "half", layout=layout), resume=True, resume_overrides={"stop_after": None},
        log=lambda s: None)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_resume_cli_without_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from training.train import main

    rc = main([str(GENOTYPES / "cifar10.yaml"), "--out", str(tmp_path / "none"), "--resume"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "last.pt" in err


def test_stereo_resume_is_exact_with_its_3d_convolutions_channels_last(tmp_path):
    """A stereo run (auto: 3-D convolutions channels-last in float32 on a CPU, the first matching convolution
    from the views) resumed after epoch 1 ends bit for bit where 2 uninterrupted epochs end."""
    from training.config import TrainConfig
    from training.train import run

    def cfg(out, **kw):
        return TrainConfig(genotype=str(GENOTYPES / "stereo_small.yaml"), out=str(out), epochs=2,
                           train_seeds=[100, 101], val_seeds=[0], seconds=0.8, crop=(48, 64), batch_size=2,
                           quiet=True, tensorboard=False, **kw)

    logs = []
    run(cfg(tmp_path / "full"), log=logs.append)
    assert any("layout conv3d-channels-last (auto" in line for line in logs), logs
    run(cfg(tmp_path / "half", stop_after=1), log=lambda s: None)
    run(cfg(tmp_path / "half"), resume=True, resume_overrides={"stop_after": None}, log=lambda s: None)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
