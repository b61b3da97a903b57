"""Widen a trained model without changing what it computes (function-preserving widening, as Net2Net,
Chen et al. 2016, but by zero outgoing weights rather than copied units).

The wide genotype has the trained one's graph (the same nodes, ops, kernels, strides and sizes) with
more channels in some layers. Every trained weight goes to the channels it belongs to in the wide model,
which is not the leading slice where a concatenation (a cell's output, the cost volume) joins groups
that each widen: each node's channels are tracked as a list of groups through the graph. The new
channels get the wide model's fresh initialisation for what they read, and zero weights wherever a
trained channel reads them, so the trained channels compute exactly what they did (up to the
convolutions' summation order) and the new ones start free; training then gives them weight.

    python -m training.checkpoint widen models/stereo_small_fine.pt genotypes/stereo_fine_c12.yaml wide.pt
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import TrainError

# node kinds whose output is their first input's channels, unchanged
_PASS = {"neuron", "resample", "avgpool", "global_pool", "delay_read", "delay_write", "group_mean", "cost"}
_JOIN = {"concat", "cost_volume"}  # channels of the inputs one after another
_SPATIAL = ("kind", "op", "kernel", "stride", "dims", "dilation")


def layouts(p) -> dict[str, list[int]]:
    """Each node's channels as groups that widen independently (a concatenation's parts)."""
    out: dict[str, list[int]] = {}
    for n in p.graph:
        channels = n.shape[0] if n.shape else 0
        if n.kind in _JOIN:
            out[n.name] = [c for i in n.inputs for c in out[i]]
        elif n.inputs and (n.kind in _PASS | {"sum"} or (n.kind == "op" and n.attrs.get("kind") != "conv")):
            out[n.name] = list(out[n.inputs[0]])  # (an op without weights: a skip, a pooling)
        else:
            out[n.name] = [channels]
        if sum(out[n.name]) != channels:
            out[n.name] = [channels]  # a node that changes its channel count: one group of its own
    return out


def index_map(old: list[int], new: list[int]) -> torch.Tensor:
    """The wide index of every trained channel: group g's channel o goes to (start of g in new) + o."""
    idx, start = [], 0
    for a, b in zip(old, new, strict=True):
        idx += range(start, start + a)
        start += b
    return torch.tensor(idx, dtype=torch.long)


def _check_graphs(old, new, where: str) -> None:
    a, b = list(old.graph), list(new.graph)
    if len(a) != len(b):
        raise TrainError(f"{where}: its graph has {len(b)} nodes, the trained model's {len(a)}",
                         "widen a genotype by its channels only (the same cells, layers and sizes)")
    for x, y in zip(a, b, strict=True):
        same = (x.kind, x.name, x.inputs, tuple(x.shape[1:]), [x.attrs.get(k) for k in _SPATIAL]) == \
               (y.kind, y.name, y.inputs, tuple(y.shape[1:]), [y.attrs.get(k) for k in _SPATIAL])
        if not same:
            raise TrainError(f"{where}: node {y.name!r} differs from the trained model's {x.name!r} in more than "
                             "its channels", "widen a genotype by its channels only (the same cells, layers and sizes)")
        if x.shape and y.shape and y.shape[0] < x.shape[0]:
            raise TrainError(f"{where}: node {y.name!r} has {y.shape[0]} channels, fewer than the trained "
                             f"{x.shape[0]}", "a wider genotype may only add channels")


def _groups(lo: dict, ln: dict, name: str, where: str) -> tuple[list[int], list[int]]:
    if len(lo[name]) != len(ln[name]):
        raise TrainError(f"{where}: node {name!r}'s channels do not split into the trained model's groups "
                         f"({lo[name]} trained, {ln[name]} wide)")
    return lo[name], ln[name]


def widen_state(old_model, new_model, where: str = "wide genotype") -> dict[str, torch.Tensor]:
    """The wide model's weights from the trained model's (both built from their genotypes; the wide one
    freshly initialised, which the new channels keep). Raises TrainError where the graphs differ in more
    than channels, or a layer with weights is one this does not know how to widen."""
    _check_graphs(old_model.plan, new_model.plan, where)
    lo, ln = layouts(old_model.plan), layouts(new_model.plan)
    for n in old_model.plan.graph:
        maps = {tuple(index_map(*_groups(lo, ln, i, where)).tolist()) for i in n.inputs} if n.kind == "sum" else ()
        if len(maps) > 1:
            raise TrainError(f"{where}: node {n.name!r} adds inputs whose channels widen differently "
                             f"({', '.join(f'{i} {lo[i]} -> {ln[i]}' for i in n.inputs)})",
                             "widen so that a sum's inputs keep one grouping (e.g. not a skip edge from a "
                             "concatenation whose parts widen)")
    old_sd, state = old_model.state_dict(), {k: v.clone() for k, v in new_model.state_dict().items()}
    done: set[str] = set()
    for n in old_model.plan.graph:
        if n.module is None or not n.inputs:
            continue
        prefix = ".".join(n.module) + "."
        if prefix in done:
            continue  # a module two nodes share (the stereo views): the same mapping
        keys = [k for k in old_sd if k.startswith(prefix)]
        if not any(old_sd[k].shape != state[k].shape for k in keys):
            continue  # nothing widened here: copied with the rest below
        if n.kind == "op" and {prefix + "conv.weight", prefix + "bn.weight"} <= set(keys):
            weight = prefix + "conv.weight"
        elif n.kind == "linear" and prefix + "weight" in keys:
            weight = prefix + "weight"  # (its classes do not widen)
        else:
            bad = next(k for k in keys if old_sd[k].shape != state[k].shape)
            raise TrainError(f"{where}: weight {bad!r} of node {n.name!r} ({n.kind}) would change shape, and "
                             "widening knows convolutions with BatchNorm and linear layers only",
                             "keep this layer's channels as trained")
        rows = torch.arange(old_sd[weight].shape[0])  # the trained output channels, first in every group of one
        _widen_rows_cols(state, old_sd, weight, rows, index_map(*_groups(lo, ln, n.inputs[0], where)))
        for k in keys:
            if old_sd[k].shape == state[k].shape:
                state[k] = old_sd[k].clone()  # BatchNorm's batch count, a linear layer's bias
            elif k != weight:
                state[k][rows] = old_sd[k]  # BatchNorm's per-channel tensors, a convolution's bias
        done.add(prefix)
    for k, v in old_sd.items():
        if not any(k.startswith(p) for p in done):
            if v.shape != state[k].shape:
                raise TrainError(f"{where}: weight {k!r} has shape {tuple(state[k].shape)} in the wide model, "
                                 f"{tuple(v.shape)} trained, and no layer of the graph widens it",
                                 "keep its channels as trained")
            state[k] = v.clone()
    return state


def _widen_rows_cols(state: dict, old_sd: dict, key: str, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """Trained output channels (rows) read their trained inputs (cols) with the trained weights and every
    new input with zero; new output channels keep their fresh weights."""
    w = state[key]
    w[rows] = 0
    w[rows.unsqueeze(1), cols.unsqueeze(0)] = old_sd[key]


def widen_checkpoint(ck: dict, src: str, genotype_path: str, seed: int = 0,
                     overrides: list[str] | None = None) -> dict:
    """A loaded checkpoint ``ck`` (read from ``src``) with its weights widened to the genotype at
    ``genotype_path`` with ``overrides`` (``--set``, e.g. ``neuron.kind=relu`` for a ReLU twin) applied:
    stripped, as ``training.checkpoint strip`` writes, with ``widened_from``; the caller writes it. Also
    returns ``max_difference``, the largest difference between the two models' outputs over a few steps of
    random input, and the two parameter counts."""
    from compiler import build_model, load_genotype, loads_genotype
    from compiler.errors import GenotypeError

    if not isinstance(ck.get("genotype"), str):
        raise TrainError(f"{src}: holds no genotype (a training checkpoint or a shipped model file carries one)",
                         "widen a checkpoint written by training.train or training.checkpoint")
    try:
        g_old = loads_genotype(ck["genotype"], file=f"{src} (genotype)")
        g_new = load_genotype(genotype_path, overrides=overrides or None)
    except GenotypeError as exc:
        raise TrainError(str(exc)) from None
    if g_new.task != g_old.task:
        raise TrainError(f"{genotype_path}: a {g_new.task} genotype, the trained model is {g_old.task}")
    old = build_model(g_old)
    try:
        old.load_state_dict(ck["model"])
    except RuntimeError as exc:
        why = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise TrainError(f"{src}: its weights do not fit its own genotype ({why})") from None
    torch.manual_seed(seed)
    new = build_model(g_new)
    new.load_state_dict(widen_state(old, new, genotype_path))
    keep = {k: ck[k] for k in ("config", "epoch", "history") if k in ck}
    keep.update(model=new.state_dict(), genotype=g_new.to_yaml(),
                widened_from={"path": str(src), "epoch": ck.get("epoch"), "seed": seed})
    params = (sum(p.numel() for p in old.parameters()), sum(p.numel() for p in new.parameters()))
    return {"checkpoint": keep, "max_difference": output_difference(old, new), "params": params}


def output_difference(a: nn.Module, b: nn.Module, steps: int = 4, seed: int = 0) -> float:
    """The largest absolute difference between two models' data outputs over ``steps`` steps of the same
    random input (carried state, evaluation mode)."""
    gen = torch.Generator().manual_seed(seed)
    a.eval()
    b.eval()
    sa, sb = a.initial_state(1, dtype=next(a.parameters()).dtype), b.initial_state(1, dtype=next(b.parameters()).dtype)
    shapes = {n.name: n.shape for n in a.plan.graph if n.kind == "input"}
    dtype = next(a.parameters()).dtype
    worst = 0.0
    with torch.no_grad():
        for _ in range(steps):
            x = {name: (torch.rand((1, *shape), generator=gen) < 0.3).to(dtype) for name, shape in shapes.items()}
            oa, sa = a(x, sa)
            ob, sb = b(x, sb)
            worst = max(worst, float((oa[a.output_name] - ob[b.output_name]).abs().max()))
    return worst
