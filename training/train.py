"""``python -m training.train GENOTYPE [--set KEY=VALUE ...] --out runs/NAME [options]``

Trains any genotype with the methods of the papers: stereo on event windows (synthetic, MVSEC,
DSEC) with the sub-pixel cross entropy, classification on images repeated for T steps with the
auxiliary head; optionally searches surrogate temperatures (--dgs), time constants (--tps) and
neuron kinds (--hns) and writes them back into a genotype. Checkpoints (last.pt, best.pt), the
resolved configuration and genotype, and metrics per epoch go to --out. Under
``torchrun --nproc_per_node=N`` the global batch is split over the processes. Bad input: one line
``error: ...`` on stderr, exit code 2. See docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from runtime.core.errors import ArgumentParser, run_main
from runtime.data.options import add_recording_arguments
from runtime.data.synth.config import PHOTO_VARIATIONS, TRAIN_TEXTURE_SETS, SynthConfig, split_names

from .config import OPTIMIZER_IMPLS, RECIPES
from .execution import EXEC_MODES, LAYOUTS, PRECISIONS
from .runner import MAY_CHANGE_ON_RESUME, run

__all__ = ["config_from_args", "int_ranges", "main", "parser", "run"]  # run: training.runner's, for callers of old


def int_ranges(text: str) -> list[int]:
    """``1,2,5-7`` -> [1, 2, 5, 6, 7]."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep and lo else [int(part)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2,5-7, got {text!r}") from None
    return out


def photo_variations(text: str) -> str:
    """``coarser`` or ``turn,negative`` -> the same, checked as ``SynthConfig`` checks it."""
    names = split_names(text)
    try:
        SynthConfig(photo_variations=names)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(PHOTO_VARIATIONS)} separated by commas, "
                                         f"each once, got {text!r}") from None
    return ",".join(names)


def _layers(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _run_and_search_options(p: argparse.ArgumentParser, d) -> None:
    """The classification, run and search groups of ``python -m training.train`` (``d``: the defaults)."""
    g = p.add_argument_group("classification")
    g.add_argument("--timesteps", type=int, help="T: steps per image (default: the genotype's input.timesteps)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random flip + crop (default on, except for digits)")
    g = p.add_argument_group("run")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    g.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run (deletes "
                   "its checkpoints and logs; without it such a folder is refused)")
    g.add_argument("--init", metavar="CKPT", help="start from the weights of a checkpoint or shipped model of the "
                   "same genotype up to its neurons, e.g. a ReLU twin's best.pt (hybrid ANN-to-SNN training; "
                   "docs/training.md); a fresh optimiser and schedule")
    g.add_argument("--stop-after", type=int, help="end this invocation after N more epochs (resume later)")
    g.add_argument("--max-batches", type=int, help="at most N batches per epoch")
    g.add_argument("--eval-every", type=int, default=d.eval_every)
    g.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    g.add_argument("--best-metric", help="validation metric of best.pt (default: stereo one_pixel_accuracy_pct, "
                   "classification accuracy_pct)")
    g.add_argument("--threads", type=int, help="torch intra-op threads")
    g.add_argument("--exec", choices=EXEC_MODES, help="how the model runs over time: eager (plain steps), step "
                   "(fused neurons), multistep (convolutions over all steps at once); default multistep, or "
                   "step with searchers")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="fp32, or bf16: convolutions under bfloat16 autocast (AMX / AVX512-BF16 CPUs, CUDA)")
    g.add_argument("--layout", choices=LAYOUTS, default=d.layout,
                   help="memory order of the convolutions: auto (channels-last under bf16 on a CPU for a "
                   "model of 2-D convolutions only; conv3d-channels-last in fp32 on a CPU for a model with 3-D ones; "
                   "where each was measured faster; else nchw), nchw, channels-last (2-D and 3-D), "
                   "conv3d-channels-last (the 3-D convolutions compute channels-last, all else plain)")
    g.add_argument("--device", default=d.device, help="cpu or cuda[:N]")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    g = p.add_argument_group("search (DGS, TPS, HNS)")
    g.add_argument("--dgs", type=_layers, metavar="LAYERS", help="comma-separated neuron layers (or 'all') "
                   "whose surrogate temperature b DGS searches")
    g.add_argument("--dgs-every", type=int, default=d.dgs_every, help="e_D: run DGS every N epochs")
    g.add_argument("--dgs-iters", type=int, default=d.dgs_iters, help="I_g: DGS iterations per run")
    g.add_argument("--dgs-lr", type=float, help="SGD step of each candidate's weight copy (default: current lr)")
    g.add_argument("--dgs-mode", choices=("per-layer", "coupled"), default=d.dgs_mode,
                   help="per-layer: each chosen layer's b probed and updated on its own (the paper's); coupled: "
                   "all chosen layers' b probed together (this project's earlier rule)")
    g.add_argument("--tps", type=_layers, nargs="?", const=["all"], metavar="LAYERS",
                   help="search time constants tau (all LIF/ALIF layers, or a list)")
    g.add_argument("--tps-every", type=int, default=d.tps_every, help="s: iterations between tau updates")
    g.add_argument("--tps-delta", type=float, default=d.tps_delta, help="candidates tau - delta, tau, tau + delta")
    g.add_argument("--tps-warmup", type=int, default=d.tps_warmup, help="epochs before TPS starts")
    g.add_argument("--hns", type=_layers, nargs="?", const=["all"], metavar="LAYERS",
                   help="search LIF vs ALIF vs ReLU per layer with the energy loss (all LIF layers, or a list)")
    g.add_argument("--hns-lambda", type=float, default=d.hns_lambda, help="weight of the energy loss")
    g.add_argument("--hns-every", type=int, default=d.hns_every, help="iterations per HNS step (kind set, alpha reset)")
    g.add_argument("--hns-warmup", type=int, default=d.hns_warmup, help="epochs before HNS starts")
    g.add_argument("--arch-lr", type=float, default=d.arch_lr, help="Adam lr of the architecture weights alpha")


def _stereo_options(p: argparse.ArgumentParser, d) -> None:
    """The stereo group of ``python -m training.train`` (``d``: the defaults), with the recording options."""
    g = p.add_argument_group("stereo")
    g.add_argument("--windows", type=int, default=d.windows, help="K: windows with loss per sample")
    g.add_argument("--burn-in", type=int, default=d.burn_in, help="B: windows before them, without loss")
    g.add_argument("--stride", type=int, help="windows between sample starts (default K)")
    g.add_argument("--crop", type=int_ranges, metavar="H,W", help="train on random H x W crops (a model built at "
                   "that size shares the weights); evaluation runs at the genotype's full size")
    g.add_argument("--diversity", type=float, default=d.diversity, help="b of the Laplace target (px)")
    g.add_argument("--loss-step", type=float, help="disparity step of the loss (default: the genotype's)")
    g.add_argument("--disparity-l1", type=float, default=d.disparity_l1, metavar="WEIGHT",
                   help="add WEIGHT x the smooth-L1 error (px) of the estimator's disparity to the paper's loss "
                        "(eq. 6); not in the papers (docs/training.md, 'What one training step is'); default 0")
    g.add_argument("--distill", metavar="TEACHER.pt",
                   help="a trained stereo model (a run's checkpoint or a stripped model, e.g. the ReLU twin) whose "
                        "matching costs join the loss's target; not in the papers (docs/training.md, 'What one "
                        "training step is'); default none")
    g.add_argument("--distill-weight", type=float, default=d.distill_weight, metavar="W",
                   help="the target is (1 - W) x the Laplace target + W x softmax(-teacher cost) (default %(default)s)")
    g.add_argument("--train-seeds", type=int_ranges, help="synthetic training seeds, e.g. 100,101 (default 100..115)")
    g.add_argument("--val-seeds", type=int_ranges, help="synthetic held-out seeds (default 0,1,2,3)")
    g.add_argument("--seconds", type=float, default=d.seconds, help="length of each synthetic recording")
    g.add_argument("--photo-fraction", type=float, default=d.photo_fraction, metavar="F",
                   help="share of a synthetic training scene's surfaces textured with a photograph (the others "
                        "procedural); held-out scenes: all (default %(default)s)")
    g.add_argument("--photo-augment", type=float, default=d.photo_augment, metavar="F",
                   help="share of those training photographs varied: turned a quarter, negative, up to 16x less "
                        "fine detail, each drawn (docs/training.md, 'Data'); held-out ones never (default %(default)s)")
    g.add_argument("--photo-variations", type=photo_variations, default=d.photo_variations, metavar="LIST",
                   help="the variations --photo-augment applies, of turn, negative and coarser; each is drawn all "
                        "the same, so the others vary the same photographs as with all three (default %(default)s)")
    g.add_argument("--train-textures", default=d.train_textures, choices=TRAIN_TEXTURE_SETS,
                   help="the photographs of the synthetic training scenes: train (eight), train_more (those and "
                        "two more, mostly smooth: runtime.data.synth.textures.MORE_TRAIN_PHOTOS) or train_most (those "
                        "and MOST_TRAIN_PHOTOS, two more); held-out scenes keep theirs (default %(default)s)")
    g.add_argument("--split", type=int, default=d.split, choices=(1, 2, 3),
                   help="MVSEC split as DDES defines it (its command line offers 1 and 3)")
    g.add_argument("--eval-part", choices=("val", "test"), default=d.eval_part,
                   help="MVSEC held-out part: DDES's 200 validation frames or the rest")
    add_recording_arguments(g, "train")


def parser() -> argparse.ArgumentParser:
    """Every option of ``python -m training.train`` (docs/training.md)."""
    from .config import TrainConfig

    d = TrainConfig(genotype="", out="")
    p = ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("genotype", help="genotype YAML file, e.g. genotypes/stereo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a genotype value (repeatable), e.g. --set input.height=96")
    p.add_argument("--out", required=True, help="run folder for checkpoints, config and metrics")
    p.add_argument("--data", help="stereo: synthetic (default) or an MVSEC/DSEC folder; "
                   "classification: digits (default) or a CIFAR / IDX / image-folder path")
    p.add_argument("--recipe", choices=RECIPES, default=d.recipe,
                   help="the schedule values left open: cpu-quick (short CPU runs, not the papers') or paper (every "
                   "value the SpikeDHS papers give: stereo 200 epochs, batch 2, Adam 1e-3 halved at 50/100/150; "
                   "classification 100 epochs, batch 50, SGD 0.025 cosine); docs/training.md, Recipes")
    p.add_argument("--epochs", type=int, help="epochs (default: the recipe's, cpu-quick 10, paper 200 / 100)")
    p.add_argument("--batch-size", type=int,
                   help="global batch size (default: the recipe's, cpu-quick 4 / 64, paper 2 / 50)")
    p.add_argument("--lr", type=float, help="learning rate (default: adam 1e-3, sgd 0.025)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help="default: stereo adam, classification sgd")
    p.add_argument("--optimizer-impl", choices=OPTIMIZER_IMPLS, default=d.optimizer_impl,
                   help="how the optimiser updates the weights: fused (one kernel for all parameters, where torch "
                        "has one for them; else foreach) or foreach (multi-tensor ops, the same bits as the "
                        "per-parameter loop); a resumed run keeps the one it began with (default %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, help="default: stereo 0, classification 3e-4")
    p.add_argument("--schedule", choices=("multistep", "cosine", "constant"),
                   help="default: stereo multistep (x gamma at milestones), classification cosine")
    p.add_argument("--milestones", type=int_ranges, help="epochs at which multistep multiplies the lr by gamma "
                   "(default: paper 50,100,150 (stereo); cpu-quick 60%% and 80%% of --epochs)")
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights, updated after every "
                        "optimiser step with this decay (e.g. 0.99; below 1), started from the run's first weights; "
                        "the optimiser's own weights are validated beside it (val_raw); not in the papers "
                        "(docs/training.md, 'The weights' moving average'); 0: off")
    _stereo_options(p, d)
    _run_and_search_options(p, d)
    return p


def config_from_args(args: argparse.Namespace):
    from .config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return TrainConfig(**kwargs)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    from compiler import GenotypeError

    from .errors import TrainError

    def body() -> int:
        cfg = config_from_args(args)
        keep = {k: v for k in MAY_CHANGE_ON_RESUME if (v := getattr(args, k)) is not None and v is not False}
        keep["stop_after"] = args.stop_after
        given = None
        if args.resume:
            from .options import given_options

            given = given_options(p, argv)
        summary = run(cfg, resume=args.resume, resume_overrides=keep, overwrite=args.overwrite, given=given)
        best = summary["best"]
        if int(os.environ.get("RANK", "0")) == 0:
            if best.get("value") is not None:
                print(f"best {best['metric']} = {best['value']:.4f} at epoch {best['epoch']}; "
                      f"checkpoints in {summary['out']}")
        return 0

    return run_main(body, (GenotypeError, TrainError), "interrupted (resume with --resume)")


if __name__ == "__main__":
    sys.exit(main())
