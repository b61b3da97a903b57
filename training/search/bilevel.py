"""SpikeDHS architecture search: first-order bi-level optimisation of the supernet.

The training set is split into two halves A and B. Every iteration the weights take a step on a
batch of A (the training loop of training/loop.py, on the supernet's weights only) and, after the
warm-up epochs, alpha and beta take one step on a batch of B (this module's ``ArchStep``). An
optional resource penalty adds ``cost_lambda`` x the expected energy per step of the searched cells
(candidate MACs from the compiler's registry, at 0.9 pJ per accumulate on spikes: see
``expected_energy``). Every ``decode_every`` epochs the architecture is decoded and logged; the
final one is written as a genotype YAML that the compiler accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from compiler.registry import OPS
from runtime.core.names import TASKS
from runtime.data.options import DEFAULT_MAX_OUTSIDE_RECTIFY

from .. import checkpoint as ckpt_io
from ..config import TrainConfig, search_recipe, task_defaults
from ..distributed import setup, sum_gradients, teardown
from ..errors import TrainError
from ..execution import check_precision, execution_line
from ..loop import Trainer, epoch_generators, make_optimizer
from ..options import check_resume_options, check_task_options
from ..runlog import MetricsLog, claim, repair
from ..searchers.base import Searcher
from .decode import softmax, to_genotype
from .drawings import decode_drawer, draw_architecture, draw_genotype
from .space import SearchSpace, load_search_space
from .supernet import FixedPath, Supernet, transition_weights

PJ_PER_AC = 0.9


def _cell_energy(cell, alphas: list[Tensor], size: tuple[int, ...], candidates) -> Tensor:
    """sum over edges and candidates of softmax(alpha) * ACs * 0.9 pJ, if every input spiked."""
    area = 1
    for v in size:
        area *= v
    cost = torch.zeros(())
    for i, sources in enumerate(cell.sources):
        w = torch.softmax(alphas[i].masked_fill(~cell.mask(i), float("-inf")), dim=-1)
        for s_idx, src in enumerate(sources):
            edge = cell.edges[f"n{i}_{src}"]
            for o, op in enumerate(edge.ops):
                if not bool(edge.mask[o]) or OPS[candidates[o].op].kind != "conv":
                    continue
                conv = op.conv
                acs = area * conv.in_channels * conv.out_channels * conv.weight[0, 0].numel()
                cost = cost + w[s_idx, o] * acs * PJ_PER_AC
    return cost


def expected_energy(net: Supernet) -> Tensor:
    """Expected accumulate energy (pJ) of one step of the searched cells if every input spiked: the
    candidates' ACs weighted by softmax(alpha) (and, on a trellis, by the softmax(beta) weight of the
    transition each cell serves). Differentiable in alpha and beta; a relative cost for the penalty
    (the real SynOps scale with the firing rate, which the runtime measures)."""
    total = torch.zeros(())
    cands = net.space.candidates
    for s in net.space.networks:
        block = net.blocks[s.network]["trellis"]
        if isinstance(block, FixedPath):
            for cell, j, red in zip(block.cells, s.path, block.reduction, strict=True):
                total = total + _cell_energy(cell, net.node_alphas(s.network, red), block.sizes[j], cands)
            continue
        betas = transition_weights(net.betas[s.network], block.allowed())
        for key, cell in block.cells.items():
            layer, j, k = (int(v) for v in key.split("_"))
            total = total + betas[layer, k, j - k + 1] * _cell_energy(cell, net.node_alphas(s.network),
                                                                      block.sizes[j], cands)
    return total


class ArchStep(Searcher):
    """One alpha/beta step on a batch of half B after every weight step (after the warm-up)."""

    name = "arch"

    def __init__(self, net: Supernet, cfg: TrainConfig, b_indices: list[int], warmup: int, arch_lr: float,
                 cost_lambda: float, decode_every: int, main: bool):
        super().__init__(cfg.out, main)
        self.net = net
        self.cfg = cfg
        self.b_indices = list(b_indices)
        self.warmup = warmup
        self.cost_lambda = cost_lambda
        self.decode_every = decode_every
        self.optimizer = torch.optim.Adam(net.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
        self.active = False
        self.on_decode: Callable[[int, dict], object] | None = None  # (epoch, decoded): the search's drawings

    def parameters(self) -> list[Tensor]:
        return self.net.arch_parameters()

    def before_epoch(self, trainer, epoch: int) -> None:
        self.active = epoch >= self.warmup

    def extra_loss(self) -> Tensor | None:
        if self.cost_lambda <= 0:
            return None
        return self.cost_lambda * expected_energy(self.net) / 1e6  # per microjoule

    def after_step(self, trainer) -> None:
        if not self.active:
            return
        gen, rng = epoch_generators(self.cfg.seed + 7919, trainer.iteration)  # a function of the iteration
        size = self.cfg.batch_size
        picks = torch.randperm(len(self.b_indices), generator=gen)[:size].tolist()
        if len(picks) < size:
            raise TrainError(f"half B of the training set has {len(self.b_indices)} samples, fewer than one "
                             f"batch of {size}", "lower --batch-size or add data")
        batch = trainer.make_batch([self.b_indices[i] for i in picks], gen, rng)
        self.optimizer.zero_grad(set_to_none=True)  # alpha/beta got gradients from the weight step too
        loss, _ = trainer.batch_loss(batch)
        loss.backward()
        sum_gradients(self.parameters(), trainer.dist)
        self.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)  # the weights' gradients from batch B are not used

    def snapshot(self, epoch: int) -> dict:
        decoded = self.net.decode()
        row = {"epoch": epoch, "decoded": {k: {"cell": {n: [list(e) for e in es] for n, es in v["cell"].items()},
                                               "path": v["path"]} for k, v in decoded.items()}}
        row["alpha"] = {k: softmax(v.detach().numpy()).round(4).tolist() for k, v in self.net.alphas.items()}
        row["beta"] = {k: transition_weights(v.detach().cpu(), self.net.blocks[k]["trellis"].allowed()).numpy()
                       .round(4).tolist() for k, v in self.net.betas.items()}  # [layer][from level][to -1/0/+1]
        if self.cost_lambda > 0:
            row["expected_energy_uj"] = round(float(expected_energy(self.net)) / 1e6, 4)
        return row

    def end_epoch(self, trainer, epoch, batches, gen, rng) -> dict | None:
        if (epoch + 1) % self.decode_every and epoch + 1 != self.cfg.epochs:
            return None
        row = self.snapshot(epoch + 1)
        self.record(row)
        if self.on_decode is not None:
            self.on_decode(epoch + 1, self.net.decode())
        return {"arch": {k: v["path"] for k, v in row["decoded"].items()}}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class SearchTrainer(Trainer):
    """The training loop on half A and the supernet's weights only."""

    def __init__(self, cfg, genotype, net: Supernet, train_data, val_data, dist, a_indices, searchers, log):
        super().__init__(cfg, genotype, net, train_data, val_data, dist, searchers, log=log)
        self.optimizer, self.scheduler = make_optimizer(cfg, net.weights())
        self.a_indices = list(a_indices)

    def num_samples(self) -> int:
        return len(self.a_indices)

    def batches(self, epoch: int):
        batches, gen, rng = super().batches(epoch)
        return [[self.a_indices[i] for i in b] for b in batches], gen, rng


@dataclasses.dataclass
class SearchConfig:
    space: str
    out: str
    overrides: list[str] = dataclasses.field(default_factory=list)
    data: str | None = None
    recipe: str = "cpu-quick"  # cpu-quick | paper: the values below left None (config.SEARCH_RECIPES)
    epochs: int | None = None
    warmup: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    crop_prob: float | None = None  # stereo: chance that a sample is cropped at a random place (else centred)
    stems: str | None = None  # ann (ReLU stems during search, the paper's) | spiking
    arch_lr: float = 3e-4
    cost_lambda: float = 0.0
    decode_every: int = 3
    seed: int = 0
    max_batches: int | None = None
    windows: int = 2
    burn_in: int = 1
    seconds: float = 2.0
    train_seeds: list[int] | None = None
    val_seeds: list[int] | None = None
    stop_after: int | None = None
    threads: int | None = None
    exec: str | None = None  # eager | step | multistep (None: multistep, as training.train)
    precision: str = "fp32"  # fp32 | bf16, as training.train's --precision
    layout: str = "auto"  # auto | nchw | channels-last, as training.train's --layout
    device: str = "cpu"
    quiet: bool = False
    calib: str | None = None  # stereo real data: as training.train's --calib, --no-rectify, --fb, --gt
    rectify: bool = True
    fb: float | None = None
    gt: str = "full"
    dsec_split: str = "last20"
    rectify_rounding: str = "round"
    max_outside_rectify: float = DEFAULT_MAX_OUTSIDE_RECTIFY


def split_halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random split of n sample indices into halves A (weights) and B (architecture)."""
    order = np.random.default_rng([seed, 4242]).permutation(n).tolist()
    return sorted(order[: n // 2]), sorted(order[n // 2:])


def run_search(sc: SearchConfig, resume: bool = False, log=print, overwrite: bool = False,
               given: dict | None = None) -> dict:
    """Search as ``sc`` says; returns the summary (decoded architecture, genotype path).

    The run folder is taken as training takes it (``runlog.claim``: locked for the search's life; a
    folder that holds a run is refused unless ``resume`` continues it or ``overwrite`` deletes its files)."""
    with claim(Path(sc.out), resume=resume, overwrite=overwrite, log=log):
        return _search(sc, resume, log, given)


def _resumed_config(out: Path, sc: SearchConfig, given: dict | None = None) -> tuple[dict, SearchConfig]:
    """The checkpoint ``out/last.pt`` and the configuration it was searched with (this invocation's
    ``stop_after``); a checkpoint that is not an architecture search's is a ``TrainError``."""
    ck = ckpt_io.load(out / "last.pt")
    saved = ck.get("search_config")
    names = {f.name for f in dataclasses.fields(SearchConfig)}
    if not isinstance(saved, dict) or not set(saved) <= names:
        raise TrainError(f"{out / 'last.pt'}: not a checkpoint of python -m training.search spikedhs",
                         "resume it with the command that wrote it (python -m training.train for a training run)")
    # a field the run's version of SearchConfig lacked had its default then (checked against what is given)
    saved = {**{f.name: f.default for f in dataclasses.fields(SearchConfig)
                if f.default is not dataclasses.MISSING}, **saved}
    # options given again must agree with the run's; --stop-after may change, and --exec as in training (the
    # modes give the same losses within float rounding)
    if given is not None:
        check_resume_options(given, saved, {"stop_after", "exec"}, str(out))
    return ck, SearchConfig(**{**saved, "stop_after": sc.stop_after, "exec": sc.exec or saved["exec"]})


def space_text(sp: SearchSpace) -> str:
    """What a search is over, as read (comments and layout aside): its candidates, nodes, kept edges,
    searched networks and the base genotype they resolve to."""
    return repr((sp.candidates, sp.nodes, sp.keep, sp.networks)) + "\n" + sp.base.to_yaml()


def _check_space(ck: dict, paths: list, overrides: list[str], out: Path) -> None:
    """On ``--resume`` the search space read now (the run's file, and one given again) must be the one the
    run started with: an edited file (or base genotype) would be searched on without a word."""
    if not isinstance(ck.get("space_text"), str):
        return  # a checkpoint from before the check
    for path in dict.fromkeys(p for p in paths if p):
        try:
            same = space_text(load_search_space(str(path), overrides=overrides)) == ck["space_text"]
        except OSError as exc:
            raise TrainError(f"{path}: cannot read the search space ({exc.strerror or exc})") from None
        if not same:
            raise TrainError(f"{path}: the search space (or its base genotype) differs from the one the run in "
                             f"{out} was started with", "resume with the same files, or start a new run")


def _with_recipe(sc: SearchConfig, task: str) -> SearchConfig:
    """``sc`` with what it leaves open from its recipe (``config.SEARCH_RECIPES``), checked."""
    defaults = search_recipe(sc.recipe, task)
    sc = dataclasses.replace(sc, **{k: v for k, v in defaults.items() if getattr(sc, k) is None})
    if not 0.0 <= sc.crop_prob <= 1.0:
        raise TrainError(f"--crop-prob must be within [0, 1], got {sc.crop_prob}")
    if sc.warmup >= sc.epochs:
        raise TrainError(f"--warmup {sc.warmup} leaves no search epoch of {sc.epochs}", "lower --warmup")
    check_task_options(sc, task, f"the space's task is {task}")
    return sc


def _train_config(sc: SearchConfig, g) -> TrainConfig:
    """The training configuration the supernet's weights train under (SGD, cosine: docs/search.md), checked."""
    # samples of windows are stereo's (a classification run refuses them)
    stereo = {"windows": sc.windows, "burn_in": sc.burn_in} if TASKS[g.task].events else {}
    cfg = TrainConfig(genotype=sc.space, out=sc.out, overrides=sc.overrides, data=sc.data, recipe=sc.recipe,
                      epochs=sc.epochs,
                      batch_size=sc.batch_size, lr=sc.lr, optimizer="sgd", momentum=0.9, weight_decay=3e-4,
                      schedule="cosine", seed=sc.seed, seconds=sc.seconds,
                      train_seeds=sc.train_seeds, val_seeds=sc.val_seeds, max_batches=sc.max_batches,
                      quiet=sc.quiet, tensorboard=False, device=sc.device, augment=False, calib=sc.calib,
                      rectify=sc.rectify, fb=sc.fb, gt=sc.gt, dsec_split=sc.dsec_split,
                      rectify_rounding=sc.rectify_rounding, max_outside_rectify=sc.max_outside_rectify,
                      exec=sc.exec, precision=sc.precision, layout=sc.layout, **stereo)
    cfg = task_defaults(cfg, g)
    check_precision(cfg.precision, cfg.device)
    return cfg


def _search(sc: SearchConfig, resume: bool, log, given: dict | None = None) -> dict:
    """The search run in order: config or resume, data, supernet, the epoch loop (``Trainer.fit``),
    decoding."""
    from ..allocator import configure as configure_malloc
    from ..options import set_threads
    from ..runner import load_data

    out = Path(sc.out)
    ck = None
    if resume:
        ck, sc = _resumed_config(out, sc, given)
        _check_space(ck, [sc.space, (given or {}).get("space")], sc.overrides, out)
    set_threads(sc.threads)
    malloc = configure_malloc()
    space = load_search_space(sc.space, overrides=sc.overrides)
    g = space.base
    sc = _with_recipe(sc, g.task)
    cfg = _train_config(sc, g)
    dist = setup(sc.device)
    try:
        torch.manual_seed(sc.seed)
        net = Supernet(space, ann_stems=sc.stems == "ann").to(sc.device)
        if dist.enabled:
            from ..distributed import broadcast_module, convert_batchnorm
            convert_batchnorm(net)
            broadcast_module(net, dist)
        train_data, val_data = load_data(cfg, g, log if dist.main else (lambda s: None))
        if hasattr(train_data, "crop_prob"):  # stereo: the supplement's crops "with 50% probability"
            train_data.crop_prob = sc.crop_prob
        n = len(train_data)
        a_idx, b_idx = split_halves(n, sc.seed)
        arch = ArchStep(net, cfg, b_idx, sc.warmup, sc.arch_lr, sc.cost_lambda, sc.decode_every, dist.main)
        arch.on_decode = decode_drawer(space, out, log) if dist.main else None
        trainer = SearchTrainer(cfg, g, net, train_data, val_data, dist, a_idx, [arch],
                                log if dist.main else (lambda s: None))
        if dist.main:
            log(execution_line(trainer, f"{torch.get_num_threads()} thread(s), {malloc}"))
        if ck is not None:
            trainer.load_state(ck)
            log(f"resumed {out / 'last.pt'} after epoch {trainer.epoch}")
        metrics = MetricsLog(out, False) if dist.main else None
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            if ck is not None:  # metrics.jsonl, arch.jsonl cut back to the checkpoint's epochs, as training does
                repair(out, trainer.epoch, pending=trainer.pending is not None)
            ckpt_io.write_text_atomic(yaml.safe_dump({"search": dataclasses.asdict(sc), "train": cfg.to_dict()},
                                                     sort_keys=False), out / "config.yaml")
        trainer.keep_history = False
        trainer.fit(out, metrics, stop_after=sc.stop_after, evaluate=False,
                    extra_state={"search_config": dataclasses.asdict(sc), "space_text": space_text(space)},
                    epoch_fields=lambda epoch: {"searching": epoch >= sc.warmup},
                    line=lambda row: _epoch_line(row, cfg.epochs))
        summary = {"out": str(out), "epoch": trainer.epoch}
        if trainer.epoch >= cfg.epochs and dist.main:
            summary.update(_write_searched(sc, space, net, arch.snapshot(trainer.epoch), out, log))
        if metrics is not None:
            metrics.close()
        return summary
    finally:
        teardown(dist)


def _epoch_line(row: dict, epochs: int) -> str:
    """The log's line for a search epoch."""
    return (f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
            f"{'search' if row['searching'] else 'warm-up'}  {row['train_s']:.0f} s"
            + (f"  path {row['arch']}" if "arch" in row else ""))


def _write_searched(sc: SearchConfig, space, net, final: dict, out: Path, log) -> dict:
    """Decode the supernet at the end of the search: ``searched.yaml`` (with the architecture weights in its
    ``search`` metadata), its drawings and the architecture's; the summary's fields."""
    decoded = net.decode()
    meta = {"search": {"space": str(sc.space), "seed": sc.seed, "epoch": final["epoch"],
                       "alpha": final["alpha"], "beta": final["beta"]}}
    searched = to_genotype(space, decoded, meta)
    searched = dataclasses.replace(searched, name=f"{space.base.name}-searched",
                                   source=f"SpikeDHS search over {sc.space} (seed {sc.seed})")
    ckpt_io.write_text_atomic(searched.to_yaml(), out / "searched.yaml")
    draw_genotype(searched, out / "searched", log)
    draw_architecture(decoded, out / "architecture.png")
    log(f"wrote {out / 'searched.yaml'} and {out / 'architecture.png'}")
    return {"genotype": str(out / "searched.yaml"), "decoded": final["decoded"]}
