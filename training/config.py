"""``TrainConfig``: every option of a training run, and the defaults per recipe and task
(``task_defaults``): ``cpu-quick`` (the default: short runs that fit a CPU, not the papers' schedule)
or ``paper`` (every schedule value the SpikeDHS papers give; docs/training.md, "Recipes", names the
passage of each). The command line fills it; ``config.yaml`` beside the checkpoints records it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from compiler.ir import Genotype
from runtime.core.names import TASKS
from runtime.data.options import DEFAULT_MAX_OUTSIDE_RECTIFY
from runtime.data.synth.config import SynthConfig

from .errors import TrainError

OPTIMIZER_IMPLS = ("fused", "foreach")  # --optimizer-impl (training.execution.optimizer_impl)


@dataclass
class TrainConfig:
    """Every option of a run (the CLI fills it; ``config.yaml`` beside the checkpoints records it)."""

    genotype: str
    out: str
    overrides: list[str] = field(default_factory=list)
    data: str | None = None  # stereo: synthetic | PATH; classification: digits | PATH
    recipe: str = "cpu-quick"  # cpu-quick | paper: the schedule values left open (TRAIN_RECIPES)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None  # adam | sgd
    optimizer_impl: str = "fused"  # fused | foreach (training.execution.optimizer_impl)
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str | None = None  # multistep | cosine | constant
    milestones: list[int] | None = None
    gamma: float = 0.5
    seed: int = 0
    ema: float = 0.0  # decay of the weights' moving average that is validated and kept (not in the papers; 0: off)
    # stereo
    windows: int = 6
    burn_in: int = 2
    crop: list[int] | None = None  # train on random H x W crops with a model built at that size
    stride: int | None = None
    diversity: float = 2.0
    loss_step: float | None = None  # disparity step of the loss target (default: the genotype's)
    disparity_l1: float = 0.0  # weight of the estimated disparity's smooth-L1 error (not in the papers; 0: eq. 6)
    distill: str | None = None  # teacher checkpoint whose costs join the loss target (training.distill; not in papers)
    distill_weight: float = 0.5  # w: the target is (1 - w) Laplace(gt) + w softmax(-teacher cost)
    train_seeds: list[int] | None = None
    val_seeds: list[int] | None = None
    seconds: float = 4.0
    photo_fraction: float = SynthConfig.photo_fraction  # synthetic training surfaces textured with a photograph
    photo_augment: float = SynthConfig.photo_augment  # share of those photographs varied (textures.vary_photo)
    photo_variations: str = ",".join(SynthConfig.photo_variations)  # what a varied photograph may draw
    train_textures: str = "train"  # photographs of the synthetic training scenes: train | train_more | train_most
    split: int = 1
    eval_part: str = "val"
    calib: str | None = None  # real data: calibration folder (MVSEC maps)
    rectify: bool = True  # real data: False = events as stored (--no-rectify)
    rectify_rounding: str = "round"  # real data: rectified coordinates to the nearest pixel or floor
    fb: float | None = None  # real data: focal length x baseline override, px*m
    gt: str = "full"  # ground-truth protocol: full | ddes-full | ddes (runtime.data.protocol)
    dsec_split: str = "last20"  # DSEC held-out sequences: last20 | se-cff (training.dsec_data)
    max_outside_rectify: float = DEFAULT_MAX_OUTSIDE_RECTIFY  # real data: refuse above this share lost to the maps
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
    layout: str = "auto"  # auto | nchw | channels-last | conv3d-channels-last (auto: where it was measured faster)
    device: str = "cpu"
    quiet: bool = False
    tensorboard: bool = True
    # search
    dgs: list[str] | None = None
    dgs_every: int = 5
    dgs_iters: int = 100
    dgs_lr: float | None = None
    dgs_mode: str = "per-layer"  # per-layer (the paper's) | coupled (every chosen layer's b probed together)
    tps: list[str] | None = None
    tps_every: int = 100
    tps_delta: float = 0.05
    tps_warmup: int = 5
    hns: list[str] | None = None
    hns_lambda: float = 0.01
    hns_every: int = 100
    hns_warmup: int = 5
    arch_lr: float = 0.01

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Retraining schedules per recipe and task. "paper": SpikeDHS (NeurIPS 2022) sec. 4.2 and journal sec. 5.2
# for stereo ("retrain ... for 200 epochs with mini-batch size 2 ... Adam ... initial learning rate 0.001
# and momentum (0.9, 0.999), with learning rate decaying half at [50, 100, 150] epochs"), sec. 4.1.1 and
# journal sec. 5.1.1 for classification ("100 epochs with mini-batch size 50 for CIFAR ..., with cosine
# learning rate 0.025 ... SGD optimizer with weight decay 3e-4 and momentum 0.9"). "cpu-quick": this
# project's short runs (10 epochs, batch 4 / 64, milestones at 60 % and 80 % of the epochs), not the papers'.
TRAIN_RECIPES = {
    "cpu-quick": {
        "stereo": {"epochs": 10, "batch_size": 4, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                   "schedule": "multistep", "milestones": None},
        "classification": {"epochs": 10, "batch_size": 64, "optimizer": "sgd", "lr": 0.025, "weight_decay": 3e-4,
                           "schedule": "cosine", "milestones": None},
    },
    "paper": {
        "stereo": {"epochs": 200, "batch_size": 2, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                   "schedule": "multistep", "milestones": [50, 100, 150]},
        "classification": {"epochs": 100, "batch_size": 50, "optimizer": "sgd", "lr": 0.025, "weight_decay": 3e-4,
                           "schedule": "cosine", "milestones": None},
    },
}
RECIPES = tuple(TRAIN_RECIPES)

# The SpikeDHS search (``python -m training.search spikedhs``) per recipe and task. "paper": sec. 4.2 and journal
# sec. 5.2 for stereo ("We search the architecture for 12 epochs with batch size 1. The first 3 epochs are used to
# initiate the weight of the supernet ... SGD optimizer with momentum 0.9 and a learning rate of 0.002"), sec.
# 4.1.1 / journal 5.1.1 for classification ("The search phase takes 50 epochs with mini-batch size 50, the first
# 15 epochs are used to warm up ... SGD ... momentum 0.9 and a learning rate of 0.025"); the supplement sec. 4
# for the crops ("cropped ... with 50% probability at random positions") and the journal for the "ANN stem
# layers in the search phase". "cpu-quick": the same epochs, warm-up and lr, this project's batch (4 / 64),
# every sample cropped, spiking stems (as before issue 19). None: the training recipe's value.
SEARCH_RECIPES = {
    "cpu-quick": {
        "stereo": {"epochs": 12, "warmup": 3, "lr": 0.002, "batch_size": None, "crop_prob": 1.0, "stems": "spiking"},
        "classification": {"epochs": 50, "warmup": 15, "lr": 0.025, "batch_size": None, "crop_prob": 1.0,
                           "stems": "spiking"},
    },
    "paper": {
        "stereo": {"epochs": 12, "warmup": 3, "lr": 0.002, "batch_size": 1, "crop_prob": 0.5, "stems": "ann"},
        "classification": {"epochs": 50, "warmup": 15, "lr": 0.025, "batch_size": 50, "crop_prob": 1.0,
                           "stems": "ann"},
    },
}


def _family(task: str) -> str:
    """The recipes' key of a task (the task table, ``runtime.core.names.TASKS``): stereo for a disparity
    output, classification for every other task."""
    return "stereo" if TASKS[task].disparity else "classification"


def recipe_values(recipe: str, task: str) -> dict:
    """The schedule values of ``recipe`` for ``task`` (stereo, or classification for every other task)."""
    if recipe not in TRAIN_RECIPES:
        raise TrainError(f"unknown recipe {recipe!r}", f"use one of {', '.join(RECIPES)}")
    return TRAIN_RECIPES[recipe][_family(task)]


def search_recipe(recipe: str, task: str) -> dict:
    """The SpikeDHS search's values of ``recipe`` for ``task`` (``SEARCH_RECIPES``; None: left to training's)."""
    recipe_values(recipe, task)  # the same error for an unknown recipe
    values = SEARCH_RECIPES[recipe][_family(task)]
    return {k: v for k, v in values.items() if v is not None}


def task_defaults(cfg: TrainConfig, g: Genotype) -> TrainConfig:
    """Fill the values the user left open from ``cfg.recipe`` (``TRAIN_RECIPES``): cpu-quick (stereo Adam
    1e-3 halved at 60 % and 80 % of 10 epochs, batch 4; classification SGD 0.025 momentum 0.9 weight decay
    3e-4 cosine, batch 64) or paper (stereo 200 epochs, batch 2, Adam 1e-3 halved at 50/100/150;
    classification 100 epochs, batch 50, SGD 0.025 cosine). An adam/sgd choice the user made picks its lr."""
    stereo = TASKS[g.task].disparity
    r = recipe_values(cfg.recipe, g.task)
    d = {}
    if cfg.epochs is None:
        d["epochs"] = r["epochs"]
    epochs = d.get("epochs", cfg.epochs)
    if cfg.optimizer is None:
        d["optimizer"] = r["optimizer"]
    if cfg.lr is None:
        d["lr"] = 1e-3 if (d.get("optimizer", cfg.optimizer) == "adam") else 0.025
    if cfg.weight_decay is None:
        d["weight_decay"] = r["weight_decay"]
    if cfg.schedule is None:
        d["schedule"] = r["schedule"]
    if cfg.milestones is None:
        d["milestones"] = r["milestones"] or sorted({max(1, round(epochs * 0.6)), max(1, round(epochs * 0.8))})
    if cfg.batch_size is None:
        d["batch_size"] = r["batch_size"]
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
