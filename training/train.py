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
import time
from pathlib import Path

import yaml

from runtime.errors import ArgumentParser, run_main
from runtime.recording_options import add_recording_arguments, recording_options


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


def _layers(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    """Every option of ``python -m training.train`` (a flat list, long by nature; docs/training.md)."""
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
    p.add_argument("--epochs", type=int, help=f"epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, help="global batch size (default: stereo 4, classification 64)")
    p.add_argument("--lr", type=float, help="learning rate (default: adam 1e-3, sgd 0.025)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help="default: stereo adam, classification sgd")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, help="default: stereo 0, classification 3e-4")
    p.add_argument("--schedule", choices=("multistep", "cosine", "constant"),
                   help="default: stereo multistep (x gamma at milestones), classification cosine")
    p.add_argument("--milestones", type=int_ranges, help="epochs at which multistep multiplies the lr by gamma "
                   "(default 60%% and 80%% of --epochs)")
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("stereo")
    g.add_argument("--windows", type=int, default=d.windows, help="K: windows with loss per sample")
    g.add_argument("--burn-in", type=int, default=d.burn_in, help="B: windows before them, without loss")
    g.add_argument("--stride", type=int, help="windows between sample starts (default K)")
    g.add_argument("--crop", type=int_ranges, metavar="H,W", help="train on random H x W crops (a model built at "
                   "that size shares the weights); evaluation runs at the genotype's full size")
    g.add_argument("--diversity", type=float, default=d.diversity, help="b of the Laplace target (px)")
    g.add_argument("--loss-step", type=float, help="disparity step of the loss (default: the genotype's)")
    g.add_argument("--train-seeds", type=int_ranges, help="synthetic training seeds, e.g. 100,101 (default 100..115)")
    g.add_argument("--val-seeds", type=int_ranges, help="synthetic held-out seeds (default 0,1,2,3)")
    g.add_argument("--seconds", type=float, default=d.seconds, help="length of each synthetic recording")
    g.add_argument("--split", type=int, default=d.split, choices=(1, 2, 3),
                   help="MVSEC split as DDES defines it (its command line offers 1 and 3)")
    g.add_argument("--eval-part", choices=("val", "test"), default=d.eval_part,
                   help="MVSEC held-out part: DDES's 200 validation frames or the rest")
    add_recording_arguments(g, "train")
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
    g.add_argument("--device", default=d.device, help="cpu or cuda[:N]")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    g = p.add_argument_group("search (DGS, TPS, HNS)")
    g.add_argument("--dgs", type=_layers, metavar="LAYERS", help="comma-separated neuron layers (or 'all') "
                   "whose surrogate temperature b DGS searches")
    g.add_argument("--dgs-every", type=int, default=d.dgs_every, help="e_D: run DGS every N epochs")
    g.add_argument("--dgs-iters", type=int, default=d.dgs_iters, help="I_g: DGS iterations per run")
    g.add_argument("--dgs-lr", type=float, help="SGD step of each candidate's weight copy (default: current lr)")
    g.add_argument("--tps", type=_layers, nargs="?", const=["all"], metavar="LAYERS",
                   help="search time constants tau (all LIF/ALIF layers, or a list)")
    g.add_argument("--tps-every", type=int, default=d.tps_every, help="s: iterations between tau updates")
    g.add_argument("--tps-delta", type=float, default=d.tps_delta, help="candidates tau - delta, tau, tau + delta")
    g.add_argument("--tps-warmup", type=int, default=d.tps_warmup, help="epochs before TPS starts")
    g.add_argument("--hns", type=_layers, nargs="?", const=["all"], metavar="LAYERS",
                   help="search LIF vs ReLU per layer with the energy loss (all spiking layers, or a list)")
    g.add_argument("--hns-lambda", type=float, default=d.hns_lambda, help="weight of the energy loss")
    g.add_argument("--arch-lr", type=float, default=d.arch_lr, help="Adam lr of the architecture weights alpha")
    return p


def config_from_args(args: argparse.Namespace):
    from .config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return TrainConfig(**kwargs)


# The options a resumed run takes from its new command line; any other given again must agree with the
# run's own (training.options.check_resume_options).
MAY_CHANGE_ON_RESUME = ("epochs", "stop_after", "threads", "max_batches", "quiet")


def run(cfg, resume: bool = False, resume_overrides: dict | None = None, log=print, overwrite: bool = False,
        given: dict | None = None) -> dict:
    """Train as ``cfg`` says; returns the final summary (best and last metrics, paths).

    The run folder is locked for the run's life (the main process holds ``runlog.RunLock``) and checked
    first (``runlog.prepare``), both through ``runlog.claim``: a folder that holds a run is refused
    unless ``resume`` (continue it) or ``overwrite`` (delete its files and start over)."""
    from .options import check_options
    from .runlog import claim

    if not resume:
        check_options(cfg)  # a typo in an option creates no folder
    with claim(Path(cfg.out), resume=resume, overwrite=overwrite, log=log):
        return _run(cfg, resume, resume_overrides, log, given)


def _resume(cfg, out: Path, resume_overrides: dict | None, given: dict | None = None):
    """The checkpoint to continue and the configuration it was trained with (plus ``resume_overrides``);
    a checkpoint that cannot be continued exactly is a ``TrainError``."""
    import dataclasses as dc

    from . import checkpoint as ckpt_io
    from .errors import TrainError

    path = out / "last.pt"
    if not path.exists():
        raise TrainError(f"{out}: no last.pt to resume from", "train without --resume first")
    ck = ckpt_io.load(path)
    ckpt_io.check_resumable(ck, path, {f.name for f in dc.fields(type(cfg))})
    if given is not None:  # the options of this command line, which must agree with the run's
        from .options import check_resume_options

        check_resume_options(given, ck["config"], set(MAY_CHANGE_ON_RESUME), str(out))
    saved = {**ck["config"], **(resume_overrides or {})}
    saved.setdefault("stop_after", None)
    try:
        return ck, type(cfg)(**saved)
    except TypeError as exc:
        raise TrainError(f"{path}: its configuration does not load ({exc})") from None


def load_init(model, path: str) -> None:
    """``--init``: the weights of a checkpoint (or shipped model file) into ``model``; every entry must
    match in name and shape (a twin differs only in its neurons, which hold no weights), else a
    ``TrainError`` naming the first that does not."""
    from . import checkpoint as ckpt_io
    from .errors import TrainError

    state = ckpt_io.load(path)["model"]
    ckpt_io.check_weights(state, path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        name, why = (missing[0], "missing") if missing else (extra[0], "not in this model")
        raise TrainError(f"--init {path}: weight {name!r} {why} ({len(missing)} missing, {len(extra)} extra)",
                         "start from a checkpoint of the same genotype (neuron kinds may differ)")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise TrainError(f"--init {path}: weight {key!r} has shape {tuple(value.shape)}, this model "
                             f"{tuple(own[key].shape)}", "start from a checkpoint of the same genotype")
    model.load_state_dict(state)


def _build(g):
    """``build_model(g)``; a model this machine cannot allocate is a ``TrainError``."""
    from compiler import build_model
    from compiler.errors import out_of_memory
    from runtime.errors import first_line

    from .errors import TrainError

    try:
        return build_model(g)
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        raise TrainError(f"{g.file or g.name}: this machine cannot allocate the model ({first_line(exc)})",
                         "reduce its size (input, channels, disparities) or --batch-size") from None


def _run(cfg, resume: bool, resume_overrides: dict | None, log, given: dict | None = None) -> dict:
    """The run in order: config or resume, model, data, searchers, the epoch loop (``Trainer.fit``);
    long because it is that sequence."""
    import torch

    from compiler import load_genotype, loads_genotype

    from . import checkpoint as ckpt_io
    from .config import task_defaults
    from .distributed import broadcast_module, convert_batchnorm, setup, teardown
    from .errors import TrainError
    from .loop import Trainer
    from .options import check_device, check_options
    from .runlog import MetricsLog, repair
    from .searchers import make_searchers, write_back

    out = Path(cfg.out)
    ck = None
    if resume:
        ck, cfg = _resume(cfg, out, resume_overrides, given)
    check_options(cfg)
    check_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = setup(cfg.device)
    try:
        if ck is not None:
            g = loads_genotype(ck["genotype_start"], file=str(out / "genotype.yaml"))
        else:
            g = load_genotype(cfg.genotype, overrides=cfg.overrides)
        cfg = task_defaults(cfg, g)
        _check(cfg, g)
        torch.manual_seed(cfg.seed)
        train_g = g
        if cfg.crop:
            if len(cfg.crop) != 2 or g.task != "stereo":
                raise TrainError("--crop takes H,W and applies to stereo genotypes", "e.g. --crop 48,64")
            train_g = loads_genotype(g.to_yaml(), file=f"{cfg.genotype} (cropped)",
                                     overrides={"input.height": cfg.crop[0], "input.width": cfg.crop[1]})
        model = _build(train_g)
        if dist.enabled:
            convert_batchnorm(model)
            broadcast_module(model, dist)
        model.to(cfg.device)
        train_data, val_data = load_data(cfg, g, log if dist.main else (lambda s: None))
        searchers = make_searchers(cfg, model, train_g)
        eval_model = _build(g) if train_g is not g else None
        trainer = Trainer(cfg, train_g, model, train_data, val_data, dist, searchers,
                          log=log if dist.main else (lambda s: None), eval_model=eval_model)
        if ck is not None:
            trainer.load_state(ck)
            log(f"resumed {out / 'last.pt'} after epoch {trainer.epoch}")
        elif cfg.init:
            load_init(model, cfg.init)
            log(f"weights from {cfg.init}")
        start_yaml = g.to_yaml()
        metrics_log = None
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            if ck is not None:  # logs cut back to the checkpoint's epochs; searched.yaml as it holds it
                repair(out, trainer.epoch)
                if searchers:
                    ckpt_io.write_text_atomic(_searched_yaml(ck["genotype"]), out / "searched.yaml")
            ckpt_io.write_text_atomic(start_yaml, out / "genotype.yaml")
            ckpt_io.write_text_atomic(yaml.safe_dump({"config": cfg.to_dict(), "data": _describe(train_data, val_data),
                                                      "world_size": dist.world}, sort_keys=False),
                                      out / "config.yaml")
            metrics_log = MetricsLog(out, cfg.tensorboard)
        last_metrics = trainer.fit(
            out, metrics_log, stop_after=cfg.stop_after, extra_state={"genotype_start": start_yaml},
            genotype_yaml=lambda: write_back(g, searchers, trainer).to_yaml(), line=lambda row: _epoch_line(row, cfg),
            on_saved=(lambda text: ckpt_io.write_text_atomic(_searched_yaml(text), out / "searched.yaml"))
            if searchers else None)
        if metrics_log is not None:
            metrics_log.close()
        return {"out": str(out), "epoch": trainer.epoch, "best": trainer.best, "last": last_metrics,
                "world_size": dist.world}
    except TrainError:
        raise
    finally:
        teardown(dist)


def _searched_yaml(text: str) -> str:
    from compiler import loads_genotype

    loads_genotype(text, file="searched.yaml")  # the compiler must accept what we write
    return text


def _check(cfg, g) -> None:
    from .options import check_options

    check_options(cfg)  # again: the task's defaults are filled in now


def load_data(cfg, g, log=print):
    """(train, held-out) data for the genotype's task."""
    from .data import SyntheticSpec, stereo_data
    from .errors import TrainError
    from .images import check_image_shape, classification_data

    inp = g.input
    t = time.perf_counter()
    if g.task == "stereo":
        spec = SyntheticSpec(train_seeds=tuple(cfg.train_seeds), val_seeds=tuple(cfg.val_seeds),
                             seconds=cfg.seconds, val_seconds=cfg.seconds)
        real = recording_options(cfg.to_dict())
        data = stereo_data(cfg.data, g, length=cfg.burn_in + cfg.windows, stride=cfg.stride, burn_in=cfg.burn_in,
                           synthetic=spec, split=cfg.split, part=cfg.eval_part, real=real)
        log(f"data: {data.description}; {len(data)} training samples of {data.length} windows "
            f"({time.perf_counter() - t:.1f} s)")
        return data, data
    train, test = classification_data(cfg.data)
    check_image_shape(train, inp.in_channels, inp.height, inp.width)
    if train.classes > g.head.classes:
        raise TrainError(f"{train.name} has {train.classes} classes but the genotype's head has {g.head.classes}",
                         f"--set head.classes={train.classes}")
    log(f"data: {train.name} {len(train)} images, {test.name} {len(test)} images")
    return train, test


def _describe(train, val) -> str:
    return getattr(train, "description", None) or f"{train.name} ({len(train)}), {val.name} ({len(val)})"


def _epoch_line(row: dict, cfg) -> str:
    parts = [f"epoch {row['epoch']}/{cfg.epochs}", f"loss {row['train_loss']:.4f}", f"lr {row['lr']:.2e}",
             f"{row['train_s']:.0f} s"]
    val = row.get("val") or {}
    for key, label, fmt in (("one_pixel_accuracy_pct", "1PA", "{:.2f} %"),
                            ("mean_disparity_error_px", "MDispE", "{:.3f} px"),
                            ("mean_depth_error_cm", "MDE", "{:.2f} cm"),
                            ("accuracy_pct", "acc", "{:.2f} %")):
        if val.get(key) is not None:
            parts.append(f"{label} {fmt.format(val[key])}")
    for k, v in row.items():
        if k.startswith(("dgs", "tps", "hns")) and isinstance(v, str):
            parts.append(v)
    return " | ".join(parts)


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
