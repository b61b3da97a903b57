"""``--ema DECAY``: an exponential moving average of a run's weights (not in the papers; docs/training.md,
"The weights' moving average"). After every optimiser step each floating-point tensor of the model's state
(parameters and buffers such as BatchNorm's running statistics) moves to ``DECAY * average + (1 - DECAY) *
current``; other tensors (counters) are copied. It starts at the weights the run starts from (``--init`` or
the initialisation), so it needs no warm-up when a run fine-tunes trained weights. Validation, ``best.pt``
and every checkpoint's ``model`` are the average; ``train_model`` holds the optimiser's own weights, which
``--resume`` continues.

With ``--dgs`` the neurons' surrogate temperatures (their ``b`` buffers) are not averaged: they do not enter
the forward pass (only the gradient), DGS moves them in steps between epochs, and the average holds the
value the run holds (``follow``), so that ``best.pt`` and the written genotype agree. TPS and HNS change
what the forward computes (tau, the neuron kind) and stay refused with ``--ema``."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class WeightAverage:
    """The moving average of ``model``'s state (the same names, shapes and memory order)."""

    def __init__(self, model: torch.nn.Module, decay: float, follow: frozenset[str] = frozenset()):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
        unknown = sorted(follow - set(self.tensors))
        if unknown:
            raise KeyError(f"the model has no tensor {unknown[0]!r} to follow")
        self.followed = follow  # copied from the model, never averaged

    @classmethod
    def of_run(cls, model: torch.nn.Module, decay: float) -> WeightAverage:
        """A training run's average (``--ema``): the surrogate temperatures, which DGS moves, followed."""
        return cls(model, decay, surrogate_temperatures(model))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step: ``average = decay * average + (1 - decay) * current`` (floating point), copy otherwise."""
        for k, v in model.state_dict().items():
            mine = self.tensors[k]
            if mine.is_floating_point() and k not in self.followed:
                mine.lerp_(v.detach(), 1.0 - self.decay)
            else:
                mine.copy_(v)

    @torch.no_grad()
    def follow(self, model: torch.nn.Module) -> None:
        """The followed tensors as the model holds them now (after a search moved them between steps)."""
        state = model.state_dict()
        for k in self.followed:
            self.tensors[k].copy_(state[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average in plain memory order (a checkpoint's ``model``)."""
        return {k: v.clone(memory_format=torch.contiguous_format) for k, v in self.tensors.items()}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Values from a checkpoint; the names and shapes must be the model's (else a KeyError/RuntimeError)."""
        missing = set(self.tensors) ^ set(state)
        if missing:
            raise KeyError(f"the moving average's tensors differ from the model's: {sorted(missing)[:3]}")
        for k, v in state.items():
            self.tensors[k].copy_(v)


def surrogate_temperatures(model: torch.nn.Module) -> frozenset[str]:
    """The state names of every neuron layer's surrogate temperature (``NeuronModule.b``)."""
    from compiler.neurons import NeuronModule

    names = set()
    for key in model.state_dict():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "b" and isinstance(model.get_submodule(prefix), NeuronModule):
            names.add(key)
    return frozenset(names)
