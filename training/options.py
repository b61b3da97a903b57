"""Bounds of the training options, checked before anything runs (docs/reliability.md): every number
finite and in range (a NaN --lr used to train NaN weights without a word), seeds and milestones
non-negative, a --device this machine has."""

from __future__ import annotations

import dataclasses
import math

from runtime.core.names import TASKS

from .errors import TrainError

# Bounds of the numeric options: (low, high, low included); None is no bound. Floats must be finite.
OPTION_RANGES = {
    "epochs": (1, 10**6, True), "batch_size": (1, 10**7, True), "windows": (1, 10**4, True),
    "burn_in": (0, 10**4, True), "stride": (1, 10**4, True), "timesteps": (1, 10_000, True),
    "eval_batch_size": (1, 10**7, True), "eval_every": (1, None, True), "max_batches": (1, None, True),
    "stop_after": (1, None, True), "threads": (1, 1024, True), "seed": (0, 2**32 - 1, True),
    "lr": (0.0, 1e3, False), "momentum": (0.0, 1.0, True), "weight_decay": (0.0, 1e3, True),
    "gamma": (0.0, 1e3, False), "diversity": (0.0, 1e3, False), "loss_step": (0.0, 1e3, False),
    "disparity_l1": (0.0, 1e6, True), "ema": (0.0, 1.0, True), "photo_fraction": (0.0, 1.0, True),
    "photo_augment": (0.0, 1.0, True), "distill_weight": (0.0, 1.0, False),
    "seconds": (0.0, 3600.0, False), "dgs_every": (1, None, True), "dgs_iters": (1, None, True),
    "dgs_lr": (0.0, 1e3, False), "tps_every": (1, None, True), "tps_delta": (0.0, 1.0, False),
    "tps_warmup": (0, None, True), "hns_lambda": (0.0, 1e6, True), "hns_every": (1, None, True),
    "hns_warmup": (0, None, True), "arch_lr": (0.0, 1e3, False),
    "fb": (0.0, 1e6, False), "max_outside_rectify": (0.0, 1.0, True),
    # the SpikeDHS search's own (training.search.bilevel.SearchConfig)
    "warmup": (0, None, True), "crop_prob": (0.0, 1.0, True), "cost_lambda": (0.0, 1e6, True),
    "decode_every": (1, None, True),
}
# Options whose upper bound is not a value they may take (--ema 1 would never move the average)
HIGH_EXCLUDED = frozenset({"ema"})


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` after the range check of ``--threads`` (torch's own error for
    0 or a negative count is a traceback); None leaves torch's choice."""
    if threads is None:
        return
    low, high, _ = OPTION_RANGES["threads"]
    if not low <= threads <= high:
        raise TrainError(f"--threads must be from {low} to {high}, got {threads}")
    import torch

    torch.set_num_threads(threads)


def check_options(cfg) -> None:
    """Every numeric option of ``cfg`` (a ``TrainConfig`` or the search's ``SearchConfig``) finite and within
    ``OPTION_RANGES``, seeds and milestones non-negative (before anything runs: a NaN --lr used to train NaN
    weights without a word; an infinite --arch-lr of a search ended in a traceback). Raises TrainError."""
    for name, (low, high, closed) in OPTION_RANGES.items():
        v = getattr(cfg, name, None)
        if v is None:
            continue
        option = f"--{name.replace('_', '-')}"
        if not math.isfinite(v):
            raise TrainError(f"{option} must be a finite number, got {v}")
        if v < low or (v == low and not closed):
            bound = f"at least {low}" if closed else ("positive" if low == 0 else f"above {low}")
            raise TrainError(f"{option} must be {bound}, got {v}")
        if high is not None and name in HIGH_EXCLUDED and v >= high:
            raise TrainError(f"{option} must be below {high:g}, got {v:g}")
        if high is not None and v > high:
            raise TrainError(f"{option} must be at most {high:g}, got {v}")
    for name in ("milestones", "train_seeds", "val_seeds"):
        values = getattr(cfg, name, None) or []
        if any(v < 0 for v in values):
            raise TrainError(f"--{name.replace('_', '-')} must be non-negative, got {values}")


# Options that only a stereo task reads, in the order an error names them (TrainConfig and SearchConfig fields)
STEREO_OPTIONS = ("photo_fraction", "photo_augment", "photo_variations", "train_textures", "disparity_l1", "distill",
                  "distill_weight", "windows", "burn_in", "diversity", "loss_step")


def check_task_options(cfg, task: str, what: str) -> None:
    """Refuse the ``STEREO_OPTIONS`` that ``cfg`` (a ``TrainConfig`` or ``SearchConfig``) sets to other than its
    field's default where ``task`` reads no events: they would be ignored without a word. ``what`` ends the
    one-line error (the genotype or space and its task)."""
    if TASKS[task].events:
        return
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    given = [f"--{name.replace('_', '-')}" for name in STEREO_OPTIONS
             if name in defaults and getattr(cfg, name) != defaults[name]]
    if given:
        raise TrainError(f"{', '.join(given)}: stereo options, and {what}")


def check_device(device: str) -> None:
    """``--device`` names a torch device that this machine has."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise TrainError(f"--device {device!r} is not a torch device", "use cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {device}: this torch has no usable CUDA device", "use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise TrainError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices")


def given_options(parser, argv: list[str] | None) -> dict:
    """The options the command line ``argv`` gives explicitly (dest -> parsed value), defaults left
    out: ``parser`` parsed once more with every default (sub-commands' too) suppressed."""
    import argparse
    import sys

    actions, stack = [], [parser]
    while stack:
        for action in stack.pop()._actions:
            actions.append(action)
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    saved = [(a, a.default) for a in actions]
    for action, _ in saved:
        action.default = argparse.SUPPRESS
    try:
        return vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    finally:
        for action, default in saved:
            action.default = default


# what names the run rather than configures it: the folder may have moved, the genotype file is read
# from the checkpoint on resume (its path is only a record)
RESUME_IGNORES = {"out", "genotype", "space", "resume", "overwrite"}


def check_resume_options(given: dict, saved: dict, may_change: set[str], where: str) -> None:
    """``--resume`` continues a run with the configuration it was started with; an option given again
    with another value would be ignored without a word, so it is a ``TrainError`` naming it. The same
    value, and the options in ``may_change``, pass."""
    import json

    def norm(v):
        return json.loads(json.dumps(v, default=str))

    for dest, value in sorted(given.items()):
        if dest in may_change or dest in RESUME_IGNORES or dest not in saved or value is None:
            continue
        if norm(value) != norm(saved[dest]):
            option = f"--{dest.replace('_', '-')}"
            free = ", ".join(sorted("--" + m.replace("_", "-") for m in may_change))
            raise TrainError(f"{option} {value!r}: the run in {where} was started with {saved[dest]!r}, and "
                             "--resume keeps the configuration it was started with",
                             f"resume without it (only {free} may change), or start a new run")
