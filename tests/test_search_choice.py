"""The layer search can choose (issue 19): beta normalised over each level's outgoing transitions
(Auto-DeepLab) and Viterbi decoding over the trellis give a spread of paths from random or untrained
betas, and a search where one path is known to be better finds it (docs/search.md, "The layer search")."""

from __future__ import annotations

import numpy as np
import torch
from helpers import GENOTYPES, SMALL
from torch import nn

from training.search.decode import decode_path, random_path
from training.search.space import load_search_space
from training.search.supernet import Supernet

SPACE = """search_space: 1
base: {base}
candidates: [{{op: conv3x3, b: 3}}, {{op: skip}}]
nodes: 1
keep: 1
networks:
  backbone: {{cell: cell, layers: {layers}, start_level: 0, end_level: {end}}}
"""


def _space(tmp_path, layers=4, end=1):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(base=GENOTYPES / "cifar10.yaml", layers=layers, end=end))
    return load_search_space(path, overrides=SMALL["cifar10"])


def _paths(layers, levels, start, end):
    """Every level path the trellis has."""
    out = [[]]
    for k in range(layers):
        out = [p + [j] for p in out for j in range(levels)
               if abs(j - (p[-1] if p else start)) <= 1 and abs(j - end) <= layers - k - 1]
    return out


def test_random_betas_decode_to_a_spread_of_paths():
    # the stereo matching trellis (searchspaces/stereo.yaml): 4 layers, 4 levels, from 0, ending on 1
    rng = np.random.default_rng(0)
    found = {tuple(decode_path(rng.normal(size=(4, 4, 3)), 0, None, 1)) for _ in range(200)}
    assert len(found) >= 8, found  # incoming normalisation gave [1, 2, 2, 1] in 200 of 200 draws
    assert found <= {tuple(p) for p in _paths(4, 4, 0, 1)}


def test_untrained_supernets_decode_to_a_spread_of_paths(tmp_path):
    space = _space(tmp_path, layers=4, end=1)
    found = set()
    for seed in range(8):
        torch.manual_seed(seed)
        with torch.no_grad():  # betas drawn as a random initialisation would draw them, at scale 1
            net = Supernet(space)
            net.betas["backbone"].normal_()
        found.add(tuple(net.decode()["backbone"]["path"]))
    assert len(found) >= 3, found


class _Gain(nn.Module):
    """A stand-in cell: its input (resampled to its level) times a fixed gain."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain

    def forward(self, prev, prev_prev, alphas, step, name):
        return self.gain * prev.mean(dim=1, keepdim=True).expand(-1, 1, -1, -1)


def _search_known_path(space, best: list[int], steps: int = 60) -> list[int]:
    """The supernet's trellis with its cells replaced by gains (1 on ``best``'s transitions, 0.6 off it),
    its betas trained by Adam to bring the output up to 1 (only ``best`` reaches it); the decoded path."""
    torch.manual_seed(0)
    net = Supernet(space)
    trellis = net.blocks["backbone"]["trellis"]
    on = {(layer, j, k) for layer, (k, j) in enumerate(zip([0, *best], best, strict=False))}
    for key in list(trellis.cells):
        layer, j, k = (int(v) for v in key.split("_"))
        trellis.cells[key] = _Gain(1.0 if (layer, j, k) in on else 0.6)
    betas = net.betas["backbone"]
    opt = torch.optim.Adam([betas], lr=0.05)
    x = torch.ones(1, 1, 8, 8)
    for _ in range(steps):
        y = trellis(x, x, [], betas, None, "t")
        loss = (y.mean() - 1.0) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    return decode_path(betas.detach().numpy(), 0, trellis.allowed().numpy(), 1)


def test_a_search_where_one_path_is_better_finds_it(tmp_path):
    space = _space(tmp_path, layers=3, end=1)
    paths = _paths(3, 3, 0, 1)
    rng = np.random.default_rng(1)
    draws = [random_path(rng, 3, 3, 0, 1) for _ in range(8)]
    hits = sum(_search_known_path(space, best) == best for best in draws)
    chance = len(draws) / len(paths)
    assert hits > 3 * chance, (hits, chance, len(paths))
