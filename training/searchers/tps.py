"""TPS, temporal parameter search (journal Algorithm 3): each searched LIF layer becomes a mixture of
three candidate neurons with tau - dtau, tau, tau + dtau, weighted by softmax(alpha). Alpha learns
with Adam alongside the weights; every ``s`` iterations tau moves to the candidate with the largest
alpha and alpha is reset. Logs tau and softmax(alpha) per layer at each move (tps.jsonl); writes
``tau`` back into the genotype."""

from __future__ import annotations

import torch
from torch import Tensor

from compiler.edit import set_meta, set_neuron
from compiler.neurons import NeuronModule

from .base import Searcher, Slot, find_slot, register, softmax_list

EPS = 1e-3


class TPSNeuron(NeuronModule):
    """y = sum_k softmax(alpha)_k y_k with y_k the replaced neuron's step (its kind's charge, fire, reset)
    under tau_k = tau + delta_k, all candidates starting from the same carried state (journal eqs. 19-21);
    the carried state is the same mixture of the candidates' post-reset states. Same buffers (tau, b) as
    the neuron it replaces, which uses them too, so the state dict is unchanged; alpha is held outside the
    module tree."""

    def __init__(self, inner: NeuronModule, alpha: Tensor, deltas: Tensor):
        super().__init__(inner.spec)
        self.tau.copy_(inner.tau)
        self.b.copy_(inner.b)
        inner._buffers["tau"] = self.tau  # one tensor: what TPS or DGS set here, the inner step uses
        inner._buffers["b"] = self.b
        self.holder = [alpha, deltas, inner]  # a list: not registered in the model

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        alpha, deltas, inner = self.holder
        w = torch.softmax(alpha, 0)
        y_mix: Tensor | float = 0.0
        new: dict[str, Tensor | float] = {k: 0.0 for k in self.state_names}
        for k in range(len(deltas)):
            u = inner.charge(current, state, torch.clamp(self.tau + deltas[k], 0.0, 1.0))
            y = inner.fire(u, state)
            for name, t in inner.reset(u, y, state).items():
                new[name] = new[name] + w[k] * t
            y_mix = y_mix + w[k] * y
        return y_mix, new


@register
class TPS(Searcher):
    name = "tps"

    def __init__(self, model, genotype, layers: list[str], cfg, main: bool = True):
        super().__init__(cfg.out, main)
        self.cfg = cfg
        self.deltas = torch.tensor([-cfg.tps_delta, 0.0, cfg.tps_delta])
        self.slots: list[Slot] = [find_slot(model, genotype, n) for n in layers]
        self.alphas = [torch.full((3,), EPS, requires_grad=True) for _ in self.slots]
        for slot, alpha in zip(self.slots, self.alphas, strict=True):
            slot.replace(TPSNeuron(slot.neuron, alpha, self.deltas))
        self.optimizer = torch.optim.Adam(self.alphas, lr=cfg.arch_lr)
        self.active = False
        self.steps = 0
        self.moves = 0

    def parameters(self) -> list[Tensor]:
        return self.alphas

    def before_epoch(self, trainer, epoch: int) -> None:
        self.active = epoch >= self.cfg.tps_warmup
        for a in self.alphas:
            a.requires_grad_(self.active)

    def taus(self) -> dict[str, float]:
        return {s.name: round(float(s.neuron.tau), 6) for s in self.slots}

    def after_step(self, trainer) -> None:
        if not self.active:
            return
        self.optimizer.step()
        self.steps += 1
        if self.steps % self.cfg.tps_every:
            return
        probs = {s.name: softmax_list(a) for s, a in zip(self.slots, self.alphas, strict=True)}
        with torch.no_grad():
            for slot, alpha in zip(self.slots, self.alphas, strict=True):
                best = int(torch.argmax(alpha))
                slot.neuron.tau.copy_(torch.clamp(slot.neuron.tau + self.deltas[best], 0.0, 1.0))
                alpha.fill_(EPS)
        self.optimizer = torch.optim.Adam(self.alphas, lr=self.cfg.arch_lr)  # alpha and its moments reset
        self.moves += 1
        self.record({"iteration": trainer.iteration, "epoch": trainer.epoch + 1, "move": self.moves,
                     "softmax_alpha": probs, "tau": self.taus()})

    def end_epoch(self, trainer, epoch, batches, gen, rng) -> dict:
        taus = list(self.taus().values())
        return {"tps": f"TPS tau {min(taus):.3f}..{max(taus):.3f} after {self.moves} moves",
                "tps_mean_tau": sum(taus) / len(taus)}

    def write_back(self, g):
        for name, tau in self.taus().items():
            g = set_neuron(g, name, {"tau": tau})
        return set_meta(g, "tps", {"moves": self.moves, "delta": self.cfg.tps_delta, "every": self.cfg.tps_every})

    def state_dict(self) -> dict:
        return {"alphas": [a.detach().clone() for a in self.alphas], "optimizer": self.optimizer.state_dict(),
                "steps": self.steps, "moves": self.moves}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for a, s in zip(self.alphas, state["alphas"], strict=True):
                a.copy_(s)
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps, self.moves = int(state["steps"]), int(state["moves"])
