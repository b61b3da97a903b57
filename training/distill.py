"""``--distill TEACHER.pt``: a trained stereo model's matching costs as part of the loss's target (not in the
papers; off by default).

The stereo loss (paper eq. 6) is the cross entropy of the model's softmax(-cost) against a discretised
Laplace distribution around the ground truth. With a teacher, the target of every scored pixel becomes
``(1 - w) * Laplace(gt) + w * softmax(-teacher cost)`` (``--distill-weight`` w; temperature 1, the teacher's
own distribution): the teacher says where a match is ambiguous and which other disparities are likely, which
the Laplace target cannot. The teacher is usually the model's ReLU twin (``neuron.kind: relu``, trained at the
same budget), so the spiking model learns from the network it is compared with (docs/training.md, step ab).

The teacher is built from the genotype its checkpoint holds, at the training crop's size, in evaluation mode
(BatchNorm's running statistics), and runs without gradient on the same windows as the model, burn-in
included. Its head must have the model's disparities and disparity step, and its input the model's event
encoding, bins and window length (it must see the events it was trained on).
A resumed run loads the teacher again and refuses a file whose contents changed (``sha256``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from compiler.ir import Genotype
from runtime.core.names import TASKS

from .errors import TrainError
from .execution import apply_layout, neurons, resolve_exec, resolve_layout, stereo_costs, views_for_volume


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def teacher_genotype(ck: dict, path: str, student: Genotype) -> Genotype:
    """The teacher's genotype (from its checkpoint ``ck``, read from ``path``) at ``student``'s input size; one
    whose head or input does not fit the student's is a ``TrainError`` naming what differs."""
    from compiler import loads_genotype
    from compiler.errors import GenotypeError

    text = ck.get("genotype")
    if not isinstance(text, str):
        raise TrainError(f"--distill {path}: the checkpoint holds no genotype",
                         "give a run's best.pt or last.pt, or a model written by training.checkpoint strip")
    try:
        g = loads_genotype(text, file=f"{path} (teacher)",
                           overrides={"input.height": student.input.height, "input.width": student.input.width})
    except GenotypeError as exc:
        raise TrainError(f"--distill {path}: its genotype does not load ({exc})") from None
    if not TASKS[g.task].disparity:
        raise TrainError(f"--distill {path}: the teacher is a {g.task} model; distillation needs a stereo teacher")
    for what, mine, theirs in (("disparities", student.head.disparities, g.head.disparities),
                               ("disparity step", student.head.disparity_step, g.head.disparity_step),
                               ("input encoding", student.input.encoding, g.input.encoding),
                               ("input bins", student.input.bins, g.input.bins),
                               ("ms windows", student.input.window_ms, g.input.window_ms)):
        if mine != theirs:
            raise TrainError(f"--distill {path}: the teacher has {theirs} {what}, the model {mine}",
                             "distil from a model of the same head and input events (its twin, or a wider one)")
    return g


class Teacher:
    """A trained stereo model that gives matching costs for the loss's target; no gradient, evaluation mode."""

    def __init__(self, path: str, genotype: Genotype, model: torch.nn.Module, sha256: str, cfg):
        """``model``: built from ``genotype`` (``teacher_genotype``) with the weights of ``path`` loaded;
        ``sha256``: the file's."""
        self.path = path
        self.sha256 = sha256
        self.genotype = genotype
        self.model = model
        self.model.to(cfg.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.exec = resolve_exec(cfg.exec, self.model)
        self.precision = cfg.precision
        layout, _ = resolve_layout(cfg.layout, cfg.precision, cfg.device, self.model)
        apply_layout(self.model, layout)

    @torch.no_grad()
    def costs(self, left: Tensor, right: Tensor, burn: int) -> list[Tensor]:
        """The teacher's matching cost of each window after the ``burn`` burn-in windows (float32)."""
        with neurons(self.exec), views_for_volume(self.model, self.exec, self.precision):
            return stereo_costs(self.model, left, right, burn, self.exec)

    def record(self) -> dict:
        """What a checkpoint keeps of the teacher (``check_resumed_teacher`` compares it on resume)."""
        return {"distill_sha256": self.sha256}

    def describe(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return (f"distilling from {self.path} ({self.genotype.name}, neurons {self.genotype.neuron.kind}, "
                f"{params} parameters, sha256 {self.sha256[:12]})")


def check_resumed_teacher(teacher: Teacher, ck: dict) -> None:
    """A resumed run's teacher file must be the one it started with (same contents)."""
    saved = ck.get("distill_sha256")
    if saved is not None and saved != teacher.sha256:
        raise TrainError(f"--distill {teacher.path}: the file changed since the run started (sha256 "
                         f"{teacher.sha256[:12]}, the run's {saved[:12]}), and --resume is exact",
                         "put the run's teacher back, or start a new run")
