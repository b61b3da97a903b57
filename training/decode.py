"""Decoding continuous architecture weights into a discrete genotype (SpikeDHS, DARTS-style).

- A cell: per node the ``keep`` strongest incoming edges (strength = the largest softmax weight of a
  non-``zero`` candidate on that edge), each with its arg-max candidate.
- A layer path: the maximum-probability path through the trellis of resolution levels (Viterbi on
  the log of the beta weights), as in the paper's "maximum probability path between layers".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def cell_sources(n_nodes: int) -> list[list[str]]:
    """The candidate sources of every node: both cell inputs and every earlier node."""
    return [["c_prev_prev", "c_prev", *[f"n{j}" for j in range(i)]] for i in range(n_nodes)]


def decode_cell(alphas: Sequence[np.ndarray], candidates: Sequence[str],
                keep: int = 2) -> dict[str, list[tuple[str, str]]]:
    """alphas[i]: (sources of node i, candidates) logits -> {node: [(source, candidate), ...]}.

    Edges are ranked by their strongest non-``zero`` candidate; ties keep the earlier source.
    """
    n_nodes = len(alphas)
    sources = cell_sources(n_nodes)
    nonzero = [k for k, c in enumerate(candidates) if c != "zero"]
    if not nonzero:
        raise ValueError("every candidate op is 'zero': nothing to decode")
    out: dict[str, list[tuple[str, str]]] = {}
    for i, logits in enumerate(alphas):
        logits = np.asarray(logits, dtype=np.float64)
        if logits.shape != (len(sources[i]), len(candidates)):
            raise ValueError(f"alphas of node n{i} have shape {logits.shape}, expected "
                             f"{(len(sources[i]), len(candidates))}")
        w = softmax(logits)[:, nonzero]  # (sources, non-zero candidates)
        strength = w.max(axis=1)
        order = sorted(range(len(strength)), key=lambda s: (-strength[s], s))[: min(keep, len(strength))]
        out[f"n{i}"] = [(sources[i][s], candidates[nonzero[int(np.argmax(w[s]))]]) for s in sorted(order)]
    return out


def decode_path(betas: np.ndarray, start_level: int = 0, allowed: np.ndarray | None = None) -> list[int]:
    """Maximum-probability level path through the trellis.

    ``betas``: (layers, levels, 3) logits; ``softmax(betas[l, j])`` weighs how layer ``l`` reaches level
    ``j``: index 0 from level ``j - 1`` (downsampling), 1 from ``j`` (same level), 2 from ``j + 1``
    (upsampling). The path starts from ``start_level`` before layer 0 and moves at most one level a
    layer. ``allowed`` (same shape, bool) marks the transitions the trellis has; the softmax is taken
    over those alone and the others are impossible. Returns the level of each layer.
    """
    betas = np.asarray(betas, dtype=np.float64)
    n_layers, n_levels, three = betas.shape
    if three != 3:
        raise ValueError(f"betas must be (layers, levels, 3), got {betas.shape}")
    if allowed is None:
        allowed = np.ones(betas.shape, dtype=bool)
    masked = np.where(allowed, betas, -np.inf)
    top = np.max(masked, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(allowed, np.exp(masked - top), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(allowed, np.log(e / np.where(total > 0, total, 1.0)), -np.inf)
    score = np.full(n_levels, -np.inf)
    score[start_level] = 0.0
    back = np.zeros((n_layers, n_levels), dtype=int)
    for layer in range(n_layers):
        new = np.full(n_levels, -np.inf)
        for j in range(n_levels):
            for k, prev in enumerate((j - 1, j, j + 1)):
                if 0 <= prev < n_levels and score[prev] + logp[layer, j, k] > new[j]:
                    new[j] = score[prev] + logp[layer, j, k]
                    back[layer, j] = prev
        score = new
    if not np.isfinite(score).any():
        raise ValueError("no path through the allowed transitions")
    level = int(np.argmax(score))
    path = [level]
    for layer in range(n_layers - 1, 0, -1):
        level = int(back[layer, level])
        path.append(level)
    return path[::-1]
