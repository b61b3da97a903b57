"""TPS, temporal parameter search (journal Algorithm 3): each searched LIF layer becomes a mixture of
three candidate neurons with tau - dtau, tau, tau + dtau, weighted by softmax(alpha). On an ALIF
layer TPS searches tau and tau_a ("applied to optimize tau and tau_a", journal sec. 4.3; Table 4
lists ALIF(tau, tau_a)): a second alpha weighs tau_a - dtau, tau_a, tau_a + dtau, and the candidates
are the 3 x 3 pairs, weighted softmax(alpha)_i softmax(alpha_a)_k. Alpha is held fixed for
``tps_warmup`` epochs (the journal's 5-epoch warm-up), then learns with Adam alongside the weights;
every ``s`` iterations (a search step, the journal's 100) tau (and tau_a) move to the candidate with
the largest alpha and alpha is reset. Logs tau (tau_a) and softmax(alpha) per layer at each move
(tps.jsonl); writes ``tau`` (``tau_a``) back into the genotype."""

from __future__ import annotations

import torch
from torch import Tensor

from compiler.edit import set_meta, set_neuron
from compiler.neurons import NeuronModule

from .base import Searcher, Slot, find_slot, register, softmax_list

EPS = 1e-3


class TPSNeuron(NeuronModule):
    """y = sum_k softmax(alpha)_k y_k with y_k the replaced neuron's step (its kind's charge, fire, reset)
    under tau_k = tau + delta_k (ALIF: and tau_a + delta_m, weighted by softmax(alpha_a)_m too), all
    candidates starting from the same carried state (journal eqs. 19-21);
    the carried state is the same mixture of the candidates' post-reset states. Same buffers (tau, b) as
    the neuron it replaces, which uses them too, so the state dict is unchanged; alpha is held outside the
    module tree."""

    def __init__(self, inner: NeuronModule, alpha: Tensor, deltas: Tensor, alpha_a: Tensor | None = None):
        super().__init__(inner.spec)
        self.tau.copy_(inner.tau)
        self.b.copy_(inner.b)
        inner._buffers["tau"] = self.tau  # one tensor: what TPS or DGS set here, the inner step uses
        inner._buffers["b"] = self.b
        # ALIF: the searched tau_a, a plain tensor (the state dict keeps the neuron's keys; TPS saves it)
        self.tau_a = None if alpha_a is None else torch.tensor(float(inner.spec.tau_a))
        self.holder = [alpha, deltas, inner, alpha_a]  # a list: not registered in the model

    def fused_params(self) -> None:
        """A mixture has no fused update: the multi-step mode steps ``forward`` T times (``run_steps``)."""
        return None

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        alpha, deltas, inner = self.holder[:3]
        w = torch.softmax(alpha, 0)
        pairs = [(k, w[k], None) for k in range(len(deltas))]
        if self.tau_a is not None:  # ALIF: every (tau, tau_a) pair, weighted by both alphas
            w_a = torch.softmax(self.holder[3], 0)
            pairs = [(k, w[k] * w_a[m], torch.clamp(self.tau_a + deltas[m], 0.0, 1.0))
                     for k in range(len(deltas)) for m in range(len(deltas))]
        y_mix: Tensor | float = 0.0
        new: dict[str, Tensor | float] = {k: 0.0 for k in self.state_names}
        for k, weight, tau_a in pairs:
            u = inner.charge(current, state, torch.clamp(self.tau + deltas[k], 0.0, 1.0))
            y = inner.fire(u, state)
            extra = {} if tau_a is None else {"tau_a": tau_a}
            for name, t in inner.reset(u, y, state, **extra).items():
                new[name] = new[name] + weight * t
            y_mix = y_mix + weight * y
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
        # ALIF layers: a second alpha over tau_a - dtau, tau_a, tau_a + dtau
        self.alphas_a = {i: torch.full((3,), EPS, requires_grad=True) for i, s in enumerate(self.slots)
                         if s.neuron.spec.kind == "alif"}
        for i, (slot, alpha) in enumerate(zip(self.slots, self.alphas, strict=True)):
            slot.replace(TPSNeuron(slot.neuron, alpha, self.deltas, self.alphas_a.get(i)))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=cfg.arch_lr)
        self.active = False
        self.steps = 0
        self.moves = 0

    def parameters(self) -> list[Tensor]:
        return self.alphas + list(self.alphas_a.values())

    def before_epoch(self, trainer, epoch: int) -> None:
        self.active = epoch >= self.cfg.tps_warmup
        for a in self.parameters():
            a.requires_grad_(self.active)

    def taus(self) -> dict[str, float]:
        return {s.name: round(float(s.neuron.tau), 6) for s in self.slots}

    def tau_as(self) -> dict[str, float]:
        return {self.slots[i].name: round(float(self.slots[i].neuron.tau_a), 6) for i in self.alphas_a}

    def after_step(self, trainer) -> None:
        if not self.active:
            return
        self.optimizer.step()
        self.steps += 1
        if self.steps % self.cfg.tps_every:
            return
        probs = {s.name: softmax_list(a) for s, a in zip(self.slots, self.alphas, strict=True)}
        probs_a = {self.slots[i].name: softmax_list(a) for i, a in self.alphas_a.items()}
        with torch.no_grad():
            for i, (slot, alpha) in enumerate(zip(self.slots, self.alphas, strict=True)):
                best = int(torch.argmax(alpha))
                slot.neuron.tau.copy_(torch.clamp(slot.neuron.tau + self.deltas[best], 0.0, 1.0))
                if i in self.alphas_a:
                    best_a = int(torch.argmax(self.alphas_a[i]))
                    slot.neuron.tau_a.copy_(torch.clamp(slot.neuron.tau_a + self.deltas[best_a], 0.0, 1.0))
            for a in self.parameters():
                a.fill_(EPS)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.cfg.arch_lr)  # alpha and its moments reset
        self.moves += 1
        row = {"iteration": trainer.iteration, "epoch": trainer.epoch + 1, "move": self.moves,
               "softmax_alpha": probs, "tau": self.taus()}
        if self.alphas_a:
            row.update(softmax_alpha_a=probs_a, tau_a=self.tau_as())
        self.record(row)

    def end_epoch(self, trainer, epoch, batches, gen, rng) -> dict:
        taus = list(self.taus().values())
        return {"tps": f"TPS tau {min(taus):.3f}..{max(taus):.3f} after {self.moves} moves",
                "tps_mean_tau": sum(taus) / len(taus)}

    def write_back(self, g):
        for name, tau in self.taus().items():
            g = set_neuron(g, name, {"tau": tau})
        for name, tau_a in self.tau_as().items():
            g = set_neuron(g, name, {"tau_a": tau_a})
        return set_meta(g, "tps", {"moves": self.moves, "delta": self.cfg.tps_delta, "every": self.cfg.tps_every})

    def state_dict(self) -> dict:
        return {"alphas": [a.detach().clone() for a in self.alphas], "optimizer": self.optimizer.state_dict(),
                "steps": self.steps, "moves": self.moves,
                "alphas_a": [a.detach().clone() for a in self.alphas_a.values()],
                "tau_a": [self.slots[i].neuron.tau_a.clone() for i in self.alphas_a]}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            mine = self.parameters() if "alphas_a" in state else self.alphas  # (older runs: tau alone)
            for a, s in zip(mine, state["alphas"] + state.get("alphas_a", []), strict=True):
                a.copy_(s)
            for i, t in zip(self.alphas_a, state.get("tau_a", []), strict=True):
                self.slots[i].neuron.tau_a.copy_(t)
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps, self.moves = int(state["steps"]), int(state["moves"])
