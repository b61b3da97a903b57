"""The stereo feature network on both views at once, in multi-step training.

The plan holds the feature network twice, ``NET.left.*`` and ``NET.right.*``, node for node the same
modules on the two views; run one after the other, each op runs on ``T x B`` samples. Here the two run as
one: the batch holds ``(step, view, sample)``, every op runs once on ``T x 2B`` samples (half the calls,
and twice the work per call for the second thread), BatchNorm takes one chunk per step and view (the
statistics of each view's step, as before; ``Stacked.chunks``) and defers its running-average updates in
the order of the separate runs (per module: step by step, left before right), and each neuron layer runs
its recurrence over ``T`` on ``2B`` samples from its two states side by side. Only where the two instances
are twins node for node, every op is a ``ConvBN`` with plain BatchNorm shared by both, and nothing but
ops, neurons, resampling, sums and concatenations is inside; otherwise the views run one after the other.
The same values as the separate runs, float rounding of the batched convolutions apart
(``tests/test_execution.py``, every shipped stereo genotype against the eager model).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from .ops import STACKED, ConvBN, plain_batchnorm

BATCHED_KINDS = frozenset({"op", "neuron", "resample", "sum", "concat"})
_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its nodes, their twins)


def view_twins(nodes: list, root: nn.Module | None = None) -> dict[str, str]:
    """Each node of the ``.left.`` instance -> its ``.right.`` twin, or {} where the instances are not twins
    node for node (the same kind, module and attributes, inputs mapped view to view). Kept per model."""
    hit = _TWINS.get(root) if root is not None else None
    if hit is not None and hit[0] is nodes:
        return hit[1]
    by_name = {n.name: n for n in nodes}
    twins: dict[str, str] = {}
    for n in nodes:
        if ".left." in n.name:
            head, _, rest = n.name.partition(".left.")
            other = by_name.get(f"{head}.right.{rest}")
            if other is None or n.kind not in BATCHED_KINDS or (other.kind, other.module, other.attrs) != \
                    (n.kind, n.module, _to_right(n.attrs, f"{head}.left", f"{head}.right")):
                twins = {}
                break
            twins[n.name] = other.name
    for left, right in twins.items():
        inputs = by_name[left].inputs
        if any(i not in twins and i != "left" for i in inputs) or \
                tuple(twins.get(i, "right") for i in inputs) != by_name[right].inputs:
            twins = {}
            break
    if root is not None:
        _TWINS[root] = (nodes, twins)
    return twins


def _to_right(value, left: str, right: str):
    """``value`` with the left instance's name in its strings (a node's ``at``) made the right one's."""
    if isinstance(value, str):
        return right + value[len(left):] if value == left or value.startswith(left + ".") else value
    if isinstance(value, dict):
        return {k: _to_right(v, left, right) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_right(v, left, right) for v in value)
    return value


def batchable(modules: list[nn.Module]) -> bool:
    """Whether the twins' op modules allow the views at once: plain BatchNorm in training mode, in every
    module shared by the two instances (its updates deferred, ``Stacked.defer``)."""
    stacked = STACKED.get()
    return stacked is not None and all(type(m) is ConvBN and m.bn.training and plain_batchnorm(m.bn)
                                       and id(m) in stacked.shared for m in modules)


def interleave(left: Tensor, right: Tensor, steps: int) -> Tensor:
    """Two (T*B, ...) values -> one (T*2B, ...): (step, view, sample)."""
    return torch.stack([left.unflatten(0, (steps, -1)), right.unflatten(0, (steps, -1))], 1).flatten(0, 2)


def split(value: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """The inverse of ``interleave``."""
    both = value.unflatten(0, (steps, 2, -1))
    return both[:, 0].flatten(0, 1), both[:, 1].flatten(0, 1)

