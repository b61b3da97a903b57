"""Decoding continuous architecture weights into a discrete genotype (SpikeDHS, DARTS-style), and the
genotypes of a search space: the decoded one (``to_genotype``) and random ones (the baselines).

- A cell: per node the ``keep`` strongest incoming edges (strength = the largest softmax weight of a
  non-``zero`` candidate on that edge), each with its arg-max candidate.
- A layer path: the maximum-probability path through the trellis of resolution levels (Viterbi on
  the log of the beta weights, each level's beta normalised over its outgoing transitions), as in the
  paper's "maximum probability path between layers" after Auto-DeepLab.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from compiler.errors import GenotypeError
from compiler.genotype import parse_genotype
from compiler.ir import Cell, CellLayer, Edge, Genotype, Node

from .space import SearchSpace


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


def decode_path(betas: np.ndarray, start_level: int = 0, allowed: np.ndarray | None = None,
                end_level: int | None = None) -> list[int]:
    """Maximum-probability level path through the trellis (Auto-DeepLab's Viterbi decoding, its
    decoding_formulas.py): ``betas``: (layers, levels, 3) logits; ``softmax(betas[l, k])`` is the
    probability that, at layer ``l``, level ``k`` moves to level ``k - 1`` (index 0, upsampling), ``k``
    (1) or ``k + 1`` (2, downsampling): normalised over the OUTGOING transitions of each level, the
    moves off the grid and those ``allowed`` (same shape, bool) lacks excluded. The path starts from
    ``start_level`` before layer 0 and ends on ``end_level`` or, if None, on the most probable level
    of the last layer. Returns the level of each layer.
    """
    betas = np.asarray(betas, dtype=np.float64)
    n_layers, n_levels, three = betas.shape
    if three != 3:
        raise ValueError(f"betas must be (layers, levels, 3), got {betas.shape}")
    ok = np.ones(betas.shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool).copy()
    ok[:, 0, 0] = False  # no level below the finest
    ok[:, n_levels - 1, 2] = False  # none above the coarsest
    logp = np.full(betas.shape, -np.inf)
    for layer in range(n_layers):
        for k in range(n_levels):
            if ok[layer, k].any():
                z = betas[layer, k][ok[layer, k]]
                logp[layer, k][ok[layer, k]] = z - z.max() - np.log(np.exp(z - z.max()).sum())
    score = np.full(n_levels, -np.inf)
    score[start_level] = 0.0
    back = np.zeros((n_layers, n_levels), dtype=int)
    for layer in range(n_layers):
        new = np.full(n_levels, -np.inf)
        for j in range(n_levels):
            for k in (j - 1, j, j + 1):
                if 0 <= k < n_levels and score[k] + logp[layer, k, j - k + 1] > new[j]:
                    new[j] = score[k] + logp[layer, k, j - k + 1]
                    back[layer, j] = k
        score = new
    if end_level is not None:
        score = np.where(np.arange(n_levels) == end_level, score, -np.inf)
    if not np.isfinite(score).any():
        raise ValueError("no path through the allowed transitions")
    level = int(np.argmax(score))
    path = [level]
    for layer in range(n_layers - 1, 0, -1):
        level = int(back[layer, level])
        path.append(level)
    return path[::-1]


# ------------------------------------------------------------------------------- genotypes
def _cell(name: str, decoded: dict, candidates: dict):
    """A genotype Cell from a decoded {node: [(source, candidate name), ...]}."""
    nodes = []
    for node_name, edges in decoded.items():
        out_edges = []
        for src, cand_name in edges:
            cand = candidates[cand_name]
            neuron = {} if cand.b is None else {"surrogate": {"b": cand.b}}
            out_edges.append(Edge(source=src, op=cand.op, neuron=neuron))
        nodes.append(Node(name=node_name, inputs=tuple(out_edges)))
    return Cell(name=name, nodes=tuple(nodes), output=tuple(n.name for n in nodes))


def to_genotype(space: SearchSpace, decoded: dict, meta: dict | None = None) -> Genotype:
    """The base genotype with each searched network's cell and layer path replaced by the decoded ones."""
    g = space.base
    by_name = {c.name: c for c in space.candidates}
    cells = {c.name: c for c in g.cells}
    networks = []
    for net in g.networks:
        s = space.searched(net.name)
        if s is None:
            networks.append(net)
            continue
        d = decoded[net.name]
        cells[s.cell] = _cell(s.cell, d["cell"], by_name)
        if "reduction_cell" in d:
            cells[s.reduction_cell] = _cell(s.reduction_cell, d["reduction_cell"], by_name)
        cell_idx = [i for i, layer in enumerate(net.layers) if isinstance(layer, CellLayer)]
        searched = []
        level = s.start_level
        for i, j in enumerate(d["path"]):
            name = s.reduction_cell if "reduction_cell" in d and j != level else s.cell
            searched.append(CellLayer(name=f"cell{i}", cell=name, level=j))
            level = j
        layers = list(net.layers[:cell_idx[0]]) + searched + list(net.layers[cell_idx[-1] + 1:])
        networks.append(dataclasses.replace(net, layers=tuple(layers)))
    head = g.head
    aux = getattr(head, "aux_after", None)
    if aux is not None:  # keep the auxiliary head at the same relative depth of the backbone
        old_n = len(g.network(head.backbone).layers)
        new_n = len(next(n for n in networks if n.name == head.backbone).layers)
        head = dataclasses.replace(head, aux_after=min(new_n - 2, round(aux * (new_n - 1) / (old_n - 1))))
    new = dataclasses.replace(g, cells=tuple(cells.values()), networks=tuple(networks), mixing="spike",
                              head=head, meta={**g.meta, **(meta or {})})
    return parse_genotype(new.to_dict(), file="<decoded>")  # validated like any file


# ------------------------------------------------------------------------------ random baselines
def random_path(rng: np.random.Generator, layers: int, levels: int, start: int, end: int) -> list[int]:
    """A uniformly chosen next level at each layer among those the trellis has: one level up or down
    at most, and ``end`` still reachable in the layers left."""
    path, level = [], start
    for k in range(layers):
        left = layers - k - 1
        options = [j for j in (level - 1, level, level + 1) if 0 <= j < levels and abs(j - end) <= left]
        level = int(rng.choice(options))
        path.append(level)
    return path


def random_genotype(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A genotype of the space drawn at random: per node ``keep`` distinct sources with a random
    candidate each (normal and reduction cells alike), and on a trellis a random layer path. The
    baseline a search must beat. Raises GenotypeError where the compiler refuses the draw."""
    names = [c.name for c in space.candidates]
    decoded = {}
    for s in space.networks:
        def cell() -> dict:
            out = {}
            for i, sources in enumerate(cell_sources(space.nodes)):
                picks = sorted(rng.choice(len(sources), size=min(space.keep, len(sources)), replace=False))
                out[f"n{i}"] = [(sources[p], names[int(rng.integers(len(names)))]) for p in picks]
            return out
        if s.fixed:
            decoded[s.network] = {"cell": cell(), "path": list(s.path), "reduction_cell": cell()}
        else:
            levels = len(space.base.network(s.network).rates)
            decoded[s.network] = {"cell": cell(),
                                  "path": random_path(rng, s.layers, levels, s.start_level, s.end_level)}
    return to_genotype(space, decoded)


def random_genotypes(space: SearchSpace, n: int, seed: int = 0) -> list[Genotype]:
    """``n`` random genotypes of the space (``random_genotype``), seeded, redrawing refused ones."""
    rng = np.random.default_rng(seed)
    out: list[Genotype] = []
    refused = 0
    while len(out) < n:  # redraw cells the compiler refuses (a skip between different channel counts)
        try:
            out.append(random_genotype(space, rng))
        except GenotypeError as exc:
            refused += 1
            if refused >= 1000:
                raise GenotypeError(f"1000 random genotypes in a row were refused, the last: {exc.message}",
                                    file=space.file or "<search space>", hint="check the candidates against the "
                                    "cells' channel counts") from None
    return out
