"""``TrainConfig``: every option of a training run, and the papers' defaults per task
(``task_defaults``). The command line fills it; ``config.yaml`` beside the checkpoints records it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from compiler.ir import Genotype


@dataclass
class TrainConfig:
    """Every option of a run (the CLI fills it; ``config.yaml`` beside the checkpoints records it)."""

    genotype: str
    out: str
    overrides: list[str] = field(default_factory=list)
    data: str | None = None  # stereo: synthetic | PATH; classification: digits | PATH
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None  # adam | sgd
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str | None = None  # multistep | cosine | constant
    milestones: list[int] | None = None
    gamma: float = 0.5
    seed: int = 0
    # stereo
    windows: int = 6
    burn_in: int = 2
    crop: list[int] | None = None  # train on random H x W crops with a model built at that size
    stride: int | None = None
    diversity: float = 2.0
    loss_step: float | None = None  # disparity step of the loss target (default: the genotype's)
    train_seeds: list[int] | None = None
    val_seeds: list[int] | None = None
    seconds: float = 4.0
    split: int = 1
    eval_part: str = "val"
    calib: str | None = None  # real data: calibration folder (MVSEC maps)
    rectify: bool = True  # real data: False = events as stored (--no-rectify)
    rectify_rounding: str = "round"  # real data: rectified coordinates to the nearest pixel or floor
    fb: float | None = None  # real data: focal length x baseline override, px*m
    gt: str = "full"  # ground-truth protocol: full | ddes-full | ddes (runtime.data.protocol)
    dsec_split: str = "last20"  # DSEC held-out sequences: last20 | se-cff (training.dsec_data)
    # classification
    timesteps: int | None = None
    augment: bool | None = None
    # run
    eval_every: int = 1
    eval_batch_size: int = 64
    max_batches: int | None = None  # per epoch (quick runs)
    best_metric: str | None = None
    stop_after: int | None = None  # end this invocation after N epochs (as if interrupted)
    init: str | None = None  # start from these weights (a checkpoint or shipped model file's 'model')
    threads: int | None = None
    exec: str | None = None  # eager | step | multistep (default: multistep where it runs, else step)
    precision: str = "fp32"  # fp32 | bf16 (convolutions under bfloat16 autocast)
    device: str = "cpu"
    quiet: bool = False
    tensorboard: bool = True
    # search
    dgs: list[str] | None = None
    dgs_every: int = 5
    dgs_iters: int = 100
    dgs_lr: float | None = None
    tps: list[str] | None = None
    tps_every: int = 100
    tps_delta: float = 0.05
    tps_warmup: int = 5
    hns: list[str] | None = None
    hns_lambda: float = 0.01
    arch_lr: float = 0.01

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def task_defaults(cfg: TrainConfig, g: Genotype) -> TrainConfig:
    """Fill the paper defaults the user left open: stereo Adam 1e-3 halved at milestones (60 % and
    80 % of the epochs), classification SGD 0.025 momentum 0.9 weight decay 3e-4 with a cosine schedule."""
    stereo = g.task == "stereo"
    d = {}
    if cfg.optimizer is None:
        d["optimizer"] = "adam" if stereo else "sgd"
    if cfg.lr is None:
        d["lr"] = 1e-3 if (d.get("optimizer", cfg.optimizer) == "adam") else 0.025
    if cfg.weight_decay is None:
        d["weight_decay"] = 0.0 if stereo else 3e-4
    if cfg.schedule is None:
        d["schedule"] = "multistep" if stereo else "cosine"
    if cfg.milestones is None:
        d["milestones"] = sorted({max(1, round(cfg.epochs * 0.6)), max(1, round(cfg.epochs * 0.8))})
    if cfg.batch_size is None:
        d["batch_size"] = 4 if stereo else 64
    if cfg.data is None:
        d["data"] = "synthetic" if stereo else "digits"
    if cfg.stride is None:
        d["stride"] = cfg.windows
    if cfg.timesteps is None:
        d["timesteps"] = g.input.timesteps
    if cfg.augment is None:
        d["augment"] = (not stereo) and d.get("data", cfg.data) not in ("digits",)
    if cfg.best_metric is None:
        d["best_metric"] = "one_pixel_accuracy_pct" if stereo else "accuracy_pct"
    if cfg.train_seeds is None:
        d["train_seeds"] = list(range(100, 116))
    if cfg.val_seeds is None:
        d["val_seeds"] = [0, 1, 2, 3]
    return dataclasses.replace(cfg, **d)
