"""DGS, differentiable surrogate gradient search (paper Algorithm 1, with the authors' details).

Every ``e_D`` epochs, for ``I_g`` iterations, each chosen layer ON ITS OWN (the paper searches b "for
each layer"; ``--dgs-mode per-layer``, the default): the layer's local weights (the ops feeding its
neuron) are copied once per candidate temperature b + {-0.4, -0.2, 0, +0.2, +0.4}, each copy taking
one SGD step with the gradient under its own b while every other layer keeps its b; the copies'
currents are mixed by softmax(alpha) at the membrane and alpha, set to its initial value 1e-3 first
(Algorithm 1 line 6), takes one Adam step (lr ``--arch-lr``) on the loss of the mixed network. One
Adam serves every iteration and run (its moments carry across iterations; a fresh Adam every
iteration would make each update the sign of one gradient). After the I_g iterations each layer's b
moves to the candidate with the largest mean softmax(alpha), clamped to [1, 6]. ``--dgs-mode
coupled`` probes and mixes every chosen layer's b together (this project's earlier rule). The
network's own weights, BatchNorm statistics and optimiser are left as they were. Logs per run and
layer the mean softmax(alpha) and b before and after (dgs.jsonl); writes ``surrogate.b`` back into
the genotype. Because alpha's gradient is, to first order, linear in the b offset times the
surrogate's sensitivity to b, the rule follows the surrogate's gradient scale (docs/training.md).
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
        self.alphas = [torch.full((len(OFFSETS),), EPS, requires_grad=True) for _ in self.slots]
        self.optimizer = torch.optim.Adam(self.alphas, lr=cfg.arch_lr)  # one, for every iteration and run
        self.runs = 0
        self.history: list[dict] = []

    def temperatures(self) -> dict[str, float]:
        return {s.name: round(float(s.neuron.b), 6) for s in self.slots}

    def groups(self) -> list[list[int]]:
        """The layers probed together: each on its own (per-layer) or all at once (coupled)."""
        n = len(self.slots)
        return [list(range(n))] if getattr(self.cfg, "dgs_mode", "per-layer") == "coupled" else [[i] for i in range(n)]

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
               "mode": getattr(self.cfg, "dgs_mode", "per-layer"),
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
        sums = [torch.zeros(len(OFFSETS)) for _ in self.slots]
        model.train()
        try:
            for j in range(self.cfg.dgs_iters):
                batch = trainer.make_batch(batches[j % len(batches)], gen, rng)
                with torch.no_grad():
                    for a in self.alphas:
                        a.fill_(EPS)  # line 6: alpha from its initial value
                self.optimizer.zero_grad(set_to_none=True)
                for group in self.groups():
                    cand = self._candidates(trainer, batch, group, ops, base_b, lr, saved)
                    self._alpha_grads(trainer, batch, group, ops, cand, saved)
                self.optimizer.step()
                for li, a in enumerate(self.alphas):
                    sums[li] += torch.softmax(a.detach(), 0)
        finally:
            with torch.no_grad():
                for s, b in zip(self.slots, base_b, strict=True):
                    s.neuron.b.fill_(b)
        return [s / self.cfg.dgs_iters for s in sums]

    def _candidates(self, trainer, batch, group, ops, base_b, lr, saved) -> dict:
        """Per layer of ``group``, per op feeding it, one weight copy per offset: one SGD step of the local
        weights with that layer's b offset (the others' b as they are), line 6."""
        local = [p for li in group for _, _, op in ops[li] for p in op.parameters()]
        cand: dict = {(li, oi): [] for li in group for oi in range(len(ops[li]))}
        for off in OFFSETS:
            for li in group:
                self.slots[li].neuron.b.fill_(base_b[li] + off)
            loss, _ = trainer.batch_loss(batch)
            grads = torch.autograd.grad(loss, local, allow_unused=True)
            grads = iter([torch.zeros_like(p) if g is None else all_sum(g, trainer.dist)
                          for p, g in zip(local, grads, strict=True)])
            for li in group:
                for oi, (_, _, op) in enumerate(ops[li]):
                    cand[(li, oi)].append({name: (p - lr * next(grads)).detach() for name, p in op.named_parameters()})
            model_reset(self, saved, group, base_b)
        return cand

    def _alpha_grads(self, trainer, batch, group, ops, cand, saved) -> None:
        """The mixed network (the group's ops replaced by their softmax(alpha)-mixed copies): alpha's
        gradient of its loss, into ``.grad`` (line 8)."""
        for li in group:
            for oi, (c, key, op) in enumerate(ops[li]):
                _set(c, key, MixedOp(op, cand[(li, oi)], self.alphas[li]))
        try:
            loss, _ = trainer.batch_loss(batch)
            grads = torch.autograd.grad(loss, [self.alphas[li] for li in group])
        finally:
            for li in group:
                for c, key, op in ops[li]:
                    _set(c, key, op)
            self.model.load_state_dict(saved)
        for li, g in zip(group, grads, strict=True):
            self.alphas[li].grad = all_sum(g, trainer.dist)

    def write_back(self, g):
        for name, b in self.temperatures().items():
            g = set_neuron(g, name, {"surrogate": {"b": b}})
        return set_meta(g, "dgs", {"runs": self.runs, "every": self.cfg.dgs_every, "iterations": self.cfg.dgs_iters,
                                   "mode": getattr(self.cfg, "dgs_mode", "per-layer")})

    def state_dict(self) -> dict:
        return {"runs": self.runs, "history": self.history, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.runs = int(state["runs"])
        self.history = list(state["history"])
        if "optimizer" in state:  # (runs before the one optimiser had none)
            self.optimizer.load_state_dict(state["optimizer"])


def model_reset(dgs: DGS, saved: dict, group: list[int], base_b: list[float]) -> None:
    """Undo what a probe pass changed: the BatchNorm statistics, the group's b."""
    dgs.model.load_state_dict(saved)
    for li in group:
        dgs.slots[li].neuron.b.fill_(base_b[li])
