"""Evidence for the searches, as a benchmark (not a test): on scikit-learn's digits,

1. SpikeDHS: search a small classification space for a fixed budget, then retrain the searched
   genotype and 3 random genotypes of the same space (random cells from the same candidates, same
   path) for the same budget; report their test accuracies side by side.
2. SNASNet: score ~10 random cells at initialisation, train each briefly, and report Kendall's tau
   between the score and the accuracy.

    python benchmarks/bench_search.py [--epochs 4] [--candidates 10] [--out runs/bench_search]

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


def train(genotype: Path, out: Path, epochs: int, overrides: list[str], seed: int = 0) -> dict:
    from training.loop import TrainConfig
    from training.train import run

    cfg = TrainConfig(genotype=str(genotype), out=str(out), overrides=overrides, data="digits", epochs=epochs,
                      batch_size=64, seed=seed, quiet=True, tensorboard=False, threads=None)
    t0 = time.perf_counter()
    summary = run(cfg, log=lambda s: None)
    return {"accuracy_pct": summary["last"]["accuracy_pct"], "seconds": round(time.perf_counter() - t0, 1)}


def random_genotype(space, rng: np.random.Generator):
    """A genotype of the space with a random cell (and reduction cell): random sources and candidates."""
    from training.decode import cell_sources
    from training.supernet import to_genotype

    names = [c.name for c in space.candidates]
    decoded = {}
    for s in space.networks:
        def cell():
            out = {}
            for i, sources in enumerate(cell_sources(space.nodes)):
                picks = sorted(rng.choice(len(sources), size=min(space.keep, len(sources)), replace=False))
                out[f"n{i}"] = [(sources[p], names[int(rng.integers(len(names)))]) for p in picks]
            return out
        decoded[s.network] = {"cell": cell(), "path": list(s.path), "reduction_cell": cell()}
    return to_genotype(space, decoded)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4, help="retraining budget per genotype")
    ap.add_argument("--search-epochs", type=int, default=6)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--snas-epochs", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_search")
    ap.add_argument("--skip-spikedhs", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    from compiler import GenotypeError
    from training.supernet import load_search_space

    base = ROOT / "genotypes" / "cifar10.yaml"
    space_path = out / "space.yaml"
    space_path.write_text(SPACE.format(base=base))
    overrides = [*DIGITS, "head.aux.after=2"]

    if not args.skip_spikedhs:
        from training.archsearch import SearchConfig, run_search

        t0 = time.perf_counter()
        sc = SearchConfig(space=str(space_path), out=str(out / "search"), overrides=overrides, data="digits",
                          epochs=args.search_epochs, warmup=max(1, args.search_epochs // 3), batch_size=64,
                          quiet=True)
        summary = run_search(sc, log=lambda s: None)
        search_s = time.perf_counter() - t0
        print(f"SpikeDHS search on digits: {args.search_epochs} epochs in {search_s:.0f} s")
        rows = [("searched", Path(summary["genotype"]))]
        space = load_search_space(space_path, overrides=overrides)
        rng = np.random.default_rng(0)
        for k in range(3):
            g = None
            while g is None:  # redraw cells the compiler refuses (skip between channel counts)
                try:
                    g = random_genotype(space, rng)
                except GenotypeError:
                    pass
            path = out / f"random{k}.yaml"
            path.write_text(g.to_yaml())
            rows.append((f"random {k}", path))
        table = []
        for name, path in rows:
            r = train(path, out / f"train_{name.replace(' ', '')}", args.epochs, [])
            table.append({"genotype": name, **r})
            print(f"  {name:<10} test accuracy {r['accuracy_pct']:6.2f} %  ({args.epochs} epochs, {r['seconds']} s)")
        results["spikedhs_digits"] = {"search_epochs": args.search_epochs, "search_s": round(search_s, 1),
                                      "retrain_epochs": args.epochs, "table": table}

    # SNASNet: score vs accuracy after a short training
    import torch
    import yaml
    from scipy.stats import kendalltau

    from compiler import parse_genotype
    from compiler.genotype import apply_overrides
    from training.data import classification_data
    from training.snasnet import genotype_with_cell, matrix_code, random_cell, score_genotype

    template = yaml.safe_load((ROOT / "genotypes" / "snasnet_cifar10_bw.yaml").read_text())
    snas_over = ["input.height=8", "input.width=8", "input.channels=1", "input.timesteps=3",
                 "networks.backbone.node_channels=[16,32]", "networks.backbone.layers[0].channels=16",
                 "networks.backbone.layers[2].channels=32"]
    template, _ = apply_overrides(template, snas_over)
    train_set, _ = classification_data("digits")
    pick = np.random.default_rng(0).permutation(len(train_set))[:128]
    batch = {"image": train_set.x[torch.as_tensor(pick)]}
    rng = np.random.default_rng(1)
    scores, accs, cells = [], [], []
    while len(scores) < args.candidates:
        m = random_cell(rng, 4, backward=True)
        try:
            g = parse_genotype(genotype_with_cell(template, "bw", m))
        except GenotypeError:
            continue
        path = out / f"snas{len(scores)}.yaml"
        path.write_text(g.to_yaml())
        scores.append(score_genotype(g, batch, 3, seed=0))
        accs.append(train(path, out / f"snas_train{len(scores)}", args.snas_epochs, [])["accuracy_pct"])
        cells.append(matrix_code(m))
        print(f"  SNASNet cell {cells[-1]}  score {scores[-1]:9.3f}  accuracy {accs[-1]:6.2f} %")
    tau, p = kendalltau(scores, accs)
    print(f"SNASNet on digits: Kendall tau(score, accuracy after {args.snas_epochs} epochs) = {tau:.3f} "
          f"(p = {p:.3f}, {len(scores)} cells)")
    results["snasnet_digits"] = {"cells": cells, "scores": scores, "accuracy_pct": accs,
                                 "kendall_tau": tau, "p_value": p, "epochs": args.snas_epochs}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
