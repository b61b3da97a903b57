"""SNASNet training-free search: random cells scored at initialisation by the sparsity-aware
Hamming kernel of their spike codes (Kim et al., ECCV 2022; REFERENCE.md).

A cell is an N x N matrix of op codes (0 none, 1 skip, 2 conv1x1, 3 conv3x3, 4 avgpool3x3; the
LIF is the node's neuron under membrane mixing). ``m[i][j]`` with i < j is a forward edge node i ->
node j; with i > j it is a backward edge: node i's output of the previous step into node j (a
delayed edge in the genotype, which the compiler turns into state). Node 0 is the cell input.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from runtime.core.names import TASKS
from runtime.data.options import given, recording_options

OPS = {1: "skip", 2: "conv1x1", 3: "conv3x3", 4: "avgpool3x3"}


def random_cell(rng: np.random.Generator, n_nodes: int = 4, backward: bool = True) -> np.ndarray:
    """A random cell matrix. Every pair of nodes gets an op (or none); with ``backward`` a pair may
    instead carry the later node's previous output backwards. The first and last nodes are always
    joined forward (the paper keeps that edge for fast spike propagation)."""
    m = np.zeros((n_nodes, n_nodes), dtype=int)
    for i in range(n_nodes):
        for j in range(i + 1, n_nodes):
            op = int(rng.integers(0, 5))
            if i == 0 and j == n_nodes - 1:
                op = int(rng.integers(1, 5))
                m[i, j] = op
            elif op and backward and rng.random() < 0.5:
                m[j, i] = op
            else:
                m[i, j] = op
    return m


def matrix_code(m: np.ndarray) -> str:
    """The paper's notation: one group of digits per row, e.g. '0303 0030 2002 0200'."""
    return " ".join("".join(str(int(v)) for v in row) for row in m)


def parse_code(code: str) -> np.ndarray:
    rows = code.split()
    m = np.array([[int(ch) for ch in row] for row in rows], dtype=int)
    if m.shape[0] != m.shape[1] or (m < 0).any() or (m > 4).any():
        raise ValueError(f"bad cell code {code!r}: expected N groups of N digits 0-4")
    return m


def cell_from_matrix(m: np.ndarray, input_op: str = "skip") -> dict:
    """The genotype cell (plain data) of a matrix; nodes that receive nothing or feed nothing are
    dropped, as in NAS-Bench-style pruning. The output is the last node. Node 0 takes the cell input
    through ``input_op`` (``skip``; a conv where the input has other channels than the nodes)."""
    n = m.shape[0]
    inputs: dict[int, list[dict]] = {k: [] for k in range(n)}
    inputs[0].append({"from": "c_prev", "op": input_op})
    for i in range(n):
        for j in range(n):
            if i != j and m[i, j]:
                edge = {"from": f"n{i}", "op": OPS[int(m[i, j])]}
                if i > j:
                    edge["delay"] = 1
                inputs[j].append(edge)
    alive = set(range(n))
    changed = True
    while changed:  # prune nodes that cannot get input or cannot reach the output
        changed = False
        for k in sorted(alive):
            fed = any(e["from"] == "c_prev" or int(e["from"][1:]) in alive for e in inputs[k])
            feeds = k == n - 1 or any(e["from"] == f"n{k}" for j in alive if j != k for e in inputs[j])
            if not fed or not feeds:
                alive.discard(k)
                changed = True
    nodes = {}
    for k in sorted(alive):
        edges = [e for e in inputs[k] if e["from"] == "c_prev" or int(e["from"][1:]) in alive]
        nodes[f"n{k}"] = {"inputs": edges}
    return {"nodes": nodes, "output": [f"n{n - 1}"]}


def genotype_with_cell(template: dict, cell_name: str, m: np.ndarray, input_op: str = "skip", **meta) -> dict:
    """A copy of a genotype (plain data) whose cell ``cell_name`` is the matrix's cell."""
    data = copy.deepcopy(template)
    data["cells"][cell_name] = cell_from_matrix(m, input_op)
    data["meta"] = {**data.get("meta", {}), "snasnet": {"cell": matrix_code(m), **meta}}
    return data


# ------------------------------------------------------------------------------------------ the score
def hamming_kernel(codes: np.ndarray) -> np.ndarray:
    """Sparsity-aware Hamming kernel of one layer at one step.

    codes: (B, N) binary spike codes of B samples. K_ij = N - 0.5 d_H(c_i, c_j) /
    (N (s_i (1 - s_j) + (1 - s_i) s_j) + 1e-3), with s the firing fraction of each code.
    """
    c = np.asarray(codes, dtype=np.float64)
    n = c.shape[1]
    d_h = c @ (1 - c).T + (1 - c) @ c.T  # (B, B) Hamming distances
    s = c.mean(axis=1)
    expected = n * (np.outer(s, 1 - s) + np.outer(1 - s, s)) + 1e-3
    return n - 0.5 * d_h / expected


def kernel_score(codes_per_layer: Sequence[np.ndarray]) -> float:
    """log |det sum_l K_l| over every spiking layer (and step)."""
    k = sum(hamming_kernel(c) for c in codes_per_layer)
    sign, logdet = np.linalg.slogdet(k)
    return float(logdet) if sign != 0 else float("-inf")


def spike_codes(model, inputs: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
                steps: int) -> list[np.ndarray]:
    """Run ``steps`` steps from zero state at initialisation (BatchNorm on batch statistics, as an
    untrained network sees its data) and return every spiking layer's (B, N) codes at every step.
    ``inputs`` is one input (repeated every step: a static image) or one per step (event windows)."""
    from compiler.neurons import NeuronModule

    codes: list[np.ndarray] = []

    def hook(module, _args, output):
        if module.spiking:
            codes.append(output[0].detach().flatten(1).numpy())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, NeuronModule)]
    was_training = model.training
    model.train()
    try:
        per_step = inputs if isinstance(inputs, list) else [inputs] * steps
        if len(per_step) < steps:
            raise ValueError(f"{len(per_step)} inputs for {steps} steps")
        batch = next(iter(per_step[0].values())).shape[0]
        state = model.initial_state(batch)
        with torch.no_grad():
            for t in range(steps):
                _, state = model(per_step[t], state)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return codes


def score_genotype(genotype, inputs, steps: int, seed: int = 0) -> float:
    """The SNASNet score of a genotype at a seeded random initialisation."""
    from compiler import build_model

    torch.manual_seed(seed)
    model = build_model(genotype)
    return kernel_score(spike_codes(model, inputs, steps))


# ------------------------------------------------------------------------------ the search
def run_snasnet(args, log=print, overwrite: bool = False) -> dict:
    """The SNASNet search as the command line says (``args``): draw, score and rank random cells,
    write ``snasnet.jsonl`` and the best cell's genotype ``searched.yaml``.

    ``--out`` is taken as training takes its folder (``runlog.claim``: locked for the search's life; a
    folder that holds a run is refused unless ``overwrite`` deletes its files). There is no resume: the
    search is one deterministic pass that writes its results at the end, so running it again redoes it."""

    from ..allocator import configure as configure_malloc
    from ..errors import TrainError
    from ..options import set_threads
    from ..runlog import claim

    set_threads(args.threads)
    configure_malloc()
    for name in ("candidates", "batch", "top", "nodes"):
        if getattr(args, name) < 1:
            raise TrainError(f"--{name} must be at least 1")  # before the folder is touched
    with claim(Path(args.out), resume=False, overwrite=overwrite, log=log, resumable=False):
        return _search(args, log)


def _search(args, log) -> dict:
    """Draw, score (on every process), gather, and write the results (main process)."""
    from ..distributed import setup, teardown

    template, base = _base_genotype(args)
    inputs, pick, steps = _scoring_batch(args, base)
    dist = setup("cpu")
    try:
        drawn = _draw_candidates(args, template)
        unique = [d for d in drawn if d["duplicate_of"] == d["index"]]
        t0 = time.perf_counter()
        scores = _score(args, dist, unique, inputs, steps)
        elapsed = time.perf_counter() - t0
        results = [{"index": d["index"], "cell": d["cell"], "score": scores[d["duplicate_of"]],
                    "redraws": d["redraws"], **({"duplicate_of": d["duplicate_of"]}
                                               if d["duplicate_of"] != d["index"] else {})} for d in drawn]
        summary = {"candidates": len(results), "distinct": len(unique), "seconds": round(elapsed, 2),
                   "world_size": dist.world}
        if dist.main:
            meta = {"candidates": len(results), "distinct": len(unique), "seed": args.seed,
                    "data": str(args.data), "batch": len(pick), "steps": steps}
            summary.update(_write_results(args, template, base, results, meta, log, (
                f"{len(results)} candidates ({len(unique)} distinct cells) scored in {elapsed:.1f} s on "
                f"{dist.world} process(es)")))
        return summary
    finally:
        teardown(dist)


def _base_genotype(args):
    """The macro network's raw data (the template every candidate fills in) and its parsed genotype."""
    from compiler import parse_genotype
    from compiler.overrides import apply_overrides
    from compiler.yamlio import load_yaml

    from ..errors import TrainError

    try:
        text = Path(args.genotype).read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainError(f"{args.genotype}: cannot read it ({exc.strerror or exc})") from None
    template, _ = load_yaml(text, args.genotype)
    template, _ = apply_overrides(template, args.overrides)
    base = parse_genotype(template, file=args.genotype)
    if args.cell not in [c.name for c in base.cells]:
        raise TrainError(f"{args.genotype}: no cell {args.cell!r}", f"cells: {[c.name for c in base.cells]}")
    return template, base


def _scoring_batch(args, base):
    """The one mini-batch every candidate is scored on: (inputs, sample indices, time steps)."""
    from ..images import check_image_shape, classification_data

    if not TASKS[base.task].events:  # images
        train, _ = classification_data(args.data or "digits")
        check_image_shape(train, base.input.in_channels, base.input.height, base.input.width)
        pick = np.random.default_rng(args.seed).permutation(len(train))[: args.batch]
        return {"image": train.x[torch.as_tensor(pick)]}, pick, args.steps or base.input.timesteps
    steps = args.steps or 4  # stereo: a mini-batch of `steps` consecutive event windows
    inputs, pick = stereo_minibatch(base, args.data or "synthetic", args.batch, steps, args.seed, _real(args))
    return inputs, pick, steps


def _draw_candidates(args, template: dict) -> list[dict]:
    """Every candidate, drawn first (cheap, the same on every process): candidate i comes from seed
    (seed, i); a cell the compiler refuses is redrawn. Codes that prune to a cell already drawn are
    duplicates (``duplicate_of`` an earlier index): scored once, left out of the ranking."""
    from compiler import GenotypeError, parse_genotype

    from ..errors import TrainError

    drawn: list[dict] = []
    first: dict[str, int] = {}
    for i in range(args.candidates):
        rng = np.random.default_rng([args.seed, i])
        g = None
        redraws = 0
        while g is None:
            m = random_cell(rng, args.nodes, backward=not args.forward_only)
            try:
                g = parse_genotype(genotype_with_cell(template, args.cell, m, args.input_op), file=f"candidate {i}")
            except GenotypeError as exc:
                redraws += 1
                if redraws >= 100:
                    raise TrainError(f"candidate {i}: no valid random cell in 100 draws (last: {exc})",
                                     "--input-op conv1x1 if the cell input has other channels than the "
                                     "nodes") from None
        key = json.dumps(cell_from_matrix(m, args.input_op), sort_keys=True)
        drawn.append({"index": i, "cell": matrix_code(m), "redraws": redraws, "genotype": g,
                      "duplicate_of": first.setdefault(key, i)})
    return drawn


def _score(args, dist, unique: list[dict], inputs, steps: int) -> dict[int, float]:
    """Scores of the distinct candidates, each process scoring its share, gathered on all."""
    mine = unique[dist.rank::dist.world]
    results = []
    bar = None
    if dist.main and not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(mine), desc="candidates", dynamic_ncols=True)
    for d in mine:
        results.append((d["index"], score_genotype(d["genotype"], inputs, steps, seed=args.seed + d["index"])))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if dist.enabled:
        gathered: list = [None] * dist.world
        torch.distributed.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    return dict(results)


def _write_results(args, template: dict, base, results: list[dict], meta: dict, log, timing: str) -> dict:
    """``snasnet.jsonl`` (every candidate), ``searched.yaml`` (the best), the ranked table."""
    from compiler import parse_genotype

    from ..checkpoint import write_text_atomic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic("".join(json.dumps(r) + "\n" for r in results), out / "snasnet.jsonl")
    ranked = sorted((r for r in results if "duplicate_of" not in r), key=lambda r: (-r["score"], r["index"]))
    best = ranked[0]
    m = np.array([[int(c) for c in row] for row in best["cell"].split()])
    data = genotype_with_cell(template, args.cell, m, args.input_op, score=best["score"], **meta)
    data["name"] = f"{base.name}-snasnet"
    data["source"] = f"SNASNet training-free search, best of {len(results)} random cells (seed {args.seed})"
    g = parse_genotype(data, file=str(out / "searched.yaml"))
    write_text_atomic(g.to_yaml(), out / "searched.yaml")
    log(timing)
    log(f"{'rank':>4}  {'index':>6}  {'score':>12}  cell")
    for k, r in enumerate(ranked[: args.top], 1):
        log(f"{k:>4}  {r['index']:>6}  {r['score']:>12.4f}  {r['cell']}")
    log(f"wrote {out / 'searched.yaml'} (best: {best['cell']}, score {best['score']:.4f})")
    return {"best": best, "top": ranked[: args.top]}


def _real(args):
    """The real-data options of the command line (``runtime.data.options.RecordingOptions``), or None."""
    return recording_options(args, "search") if given(args, "search") else None


def stereo_minibatch(g, source: str, batch: int, steps: int, seed: int, real=None):
    """``batch`` samples of ``steps`` consecutive SBT windows of a stereo source, as per-step inputs
    (``real``: how MVSEC/DSEC data is read, ``training.data.RealOptions``)."""

    from ..data import SyntheticSpec
    from ..datasets import stereo_data

    inp = g.input
    seconds = max(1.0, 0.05 * (steps + 2))
    spec = SyntheticSpec(train_seeds=(100, 101), val_seeds=(0,), seconds=seconds, val_seconds=seconds)
    data = stereo_data(source, g, length=steps, stride=1, burn_in=0, synthetic=spec, real=real)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data), size=min(batch, len(data)), replace=False).tolist()
    b = data.batch(pick, (inp.height, inp.width), rng)  # (L, B, C, H, W)
    return [{"left": b["left"][t], "right": b["right"][t]} for t in range(steps)], pick
