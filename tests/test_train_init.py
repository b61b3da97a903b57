"""``--init``: a run starts from the weights of a twin's checkpoint (hybrid ANN-to-SNN training);
a checkpoint of another genotype is a one-line error, never a partial load."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import GENOTYPES

torch.set_num_threads(1)

SMALL = ["input.height=8", "input.width=8", "input.channels=1", "networks.backbone.node_channels=[4,4,8]",
         "networks.backbone.layers[0].channels=8"]


def _cfg(out, overrides=(), **kw):
    from training.config import TrainConfig

    base = dict(genotype=str(GENOTYPES / "cifar10.yaml"), out=str(out), data="digits", epochs=1, timesteps=2,
                max_batches=2, batch_size=16, augment=False, quiet=True, tensorboard=False,
                overrides=[*SMALL, *overrides])
    return TrainConfig(**{**base, **kw})


def test_init_starts_from_the_twins_weights(tmp_path):
    from training.train import run

    run(_cfg(tmp_path / "relu", ["neuron.kind=relu"]), log=lambda s: None)
    twin = torch.load(tmp_path / "relu" / "best.pt", weights_only=True)["model"]
    # one step at lr 1e-9: the run's checkpoint holds the twin's weights (to 1e-6)
    lines = []
    run(_cfg(tmp_path / "snn", init=str(tmp_path / "relu" / "best.pt"), max_batches=1, lr=1e-9),
        log=lines.append)
    snn = torch.load(tmp_path / "snn" / "last.pt", weights_only=True)
    assert any("weights from" in line for line in lines)
    assert snn["config"]["init"] == str(tmp_path / "relu" / "best.pt")
    for key, tensor in twin.items():
        if key.endswith("num_batches_tracked") or "running_" in key:
            continue  # batch-norm statistics move in train mode at any lr
        assert torch.allclose(snn["model"][key], tensor, rtol=0, atol=1e-6), key
    # and a run without --init starts elsewhere
    run(_cfg(tmp_path / "fresh", max_batches=1, lr=1e-9), log=lambda s: None)
    fresh = torch.load(tmp_path / "fresh" / "last.pt", weights_only=True)["model"]
    assert max(float((fresh[k] - twin[k]).abs().max()) for k in twin if k.endswith("weight")) > 1e-2


def test_init_from_another_genotype_is_a_located_error(tmp_path):
    from training.errors import TrainError
    from training.train import run

    run(_cfg(tmp_path / "wide", ["networks.backbone.layers[0].channels=12"]), log=lambda s: None)
    with pytest.raises(TrainError, match=r"--init .*best.pt: weight .* has shape"):
        run(_cfg(tmp_path / "narrow", init=str(tmp_path / "wide" / "best.pt")), log=lambda s: None)


def test_init_cli_bad_file_is_one_line(tmp_path, capsys):
    from training.train import main

    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    for path in (bad, tmp_path / "absent.pt"):
        rc = main([str(GENOTYPES / "cifar10.yaml"), "--out", str(tmp_path / "r"), "--data", "digits",
                   "--init", str(path), *sum((["--set", s] for s in SMALL), []), "--quiet", "--no-tensorboard"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error: ") and "\n" not in err and str(path) in err, err


def test_a_run_refused_before_writing_leaves_no_folder(tmp_path, capsys):
    """A start that fails before writing anything (here a bad --init) removes the run folder it made;
    a folder that existed before is kept."""
    from training.train import main

    args = [str(GENOTYPES / "cifar10.yaml"), "--data", "digits", "--init", str(tmp_path / "absent.pt"),
            *sum((["--set", s] for s in SMALL), []), "--quiet", "--no-tensorboard"]
    assert main([*args, "--out", str(tmp_path / "new" / "run")]) == 2
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "mine").mkdir()
    assert main([*args, "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []
    capsys.readouterr()
