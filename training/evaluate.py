"""``python -m training.evaluate CKPT [--constant] [--val-seeds ...] [--json OUT]``

Held-out metrics of a training checkpoint (its own data options unless given): stereo 1PA, mean
disparity error and mean depth error (MDE), classification accuracy. ``--constant`` also scores
the constant baseline: every pixel predicted at the median disparity of the training data.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np

from runtime.core.names import TASKS


def constant_baseline(data, value: float | None = None) -> dict:
    """Held-out metrics of predicting one disparity everywhere (default: the training median)."""
    from runtime.metrics import stereo_errors, summarize_errors

    if value is None:
        gt = np.concatenate([s.disparity[np.isfinite(s.disparity) & (s.disparity > 0)] for s in data.train])
        value = float(np.median(gt))
    errors = []
    for seg in data.val_segments:
        seq = data.val[seg.seq]
        has_gt = getattr(seq, "has_gt", None)  # windows without ground truth are not scored
        for t in range(max(seg.start, seg.score_from), seg.end):
            if has_gt is not None and not has_gt[t]:
                continue
            gt = seq.disparity[t]
            errors.append(stereo_errors(np.full_like(gt, value), gt, seq.fb))
    out = summarize_errors(errors)
    out["constant_px"] = value
    return out


def evaluate_checkpoint(path: str, overrides: dict | None = None, constant: bool = False) -> dict:
    """Build the checkpoint's genotype, load its weights, evaluate on its held-out data."""
    import torch

    from compiler import build_model, loads_genotype

    from . import checkpoint as ckpt_io
    from .config import TrainConfig, task_defaults
    from .errors import TrainError
    from .execution import resolve_exec
    from .runner import load_data
    from .validation import evaluate_classification, evaluate_stereo

    ck = ckpt_io.load(path)
    for key, kind in (("genotype", str), ("config", dict)):
        if not isinstance(ck.get(key), kind):
            what = "missing" if key not in ck else f"a {type(ck[key]).__name__}, expected a {kind.__name__}"
            raise TrainError(f"{path}: entry {key!r} is {what}",
                             "evaluate a checkpoint written by training.train (last.pt, best.pt or a stripped copy)")
    ckpt_io.check_weights(ck["model"], path)
    try:
        cfg = TrainConfig(**{**ck["config"], **(overrides or {})})
    except TypeError as exc:
        raise TrainError(f"{path}: its configuration does not load ({exc})") from None
    g = loads_genotype(ck["genotype"], file=f"{path} (genotype)")
    cfg = task_defaults(cfg, g)
    model = build_model(g)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        what = " ".join(str(exc).split())[:300]
        raise TrainError(f"{path}: the weights do not fit its genotype ({what})") from None
    model.eval()
    if not constant and cfg.train_seeds and len(cfg.train_seeds) > 1:
        # the held-out metrics need no training recordings but one (a data set holds at least a sample):
        # the run's hundreds of them would be generated for nothing where the cache lacks them
        cfg = replace(cfg, train_seeds=list(cfg.train_seeds[:1]))
    train, val = load_data(cfg, g, log=lambda s: None)
    mode = resolve_exec(cfg.exec, model)
    with torch.no_grad():
        if TASKS[g.task].disparity:
            out = {"model": evaluate_stereo(model, val, cfg, mode)}
            if constant:
                out["constant"] = constant_baseline(train)
        else:
            out = {"model": evaluate_classification(model, val, cfg.timesteps, cfg.eval_batch_size, mode)}
    out["data"] = getattr(val, "description", "")
    out["epoch"] = ck.get("epoch")
    return out


def main(argv: list[str] | None = None) -> int:
    from compiler import GenotypeError
    from runtime.core.errors import ArgumentParser, run_main

    from . import checkpoint as ckpt_io
    from .errors import TrainError
    from .train import int_ranges

    p = ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[1])
    p.add_argument("checkpoint")
    p.add_argument("--constant", action="store_true", help="also score the constant (training median) baseline")
    p.add_argument("--data", help="held-out data (default: the checkpoint's)")
    p.add_argument("--val-seeds", type=int_ranges)
    p.add_argument("--seconds", type=float)
    p.add_argument("--burn-in", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("data", args.data), ("val_seeds", args.val_seeds), ("seconds", args.seconds),
                                   ("burn_in", args.burn_in)) if v is not None}
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    def body() -> int:
        from .allocator import configure

        configure()
        out = evaluate_checkpoint(args.checkpoint, overrides, args.constant)
        text = json.dumps(out, indent=2)
        print(text)
        if args.json:
            ckpt_io.write_text_atomic(text + "\n", args.json)
        return 0

    return run_main(body, (GenotypeError, TrainError))


if __name__ == "__main__":
    sys.exit(main())
