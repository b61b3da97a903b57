"""Units of the architecture search: decoding (hand-made alphas/betas with known answers) and the
SNASNet score (hand-computed kernel), random cells that compile with delayed edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from helpers import GENOTYPES, SMALL

from compiler import parse_genotype
from compiler.overrides import apply_overrides
from training.search.decode import decode_cell, decode_path
from training.search.snasnet import (
    cell_from_matrix,
    genotype_with_cell,
    hamming_kernel,
    kernel_score,
    matrix_code,
    parse_code,
    random_cell,
    score_genotype,
)

CANDIDATES = ["conv3x3_b3", "conv3x3_b5", "skip"]


def test_decode_cell_keeps_two_strongest_edges_with_argmax_op():
    big = 4.0
    alphas = [
        np.array([[big, 0, 0], [0, 0, big * 2]]),                   # n0: sources c_prev_prev, c_prev
        np.array([[0, 0, 0], [0, big, 0], [0, 0, 0.5]]),           # n1: c_prev_prev, c_prev, n0
        np.array([[0, 0, 0], [0, 0, 0], [big, 0, 0], [0, big, 0]]),  # n2: ..., n0, n1
    ]
    got = decode_cell(alphas, CANDIDATES)
    assert got == {
        "n0": [("c_prev_prev", "conv3x3_b3"), ("c_prev", "skip")],
        "n1": [("c_prev", "conv3x3_b5"), ("n0", "skip")],
        "n2": [("n0", "conv3x3_b3"), ("n1", "conv3x3_b5")],
    }


def test_decode_cell_ignores_zero_op_strength():
    alphas = [np.array([[9.0, 0.0], [0.0, 1.0]])]  # c_prev_prev is mostly 'zero'
    assert decode_cell(alphas, ["zero", "conv3x3"], keep=1) == {"n0": [("c_prev", "conv3x3")]}


def test_decode_path_viterbi_known_answer():
    # 4 layers, 3 levels; from level 0: strongly prefer down, down, same, up
    lo, hi = -5.0, 5.0
    betas = np.full((4, 3, 3), lo)
    betas[0, 0, 2] = hi   # layer 0: level 0 moves down to level 1 (beta: [layer, from level, move])
    betas[1, 1, 2] = hi   # layer 1: level 1 moves down to 2
    betas[2, 2, 1] = hi   # stay on 2
    betas[3, 2, 0] = hi   # up to 1
    assert decode_path(betas, start_level=0) == [1, 2, 2, 1]


def test_decode_path_beats_greedy():
    # greedy would take the locally best first step (stay on 0) and then be stuck with poor choices
    betas = np.zeros((2, 2, 3))
    betas[0, 0, 1] = 1.0      # stay on 0 at layer 0 (level 0's moves: same, down)
    betas[0, 0, 2] = 0.9      # go to 1: slightly less likely
    betas[1, 1, 1] = 10.0     # but staying on 1 at layer 1 is near certain
    betas[1, 0, 1] = -10.0    # while level 0's two moves stay even (1/2 each)
    betas[1, 0, 2] = -10.0
    assert decode_path(betas, 0) == [1, 1]


def test_hamming_kernel_hand_computed():
    codes = np.array([[1, 0, 0, 0], [1, 1, 0, 0]])
    k = hamming_kernel(codes)
    off = 4 - 0.5 * 1 / (4 * (0.25 * 0.5 + 0.75 * 0.5) + 1e-3)
    np.testing.assert_allclose(k, [[4.0, off], [off, 4.0]])
    assert kernel_score([codes]) == pytest.approx(math.log(16 - off**2))
    assert kernel_score([codes, codes]) == pytest.approx(math.log(4 * (16 - off**2)))


def test_paper_cell_code_round_trip_and_compiles():
    m = parse_code("0303 0030 2002 0200")
    assert matrix_code(m) == "0303 0030 2002 0200"
    template = yaml.safe_load((GENOTYPES / "snasnet_cifar10_bw.yaml").read_text())
    shipped = template["cells"]["bw"]
    assert cell_from_matrix(m) == {"nodes": {k: v for k, v in shipped["nodes"].items()}, "output": ["n3"]}


def small_template():
    data = yaml.safe_load((GENOTYPES / "snasnet_cifar10_bw.yaml").read_text())
    data, _ = apply_overrides(data, {**SMALL["snasnet_cifar10_bw"], "input.height": 8, "input.width": 8})
    return data


@pytest.mark.parametrize("seed", range(6))
def test_random_cells_validate_and_score(seed):
    rng = np.random.default_rng(seed)
    m = random_cell(rng, backward=True)
    assert m[0, 3] != 0 and all(m[i, i] == 0 for i in range(4))
    assert all(not (m[i, j] and m[j, i]) for i in range(4) for j in range(4) if i != j)
    g = parse_genotype(genotype_with_cell(small_template(), "bw", m))
    assert g.meta["snasnet"]["cell"] == matrix_code(m)
    x = {"image": torch.randn(8, 3, 8, 8)}
    score = score_genotype(g, x, steps=2, seed=0)
    assert np.isfinite(score)
    assert score == score_genotype(g, x, steps=2, seed=0)  # deterministic at a fixed seed


def test_decode_path_respects_allowed_transitions():
    betas = np.zeros((2, 3, 3))
    betas[1, 1, 2] = 5.0  # attractive, but the trellis must end on level 1
    allowed = np.ones_like(betas, dtype=bool)
    allowed[1, 0, 1] = allowed[1, 1, 0] = allowed[1, 1, 2] = allowed[1, 2, 1] = False  # only moves onto 1
    assert decode_path(betas, 0, allowed)[-1] == 1
    allowed[:] = False
    with pytest.raises(ValueError, match="no path"):
        decode_path(betas, 0, allowed)
