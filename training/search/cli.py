"""``python -m training.search``: architecture search that writes genotypes.

    python -m training.search spikedhs SPACE.yaml --out runs/search [--data synthetic|digits|PATH] ...
    python -m training.search snasnet GENOTYPE.yaml --cell NAME --out runs/snas [--candidates 5000] ...

``spikedhs``: differentiable cell and layer search on a supernet (training/search/supernet.py,
training/search/bilevel.py), first-order bi-level, writes ``searched.yaml``, ``arch.jsonl`` (alpha, beta
and the decoded architecture every ``--decode-every`` epochs), ``architecture.png`` and checkpoints
(``--resume`` continues exactly). ``snasnet``: training-free search (training/search/snasnet.py): random
cells of the genotype's named cell, scored at initialisation by the sparsity-aware Hamming kernel on
one mini-batch; writes ``snasnet.jsonl`` (every candidate), ``searched.yaml`` (the best) and prints
the ranked table (no ``--resume``: a search is one deterministic pass, run again to redo it). Both lock
``--out`` for their run and refuse a folder that holds a run unless ``--overwrite`` (spikedhs: or
``--resume``), as ``python -m training.train`` does (docs/reliability.md). Both run under ``torchrun``
(gloo on CPU): the supernet's gradients are summed over processes; SNASNet candidates are scored in
parallel and gathered. Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from runtime.core.errors import ArgumentParser, run_main
from runtime.data.options import add_recording_arguments

from ..config import RECIPES
from ..execution import EXEC_MODES, LAYOUTS, PRECISIONS
from ..options import check_options
from ..train import int_ranges


def _real_data_options(p: argparse.ArgumentParser) -> None:
    """How MVSEC/DSEC data is read, as in ``python -m training.train`` (docs/data.md)."""
    add_recording_arguments(p, "search")


def _protocol_options(d: argparse.ArgumentParser) -> None:
    """The search phase's protocol: the recipe, crops, stems (docs/search.md, Protocol and recipes)."""
    d.add_argument("--recipe", choices=RECIPES, default="cpu-quick",
                   help="values left open: cpu-quick (default; batch 4 / 64, every sample cropped, spiking stems) or "
                   "paper (batch 1 / 50, crops with probability 0.5, ReLU stems); both search 12 / 50 epochs "
                   "with a 3 / 15-epoch warm-up and SGD 0.002 / 0.025 (docs/search.md, Protocol)")
    d.add_argument("--crop-prob", type=float, help="stereo: chance a sample is cropped at a random place, else at the "
                   "centre (default: the recipe's, cpu-quick 1, paper 0.5)")
    d.add_argument("--stems", choices=("ann", "spiking"), help="the base layers before the searched cells during "
                   "search: ann (ReLU, the paper's; searched.yaml keeps them spiking) or spiking (default: the "
                   "recipe's, cpu-quick spiking, paper ann)")


def _execution_options(d: argparse.ArgumentParser) -> None:
    """How the supernet runs, as in ``python -m training.train`` (docs/training.md, Execution speed)."""
    d.add_argument("--exec", choices=EXEC_MODES, help="multistep (the default: every convolution once over the T "
                   "steps), step (step by step, fused neurons) or eager (plain neuron steps, the reference)")
    d.add_argument("--precision", choices=PRECISIONS, help="fp32 (default), or bf16: convolutions under bfloat16 "
                   "autocast (AMX / AVX512-BF16 CPUs, CUDA)")
    d.add_argument("--layout", choices=LAYOUTS, help="memory order of the 2-D convolutions: auto (default; "
                   "channels-last under bf16 on a CPU for a supernet of 2-D convolutions only), nchw, "
                   "channels-last")


def _overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run (deletes its "
                   "checkpoints, logs and searched.yaml; without it such a folder is refused)")


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m training.search", description=__doc__.split("\n\n")[0])
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
    d.add_argument("--batch-size", type=int, help="default: the recipe's (cpu-quick 4 / 64, paper 1 / 50)")
    _protocol_options(d)
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
    d.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly (its logs are cut back "
                   "to its epochs)")
    _overwrite_option(d)
    d.add_argument("--stop-after", type=int, help="end after N epochs of this invocation (resume later)")
    d.add_argument("--threads", type=int)
    _execution_options(d)
    d.add_argument("--device", default="cpu")
    d.add_argument("--quiet", action="store_true")
    _real_data_options(d)
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
    _overwrite_option(s)
    _real_data_options(s)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    from compiler import GenotypeError

    from ..errors import TrainError

    def body() -> int:
        if args.method == "snasnet":
            from .snasnet import run_snasnet

            run_snasnet(args, log=print if not args.quiet else (lambda s: None), overwrite=args.overwrite)
            return 0
        from .bilevel import SearchConfig, run_search

        names = {f.name for f in dataclasses.fields(SearchConfig)}
        sc = SearchConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
        check_options(sc)  # before a folder is made (an infinite --arch-lr was a traceback)
        given = None
        if args.resume:
            from ..options import given_options

            given = given_options(p, argv)
        summary = run_search(sc, resume=args.resume, overwrite=args.overwrite, given=given)
        if "genotype" in summary:
            print(f"searched genotype: {summary['genotype']}")
        return 0

    return run_main(body, (GenotypeError, TrainError), "interrupted (spikedhs: resume with --resume)")


if __name__ == "__main__":
    sys.exit(main())
