"""HNS, hybrid network search (journal section 4.4, Table 4): each searched LIF layer mixes three
candidates, LIF, ALIF and ReLU: y = sum_k softmax(alpha)_k y_k; the loss adds the energy term
lambda * sum_l sum_k softmax(alpha_l)_k rho_k with rho = 1 (LIF), 4.26 (ReLU) (eq. 28) and 1 for ALIF
(the journal gives no ALIF factor; it spikes as LIF does, so LIF's is taken: a named deviation in
docs/fidelity.md). "HNS follows a similar process to TPS" (journal, Fig. 3): alpha is held fixed for
``hns_warmup`` epochs (the journal's 5-epoch warm-up), then learns with Adam alongside the weights;
every ``hns_every`` iterations (a search step, the journal's 100) each layer's kind is set to the
candidate with the largest alpha and alpha (with its Adam moments) is reset for the next step. Logs
each step's softmax(alpha) and kinds (hns.jsonl); the kinds of the last step are written back
(``kind: alif`` / ``kind: relu`` where they won)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from compiler.edit import set_meta, set_neuron
from compiler.names import state_name
from compiler.neurons import NeuronModule, build_neuron

from ..losses import energy_loss
from .base import Searcher, Slot, find_slot, register, softmax_list

EPS = 1e-3
KINDS = ("lif", "alif", "relu")
ENERGY = {"lif": 1.0, "alif": 1.0, "relu": 4.26}


class HybridNeuron(NeuronModule):
    """softmax(alpha)-weighted LIF, ALIF and ReLU outputs, each kind's own step from the same carried
    state. It carries ``v`` (the spiking candidates' post-reset potentials, mixed by their renormalised
    weights) and ALIF's ``a``; ReLU has none."""

    def __init__(self, inner: NeuronModule, alpha: Tensor):
        super().__init__(inner.spec)
        self.tau.copy_(inner.tau)
        self.b.copy_(inner.b)
        alif = build_neuron(dataclasses.replace(inner.spec, kind="alif"))
        for m in (inner, alif):
            m._buffers["tau"] = self.tau  # one tensor: what TPS or DGS set here, both spiking kinds use
            m._buffers["b"] = self.b
        relu = build_neuron(dataclasses.replace(inner.spec, kind="relu"))  # the ReLU kind's own step
        self.holder = [alpha, inner, alif, relu]  # a list: none is registered in the model

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("v", "a")

    def fused_params(self) -> None:
        """A mixture has no fused update: the multi-step mode steps ``forward`` T times (``run_steps``)."""
        return None

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        alpha, lif, alif, relu = self.holder
        w = torch.softmax(alpha, 0)
        y_lif, new_lif = lif(current, {"v": state["v"]})
        y_alif, new_alif = alif(current, state)
        v = (w[0] * new_lif["v"] + w[1] * new_alif["v"]) / (w[0] + w[1])
        return w[0] * y_lif + w[1] * y_alif + w[2] * relu(current, {})[0], {"v": v, "a": new_alif["a"]}


def _carry_adaptation(model, slots: list[Slot]) -> None:
    """The model's state list gains ALIF's ``a`` for each searched layer (the plan knows only LIF's
    ``v``); a copy of the plan, so the genotype's cached plan is untouched."""
    shapes = dict(model.plan.states)
    extra = [(state_name(s.name, "a"), shapes[state_name(s.name, "v")]) for s in slots]
    model.plan = dataclasses.replace(model.plan, states=[*model.plan.states, *extra])


@register
class HNS(Searcher):
    name = "hns"

    def __init__(self, model, genotype, layers: list[str], cfg, main: bool = True):
        super().__init__(cfg.out, main)
        self.cfg = cfg
        self.slots: list[Slot] = [find_slot(model, genotype, n) for n in layers]
        self.alphas = [torch.full((len(KINDS),), EPS, requires_grad=True) for _ in self.slots]
        for slot, alpha in zip(self.slots, self.alphas, strict=True):
            slot.replace(HybridNeuron(slot.neuron, alpha))
        _carry_adaptation(model, self.slots)
        self.factors = torch.tensor([ENERGY[k] for k in KINDS])
        self.optimizer = torch.optim.Adam(self.alphas, lr=cfg.arch_lr)
        self.active = False
        self.steps = 0
        self.moves = 0
        self.chosen: dict[str, str] = {s.name: "lif" for s in self.slots}

    def parameters(self) -> list[Tensor]:
        return self.alphas

    def extra_loss(self) -> Tensor:
        return self.cfg.hns_lambda * energy_loss([torch.softmax(a, 0) for a in self.alphas], self.factors)

    def before_epoch(self, trainer, epoch: int) -> None:
        self.active = epoch >= self.cfg.hns_warmup
        for a in self.alphas:
            a.requires_grad_(self.active)

    def after_step(self, trainer) -> None:
        if not self.active:
            return
        self.optimizer.step()
        self.steps += 1
        if self.steps % self.cfg.hns_every:
            return
        probs = {s.name: softmax_list(a) for s, a in zip(self.slots, self.alphas, strict=True)}
        self.chosen = self.kinds()
        with torch.no_grad():
            for a in self.alphas:
                a.fill_(EPS)
        self.optimizer = torch.optim.Adam(self.alphas, lr=self.cfg.arch_lr)  # alpha and its moments reset
        self.moves += 1
        self.record({"epoch": trainer.epoch + 1, "iteration": trainer.iteration, "step": self.moves,
                     "softmax_alpha": probs, "kind": dict(self.chosen)})

    def kinds(self) -> dict[str, str]:
        """Each layer's kind by the current alpha (the largest; a tie keeps LIF)."""
        return {s.name: KINDS[int(torch.argmax(a))] for s, a in zip(self.slots, self.alphas, strict=True)}

    def end_epoch(self, trainer, epoch, batches, gen, rng) -> dict:
        n_relu = sum(k == "relu" for k in self.chosen.values())
        n_alif = sum(k == "alif" for k in self.chosen.values())
        return {"hns": f"HNS {n_relu}/{len(self.chosen)} layers ReLU, {n_alif} ALIF after {self.moves} steps",
                "hns_relu_layers": n_relu}

    def write_back(self, g):
        for name, kind in self.chosen.items():
            g = set_neuron(g, name, {"kind": kind})
        return set_meta(g, "hns", {"lambda": self.cfg.hns_lambda, "energy_factors": dict(ENERGY),
                                   "steps": self.moves, "every": self.cfg.hns_every,
                                   "note": "the kinds searched; retrain this genotype before deployment"})

    def state_dict(self) -> dict:
        return {"alphas": [a.detach().clone() for a in self.alphas], "optimizer": self.optimizer.state_dict(),
                "steps": self.steps, "moves": self.moves, "chosen": dict(self.chosen)}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for a, s in zip(self.alphas, state["alphas"], strict=True):
                a.copy_(s)
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps, self.moves = int(state.get("steps", 0)), int(state.get("moves", 0))
        self.chosen = dict(state.get("chosen", self.chosen))
