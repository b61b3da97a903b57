"""The search phase's protocol and the recipes (issue 19): ReLU stems during search and spiking ones in the
decoded genotype, crops with a probability, the papers' schedule values under --recipe paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import GENOTYPES, SMALL

from compiler import load_genotype
from compiler.neurons import ReLU
from training.config import TrainConfig, search_recipe, task_defaults
from training.errors import TrainError
from training.search.decode import to_genotype
from training.search.space import load_search_space
from training.search.supernet import Supernet

SPACE = """search_space: 1
base: {base}
candidates: [{{op: conv3x3, b: 3}}, {{op: skip}}]
nodes: 2
keep: 2
networks:
  backbone: {{cell: cell, layers: 2, start_level: 0, end_level: 1}}
"""


def test_ann_stems_during_search_spiking_after(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml"))
    space = load_search_space(path, overrides=SMALL["cifar10"])
    net = Supernet(space, ann_stems=True)
    stem = net.blocks["backbone"]["stem"]
    assert isinstance(stem.neuron, ReLU)
    out, _ = net({"image": torch.randn(2, 3, 8, 8)}, {})
    assert torch.isfinite(out["logits"]).all()
    assert not isinstance(Supernet(space).blocks["backbone"]["stem"].neuron, ReLU)  # spiking: the default
    g = to_genotype(space, net.decode())
    assert g.resolve_neuron(g.network("backbone").layers[0].neuron).kind == "lif"  # converted back


def test_crop_probability():
    from training.data import StereoData, StereoSequence

    h, w = 12, 16  # the disparity map holds each pixel's position: a crop's first value gives its offset
    disp = (np.arange(h * w, dtype=np.float32).reshape(1, h, w)).repeat(2, 0)
    seq = StereoSequence("s", np.zeros((2, 1, h, w), np.float32), np.zeros((2, 1, h, w), np.float32), disp)
    data = StereoData([seq], [], length=2, stride=1)
    assert data.crop_prob == 1.0  # every sample at a random place unless the search says otherwise
    centre = float(disp[0, 2, 4])  # (12 - 8) // 2, (16 - 8) // 2

    def offsets(p):
        data.crop_prob = p
        rng = np.random.default_rng(0)
        return [float(data.batch([0], (8, 8), rng)["disparity"][0, 0, 0, 0]) for _ in range(200)]

    assert set(offsets(0.0)) == {centre}
    half = sum(v == centre for v in offsets(0.5)) / 200
    assert 0.4 < half < 0.65  # about half centred (plus the random crops that land on the centre)
    assert sum(v == centre for v in offsets(1.0)) < 40


@pytest.mark.parametrize(("recipe", "genotype", "expected"), [
    ("paper", "stereo", {"epochs": 200, "batch_size": 2, "optimizer": "adam", "lr": 1e-3,
                         "milestones": [50, 100, 150], "gamma": 0.5, "schedule": "multistep"}),
    ("paper", "cifar10", {"epochs": 100, "batch_size": 50, "optimizer": "sgd", "lr": 0.025, "momentum": 0.9,
                          "weight_decay": 3e-4, "schedule": "cosine"}),
    ("cpu-quick", "stereo", {"epochs": 10, "batch_size": 4, "milestones": [6, 8]}),
    ("cpu-quick", "cifar10", {"epochs": 10, "batch_size": 64}),
])
def test_recipes(recipe, genotype, expected):
    cfg = task_defaults(TrainConfig(genotype="", out="", recipe=recipe), load_genotype(GENOTYPES / f"{genotype}.yaml"))
    assert {k: getattr(cfg, k) for k in expected} == expected
    given = task_defaults(TrainConfig(genotype="", out="", recipe=recipe, epochs=3, batch_size=7),
                          load_genotype(GENOTYPES / f"{genotype}.yaml"))
    assert (given.epochs, given.batch_size) == (3, 7)  # what the user gives wins


def test_search_recipes():
    assert search_recipe("paper", "stereo") == {"epochs": 12, "warmup": 3, "lr": 0.002, "batch_size": 1,
                                                "crop_prob": 0.5, "stems": "ann"}
    assert search_recipe("paper", "classification")["batch_size"] == 50
    assert search_recipe("cpu-quick", "stereo")["stems"] == "spiking"
    with pytest.raises(TrainError, match="unknown recipe"):
        search_recipe("fast", "stereo")
    assert np.isclose(search_recipe("paper", "classification")["lr"], 0.025)
