"""``python -m training.search``: architecture search that writes genotypes.

    python -m training.search spikedhs SPACE.yaml --out runs/search [--data synthetic|digits|PATH] ...
    python -m training.search snasnet GENOTYPE.yaml --cell NAME --out runs/snas [--candidates 5000] ...

``spikedhs``: differentiable cell and layer search on a supernet (training/supernet.py,
training/archsearch.py), first-order bi-level, writes ``searched.yaml``, ``arch.jsonl`` (alpha, beta
and the decoded architecture every ``--decode-every`` epochs), ``architecture.png`` and checkpoints
(``--resume`` continues exactly). ``snasnet``: training-free search (training/snasnet.py): random
cells of the genotype's named cell, scored at initialisation by the sparsity-aware Hamming kernel on
one mini-batch; writes ``snasnet.jsonl`` (every candidate), ``searched.yaml`` (the best) and prints
the ranked table. Both run under ``torchrun`` (gloo on CPU): the supernet's gradients are summed over
processes; SNASNet candidates are scored in parallel and gathered. Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from .train import int_ranges


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.search", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="method", required=True)
    d = sub.add_parser("spikedhs", help="differentiable cell + layer search on a supernet")
    d.add_argument("space", help="search-space YAML, e.g. searchspaces/stereo.yaml")
    d.add_argument("--out", required=True)
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the base genotype")
    d.add_argument("--data", help="stereo: synthetic (default) or an MVSEC/DSEC path; classification: digits "
                                  "(default), a CIFAR/IDX/image-folder path")
    d.add_argument("--epochs", type=int, help="default 12 (stereo) or 50 (classification), as the paper")
    d.add_argument("--warmup", type=int, help="epochs on the weights only (default 3 / 15)")
    d.add_argument("--batch-size", type=int)
    d.add_argument("--lr", type=float, help="weights: SGD momentum 0.9 (default 0.002 / 0.025)")
    d.add_argument("--arch-lr", type=float, default=3e-4, help="alpha and beta: Adam")
    d.add_argument("--cost-lambda", type=float, default=0.0,
                   help="weight of the expected-energy penalty (per uJ); 0 = off")
    d.add_argument("--decode-every", type=int, default=3)
    d.add_argument("--windows", type=int, default=2, help="stereo: loss windows per sample")
    d.add_argument("--burn-in", type=int, default=1)
    d.add_argument("--seconds", type=float, default=2.0, help="synthetic stereo: seconds per sequence")
    d.add_argument("--train-seeds", type=int_ranges, help="synthetic training seeds, e.g. 100-115 or 1,2,5-7")
    d.add_argument("--val-seeds", type=int_ranges)
    d.add_argument("--max-batches", type=int, help="per epoch (quick runs)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--resume", action="store_true")
    d.add_argument("--stop-after", type=int, help="end after N epochs of this invocation (resume later)")
    d.add_argument("--threads", type=int)
    d.add_argument("--device", default="cpu")
    d.add_argument("--quiet", action="store_true")
    s = sub.add_parser("snasnet", help="training-free search of random cells")
    s.add_argument("genotype", help="the macro network, e.g. genotypes/snasnet_cifar10_bw.yaml")
    s.add_argument("--cell", required=True, help="the cell to search")
    s.add_argument("--out", required=True)
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--data", help="classification: digits (default) or a CIFAR/IDX/image-folder path; "
                                  "stereo: synthetic (default) or an MVSEC/DSEC path")
    s.add_argument("--input-op", default="skip", help="the op from the cell input into node 0 (skip; conv1x1 "
                                                      "where the input has other channels than the nodes)")
    s.add_argument("--candidates", type=int, default=5000)
    s.add_argument("--nodes", type=int, default=4)
    s.add_argument("--forward-only", action="store_true", help="no backward (delayed) connections")
    s.add_argument("--batch", type=int, default=256, help="samples in the scoring mini-batch")
    s.add_argument("--steps", type=int, help="time steps (default: the genotype's input.timesteps; stereo: 4 "
                                             "consecutive windows)")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int)
    s.add_argument("--quiet", action="store_true")
    return p


def run_snasnet(args, log=print) -> dict:
    import torch

    from compiler import GenotypeError, parse_genotype
    from compiler.genotype import apply_overrides
    from compiler.yamlio import load_yaml

    from .distributed import setup, teardown
    from .errors import TrainError
    from .images import check_image_shape, classification_data
    from .snasnet import cell_from_matrix, genotype_with_cell, matrix_code, random_cell, score_genotype

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("candidates", "batch", "top", "nodes"):
        if getattr(args, name) < 1:
            raise TrainError(f"--{name} must be at least 1")
    try:
        text = Path(args.genotype).read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainError(f"{args.genotype}: cannot read it ({exc.strerror or exc})") from None
    template, _ = load_yaml(text, args.genotype)
    template, _ = apply_overrides(template, args.overrides)
    base = parse_genotype(template, file=args.genotype)
    if args.cell not in [c.name for c in base.cells]:
        raise TrainError(f"{args.genotype}: no cell {args.cell!r}", f"cells: {[c.name for c in base.cells]}")
    if base.task == "classification":
        train, _ = classification_data(args.data or "digits")
        check_image_shape(train, base.input.in_channels, base.input.height, base.input.width)
        pick = np.random.default_rng(args.seed).permutation(len(train))[: args.batch]
        inputs = {"image": train.x[torch.as_tensor(pick)]}
        steps = args.steps or base.input.timesteps
    else:  # stereo: a mini-batch of `steps` consecutive event windows
        steps = args.steps or 4
        inputs, pick = stereo_minibatch(base, args.data or "synthetic", args.batch, steps, args.seed)
    dist = setup("cpu")
    try:
        # Draw every candidate first (cheap, the same on every process): candidate i comes from seed
        # (seed, i). Codes that prune to a cell already drawn are duplicates: scored once, listed with
        # `duplicate_of`, left out of the ranking.
        drawn: list[dict] = []
        first: dict[str, int] = {}
        for i in range(args.candidates):
            rng = np.random.default_rng([args.seed, i])
            g = None
            redraws = 0
            while g is None:  # a cell the compiler refuses (e.g. skip between channel counts) is redrawn
                m = random_cell(rng, args.nodes, backward=not args.forward_only)
                try:
                    g = parse_genotype(genotype_with_cell(template, args.cell, m, args.input_op),
                                       file=f"candidate {i}")
                except GenotypeError as exc:
                    redraws += 1
                    if redraws >= 100:
                        raise TrainError(f"candidate {i}: no valid random cell in 100 draws (last: {exc})",
                                         "--input-op conv1x1 if the cell input has other channels than the "
                                         "nodes") from None
            key = json.dumps(cell_from_matrix(m, args.input_op), sort_keys=True)
            drawn.append({"index": i, "cell": matrix_code(m), "redraws": redraws, "genotype": g,
                          "duplicate_of": first.setdefault(key, i)})
        unique = [d for d in drawn if d["duplicate_of"] == d["index"]]
        mine = unique[dist.rank::dist.world]
        results = []
        bar = None
        if dist.main and not args.quiet:
            from tqdm import tqdm
            bar = tqdm(total=len(mine), desc="candidates", dynamic_ncols=True)
        t0 = time.perf_counter()
        for d in mine:
            score = score_genotype(d["genotype"], inputs, steps, seed=args.seed + d["index"])
            results.append({"index": d["index"], "cell": d["cell"], "score": score, "redraws": d["redraws"]})
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        if dist.enabled:
            gathered: list = [None] * dist.world
            torch.distributed.all_gather_object(gathered, results)
            results = [r for part in gathered for r in part]
        scores = {r["index"]: r["score"] for r in results}
        results = [{"index": d["index"], "cell": d["cell"], "score": scores[d["duplicate_of"]],
                    "redraws": d["redraws"], **({"duplicate_of": d["duplicate_of"]}
                                               if d["duplicate_of"] != d["index"] else {})} for d in drawn]
        elapsed = time.perf_counter() - t0
        summary = {"candidates": len(results), "distinct": len(unique), "seconds": round(elapsed, 2),
                   "world_size": dist.world}
        if dist.main:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "snasnet.jsonl", "w", encoding="utf-8") as f:
                for r in results:
                    f.write(json.dumps(r) + "\n")
            ranked = sorted((r for r in results if "duplicate_of" not in r), key=lambda r: (-r["score"], r["index"]))
            best = ranked[0]
            m = np.array([[int(c) for c in row] for row in best["cell"].split()])
            data = genotype_with_cell(template, args.cell, m, args.input_op, score=best["score"],
                                      candidates=len(results), distinct=len(unique), seed=args.seed,
                                      data=str(args.data),
                                      batch=len(pick), steps=steps)
            data["name"] = f"{base.name}-snasnet"
            data["source"] = f"SNASNet training-free search, best of {len(results)} random cells (seed {args.seed})"
            g = parse_genotype(data, file=str(out / "searched.yaml"))
            from .checkpoint import write_text_atomic
            write_text_atomic(g.to_yaml(), out / "searched.yaml")
            log(f"{len(results)} candidates ({len(unique)} distinct cells) scored in {elapsed:.1f} s on "
                f"{dist.world} process(es)")
            log(f"{'rank':>4}  {'index':>6}  {'score':>12}  cell")
            for k, r in enumerate(ranked[: args.top], 1):
                log(f"{k:>4}  {r['index']:>6}  {r['score']:>12.4f}  {r['cell']}")
            log(f"wrote {out / 'searched.yaml'} (best: {best['cell']}, score {best['score']:.4f})")
            summary.update(best=best, top=ranked[: args.top])
        return summary
    finally:
        teardown(dist)


def stereo_minibatch(g, source: str, batch: int, steps: int, seed: int):
    """``batch`` samples of ``steps`` consecutive SBT windows of a stereo source, as per-step inputs."""

    from .data import SyntheticSpec, stereo_data

    inp = g.input
    seconds = max(1.0, 0.05 * (steps + 2))
    spec = SyntheticSpec(train_seeds=(100, 101), val_seeds=(0,), seconds=seconds, val_seconds=seconds)
    data = stereo_data(source, g, length=steps, stride=1, burn_in=0, synthetic=spec)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data), size=min(batch, len(data)), replace=False).tolist()
    b = data.batch(pick, (inp.height, inp.width), rng)  # (L, B, C, H, W)
    return [{"left": b["left"][t], "right": b["right"][t]} for t in range(steps)], pick


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from compiler import GenotypeError

    from .errors import TrainError

    try:
        if args.method == "snasnet":
            run_snasnet(args, log=print if not args.quiet else (lambda s: None))
            return 0
        from .archsearch import SearchConfig, run_search

        names = {f.name for f in dataclasses.fields(SearchConfig)}
        sc = SearchConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
        summary = run_search(sc, resume=args.resume)
        if "genotype" in summary:
            print(f"searched genotype: {summary['genotype']}")
        return 0
    except (GenotypeError, TrainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
