"""Evidence for the searches, as a benchmark (not a test):

1. digits: SpikeDHS searches a small classification space on scikit-learn's digits for a fixed
   budget; the searched genotype and 3 random genotypes of the same space (random cells from the
   same candidates, same path) are retrained for the same budget; test accuracies side by side.
2. snasnet: 20 random SNASNet-Bw cells are scored at initialisation, each is trained briefly on
   digits, and Kendall's tau between score and accuracy is reported.
3. stereo: SpikeDHS searches searchspaces/stereo_small.yaml on the synthetic event-stereo data; the
   searched genotype and 3 random genotypes of that space (random cells and random layer paths) are
   retrained for the same budget and scored on held-out synthetic recordings (1PA, MDE).

    python benchmarks/bench_search.py [--tasks digits,snasnet,stereo] [--out runs/bench_search]

Every number printed is measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SNAS_DIGITS = ["input.height=8", "input.width=8", "input.channels=1", "input.timesteps=3",
               "networks.backbone.node_channels=[16,32]", "networks.backbone.layers[0].channels=16",
               "networks.backbone.layers[2].channels=32"]
DIGITS = ["input.height=8", "input.width=8", "input.channels=1", "input.timesteps=2",
          "networks.backbone.node_channels=[8,16,32]", "networks.backbone.layers[0].channels=16"]
SPACE = """search_space: 1
base: {base}
candidates: [{{op: conv3x3, b: 3}}, {{op: conv3x3, b: 5}}, {{op: skip}}, {{op: conv1x1, b: 3}}]
nodes: 3
keep: 2
networks:
  backbone: {{cell: cell, path: [0, 1, 2], reduction_cell: cell_reduce}}
"""


def train(genotype: Path, out: Path, epochs: int, overrides: list[str], seed: int = 0, **options) -> dict:
    """Train a genotype on digits (or as ``options`` say) from scratch; the last epoch's held-out metrics."""
    from training.config import TrainConfig
    from training.train import run

    kw = {"data": "digits", "batch_size": 64, "threads": None, **options}
    cfg = TrainConfig(genotype=str(genotype), out=str(out), overrides=overrides, epochs=epochs, seed=seed,
                      quiet=True, tensorboard=False, **kw)
    t0 = time.perf_counter()
    summary = run(cfg, log=lambda s: None)
    return {**summary["last"], "seconds": round(time.perf_counter() - t0, 1)}


STEREO_SEARCH = {"overrides": ["input.height=48", "input.width=64"], "batch_size": 4,
                 "windows": 2, "burn_in": 1, "seconds": 2.0,
                 "train_seeds": list(range(100, 112)), "val_seeds": [0], "threads": 1}
STEREO_TRAIN = {"data": "synthetic", "crop": [48, 64], "windows": 4, "burn_in": 2, "batch_size": 4, "seconds": 2.0,
                "train_seeds": list(range(100, 124)), "val_seeds": list(range(4)), "threads": 1}


def searched_and_random(searched: str, space, out: Path, seed: int) -> list[tuple[str, Path]]:
    """(name, genotype file) of the searched genotype and 3 random genotypes of its space."""
    from training.search.decode import random_genotypes

    rows = [("searched", Path(searched))]
    for k, g in enumerate(random_genotypes(space, 3, seed=seed)):
        path = out / f"random{k}.yaml"
        path.write_text(g.to_yaml())
        rows.append((f"random {k}", path))
    return rows


def digits_section(args, out: Path) -> dict:
    from training.search.bilevel import SearchConfig, run_search
    from training.search.space import load_search_space

    space_path = out / "space.yaml"
    space_path.write_text(SPACE.format(base=ROOT / "genotypes" / "cifar10.yaml"))
    overrides = [*DIGITS, "head.aux.after=2"]
    t0 = time.perf_counter()
    sc = SearchConfig(space=str(space_path), out=str(out / "search"), overrides=overrides, data="digits",
                      epochs=args.search_epochs, warmup=max(1, args.search_epochs // 3), batch_size=64, quiet=True)
    summary = run_search(sc, log=lambda s: None)
    search_s = time.perf_counter() - t0
    print(f"SpikeDHS search on digits: {args.search_epochs} epochs in {search_s:.0f} s")
    rows = searched_and_random(summary["genotype"], load_search_space(space_path, overrides=overrides), out, 0)
    table = []
    for name, path in rows:
        r = train(path, out / f"train_{name.replace(' ', '')}", args.epochs, [])
        table.append({"genotype": name, "accuracy_pct": r["accuracy_pct"], "seconds": r["seconds"]})
        print(f"  {name:<10} test accuracy {r['accuracy_pct']:6.2f} %  ({args.epochs} epochs, {r['seconds']} s)")
    return {"search_epochs": args.search_epochs, "search_s": round(search_s, 1), "retrain_epochs": args.epochs,
            "table": table}


def snasnet_section(args, out: Path) -> dict:
    import torch
    import yaml
    from scipy.stats import kendalltau

    from compiler import GenotypeError, parse_genotype, plan
    from compiler.overrides import apply_overrides
    from training.images import classification_data
    from training.search.snasnet import genotype_with_cell, matrix_code, random_cell, score_genotype

    template = yaml.safe_load((ROOT / "genotypes" / "snasnet_cifar10_bw.yaml").read_text())
    template, _ = apply_overrides(template, [*SNAS_DIGITS, f"mixing={args.snas_mixing}"])
    train_set, _ = classification_data("digits")
    pick = np.random.default_rng(0).permutation(len(train_set))[:args.snas_batch]
    batch = {"image": train_set.x[torch.as_tensor(pick)]}
    rng = np.random.default_rng(1)
    scores, accs, cells, params = [], [], [], []
    while len(scores) < args.candidates:
        m = random_cell(rng, 4, backward=True)
        try:
            g = parse_genotype(genotype_with_cell(template, "bw", m))
        except GenotypeError:
            continue
        path = out / f"cell{len(scores)}.yaml"
        path.write_text(g.to_yaml())
        scores.append(score_genotype(g, batch, g.input.timesteps, seed=0))
        params.append(plan(g).params)
        r = train(path, out / f"train{len(scores)}", args.snas_epochs, [], batch_size=16, lr=0.05)
        accs.append(r["accuracy_pct"])
        cells.append(matrix_code(m))
        print(f"  SNASNet cell {cells[-1]}  score {scores[-1]:9.3f}  accuracy {accs[-1]:6.2f} %  "
              f"{params[-1]:7,} params  ({r['seconds']} s)")
    tau, p = kendalltau(scores, accs)
    print(f"SNASNet on digits: Kendall tau(score, accuracy after {args.snas_epochs} epochs) = {tau:.3f} "
          f"(p = {p:.3f}, {len(scores)} cells)")
    size = {"score": kendalltau(params, scores), "accuracy": kendalltau(params, accs)}
    print("  for reference, Kendall tau with the parameter count: " +
          ", ".join(f"{k} {v[0]:.3f} (p = {v[1]:.3f})" for k, v in size.items()))
    return {"cells": cells, "scores": scores, "accuracy_pct": accs, "params": params,
            "kendall_tau_params": {k: [float(v[0]), float(v[1])] for k, v in size.items()},
            "kendall_tau": tau, "p_value": p,
            "epochs": args.snas_epochs, "score_batch": args.snas_batch, "mixing": args.snas_mixing}


def stereo_section(args, out: Path) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from training.search.bilevel import SearchConfig, run_search
    from training.search.space import load_search_space

    space_path = ROOT / "searchspaces" / "stereo_small.yaml"
    t0 = time.perf_counter()
    options = {**STEREO_SEARCH, "epochs": args.stereo_search_epochs, "warmup": args.stereo_search_warmup,
               "max_batches": args.stereo_search_batches}
    sc = SearchConfig(space=str(space_path), out=str(out / "search"), quiet=True, **options)
    summary = run_search(sc, log=lambda s: None)
    search_s = time.perf_counter() - t0
    print(f"SpikeDHS search on synthetic stereo: {sc.epochs} epochs x {sc.max_batches} batches in {search_s:.0f} s, "
          f"path {({k: v['path'] for k, v in summary['decoded'].items()})}")
    rows = searched_and_random(summary["genotype"], load_search_space(space_path), out, args.seed)
    # every genotype at the base's input size: the search ran smaller, and the held-out recordings are
    # generated at the genotype's size (training itself takes random crops)
    base = load_search_space(space_path).base.input
    size = [f"input.height={base.height}", f"input.width={base.width}"]
    # two trainings at a time, one thread each; every genotype once per training seed
    def folder(name: str, seed: int) -> Path:
        return out / (f"train_{name.replace(' ', '')}" + ("" if seed == 0 else f"_seed{seed}"))

    jobs = [(name, path, seed) for name, path in rows for seed in args.stereo_seeds]
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train, path, folder(name, seed), args.stereo_epochs, size, seed=seed, **STEREO_TRAIN)
                   for name, path, seed in jobs]
        results = [f.result() for f in futures]
    table = []
    from compiler import load_genotype, plan

    keys = ("one_pixel_accuracy_pct", "mean_disparity_error_px", "mean_depth_error_cm")
    for name, path in rows:
        g = load_genotype(path, overrides=size)
        paths = {n.name: [layer.level for layer in n.layers if layer.kind == "cell"] for n in g.networks}
        runs = [r for (n, _, _), r in zip(jobs, results, strict=True) if n == name]
        row = {"genotype": name, "path": paths, "params": plan(g).params, "seeds": list(args.stereo_seeds),
               "seconds": [r["seconds"] for r in runs], **{k: [r.get(k) for r in runs] for k in keys},
               **{f"mean_{k}": float(np.mean([r.get(k) for r in runs])) for k in keys}}
        table.append(row)
        per_seed = " ".join(f"{v:.2f}" for v in row["one_pixel_accuracy_pct"])
        print(f"  {name:<10} 1PA {row['mean_one_pixel_accuracy_pct']:6.2f} % (seeds: {per_seed})  disparity error "
              f"{row['mean_mean_disparity_error_px']:.3f} px  path {paths}  ({row['params']:,} params)")
    return {"search": options, "search_s": round(search_s, 1),
            "retrain": {**STEREO_TRAIN, "epochs": args.stereo_epochs}, "table": table}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="digits,snasnet,stereo", help="which sections to run (comma-separated)")
    ap.add_argument("--epochs", type=int, default=4, help="digits: retraining budget per genotype")
    ap.add_argument("--search-epochs", type=int, default=6, help="digits: search epochs")
    ap.add_argument("--candidates", type=int, default=20, help="snasnet: cells scored and trained")
    ap.add_argument("--snas-epochs", type=int, default=4, help="snasnet: training epochs per cell (batch 16)")
    ap.add_argument("--snas-batch", type=int, default=128, help="snasnet: images in the scoring mini-batch")
    ap.add_argument("--snas-mixing", default="spike", choices=["spike", "membrane"],
                    help="snasnet: the cells' mixing (the shipped genotype: spike)")
    ap.add_argument("--snas-out", default="snasnet", help="snasnet: the key of its results in results.json")
    ap.add_argument("--stereo-epochs", type=int, default=4, help="stereo: retraining budget per genotype")
    ap.add_argument("--stereo-search-epochs", type=int, default=5, help="stereo: search epochs")
    ap.add_argument("--stereo-search-warmup", type=int, default=2, help="stereo: epochs on the weights only")
    ap.add_argument("--stereo-search-batches", type=int, default=10, help="stereo: batches of 4 per search epoch")
    ap.add_argument("--stereo-seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0],
                    help="stereo: training seeds of every retraining, e.g. 0,1,2 (the mean is reported)")
    ap.add_argument("--workers", type=int, default=2, help="stereo: trainings at a time (one thread each)")
    ap.add_argument("--seed", type=int, default=0, help="stereo: seed of the random genotypes")
    ap.add_argument("--out", default="runs/bench_search")
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    sections = {"digits": digits_section, "snasnet": snasnet_section, "stereo": stereo_section}
    unknown = [t for t in tasks if t not in sections]
    if unknown:
        ap.error(f"--tasks: unknown {unknown}; choose from {sorted(sections)}")
    out = Path(args.out)
    for task in tasks:
        (out / (args.snas_out if task == "snasnet" else task)).mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    for task in tasks:
        key = args.snas_out if task == "snasnet" else task
        result = sections[task](args, out / key)
        results = json.loads(results_path.read_text()) if results_path.exists() else {}  # other runs' sections
        results[key] = result
        results_path.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
