"""DGS, differentiable surrogate gradient search (paper Algorithm 1, with the authors' details).

Every ``e_D`` epochs, for ``I_g`` iterations: the chosen layers' local weights (the ops feeding
each layer's neuron) are copied once per candidate temperature b + {-0.4, -0.2, 0, +0.2, +0.4},
each copy taking one SGD step with its own b; the copies' currents are mixed by softmax(alpha)
(alpha reset to 1e-3 each iteration) at the membrane and alpha takes one Adam step (lr 0.01) on
the loss of the mixed network. After the I_g iterations each layer's b moves to the candidate with
the largest mean softmax(alpha), clamped to [1, 6]. The network's own weights, BatchNorm
statistics and optimiser are left as they were. Logs per run and layer the mean softmax(alpha) and
b before and after (dgs.jsonl); writes ``surrogate.b`` back into the genotype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from compiler.edit import set_meta, set_neuron

from ..distributed import all_sum
from ..errors import TrainError
from .base import Searcher, Slot, _get, _set, find_slot, register

OFFSETS = (-0.4, -0.2, 0.0, 0.2, 0.4)
EPS = 1e-3
B_RANGE = (1.0, 6.0)


class MixedOp(nn.Module):
    """I = sum_i softmax(alpha)_i op(x; w_i): one op evaluated with each candidate's weights."""

    def __init__(self, op: nn.Module, weights: list[dict[str, Tensor]], alpha: Tensor):
        super().__init__()
        self.holder = [op, weights, alpha]

    def forward(self, x: Tensor) -> Tensor:
        op, weights, alpha = self.holder
        w = torch.softmax(alpha, 0)
        out: Tensor | float = 0.0
        for i, params in enumerate(weights):
            out = out + w[i] * functional_call(op, params, (x,))
        return out


@register
class DGS(Searcher):
    name = "dgs"

    def __init__(self, model, genotype, layers: list[str], cfg, main: bool = True):
        super().__init__(cfg.out, main)
        self.cfg = cfg
        self.model = model
        slots = [find_slot(model, genotype, n) for n in layers]
        # A node's spiking function under spike mixing has no op of its own to probe; the paper keeps its
        # surrogate fixed (SpikeDHS supplement: "for df/dy we apply a fixed SG function"), so DGS skips it.
        self.fixed = [s.name for s in slots if not s.ops]  # logged in every row
        self.slots: list[Slot] = [s for s in slots if s.ops]
        if not self.slots:
            raise TrainError(f"DGS: {', '.join(self.fixed[:3])} are nodes' spiking functions (fixed surrogate, "
                             "no op of their own); name layers fed by convolutions")
        self.runs = 0
        self.history: list[dict] = []

    def temperatures(self) -> dict[str, float]:
        return {s.name: round(float(s.neuron.b), 6) for s in self.slots}

    def end_epoch(self, trainer, epoch, batches, gen, rng) -> dict | None:
        if (epoch + 1) % self.cfg.dgs_every:
            return None
        means = self.search(trainer, batches, gen, rng)
        before = self.temperatures()
        with torch.no_grad():
            for slot, m in zip(self.slots, means, strict=True):
                b = float(slot.neuron.b) + OFFSETS[int(torch.argmax(m))]
                slot.neuron.b.fill_(min(max(b, B_RANGE[0]), B_RANGE[1]))
        after = self.temperatures()
        self.runs += 1
        row = {"epoch": epoch + 1, "run": self.runs, "iterations": self.cfg.dgs_iters,
               "mean_softmax_alpha": {s.name: [round(float(v), 6) for v in m]
                                      for s, m in zip(self.slots, means, strict=True)},
               "b_before": before, "b_after": after, "fixed_node_functions": self.fixed}
        self.history.append(row)
        self.record(row)
        moved = sum(before[k] != after[k] for k in before)
        return {"dgs": f"DGS moved b of {moved}/{len(before)} layers"}

    def search(self, trainer, batches, gen, rng) -> list[Tensor]:
        """I_g iterations of Algorithm 1 lines 5-8; returns each layer's mean softmax(alpha)."""
        model = self.model
        saved = {k: v.clone() for k, v in model.state_dict().items()}  # weights and BN statistics
        base_b = [float(s.neuron.b) for s in self.slots]
        lr = self.cfg.dgs_lr or trainer.optimizer.param_groups[0]["lr"]
        ops = [[(c, k, _get(c, k)) for c, k in s.ops] for s in self.slots]
        local = [[(name, p) for _, _, op in layer_ops for name, p in op.named_parameters()] for layer_ops in ops]
        sums = [torch.zeros(len(OFFSETS)) for _ in self.slots]
        model.train()
        try:
            for j in range(self.cfg.dgs_iters):
                batch = trainer.make_batch(batches[j % len(batches)], gen, rng)
                # each candidate: one SGD step of the local weights with its own b (line 6)
                cand: list[list[list[dict[str, Tensor]]]] = [[[] for _ in layer_ops] for layer_ops in ops]
                for off in OFFSETS:
                    for s, b in zip(self.slots, base_b, strict=True):
                        s.neuron.b.fill_(b + off)
                    loss, _ = trainer.batch_loss(batch)
                    params = [p for layer in local for _, p in layer]
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                    grads = [torch.zeros_like(p) if g is None else all_sum(g, trainer.dist)
                             for p, g in zip(params, grads, strict=True)]
                    k = 0
                    for li, layer_ops in enumerate(ops):
                        for oi, (_, _, op) in enumerate(layer_ops):
                            w = {}
                            for name, p in op.named_parameters():
                                w[name] = (p - lr * grads[k]).detach()
                                k += 1
                            cand[li][oi].append(w)
                    model.load_state_dict(saved)  # undo BN statistics the pass updated
                for s, b in zip(self.slots, base_b, strict=True):
                    s.neuron.b.fill_(b)
                # the mixed network: alpha from its initial value, one Adam step (lines 6-8)
                alphas = [torch.full((len(OFFSETS),), EPS, requires_grad=True) for _ in self.slots]
                for li, layer_ops in enumerate(ops):
                    for oi, (c, key, op) in enumerate(layer_ops):
                        _set(c, key, MixedOp(op, cand[li][oi], alphas[li]))
                try:
                    loss, _ = trainer.batch_loss(batch)
                    grads = torch.autograd.grad(loss, alphas)
                finally:
                    for layer_ops in ops:
                        for c, key, op in layer_ops:
                            _set(c, key, op)
                    model.load_state_dict(saved)
                opt = torch.optim.Adam(alphas, lr=self.cfg.arch_lr)
                for a, g in zip(alphas, grads, strict=True):
                    a.grad = all_sum(g, trainer.dist)
                opt.step()
                for li, a in enumerate(alphas):
                    sums[li] += torch.softmax(a.detach(), 0)
        finally:
            with torch.no_grad():
                for s, b in zip(self.slots, base_b, strict=True):
                    s.neuron.b.fill_(b)
        return [s / self.cfg.dgs_iters for s in sums]

    def write_back(self, g):
        for name, b in self.temperatures().items():
            g = set_neuron(g, name, {"surrogate": {"b": b}})
        return set_meta(g, "dgs", {"runs": self.runs, "every": self.cfg.dgs_every, "iterations": self.cfg.dgs_iters})

    def state_dict(self) -> dict:
        return {"runs": self.runs, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.runs = int(state["runs"])
        self.history = list(state["history"])
