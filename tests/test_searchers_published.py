"""DGS, TPS and HNS as published (issue 19): DGS probes and updates each chosen layer on its own with
one Adam whose state carries across iterations; TPS searches tau and tau_a on ALIF; HNS has the
LIF, ALIF and ReLU candidates, a warm-up and the step-and-reset of TPS (docs/training.md)."""

from __future__ import annotations

import pytest
import torch
from helpers import small_genotype

from compiler import build_model
from training.config import TrainConfig
from training.distributed import setup

torch.set_num_threads(1)


class _Trainer:
    """What a searcher calls on the trainer: a fixed batch, a loss over three steps, the lr, the dist."""

    def __init__(self, model, seen=None, slots=()):
        self.model, self.seen, self.slots = model, seen, slots
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        self.dist = setup("cpu")
        self.iteration, self.epoch = 0, 0

    def make_batch(self, indices, gen, rng):
        return {"image": torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(indices[0]))}

    def batch_loss(self, batch):
        if self.seen is not None:
            self.seen.append(tuple(float(s.neuron.b) for s in self.slots))
        state = self.model.initial_state(2)
        total = 0
        for _ in range(3):  # three steps: tau_a first acts on the third
            out, state = self.model(batch, state)
            total = total + (out["logits"] ** 2).mean()
        return total, {}


def _cfg(tmp_path, **kw):
    return TrainConfig(genotype="", out=str(tmp_path), **kw)


def _dgs(tmp_path, mode):
    from training.searchers.dgs import DGS

    g = small_genotype("cifar10")
    model = build_model(g)
    layers = ["backbone.stem", "backbone.cell0.n0.0"]
    dgs = DGS(model, g, layers, _cfg(tmp_path, dgs_iters=2, dgs_mode=mode), main=False)
    seen: list = []
    return dgs, _Trainer(model, seen, dgs.slots), seen


def test_dgs_probes_each_layer_on_its_own(tmp_path):
    dgs, trainer, seen = _dgs(tmp_path, "per-layer")
    base = tuple(float(s.neuron.b) for s in dgs.slots)
    dgs.search(trainer, [[0], [1]], None, None)
    probes = [b for b in seen if b != base]
    assert probes, "no probe changed a temperature"
    assert all(sum(x != y for x, y in zip(b, base, strict=True)) == 1 for b in probes), \
        "a probe moved two layers' b together"
    assert {i for b in probes for i, (x, y) in enumerate(zip(b, base, strict=True)) if x != y} == {0, 1}
    # the coupled variant stays as a named option: its probes move both layers
    dgs, trainer, seen = _dgs(tmp_path, "coupled")
    dgs.search(trainer, [[0], [1]], None, None)
    assert any(all(x != y for x, y in zip(b, base, strict=True)) for b in seen)


def test_dgs_keeps_one_optimiser_across_iterations(tmp_path):
    dgs, trainer, _ = _dgs(tmp_path, "per-layer")
    opt = dgs.optimizer
    dgs.search(trainer, [[0], [1]], None, None)
    assert dgs.optimizer is opt
    steps = [int(opt.state[a]["step"]) for a in dgs.alphas]
    assert steps == [2, 2], steps  # one Adam step per iteration, moments carried across them
    dgs.search(trainer, [[0], [1]], None, None)
    assert [int(opt.state[a]["step"]) for a in dgs.alphas] == [4, 4]
    assert "optimizer" in dgs.state_dict()


def test_tps_moves_tau_a_on_alif(tmp_path):
    from training.searchers.tps import TPS

    g = small_genotype("cifar10", **{"neuron.kind": "alif", "neuron.tau_a": 0.5})
    model = build_model(g)
    tps = TPS(model, g, ["backbone.stem"], _cfg(tmp_path, tps_every=1, tps_delta=0.05, tps_warmup=0), main=False)
    assert len(tps.parameters()) == 2  # alpha over tau, alpha over tau_a
    trainer = _Trainer(model)
    tps.before_epoch(trainer, 0)
    loss, _ = trainer.batch_loss(trainer.make_batch([0], None, None))
    loss.backward()
    assert tps.alphas_a[0].grad is not None and float(tps.alphas_a[0].grad.abs().sum()) > 0
    with torch.no_grad():
        tps.alphas_a[0].copy_(torch.tensor([0.0, 0.0, 5.0]))  # tau_a + delta wins
        tps.alphas[0].copy_(torch.tensor([0.0, 5.0, 0.0]))  # tau stays
    tps.optimizer.zero_grad()
    tps.after_step(trainer)
    assert tps.tau_as() == {"backbone.stem": pytest.approx(0.55)}
    assert tps.taus()["backbone.stem"] == pytest.approx(0.2)
    assert float(tps.alphas_a[0].detach().abs().max()) == pytest.approx(1e-3)  # reset after the move
    assert tps.write_back(g).neuron.tau_a == pytest.approx(0.5)  # the genotype's default is untouched
    from compiler.planner import plan

    assert plan(tps.write_back(g)).neurons["backbone.stem"].neuron.tau_a == pytest.approx(0.55)


def test_hns_has_three_candidates_a_warmup_and_resets(tmp_path):
    from training.searchers.hns import HNS, KINDS

    assert KINDS == ("lif", "alif", "relu")
    g = small_genotype("cifar10")
    model = build_model(g)
    hns = HNS(model, g, ["backbone.stem"], _cfg(tmp_path, hns_every=2, hns_warmup=1, arch_lr=0.5), main=False)
    assert hns.alphas[0].shape == (3,)
    trainer = _Trainer(model)
    hns.before_epoch(trainer, 0)  # warm-up: alpha held fixed
    assert not hns.alphas[0].requires_grad
    hns.after_step(trainer)
    assert hns.steps == 0
    hns.before_epoch(trainer, 1)
    for _ in range(2):
        hns.optimizer.zero_grad()
        loss, _ = trainer.batch_loss(trainer.make_batch([0], None, None))
        (loss + hns.extra_loss()).backward()
        moved = hns.alphas[0].detach().clone()
        hns.after_step(trainer)
    assert hns.moves == 1 and hns.steps == 2
    assert torch.equal(hns.alphas[0].detach(), torch.full((3,), 1e-3))  # reset after the step
    assert not hns.optimizer.state  # and its Adam moments
    assert not torch.equal(moved, torch.full((3,), 1e-3))
    assert set(model.initial_state(1)) >= {"backbone.stem.v", "backbone.stem.a"}
