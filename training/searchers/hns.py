"""HNS, hybrid network search (journal section 4.4): each searched layer mixes a LIF neuron and a
ReLU, y = softmax(alpha)_0 y_LIF + softmax(alpha)_1 ReLU(I); the loss adds the energy term
lambda * sum_l sum_k softmax(alpha_l)_k rho_k with rho = 1 (LIF), 4.26 (ReLU) (eq. 28). Alpha
learns with Adam alongside the weights. Logs softmax(alpha) per layer each epoch (hns.jsonl); the
kind with the larger alpha is written back (``kind: relu`` where ReLU wins)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from compiler.edit import set_meta, set_neuron
from compiler.neurons import NeuronModule, build_neuron

from ..losses import energy_loss
from .base import Searcher, Slot, find_slot, register, softmax_list

EPS = 1e-3
KINDS = ("lif", "relu")
ENERGY = {"lif": 1.0, "relu": 4.26}


class HybridNeuron(NeuronModule):
    """softmax(alpha)-weighted LIF and ReLU outputs; carries the LIF's state (ReLU has none)."""

    def __init__(self, inner: NeuronModule, alpha: Tensor):
        super().__init__(inner.spec)
        self.tau.copy_(inner.tau)
        self.b.copy_(inner.b)
        inner._buffers["tau"] = self.tau  # one tensor: what TPS or DGS set here, the LIF uses
        inner._buffers["b"] = self.b
        relu = build_neuron(dataclasses.replace(inner.spec, kind="relu"))  # the ReLU kind's own step
        self.holder = [alpha, inner, relu]  # a list: none is registered in the model

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        alpha, inner, relu = self.holder
        w = torch.softmax(alpha, 0)
        y, new = inner(current, state)
        return w[0] * y + w[1] * relu(current, {})[0], new


@register
class HNS(Searcher):
    name = "hns"

    def __init__(self, model, genotype, layers: list[str], cfg, main: bool = True):
        super().__init__(cfg.out, main)
        self.cfg = cfg
        self.slots: list[Slot] = [find_slot(model, genotype, n) for n in layers]
        self.alphas = [torch.full((2,), EPS, requires_grad=True) for _ in self.slots]
        for slot, alpha in zip(self.slots, self.alphas, strict=True):
            slot.replace(HybridNeuron(slot.neuron, alpha))
        self.factors = torch.tensor([ENERGY[k] for k in KINDS])
        self.optimizer = torch.optim.Adam(self.alphas, lr=cfg.arch_lr)

    def parameters(self) -> list[Tensor]:
        return self.alphas

    def extra_loss(self) -> Tensor:
        return self.cfg.hns_lambda * energy_loss([torch.softmax(a, 0) for a in self.alphas], self.factors)

    def after_step(self, trainer) -> None:
        self.optimizer.step()

    def kinds(self) -> dict[str, str]:
        return {s.name: KINDS[int(torch.argmax(a))] for s, a in zip(self.slots, self.alphas, strict=True)}

    def end_epoch(self, trainer, epoch, batches, gen, rng) -> dict:
        probs = {s.name: softmax_list(a) for s, a in zip(self.slots, self.alphas, strict=True)}
        kinds = self.kinds()
        self.record({"epoch": epoch + 1, "iteration": trainer.iteration, "softmax_alpha": probs, "kind": kinds})
        n_relu = sum(k == "relu" for k in kinds.values())
        return {"hns": f"HNS {n_relu}/{len(kinds)} layers ReLU", "hns_relu_layers": n_relu}

    def write_back(self, g):
        for name, kind in self.kinds().items():
            g = set_neuron(g, name, {"kind": kind})
        return set_meta(g, "hns", {"lambda": self.cfg.hns_lambda, "energy_factors": dict(ENERGY),
                                   "note": "the kinds searched; retrain this genotype before deployment"})

    def state_dict(self) -> dict:
        return {"alphas": [a.detach().clone() for a in self.alphas], "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for a, s in zip(self.alphas, state["alphas"], strict=True):
                a.copy_(s)
        self.optimizer.load_state_dict(state["optimizer"])
