"""The training loop: backpropagation through time over the compiled model's one-step forward.

Stereo: a sample is ``burn_in + K`` consecutive windows; the burn-in windows run without gradient
and without loss (they only build up state), each of the K windows adds the sub-pixel cross entropy
of its matching cost. Classification: the image is fed for T steps, logits (and auxiliary logits) are averaged
over the steps. Evaluation streams the held-out data (stereo: 1PA, mean disparity error, mean depth error;
classification: accuracy)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from compiler.ir import Genotype, Stereo
from compiler.ops import estimate_disparity, training_resample
from runtime.core.names import TASKS

from . import checkpoint as ckpt_io
from .config import TrainConfig
from .data import StereoData
from .distributed import Dist, all_sum, sum_gradients
from .ema import WeightAverage
from .errors import TrainError
from .execution import (
    apply_layout,
    autocast,
    check_bf16_model,
    class_logits,
    conv3d_in_channels_last,
    neurons,
    optimizer_impl,
    resolve_exec,
    resolve_layout,
    stereo_costs,
    views_for_volume,
)
from .images import ClassData, augment
from .losses import classification_loss, disparity_smooth_l1, subpixel_cross_entropy, valid_disparity
from .runlog import MetricsLog
from .validation import evaluate_classification, evaluate_stereo, held_out_metrics


def make_optimizer(cfg: TrainConfig, params) -> tuple[torch.optim.Optimizer, Any]:
    params = list(params)
    impl = optimizer_impl(cfg.optimizer_impl, params)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **{impl: True})
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              **{impl: True})
    else:
        raise TrainError(f"unknown optimizer {cfg.optimizer!r}", "use adam or sgd")
    if cfg.schedule == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    elif cfg.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    else:
        raise TrainError(f"unknown schedule {cfg.schedule!r}", "use multistep, cosine or constant")
    return opt, sched


def epoch_generators(seed: int, epoch: int) -> tuple[torch.Generator, np.random.Generator]:
    """The RNGs of one epoch (data order, crops, augmentation): a function of seed and epoch only,
    so a resumed run draws exactly what an uninterrupted one would."""
    return (torch.Generator().manual_seed(seed * 1_000_003 + epoch),
            np.random.default_rng([seed, epoch]))


class Trainer:
    """Holds the model, data, optimiser and searchers of a run; ``fit`` trains and evaluates."""

    def __init__(self, cfg: TrainConfig, genotype: Genotype, model: torch.nn.Module, train_data, val_data,
                 dist: Dist, searchers: list | None = None, log: Callable[[str], None] = print,
                 eval_model: torch.nn.Module | None = None, teacher=None):
        self.cfg = cfg
        self.teacher = teacher  # --distill: a training.distill.Teacher whose costs join the stereo target
        self.eval_model = eval_model
        self.genotype = genotype
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.dist = dist
        self.searchers = searchers or []
        self.log = log
        self.stereo = TASKS[genotype.task].disparity  # disparity loss and metrics (the task table)
        self.optimizer, self.scheduler = make_optimizer(cfg, model.parameters())
        self.epoch = 0
        self.iteration = 0
        self.best: dict[str, Any] = {"metric": cfg.best_metric, "value": None, "epoch": None}
        known = held_out_metrics(self.stereo)
        if cfg.best_metric is not None and cfg.best_metric not in known:  # before an epoch is spent on it
            raise TrainError(f"--best-metric {cfg.best_metric!r} is not a held-out metric of this task",
                             f"use one of {', '.join(known)}")
        self.history: list[dict] = []  # metrics rows, kept in the checkpoint
        self.keep_history = True
        if cfg.batch_size % dist.world:
            raise TrainError(f"--batch-size {cfg.batch_size} is not divisible by the {dist.world} processes")
        self.local_batch = cfg.batch_size // dist.world
        self.exec = resolve_exec(cfg.exec, model)  # how the model runs over time
        check_bf16_model(model, cfg.precision, cfg.device)
        self.layout, self.layout_why = resolve_layout(cfg.layout, cfg.precision, cfg.device, model)
        apply_layout(model, self.layout)  # values unchanged; the optimiser holds the same parameters
        self.ema: WeightAverage | None = None  # --ema: started from the weights of the first step (after --init)
        self.pending: dict | None = None  # resumed between an epoch's training and its validation: its row

    # ---------------------------------------------------------------------------- batches
    def num_samples(self) -> int:
        return len(self.train_data)

    def batches(self, epoch: int):
        """Global batches of sample indices for ``epoch`` (last incomplete one dropped) and the epoch RNGs."""
        gen, rng = epoch_generators(self.cfg.seed, epoch)
        order = torch.randperm(self.num_samples(), generator=gen).tolist()
        n = len(order) // self.cfg.batch_size
        if n == 0:
            raise TrainError(f"the training set has {len(order)} samples, fewer than one batch of "
                             f"{self.cfg.batch_size}", "lower --batch-size")
        if self.cfg.max_batches:
            n = min(n, self.cfg.max_batches)
        return [order[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size] for i in range(n)], gen, rng

    def make_batch(self, indices: list[int], gen: torch.Generator, rng: np.random.Generator) -> dict[str, Tensor]:
        """The global batch's random draws, then this process's slice of it."""
        lo, hi = self.dist.rank * self.local_batch, (self.dist.rank + 1) * self.local_batch
        inp = self.genotype.input
        if self.stereo:
            data: StereoData = self.train_data
            b = data.batch(indices, (inp.height, inp.width), rng)
            return {k: v[:, lo:hi] for k, v in b.items()}
        data: ClassData = self.train_data
        x = data.x[indices]
        if self.cfg.augment:
            x = augment(x, gen)
        return {"image": x[lo:hi], "label": data.y[indices][lo:hi]}

    # ---------------------------------------------------------------------------- losses
    def batch_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The normalised loss of this process's slice (gradients summed over processes give the
        gradient of the global batch's mean loss), plus the searchers' extra terms."""
        with neurons(self.exec), views_for_volume(self.model, self.exec, self.cfg.precision), \
                training_resample(conv3d_in_channels_last(self.layout)), \
                autocast(self.cfg.precision, self.cfg.device):
            if self.stereo:
                total, count = self.stereo_loss_sum(batch)
            else:
                total, count = self.class_loss_sum(batch)
        count = all_sum(torch.as_tensor(count, dtype=torch.float64), self.dist).clamp(min=1)
        loss = total / count.to(total.dtype)
        info = {"task_loss": float(all_sum(loss.detach(), self.dist))}
        for s in self.searchers:
            extra = s.extra_loss()
            if extra is not None:
                loss = loss + extra / self.dist.world
                info[f"{s.name}_loss"] = float(extra.detach())
        return loss, info

    def stereo_loss_sum(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        head: Stereo = self.genotype.head
        step = self.cfg.loss_step or head.disparity_step
        limit = (head.disparities - 1) * step
        left, right, disp = batch["left"], batch["right"], batch["disparity"]  # (L, B, C, H, W), (L, B, H, W)
        burn = self.cfg.burn_in
        count = sum(valid_disparity(disp[t], limit).sum() for t in range(burn, len(disp)))
        total = torch.zeros(())
        taught = self.teacher.costs(left, right, burn) if self.teacher is not None else None
        for t, cost in enumerate(stereo_costs(self.model, left, right, burn, self.exec), start=burn):
            s, _ = subpixel_cross_entropy(cost, disp[t], step, self.cfg.diversity, limit,
                                          None if taught is None else taught[t - burn], self.cfg.distill_weight)
            if self.cfg.disparity_l1:
                estimate = estimate_disparity(cost, head.estimator, head.support, head.disparity_step)
                s = s + self.cfg.disparity_l1 * disparity_smooth_l1(estimate, disp[t], limit)
            total = total + s
        return total, count

    def class_loss_sum(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch["image"], batch["label"]
        T = self.cfg.timesteps
        logits, aux = class_logits(self.model, x, T, self.exec)
        head = self.genotype.head
        return classification_loss(logits / T, y, None if aux is None else aux / T, head.aux_weight)

    # ---------------------------------------------------------------------------- training
    def search_parameters(self) -> list[Tensor]:
        return [p for s in self.searchers for p in s.parameters()]

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        if self.cfg.ema and self.ema is None:  # before the forward moves BatchNorm's statistics
            self.ema = WeightAverage.of_run(self.model, self.cfg.ema)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        for s in self.searchers:
            s.zero_grad()
        loss, info = self.batch_loss(batch)
        loss.backward()
        sum_gradients(list(self.model.parameters()) + self.search_parameters(), self.dist)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        for s in self.searchers:
            s.after_step(self)
        return info

    def train_epoch(self, epoch: int) -> dict[str, float]:
        batches, gen, rng = self.batches(epoch)
        for s in self.searchers:
            s.before_epoch(self, epoch)
        bar = None
        if not self.cfg.quiet and self.dist.main:
            from tqdm import tqdm
            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False,
                       dynamic_ncols=True)
        losses: list[float] = []
        for indices in batches:
            batch = self.make_batch(indices, gen, rng)
            info = self.train_step(batch)
            if not math.isfinite(info["task_loss"]):
                raise TrainError(f"the training loss became {info['task_loss']} in epoch {epoch + 1} (batch "
                                 f"{len(losses) + 1}); last.pt holds the weights of epoch {self.epoch}",
                                 "lower --lr, then --resume (or start over with --overwrite)")
            losses.append(info["task_loss"])
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
                bar.update()
        if bar is not None:
            bar.close()
        out = {"train_loss": float(np.mean(losses)), "batches": len(batches)}
        for s in self.searchers:
            out.update(s.end_epoch(self, epoch, batches, gen, rng) or {})
        if self.ema is not None:  # a search's new temperatures in the average too
            self.ema.follow(self.model)
        return out

    # ---------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, raw: bool = False) -> dict[str, Any]:
        """Held-out metrics of the current weights (on the full-size model when training on crops): with
        ``--ema`` their moving average, or the optimiser's own weights with ``raw``."""
        average = None if raw or self.ema is None else self.ema.tensors
        model = self.model
        if self.eval_model is not None:
            self.eval_model.load_state_dict(average if average is not None else self.model.state_dict())
            model = self.eval_model
            average = None
        kept = None
        if average is not None:  # the average in the model for the evaluation, the model's weights back after
            kept = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(average)
        model.eval()
        try:
            return evaluate_stereo(model, self.val_data, self.cfg, self.exec) if self.stereo \
                else evaluate_classification(model, self.val_data, self.cfg.timesteps, self.cfg.eval_batch_size,
                                             self.exec)
        finally:
            if kept is not None:
                self.model.load_state_dict(kept)
            self.model.train()

    def improved(self, metrics: dict) -> bool:
        value = metrics.get(self.best["metric"])
        if value is None:
            return False
        lower_better = self.best["metric"].startswith(("mean_", "median_", "loss"))
        old = self.best["value"]
        return old is None or (value < old if lower_better else value > old)

    # ---------------------------------------------------------------------------- checkpoints
    def state(self, genotype_yaml: str) -> dict:
        model = {k: v.contiguous() for k, v in self.model.state_dict().items()}  # plain order, whatever --layout
        weights = {"model": model}
        if self.ema is not None:  # "model": what is validated (training.evaluate, --init, strip); resume: both
            weights = {"model": self.ema.state_dict(), "train_model": model}
        return {**weights, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "iteration": self.iteration,
                "best": dict(self.best), "rng": ckpt_io.rng_state(), "genotype": genotype_yaml,
                "config": self.cfg.to_dict(), "search": {s.name: s.state_dict() for s in self.searchers},
                "history": list(self.history)}

    def load_state(self, ck: dict) -> None:
        """Continue from a checkpoint; one that does not fit this model and optimiser is a ``TrainError``."""
        try:
            self._load_state(ck)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            what = " ".join(str(exc).split())
            raise TrainError(f"cannot resume from this checkpoint: {what[:300] or type(exc).__name__}",
                             "resume with the genotype and options it was trained with") from None

    def _load_state(self, ck: dict) -> None:
        if self.cfg.ema:
            self.model.load_state_dict(ck["train_model"])
            self.ema = WeightAverage.of_run(self.model, self.cfg.ema)
            self.ema.load_state_dict(ck["model"])
        else:
            self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.epoch = int(ck["epoch"])
        self.pending = ck.get("pending")  # trained, its validation interrupted: ``fit`` validates it first
        self.iteration = int(ck.get("iteration", 0))
        self.best = dict(ck["best"])
        self.history = list(ck.get("history", []))
        ckpt_io.set_rng_state(ck["rng"])
        for s in self.searchers:
            if s.name in ck.get("search", {}):
                s.load_state_dict(ck["search"][s.name])

    # ---------------------------------------------------------------------------- the epoch loop
    def fit(self, out: Path, metrics_log: MetricsLog | None, *, stop_after: int | None = None,
            genotype_yaml: Callable[[], str] | None = None, extra_state: dict | None = None,
            epoch_fields: Callable[[int], dict] | None = None, evaluate: bool = True,
            line: Callable[[dict], str] | None = None, on_saved: Callable[[str], None] | None = None) -> dict:
        """Train until ``cfg.epochs`` (or ``stop_after`` epochs of this call), the one epoch loop of
        training and of the architecture search. Per epoch: train, step the schedule, and where the epoch is
        evaluated (``evaluate``, every ``eval_every`` epochs) write ``last.pt`` with the epoch's training
        before the validation starts (marked ``pending``: an interruption or error during the validation loses
        no training; ``--resume`` validates that epoch first); then on the main process write, in this order,
        the metrics row, ``best.pt`` when the best metric improved, and ``last.pt`` (atomically, with
        ``genotype_yaml()`` and ``extra_state``), which commits the epoch; then ``on_saved(genotype text)`` and
        ``line(row)`` to the log; all processes meet at a barrier. A crash between two of these writes loses
        nothing: resuming from ``last.pt`` cuts the logs back to its epochs (``runlog.repair``; a pending
        epoch's metrics row goes too) and redoes what it does not hold, which writes the same files again.
        Returns the last held-out metrics."""
        cfg = self.cfg
        ran, last_metrics = 0, {}
        extra = extra_state or {}
        if self.pending is not None:  # last.pt was written after this epoch's training, before its validation
            row, self.pending = dict(self.pending), None
            last_metrics = self._close_epoch(out, metrics_log, row, True, genotype_yaml, extra, line, on_saved)
        while self.epoch < cfg.epochs and (stop_after is None or ran < stop_after):
            epoch = self.epoch
            t0 = time.perf_counter()
            row: dict = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                         **(epoch_fields(epoch) if epoch_fields else {})}
            row.update(self.train_epoch(epoch))
            self.scheduler.step()
            row["train_s"] = round(time.perf_counter() - t0, 2)
            self.epoch = epoch + 1
            ran += 1
            validate = evaluate and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
            last_metrics = self._close_epoch(out, metrics_log, row, validate, genotype_yaml, extra, line,
                                             on_saved) or last_metrics
        return last_metrics

    def _close_epoch(self, out: Path, metrics_log: MetricsLog | None, row: dict, validate: bool,
                     genotype_yaml: Callable[[], str] | None, extra_state: dict,
                     line: Callable[[dict], str] | None, on_saved: Callable[[str], None] | None) -> dict:
        """After an epoch's training (``self.epoch`` already counts it): on the main process the pending
        ``last.pt`` and the validation where ``validate``, then the commit (``fit``); the barrier.
        Returns the held-out metrics (empty where not validated)."""
        metrics: dict = {}
        text = genotype_yaml() if genotype_yaml else self.genotype.to_yaml()
        if validate and self.dist.main:
            self._check_finite(row["epoch"])
            pending = json.loads(json.dumps(row))  # plain types, as metrics.jsonl will hold it (weights_only load)
            ckpt_io.save_atomic({**self.state(text), **extra_state, "pending": pending}, out / "last.pt")
            t1 = time.perf_counter()
            metrics = row["val"] = self.evaluate()
            if self.ema is not None:  # the optimiser's own weights beside their average, every epoch
                row["val_raw"] = self.evaluate(raw=True)
            row["eval_s"] = round(time.perf_counter() - t1, 2)
        if self.dist.main:
            if metrics_log is not None:
                metrics_log.write(row)
            self._save_epoch(out, row, text, extra_state)
            if on_saved is not None:
                on_saved(text)
            self.log(line(row) if line else f"epoch {row['epoch']}/{self.cfg.epochs} loss {row['train_loss']:.4f}")
        if self.dist.enabled:
            torch.distributed.barrier()
        return metrics

    def _check_finite(self, epoch: int) -> None:
        """Never a checkpoint of weights that are not finite."""
        bad = [k for k, v in self.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise TrainError(f"the weights became non-finite in epoch {epoch} ({bad[0]}); last.pt keeps "
                             f"epoch {epoch - 1}", "lower --lr, then --resume")

    def _save_epoch(self, out: Path, row: dict, genotype_yaml: str, extra_state: dict) -> None:
        """Write best.pt (when the best metric improved), then last.pt; never weights that are not finite."""
        self._check_finite(row["epoch"])
        better = "val" in row and self.improved(row["val"])
        if better:
            self.best.update(value=row["val"][self.cfg.best_metric], epoch=row["epoch"])
        if self.keep_history:
            self.history.append(MetricsLog.flat(row))
        state = {**self.state(genotype_yaml), **extra_state}
        if better:  # before last.pt: once last.pt says epoch e, best.pt is that of epoch e's best too
            ckpt_io.save_atomic(state, out / "best.pt")
        ckpt_io.save_atomic(state, out / "last.pt")
