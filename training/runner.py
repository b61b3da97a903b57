"""Training as a library: ``run(cfg)`` trains a ``TrainConfig`` (the run folder locked, checked, resumed
exactly), ``load_data`` gives a genotype's data, ``load_init`` starts from a checkpoint's weights.
``python -m training.train`` (``training/train.py``) is its command line; see docs/training.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from runtime.core.names import TASKS
from runtime.data.options import recording_options

# The options a resumed run takes from its new command line; any other given again must agree with the
# run's own (training.options.check_resume_options).
MAY_CHANGE_ON_RESUME = ("epochs", "stop_after", "threads", "max_batches", "quiet", "exec")


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
        _check_genotype(given, ck, out)
    saved = {**ck["config"], **(resume_overrides or {})}
    saved.setdefault("stop_after", None)
    try:
        return ck, type(cfg)(**saved)
    except TypeError as exc:
        raise TrainError(f"{path}: its configuration does not load ({exc})") from None


def load_init(model, path: str) -> None:
    """``--init``: the weights of a checkpoint (or shipped model file) into ``model`` (``fit_weights``)."""
    from . import checkpoint as ckpt_io

    fit_weights(model, ckpt_io.load(path)["model"], path, "--init")


def fit_weights(model, state: dict, path: str, option: str) -> None:
    """A checkpoint's ``state`` (read from ``path`` for ``option``) into ``model``; every entry must match in
    name and shape (a twin differs only in its neurons, which hold no weights), else a ``TrainError`` naming
    the first that does not."""
    from . import checkpoint as ckpt_io
    from .errors import TrainError

    ckpt_io.check_weights(state, path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        name, why = (missing[0], "missing") if missing else (extra[0], "not in this model")
        raise TrainError(f"{option} {path}: weight {name!r} {why} ({len(missing)} missing, {len(extra)} extra)",
                         "start from a checkpoint of the same genotype (neuron kinds may differ)")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise TrainError(f"{option} {path}: weight {key!r} has shape {tuple(value.shape)}, this model "
                             f"{tuple(own[key].shape)}", "start from a checkpoint of the same genotype")
    model.load_state_dict(state)


def _build(g):
    """``build_model(g)``; a model this machine cannot allocate is a ``TrainError``."""
    from compiler import build_model
    from compiler.errors import out_of_memory
    from runtime.core.errors import first_line

    from .errors import TrainError

    try:
        return build_model(g)
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        raise TrainError(f"{g.file or g.name}: this machine cannot allocate the model ({first_line(exc)})",
                         "reduce its size (input, channels, disparities) or --batch-size") from None


def _check_genotype(given: dict, ck: dict, out: Path) -> None:
    """The genotype file given again with ``--resume`` must be the one the run started with (read with
    its overrides); another one would be ignored without a word."""
    from compiler import load_genotype, loads_genotype

    from .errors import TrainError

    if not given.get("genotype") or not isinstance(ck.get("genotype_start"), str):
        return
    overrides = given.get("overrides", ck["config"].get("overrides") or [])
    mine = load_genotype(given["genotype"], overrides=overrides).to_yaml().splitlines()
    theirs = loads_genotype(ck["genotype_start"], file=str(out / "genotype.yaml")).to_yaml().splitlines()
    if mine != theirs:
        pairs = enumerate(zip(mine, theirs, strict=False))
        line = next((i for i, (a, b) in pairs if a != b), min(len(mine), len(theirs)))
        raise TrainError(f"{given['genotype']}: differs from the genotype the run in {out} was started with "
                         f"(its genotype.yaml; line {line + 1}), and --resume keeps the run's genotype",
                         "resume without it or with the same file, or start a new run")


def extend_schedule(trainer, saved_epochs: int, log) -> None:
    """Say what a changed ``--epochs`` does to the learning-rate schedule on resume. Cosine: recomputed
    for the new length (the epochs still to train follow the new curve from the epoch reached); the
    others keep their steps (multistep: its milestones; constant: its rate)."""
    import math

    cfg, sched = trainer.cfg, trainer.scheduler
    if cfg.epochs == saved_epochs:
        return
    if cfg.schedule == "cosine" and trainer.epoch < cfg.epochs:
        sched.T_max = max(1, cfg.epochs)
        for group, base in zip(trainer.optimizer.param_groups, sched.base_lrs, strict=True):
            cos = (1 + math.cos(math.pi * trainer.epoch / sched.T_max)) / 2
            group["lr"] = sched.eta_min + (base - sched.eta_min) * cos
        sched._last_lr = [g["lr"] for g in trainer.optimizer.param_groups]
        what = f"the cosine schedule is recomputed for {cfg.epochs} epochs (it was {saved_epochs})"
    elif cfg.schedule == "multistep":
        what = f"the multistep schedule keeps its milestones {list(cfg.milestones)}"
    else:
        what = f"the {cfg.schedule} schedule goes on"
    lr = trainer.optimizer.param_groups[0]["lr"]
    log(f"--epochs {cfg.epochs} (the run had {saved_epochs}): {what}; epoch {trainer.epoch + 1} trains at lr {lr:.4g}")


def _genotypes(cfg, ck, out: Path):
    """The run's genotype (from the checkpoint when resuming) with the task's defaults filled into
    ``cfg``, and the genotype it trains on (``--crop``: the same at the crop's size)."""
    from compiler import load_genotype, loads_genotype

    from .config import task_defaults
    from .errors import TrainError

    if ck is not None:
        g = loads_genotype(ck["genotype_start"], file=str(out / "genotype.yaml"))
    else:
        g = load_genotype(cfg.genotype, overrides=cfg.overrides)
    cfg = task_defaults(cfg, g)
    _check(cfg, g)
    train_g = g
    if cfg.crop:
        if len(cfg.crop) != 2 or not TASKS[g.task].events:
            raise TrainError("--crop takes H,W and applies to stereo genotypes", "e.g. --crop 48,64")
        train_g = loads_genotype(g.to_yaml(), file=f"{cfg.genotype} (cropped)",
                                 overrides={"input.height": cfg.crop[0], "input.width": cfg.crop[1]})
    return cfg, g, train_g


def _write_start(out: Path, cfg, ck, searchers, start_yaml: str, data: str, world: int, epoch: int) -> None:
    """The run folder's files at the start (main process): logs cut back to the checkpoint's epochs and
    ``searched.yaml`` as it holds it when resuming, ``genotype.yaml`` and ``config.yaml``."""
    from . import checkpoint as ckpt_io
    from .runlog import repair

    out.mkdir(parents=True, exist_ok=True)
    if ck is not None:
        repair(out, epoch, pending=ck.get("pending") is not None)
        if searchers:
            ckpt_io.write_text_atomic(_searched_yaml(ck["genotype"]), out / "searched.yaml")
    ckpt_io.write_text_atomic(start_yaml, out / "genotype.yaml")
    ckpt_io.write_text_atomic(yaml.safe_dump({"config": cfg.to_dict(), "data": data, "world_size": world},
                                             sort_keys=False), out / "config.yaml")


def _load_resumed(trainer, ck: dict, out: Path, log) -> None:
    """The checkpoint's state into ``trainer``, and the log's ``resumed`` line."""
    from .execution import optimizer_in_use

    made = optimizer_in_use(trainer.optimizer)
    trainer.load_state(ck)
    kept = optimizer_in_use(trainer.optimizer)
    log(f"resumed {out / 'last.pt'} after epoch {trainer.epoch}"
        + (" (its validation was interrupted: it runs first)" if trainer.pending is not None else "")
        + (f"; optimizer {kept}, as the run began" if kept != made else ""))


def _run(cfg, resume: bool, resume_overrides: dict | None, log, given: dict | None = None) -> dict:
    """The run in order: config or resume, model, data, searchers, the epoch loop (``Trainer.fit``)."""
    import torch

    from . import checkpoint as ckpt_io
    from .distributed import broadcast_module, convert_batchnorm, one_machine_note, setup, teardown
    from .execution import execution_line, set_up_execution
    from .loop import Trainer
    from .options import check_device, check_options
    from .runlog import MetricsLog
    from .searchers import make_searchers, write_back

    out = Path(cfg.out)
    ck = None
    if resume:
        ck, cfg = _resume(cfg, out, resume_overrides, given)
    check_options(cfg)
    check_device(cfg.device)
    threads = set_up_execution(cfg)
    dist = setup(cfg.device)
    try:
        cfg, g, train_g = _genotypes(cfg, ck, out)
        torch.manual_seed(cfg.seed)
        model = _build(train_g)
        if dist.enabled:
            convert_batchnorm(model)
            broadcast_module(model, dist)
        model.to(cfg.device)
        teacher = _teacher(cfg, train_g, ck, log if dist.main else (lambda s: None))  # before the data: fails fast
        train_data, val_data = load_data(cfg, g, log if dist.main else (lambda s: None))
        searchers = make_searchers(cfg, model, train_g)
        eval_model = _build(g) if train_g is not g else None
        trainer = Trainer(cfg, train_g, model, train_data, val_data, dist, searchers,
                          log=log if dist.main else (lambda s: None), eval_model=eval_model, teacher=teacher)
        log(execution_line(trainer, threads))
        note = one_machine_note(dist, cfg.device)
        if note and dist.main:
            log(note)
        _start_weights(trainer, ck, out, log)
        start_yaml = g.to_yaml()
        metrics_log = None
        if dist.main:
            _write_start(out, cfg, ck, searchers, start_yaml, _describe(train_data, val_data), dist.world,
                         trainer.epoch)
            metrics_log = MetricsLog(out, cfg.tensorboard)
        last_metrics = trainer.fit(
            out, metrics_log, stop_after=cfg.stop_after,
            extra_state={"genotype_start": start_yaml, **(teacher.record() if teacher else {})},
            genotype_yaml=lambda: write_back(g, searchers, trainer).to_yaml(), line=lambda row: _epoch_line(row, cfg),
            on_saved=(lambda text: ckpt_io.write_text_atomic(_searched_yaml(text), out / "searched.yaml"))
            if searchers else None)
        if metrics_log is not None:
            metrics_log.close()
        return {"out": str(out), "epoch": trainer.epoch, "best": trainer.best, "last": last_metrics,
                "world_size": dist.world}
    finally:
        teardown(dist)


def _start_weights(trainer, ck: dict | None, out: Path, log) -> None:
    """The weights a run starts from: a resumed run's checkpoint (and its schedule), else ``--init``'s, else
    the model's initialisation."""
    cfg = trainer.cfg
    if ck is not None:
        _load_resumed(trainer, ck, out, log)
        extend_schedule(trainer, int(ck["config"]["epochs"]), log)
    elif cfg.init:
        load_init(trainer.model, cfg.init)
        log(f"weights from {cfg.init}")


def _teacher(cfg, train_g, ck, log):
    """``--distill``: the teacher at the training size (None without), described in the log; a resumed run's
    must be the same file."""
    if cfg.distill is None:
        return None
    from . import checkpoint as ckpt_io
    from .distill import Teacher, check_resumed_teacher, file_sha256, teacher_genotype

    saved = ckpt_io.load(cfg.distill)  # a missing, unreadable or foreign file: its one-line error here
    tg = teacher_genotype(saved, cfg.distill, train_g)
    model = _build(tg)
    fit_weights(model, saved["model"], cfg.distill, "--distill")  # by name and shape, or the first that is not
    teacher = Teacher(cfg.distill, tg, model, file_sha256(cfg.distill), cfg)
    if ck is not None:
        check_resumed_teacher(teacher, ck)
    log(teacher.describe())
    return teacher


def _searched_yaml(text: str) -> str:
    from compiler import loads_genotype

    loads_genotype(text, file="searched.yaml")  # the compiler must accept what we write
    return text


def _check(cfg, g) -> None:
    """The options once the task's defaults are filled in; the stereo options are refused on a genotype of
    another task (they would be ignored)."""
    from runtime.data.synth.config import TRAIN_TEXTURE_SETS

    from .config import TrainConfig
    from .errors import TrainError
    from .execution import check_optimizer_impl
    from .options import check_options, check_task_options

    check_options(cfg)  # again: the task's defaults are filled in now
    check_task_options(cfg, g.task, f"{g.name} is a {g.task} genotype")
    if cfg.photo_variations != TrainConfig.photo_variations and not cfg.photo_augment:
        raise TrainError("--photo-variations chooses what --photo-augment varies; give --photo-augment above 0")
    if cfg.train_textures not in TRAIN_TEXTURE_SETS:  # (the command line's choices; a TrainConfig can hold any)
        raise TrainError(f"--train-textures {cfg.train_textures!r} is not a set training may draw",
                         f"use one of {', '.join(TRAIN_TEXTURE_SETS)}")
    check_optimizer_impl(cfg.optimizer_impl)
    if cfg.distill is not None and not cfg.distill.strip():  # (an empty path would mean no teacher, silently)
        raise TrainError("--distill needs a checkpoint file, got an empty path")
    if cfg.distill_weight != TrainConfig.distill_weight and cfg.distill is None:
        raise TrainError("--distill-weight weighs the teacher of --distill; give --distill TEACHER.pt")
    searched = [f"--{n}" for n in ("tps", "hns") if getattr(cfg, n)]  # (DGS's b: followed, training.ema)
    if cfg.ema and searched:
        raise TrainError(f"--ema cannot average weights while {searched[0]} searches what the neurons compute",
                         "train with --ema after the search, from its weights (--init)")


def load_data(cfg, g, log=print):
    """(train, held-out) data for the genotype's task."""
    from runtime.data.synth.config import split_names

    from .data import SyntheticSpec
    from .datasets import stereo_data
    from .errors import TrainError
    from .images import check_image_shape, classification_data

    inp = g.input
    t = time.perf_counter()
    if TASKS[g.task].events:
        spec = SyntheticSpec(train_seeds=tuple(cfg.train_seeds), val_seeds=tuple(cfg.val_seeds),
                             seconds=cfg.seconds, val_seconds=cfg.seconds, photo_fraction=cfg.photo_fraction,
                             photo_augment=cfg.photo_augment,
                             photo_variations=split_names(cfg.photo_variations),
                             train_textures=cfg.train_textures)
        real = recording_options(cfg.to_dict(), "train")
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
    val, raw = row.get("val") or {}, row.get("val_raw") or {}
    for key, label, fmt in (("one_pixel_accuracy_pct", "1PA", "{:.2f} %"),
                            ("mean_disparity_error_px", "MDispE", "{:.3f} px"),
                            ("mean_depth_error_cm", "MDE", "{:.2f} cm"),
                            ("accuracy_pct", "acc", "{:.2f} %")):
        if val.get(key) is not None:
            own = f" (weights {fmt.format(raw[key])})" if raw.get(key) is not None else ""  # --ema: val is the average
            parts.append(f"{label} {fmt.format(val[key])}{own}")
    for k, v in row.items():
        if k.startswith(("dgs", "tps", "hns")) and isinstance(v, str):
            parts.append(v)
    return " | ".join(parts)
