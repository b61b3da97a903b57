"""What limits the shipped stereo model's precision, measured by evaluation only (not a test).

    python benchmarks/bench_precision.py --snn models/stereo_small.pt --relu models/stereo_small_relu.pt \
        [--per-type 6 | --seeds ...] [--seconds 1] [--set KEY=VALUE] [--threads 1] [--json out.json]

On the held-out synthetic scenes of ``bench_transfer.py`` (its default seeds: 6 of every scene type
from 1000 on), per scene type and pooled, for each model:

- **spread**: the mean signed error (bias), the least-squares slope of prediction on ground truth
  (1: the predictions follow the depth; below 1: they are pulled towards the middle), the standard
  deviation of the prediction and of the ground truth within a window (mean over windows);
- **where the errors are**: the share of the scored pixels and their 1PA and mean error beyond the
  model's largest disparity, within 2 px of a depth edge (neighbours more than 1 px apart), and in
  the interior without any event of the window within 2 px (nothing to match) or with events;
- **resolution**: the same for the ground truth itself at the cost volume's resolution (1/3 of the input
  for stereo_small, 1/2 for stereo_small_fine), upsampled bilinearly as the model's cost is (``gt 1/3``,
  ``gt 1/2``): the precision that resolution alone allows;
- **the data on the grid**: the scored ground truth's shares below 1.5, 3 and 6 px (the cost volume's
  candidates are 0, 3, 6, ... px) and its percentiles;
- **state**: 1PA by window index since the zero state (training samples are 2 + 4 windows long);
- **input size**: the model built at its training crop (``config.crop``, 48 x 64) on the centre crop
  of every window, against the full-size model scored on the same centre pixels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_transfer import balanced_seeds, held_out_sequences, load_model, stream  # noqa: E402
from transfer_report import finish  # noqa: E402

NEAR_PX = 2  # the neighbourhood of an edge or of an event


def dilate(mask: np.ndarray, r: int = NEAR_PX) -> np.ndarray:
    """Pixels within ``r`` (Chebyshev) of a True pixel of ``mask`` [H, W]."""
    from scipy.ndimage import maximum_filter

    return maximum_filter(mask.astype(np.uint8), size=2 * r + 1) > 0


def low_resolution(disparity: np.ndarray, factor: int) -> np.ndarray:
    """Ground truth [T, H, W] as a model that matches at 1/``factor`` resolution and upsamples its cost
    bilinearly could at best give it: the mean of each valid ``factor`` x ``factor`` block, upsampled
    bilinearly (blocks without a valid pixel take 0)."""
    import torch
    import torch.nn.functional as F

    valid = np.isfinite(disparity) & (disparity > 0)
    d = torch.from_numpy(np.where(valid, disparity, 0.0).astype(np.float32))[:, None]
    w = torch.from_numpy(valid.astype(np.float32))[:, None]
    low = F.avg_pool2d(d, factor) / F.avg_pool2d(w, factor).clamp_min(1e-6)
    return F.interpolate(low, size=disparity.shape[-2:], mode="bilinear", align_corners=False)[:, 0].numpy()


def regions(gt: np.ndarray, events: np.ndarray, top: float) -> dict[str, np.ndarray]:
    """Masks over the valid pixels of one window: beyond the model's range, near a depth edge, and the
    interior with or without events nearby."""
    valid = np.isfinite(gt) & (gt > 0)
    g = np.where(valid, gt, np.nan)
    jump = np.zeros_like(valid)
    with np.errstate(invalid="ignore"):
        dx = np.abs(np.diff(g, axis=1)) > 1.0
        dy = np.abs(np.diff(g, axis=0)) > 1.0
    jump[:, 1:] |= dx
    jump[:, :-1] |= dx
    jump[1:, :] |= dy
    jump[:-1, :] |= dy
    edge = dilate(jump | ~valid) & valid
    beyond = valid & (gt > top)
    near_events = dilate(np.abs(events).sum(axis=0) > 0)
    inside = valid & ~edge & ~beyond
    return {"beyond range": beyond, "near a depth edge": edge & ~beyond, "interior, events near": inside & near_events,
            "interior, no event near": inside & ~near_events}


class Tally:
    """Pooled statistics of one model over windows."""

    def __init__(self) -> None:
        self.err: list[np.ndarray] = []
        self.gt: list[np.ndarray] = []
        self.pred: list[np.ndarray] = []
        self.spread: list[tuple[float, float]] = []
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, pred: np.ndarray, gt: np.ndarray, masks: dict[str, np.ndarray]) -> None:
        valid = np.isfinite(gt) & (gt > 0)
        p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
        self.err.append(p - g)
        self.gt.append(g)
        self.pred.append(p)
        if g.size > 1:
            self.spread.append((float(p.std()), float(g.std())))
        for name, m in masks.items():
            self.parts.setdefault(name, []).append((pred[m] - gt[m]).astype(np.float64))

    def summary(self) -> dict:
        e, g, p = (np.concatenate(x) for x in (self.err, self.gt, self.pred))
        slope = float(np.polyfit(g, p, 1)[0]) if g.size > 1 and g.std() > 0 else None
        out = {"one_pixel_accuracy_pct": float(np.mean(np.abs(e) <= 1) * 100), "mean_disparity_error_px":
               float(np.abs(e).mean()), "bias_px": float(e.mean()), "slope": slope,
               "pred_std_px": float(np.mean([s[0] for s in self.spread])),
               "gt_std_px": float(np.mean([s[1] for s in self.spread])), "regions": {}}
        for name, parts in self.parts.items():
            d = np.concatenate(parts)
            out["regions"][name] = {"share_pct": 100.0 * d.size / e.size,
                                    "one_pixel_accuracy_pct": float(np.mean(np.abs(d) <= 1) * 100) if d.size else None,
                                    "mean_disparity_error_px": float(np.abs(d).mean()) if d.size else None}
        return out


def diagnose(preds: dict, sequences: list, burn_in: int, top: float) -> dict:
    """Per scene type and pooled: each model's spread and error regions; 1PA by window index."""
    tallies: dict[tuple[str, str], Tally] = {}
    by_t: dict[str, dict[int, list]] = {m: {} for m in preds}
    for i, seq in enumerate(sequences):
        for t in range(burn_in, len(seq)):
            if not seq.has_gt[t]:
                continue
            masks = regions(seq.disparity[t], seq.left[t], top)
            for m in preds:
                for kind in (seq.kind, "pooled"):
                    tallies.setdefault((m, kind), Tally()).add(preds[m][i][t], seq.disparity[t], masks)
                valid = np.isfinite(seq.disparity[t]) & (seq.disparity[t] > 0)
                by_t[m].setdefault(t, []).append(np.abs(preds[m][i][t][valid] - seq.disparity[t][valid]) <= 1)
    out: dict = {"by_scene_type": {}, "by_window": {}, "ground_truth": {}}
    for kind in sorted({s.kind for s in sequences}) + ["pooled"]:
        out["ground_truth"][kind] = disparities([s for s in sequences if kind in (s.kind, "pooled")], burn_in)
    for (m, kind), tally in tallies.items():
        out["by_scene_type"].setdefault(kind, {})[m] = tally.summary()
    for m, rows in by_t.items():
        out["by_window"][m] = {t: float(np.mean(np.concatenate(v)) * 100) for t, v in sorted(rows.items())}
    return out


def disparities(sequences: list, burn_in: int) -> dict:
    """How the scored ground truth lies on the cost volume's grid: shares below 1.5, 3 and 6 px, percentiles."""
    v = np.concatenate([d[np.isfinite(d) & (d > 0)] for s in sequences
                        for d, has in zip(s.disparity[burn_in:], s.has_gt[burn_in:], strict=True) if has])
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return {**{f"below_{x:g}_px_pct": float(np.mean(v < x) * 100) for x in (1.5, 3.0, 6.0)},
            "p5_px": float(p5), "median_px": float(p50), "p95_px": float(p95), "max_px": float(v.max())}


def crop_test(path: str, sequences: list, full_preds: list, burn_in: int, batch: int, overrides: list[str]) -> dict:
    """The model at its training crop on the centre crops, against the full-size model on those pixels."""
    from compiler import build_model, loads_genotype
    from compiler.build import load_weights
    from training import checkpoint as ckpt_io
    from training.data import center_crop

    ck = ckpt_io.load(path)
    crop = ck["config"].get("crop") or [48, 64]
    g = loads_genotype(ck["genotype"], overrides=[*overrides, f"input.height={crop[0]}", f"input.width={crop[1]}"])
    model = build_model(g)
    load_weights(model, path)
    model.eval()
    small = [_cropped(s, crop) for s in sequences]
    preds, _ = stream(model, small, batch)
    both = {"crop model": [], "full model, same pixels": []}
    for i, s in enumerate(small):
        for t in range(burn_in, len(s)):
            valid = np.isfinite(s.disparity[t]) & (s.disparity[t] > 0)
            gt = s.disparity[t][valid]
            both["crop model"].append(np.abs(preds[i][t][valid] - gt))
            both["full model, same pixels"].append(np.abs(center_crop(full_preds[i][t], *crop)[valid] - gt))
    return {"crop": list(crop), **{k: {"one_pixel_accuracy_pct": float(np.mean(np.concatenate(v) <= 1) * 100),
                                       "mean_disparity_error_px": float(np.concatenate(v).mean())}
                                   for k, v in both.items()}}


def _cropped(seq, crop):
    from training.data import StereoSequence, center_crop

    def cut(a: np.ndarray) -> np.ndarray:
        return np.stack([center_crop(x, *crop) for x in a])

    return StereoSequence(seq.name, cut(seq.left), cut(seq.right), cut(seq.disparity), seq.fb, seq.has_gt)


def print_report(result: dict) -> None:
    for kind, models in sorted(result["by_scene_type"].items()):
        print(f"\n{kind}")
        for m, r in models.items():
            slope = "-" if r["slope"] is None else f"{r['slope']:.2f}"
            print(f"  {m:>6}: 1PA {r['one_pixel_accuracy_pct']:6.2f} %, mean error {r['mean_disparity_error_px']:.3f} "
                  f"px, bias {r['bias_px']:+.3f} px, slope {slope}, std pred {r['pred_std_px']:.2f} / gt "
                  f"{r['gt_std_px']:.2f} px")
            for name, x in r["regions"].items():
                pa = "-" if x["one_pixel_accuracy_pct"] is None else f"{x['one_pixel_accuracy_pct']:.2f} %"
                me = "-" if x["mean_disparity_error_px"] is None else f"{x['mean_disparity_error_px']:.3f} px"
                print(f"         {name:>24}: {x['share_pct']:5.1f} % of pixels, 1PA {pa}, mean error {me}")
    print("\nscored ground truth: % below 1.5 / 3 / 6 px; p5, median, p95, largest px")
    for kind, r in result["ground_truth"].items():
        print(f"  {kind:>9}: {r['below_1.5_px_pct']:5.1f} / {r['below_3_px_pct']:5.1f} / {r['below_6_px_pct']:5.1f} %;"
              f" {r['p5_px']:.2f}, {r['median_px']:.2f}, {r['p95_px']:.2f}, {r['max_px']:.2f}")
    for m, rows in result["by_window"].items():
        print(f"\n1PA by window index ({m}): " + ", ".join(f"{t}: {v:.1f}" for t, v in rows.items()))
    for m, r in result.get("crop", {}).items():
        print(f"\ninput size ({m}, crop {r['crop']}): " + "; ".join(
            f"{k} 1PA {v['one_pixel_accuracy_pct']:.2f} %, {v['mean_disparity_error_px']:.3f} px"
            for k, v in r.items() if k != "crop"))


def cost_factor(g) -> int:
    """How many input pixels one pixel of the model's cost volume spans (3 for stereo_small, 2 for
    stereo_small_fine): the input height over the cost volume's, from the lowered graph's shapes."""
    from compiler.planner import plan

    volume = next(n for n in plan(g).graph if n.kind == "cost_volume")
    return max(1, round(g.input.height / volume.shape[-2]))


def main(argv: list[str] | None = None) -> int:
    import torch

    from training.train import int_ranges

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snn", default="models/stereo_small.pt")
    ap.add_argument("--relu")
    ap.add_argument("--seeds", type=int_ranges)
    ap.add_argument("--per-type", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as bench_transfer.py's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    paths = {"snn": args.snn, **({"relu": args.relu} if args.relu else {})}
    models = {m: load_model(p, args.set) for m, p in paths.items()}
    _, g, cfg = models["snn"]
    seqs = held_out_sequences(g, args.seeds or balanced_seeds(args.per_type), args.seconds)
    preds = {m: stream(model, seqs, c.eval_batch_size)[0] for m, (model, _, c) in models.items()}
    factor = cost_factor(g)
    preds[f"gt 1/{factor}"] = [low_resolution(s.disparity, factor) for s in seqs]
    result = diagnose(preds, seqs, cfg.burn_in, g.head.max_disparity)
    result["crop"] = {m: crop_test(paths[m], seqs, preds[m], cfg.burn_in, c.eval_batch_size, args.set)
                      for m, (_, _, c) in models.items()}
    print_report(result)
    result["seconds"] = time.perf_counter() - start
    return finish(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
