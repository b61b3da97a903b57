"""Execution modes of the training loop (training.execution): the fused neurons (torch and C++ versions) and
the multi-step model give the loss and gradients of today's eager step-by-step model, float32 within 1e-5
relative and float64 within 1e-12, on every shipped genotype (reduced) and on random genotypes."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from test_property import genotypes

from compiler import build_model, fused, parse_genotype
from compiler.ir import Neuron, Surrogate
from compiler.neurons import NEURON_MODULES, SURROGATE_GRADS, build_neuron
from tests.helpers import GENOTYPES, SMALL, randomize_bn, small_genotype
from training.config import TrainConfig, task_defaults
from training.distributed import Dist
from training.loop import Trainer

torch.set_num_threads(1)

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
GRAD_ROUNDING = 64


def _batch(g, dtype, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    inp = g.input
    if g.task == "stereo":
        shape = (3, 2, inp.in_channels, inp.height, inp.width)  # 1 burn-in + 2 windows, batch 2
        views = {k: (torch.rand(shape, generator=gen) < 0.3).to(dtype) * 2 for k in ("left", "right")}
        disp = torch.rand((3, 2, inp.height, inp.width), generator=gen, dtype=dtype) * 8
        return {**views, "disparity": disp}
    x = torch.randn((4, inp.in_channels, inp.height, inp.width), generator=gen, dtype=dtype)
    return {"image": x, "label": torch.arange(4) % g.head.classes}


def _loss_and_grads(g, model, batch, mode: str, dtype, impl: str = "auto"):
    size = len(batch["label"]) if "label" in batch else batch["left"].shape[1]
    cfg = task_defaults(TrainConfig(genotype="", out="", windows=2, burn_in=1, batch_size=size, timesteps=3,
                                    exec=mode), g)
    model = copy.deepcopy(model)
    model.initial_state = _typed(model.initial_state, dtype)
    trainer = Trainer(cfg, g, model, None, None, Dist(), log=lambda s: None)
    with fused.using(impl):
        model.train()
        loss, _ = trainer.batch_loss(batch)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    stats = [b for n, b in model.named_buffers() if "running" in n]
    return loss.detach(), grads, stats


def _typed(initial_state, dtype):
    return lambda batch_size=1, device=None, dtype_=dtype: initial_state(batch_size, device, dtype_)


def _compare(g, dtype, modes=(("step", "auto"), ("step", "torch"), ("multistep", "auto"), ("multistep", "torch"))):
    torch.manual_seed(0)
    model = build_model(g).to(dtype)
    batch = _batch(g, dtype)
    ref_loss, ref_grads, ref_stats = _loss_and_grads(g, model, batch, "eager", dtype)
    tol = TOL[dtype]
    # In float64 a parameter whose gradient is mathematically zero (a conv whose output BatchNorm normalises
    # again) holds the rounding residue of sums of the model's larger terms, which depends on the summation
    # order (the CPU's vector width: on an AVX2 CPU two random genotypes differed by 8.7e-18 in a tensor whose
    # maximum was 1.4e-6, and by 2.9e-16 where the model's largest gradient was 0.2): 1e-12 of the tensor's
    # own maximum is below that residue, so float64 also allows GRAD_ROUNDING units of float64 rounding of
    # the model's largest gradient. float32 keeps 1e-5 of each tensor's own maximum, except for a tensor whose
    # gradient is such a residue in float32 (the stereo cost layer's BatchNorm bias under the softmax over
    # disparities, once the upsampled cost convolution runs on the coarse grid): its largest entry below
    # GRAD_ROUNDING float32 ulps of the model's largest gradient, it must stay below that in both modes (the
    # rule of test_channels_last_float32_matches_the_plain_order).
    top = max((float(b.abs().max()) for b in ref_grads if b is not None), default=0.0)
    floor = GRAD_ROUNDING * float(torch.finfo(dtype).eps) * top if dtype == torch.float64 else 0.0
    residue = GRAD_ROUNDING * float(torch.finfo(dtype).eps) * top if dtype == torch.float32 else 0.0
    for mode, impl in modes:
        loss, grads, stats = _loss_and_grads(g, model, batch, mode, dtype, impl)
        what = f"{g.name} {mode}/{impl} {dtype}"
        assert abs(float(loss - ref_loss)) <= tol * abs(float(ref_loss)), what
        for a, b in zip(grads, ref_grads, strict=True):
            if b is None:
                assert a is None or not a.any(), what
                continue
            scale = float(b.abs().max())
            if scale < residue:
                assert float(a.abs().max()) < residue, (what, float(a.abs().max()), residue)
                continue
            assert float((a - b).abs().max()) <= tol * max(scale, 1e-30) + floor, \
                (what, float((a - b).abs().max()), scale, floor)
        for a, b in zip(stats, ref_stats, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-3, msg=what)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_modes_match_eager_on_shipped_genotypes(name, dtype):
    if name == "stereo_fine_c12" and dtype == torch.float32:
        # At the paper's width one membrane lands within float32 rounding of its threshold under seed 0, and
        # the volume's other summation order (step and multistep convolve it from the views) flips that
        # spike: loss 2.2016 eager against 2.1876 (a one-off run of _compare). The float64 case is the
        # exactness check for this genotype; no seed is chosen to pass.
        pytest.skip("float32 spike flip at the threshold (see comment); float64 checks this genotype")
    _compare(small_genotype(name), dtype)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=genotypes())
def test_modes_match_eager_on_random_genotypes(data):
    g = parse_genotype(data)
    _compare(g, torch.float64, (("step", "auto"), ("multistep", "auto")))


@pytest.mark.parametrize("kind", list(NEURON_MODULES))
def test_fused_neurons_match_the_plain_step_for_every_kind_and_surrogate(kind):
    gen = torch.Generator().manual_seed(1)
    for reset, sur, impl in itertools.product(("hard", "soft"), SURROGATE_GRADS, ("torch", "cpp")):
        m = build_neuron(Neuron(kind=kind, reset=reset, surrogate=Surrogate(kind=sur, b=3.0))).double()
        shape = (2, 3, 5, 5)
        current = torch.randn((4, *shape), generator=gen, dtype=torch.float64) * 0.6 + 0.3
        state = {s: torch.rand(shape, generator=gen, dtype=torch.float64) * 0.3 for s in m.state_names}
        weights = torch.randn((4, *shape), generator=gen, dtype=torch.float64)
        results = []
        for how in ("plain", impl):
            with fused.using(how):
                cur = current.clone().requires_grad_()
                s0 = {k: v.clone().requires_grad_() for k, v in state.items()}
                y, s = m.run_steps(cur, s0)
                loss = (y * weights).sum() + sum(t.sum() * 0.7 for t in s.values())
                results.append((y.detach(), torch.autograd.grad(loss, [cur, *s0.values()])))
        (y0, g0), (y1, g1) = results
        assert torch.equal(y0, y1), (kind, reset, sur, impl)
        for a, b in zip(g0, g1, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14, err_msg=f"{kind} {reset} {sur}")


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_cpp_kernel_reads_bfloat16_currents_as_the_float32_path_did(kind):
    """Under bfloat16 autocast the C++ kernel reads the bfloat16 current itself and writes bfloat16 spikes:
    spikes, membranes, state and every gradient bit-identical to casting the current to float32 first (the path
    before), the current's gradient rounded to bfloat16 as that cast's backward rounded it."""
    if fused.impl() != "cpp":
        pytest.skip(f"the C++ kernel is not built here: {fused.kernel_reason()}")
    gen = torch.Generator().manual_seed(2)
    for reset, sur in itertools.product(("hard", "soft"), ("dspike", "superspike")):
        m = build_neuron(Neuron(kind=kind, reset=reset, surrogate=Surrogate(kind=sur, b=3.0)))
        shape = (3, 4, 6, 6)
        current = (torch.randn((4, *shape), generator=gen) * 0.6 + 0.3).to(torch.bfloat16)
        state = {s: torch.rand(shape, generator=gen) * 0.3 for s in m.state_names}
        gy = torch.randn((4, *shape), generator=gen).to(torch.bfloat16)
        results = []
        for wide in (True, False):
            cur = current.clone().requires_grad_()
            s0 = {k: v.clone().requires_grad_() for k, v in state.items()}
            with fused.using("cpp"):
                y, s = m.run_steps(cur.float() if wide else cur, s0)
            loss = (y * gy.to(y.dtype)).sum() + sum(t.sum() * 0.7 for t in s.values())
            results.append((y, s, torch.autograd.grad(loss, [cur, *s0.values()])))
        (y0, s0_, g0), (y1, s1, g1) = results
        assert y1.dtype == torch.bfloat16 and torch.equal(y0, y1.float()), (kind, reset, sur)
        assert all(torch.equal(s0_[k], s1[k]) for k in s0_)
        assert g0[0].dtype == g1[0].dtype == torch.bfloat16
        for a, b in zip(g0, g1, strict=True):
            assert torch.equal(a, b), (kind, reset, sur)


def test_spike_counts_are_exact_under_bfloat16():
    """A layer's spike count (the model's ``spikes`` output) sums bfloat16 spikes in float32: 1001 spikes count
    1001 (a bfloat16 sum says 1000)."""
    from compiler.interpret import Step

    m = build_neuron(Neuron(kind="lif"))
    current = torch.ones((2, 1, 1001), dtype=torch.bfloat16, requires_grad=True)  # T = 2 steps, all firing
    for steps, cur in ((1, current[0]), (2, current.flatten(0, 1))):
        step = Step({"n.v": torch.zeros(1, 1001)}, steps)
        with fused.using("auto"):
            y = step.neuron("n", m, cur)
        assert y.dtype == (torch.bfloat16 if fused.impl() == "cpp" else torch.float32)
        assert step.spikes["n"].flatten().tolist() == [1001.0] * steps


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("n", [1, 255, 256, 257, 1001, 4096, 12288, 20001])
def test_spike_counts_equal_a_float64_count(dtype, n):
    """The blockwise half-precision count is the exact count, whatever the row length (blocks of 256 for
    bfloat16, 2048 for float16, with a ragged end), for sparse and for all-firing rows."""
    from compiler.interpret import spike_counts

    g = torch.Generator().manual_seed(n)
    for p in (0.0, 0.2, 0.9, 1.0):
        y = (torch.rand(3, 2, n, generator=g) < p).to(dtype)
        got = spike_counts(y)
        assert got.dtype == (torch.float32 if dtype != torch.float32 else dtype)
        assert torch.equal(got.double(), y.double().sum(-1)), (p, n)


def test_without_a_compiler_the_fused_neurons_run_in_torch_and_say_why(monkeypatch):
    from compiler import fused_kernel

    monkeypatch.setattr(fused_kernel, "_state", {})
    monkeypatch.setattr(fused_kernel.shutil, "which", lambda name: None)
    assert fused_kernel.load() is None and "no C++ compiler" in fused_kernel.reason()
    assert fused.impl() == "torch"
    m = build_neuron(Neuron(kind="lif"))
    current = torch.randn(3, 2, 4, requires_grad=True)
    y, _ = m.run_steps(current, {"v": torch.zeros(2, 4)})
    y.sum().backward()
    assert current.grad is not None


def test_evaluation_modes_agree(monkeypatch):
    """Held-out evaluation (training.validation) stepping with plain neurons (eager), with fused neurons (step)
    and in spans of steps (multistep; whole segments and spans shorter than a segment, the state carried
    between them): the same windows, 1PA, disparity error and firing rate (float32)."""
    from types import SimpleNamespace

    from training import validation
    from training.data import SyntheticSpec, synthetic_stereo
    from training.images import ClassData
    from training.validation import evaluate_classification, evaluate_stereo

    g = small_genotype("stereo_small")
    model = build_model(g)
    randomize_bn(model)
    model.eval()
    data = synthetic_stereo(SyntheticSpec(train_seeds=(100,), val_seeds=(0, 1), seconds=0.5, val_seconds=0.5),
                            height=24, width=32, encoding=g.input.encoding, bins=g.input.bins,
                            window_us=int(g.input.window_ms * 1000), length=3, stride=2, burn_in=1)
    cfg = SimpleNamespace(eval_batch_size=2)
    with torch.no_grad():
        got = {m: evaluate_stereo(model, data, cfg, m) for m in ("eager", "step", "multistep")}
        monkeypatch.setattr(validation, "MULTISTEP_SAMPLES", 4)  # spans of 2 steps over segments of 3
        got["spans"] = evaluate_stereo(model, data, cfg, "multistep")
        monkeypatch.setattr(validation, "MULTISTEP_SAMPLES", 2)  # spans of 1 step: as many segments as samples
        got["one_step_spans"] = evaluate_stereo(model, data, cfg, "multistep")
    ref = got["eager"]
    assert ref["windows"] > 4 and ref["firing_rate"] > 0
    for m in ("step", "multistep", "spans", "one_step_spans"):
        assert got[m]["windows"] == ref["windows"] and got[m]["valid_pixels"] == ref["valid_pixels"]
        assert got[m]["mean_disparity_error_px"] == pytest.approx(ref["mean_disparity_error_px"], rel=1e-4)
        assert got[m]["one_pixel_accuracy_pct"] == pytest.approx(ref["one_pixel_accuracy_pct"], abs=0.05)
        assert got[m]["firing_rate"] == pytest.approx(ref["firing_rate"], rel=1e-4)

    gc = small_genotype("cifar10")
    cmodel = build_model(gc)
    randomize_bn(cmodel, seed=1)
    cmodel.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((12, gc.input.in_channels, gc.input.height, gc.input.width), generator=gen)
    cdata = ClassData(x, torch.arange(12) % gc.head.classes, gc.head.classes, "random")
    with torch.no_grad():
        res = {m: evaluate_classification(cmodel, cdata, 3, 5, m) for m in ("eager", "step", "multistep")}
    for m in ("step", "multistep"):
        assert res[m]["accuracy_pct"] == res["eager"]["accuracy_pct"]
        assert res[m]["loss"] == pytest.approx(res["eager"]["loss"], rel=1e-5)
    # --best-metric is checked against these names before training (training.loop.Trainer)
    assert tuple(ref) == validation.held_out_metrics(True) and tuple(res["eager"]) == validation.held_out_metrics(False)


def _cpp_neuron(kind: str, reset: str, seed: int):
    """A neuron layer of ``kind`` (Dspike surrogate) and a seeded generator; the test is skipped where the C++
    kernel is not built."""
    if fused.impl() != "cpp":
        pytest.skip(f"the C++ kernel is not built here: {fused.kernel_reason()}")
    m = build_neuron(Neuron(kind=kind, reset=reset, surrogate=Surrogate(kind="dspike", b=3.0)))
    return m, torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_kernel_on_channels_last_currents_gives_the_same_values(kind, dtype):
    """A (T, B, C, H, W) current in channels-last memory order runs through the kernel in that order (no
    copy to the plain order): spikes, state and every gradient bit-identical to the plain-order current;
    the spikes and state come back channels-last."""
    m, gen = _cpp_neuron(kind, "hard", 3)
    shape = (2, 5, 4, 3)
    current = (torch.randn((4, *shape), generator=gen) * 0.6 + 0.3).to(dtype)
    state = {s: torch.rand(shape, generator=gen) * 0.3 for s in m.state_names}
    gy = torch.randn((4, *shape), generator=gen).to(dtype)
    results = []
    for cl in (False, True):
        cur = current.clone()
        if cl:
            cur = cur.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
            assert not cur.is_contiguous() and fused._channels_last(cur)
        cur.requires_grad_()
        s0 = {k: v.clone().requires_grad_() for k, v in state.items()}
        with fused.using("cpp"):
            y, s = m.run_steps(cur, s0)
        if cl:
            assert y[0].is_contiguous(memory_format=torch.channels_last)
            assert all(t.is_contiguous(memory_format=torch.channels_last) for t in s.values())
        loss = (y.float() * gy.float()).sum() + sum(t.sum() * 0.7 for t in s.values())
        results.append((y, s, torch.autograd.grad(loss, [cur, *s0.values()])))
    (y0, s0_, g0), (y1, s1, g1) = results
    assert torch.equal(y0, y1) and all(torch.equal(s0_[k], s1[k]) for k in s0_)
    for a, b in zip(g0, g1, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_kernel_repeats_a_broadcast_first_state_with_the_bits_of_its_copy(kind, dtype):
    """A batch's initial state is one sample's expanded over the batch (stride 0, ``training.execution``); the
    kernel reads that sample's elements once and repeats them (``_repeating``, ``fill_block``), in the forward
    and in the backward's replay of the membranes, instead of a copy per sample: spikes, state and gradients
    (the state's summed over the batch by the expansion) bit-identical to running from the dense copy, over
    blocks of 4,096 elements that cross the samples' boundaries (3,663 elements a sample)."""
    m, gen = _cpp_neuron(kind, "soft", 5)
    shape = (8, 3, 33, 37)
    current = (torch.randn((4, *shape), generator=gen) * 0.6 + 0.3).to(dtype)
    one = {k: torch.rand((1, *shape[1:]), generator=gen) * 0.3 for k in m.state_names}
    gy = torch.randn((4, *shape), generator=gen).to(dtype)
    results = []
    for broadcast in (True, False):
        cur = current.clone().requires_grad_()
        base = {k: v.clone().requires_grad_() for k, v in one.items()}
        s0 = {k: v.expand(shape) if broadcast else v.expand(shape).contiguous() for k, v in base.items()}
        assert all((t.stride(0) == 0) == broadcast for t in s0.values())
        with fused.using("cpp"):
            y, s = m.run_steps(cur, s0)
        loss = (y.float() * gy.float()).sum() + sum(t.sum() * 0.7 for t in s.values())
        results.append((y, s, torch.autograd.grad(loss, [cur, *base.values()])))
    (y0, s0_, g0), (y1, s1, g1) = results
    assert torch.equal(y0, y1) and all(torch.equal(s0_[k], s1[k]) for k in s0_) and 0 < y0.float().mean() < 1
    for a, b in zip(g0, g1, strict=True):
        assert torch.equal(a, b) and a.abs().sum() > 0


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_cpp_kernel_over_no_step_returns_the_first_state(kind):
    """Zero time steps: no spikes, and the state after them is the state before, a broadcast one included
    (the kernel takes a broadcast state's sample once; with no step to run it must still write all of it)."""
    m, gen = _cpp_neuron(kind, "hard", 6)
    shape = (3, 2, 4, 5)
    one = {k: torch.rand((1, *shape[1:]), generator=gen) for k in m.state_names}
    for broadcast in (True, False):
        s0 = {k: v.expand(shape) if broadcast else v.expand(shape).contiguous() for k, v in one.items()}
        with fused.using("cpp"):
            y, s = m.run_steps(torch.rand((0, *shape), generator=gen), s0)
        assert y.shape == (0, *shape) and all(torch.equal(s[k], s0[k]) for k in s0)


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_cpp_kernel_gives_the_same_bits_on_two_threads(kind):
    """The kernel runs its blocks of elements on torch's threads (built with OpenMP: ``at::parallel_for``
    is an inline OpenMP region, serial without it). Each element's recurrence is its own, so 2 threads give
    the bits of 1: spikes, state and every gradient, over a current of several blocks."""
    from compiler import fused_kernel

    if fused.impl() != "cpp":
        pytest.skip(f"the C++ kernel is not built here: {fused.kernel_reason()}")
    assert "-fopenmp" in fused_kernel.CFLAGS
    gen = torch.Generator().manual_seed(4)
    m = build_neuron(Neuron(kind=kind, reset="hard", surrogate=Surrogate(kind="dspike", b=3.0)))
    shape = (4, 8, 33, 37)  # 39,072 elements a step: ten blocks of 4,096
    current = torch.randn((4, *shape), generator=gen) * 0.6 + 0.3
    state = {k: torch.rand(shape, generator=gen) * 0.3 for k in m.state_names}
    gy = torch.randn((4, *shape), generator=gen)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            cur = current.clone().requires_grad_()
            s0 = {k: v.clone().requires_grad_() for k, v in state.items()}
            with fused.using("cpp"):
                y, s = m.run_steps(cur, s0)
            loss = (y * gy).sum() + sum(t.sum() * 0.7 for t in s.values())
            results.append((y, s, torch.autograd.grad(loss, [cur, *s0.values()])))
        finally:
            torch.set_num_threads(1)
    (y0, s0_, g0), (y1, s1, g1) = results
    assert torch.equal(y0, y1) and all(torch.equal(s0_[k], s1[k]) for k in s0_) and y0.sum() > 0
    for a, b in zip(g0, g1, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_burn_in_without_gradient_runs_the_fused_update_with_the_steps_bits(dtype, monkeypatch):
    """A stereo sample's burn-in windows run in training mode without gradient: the fused update runs there
    too (it stepped T times in Python ops before), with the plain step's bits (spikes and state); in
    evaluation mode the plain step runs."""
    if fused.impl() != "cpp":
        pytest.skip(f"the C++ kernel is not built here: {fused.kernel_reason()}")
    gen = torch.Generator().manual_seed(6)
    m = build_neuron(Neuron(kind="lif", reset="hard", surrogate=Surrogate(kind="dspike", b=3.0)))
    shape = (2, 3, 5, 4)
    current = (torch.randn((5, *shape), generator=gen) * 0.6 + 0.3).to(dtype)
    state = {"v": torch.rand(shape, generator=gen) * 0.3}
    calls = []
    real = fused.ThresholdSteps.apply
    monkeypatch.setattr(fused.ThresholdSteps, "apply", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        with fused.using("plain"):
            y0, s0 = m.run_steps(current, dict(state))
        with fused.using("cpp"):
            y1, s1 = m.train().run_steps(current, dict(state))
            assert len(calls) == 1
            m.eval().run_steps(current, dict(state))
            assert len(calls) == 1
    assert torch.equal(y0.to(y1.dtype), y1) and torch.equal(s0["v"], s1["v"]) and y1.sum() > 0


def test_spike_counts_of_channels_last_spikes_are_counted_without_a_copy():
    from compiler.interpret import _rows, spike_counts

    y = (torch.rand(4, 3, 8, 5, 6) < 0.3).to(torch.bfloat16)
    cl = y.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    rows = _rows(cl, 2)
    assert rows.data_ptr() == cl.data_ptr()  # a view, not a copy
    assert torch.equal(spike_counts(rows), spike_counts(y.flatten(2)))


@pytest.mark.parametrize("amx", [True, False])
def test_layout_auto_is_channels_last_only_where_it_was_measured_faster(monkeypatch, amx):
    """bf16 2-D models: channels-last on a CPU with AMX (fourth round) and on an AVX512-BF16 CPU without it
    (twenty-seventh session, once its gradients stayed channels-last); everything else as it was."""
    from training import execution
    from training.errors import TrainError
    from training.execution import resolve_layout

    monkeypatch.setattr(execution, "cpuinfo_text", lambda: "flags : avx512f avx512_bf16" + (" amx_bf16" if amx else ""))
    two_d, stereo = build_model(small_genotype("cifar10")), build_model(small_genotype("stereo"))
    assert resolve_layout("auto", "bf16", "cpu", two_d) == ("channels-last",
                                                            "auto: bf16 on a CPU, 2-D convolutions only")
    assert resolve_layout("auto", "fp32", "cpu", two_d)[0] == "nchw"  # float32 stays as it was
    assert resolve_layout("auto", "bf16", "cuda", two_d)[0] == "nchw"
    assert resolve_layout("auto", "bf16", "cpu", stereo)[0] == "nchw"  # 3-D matching convolutions
    # float32 on a CPU: the 3-D convolutions compute channels-last, everything else stays plain
    assert resolve_layout("auto", "fp32", "cpu", stereo) == ("conv3d-channels-last",
                                                             "auto: fp32 on a CPU, 3-D convolutions")
    assert resolve_layout("auto", "fp32", "cuda", stereo)[0] == "nchw"
    assert resolve_layout("channels-last", "fp32", "cpu", stereo) == ("channels-last", "--layout")
    assert resolve_layout("conv3d-channels-last", "bf16", "cpu", two_d) == ("conv3d-channels-last", "--layout")
    assert resolve_layout("nchw", "bf16", "cpu", two_d) == ("nchw", "--layout")
    with pytest.raises(TrainError, match="--layout"):
        resolve_layout("nhwc", "bf16", "cpu", two_d)


def test_convolutions_run_together_keep_cumulative_running_averages():
    """BatchNorm with momentum None (a cumulative average over batches) under convolutions run as one: the
    same running averages and batch counts as eager's separate calls."""
    g = small_genotype("cifar10")
    torch.manual_seed(0)
    model = build_model(g).double()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    batch = _batch(g, torch.float64)
    _, _, ref = _loss_and_grads(g, model, batch, "eager", torch.float64)
    _, _, got = _loss_and_grads(g, model, batch, "multistep", torch.float64)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_training_states_are_the_models_zeros_broadcast_from_one_sample():
    """Training starts every batch from the model's initial state, broadcast from one sample (no memory
    filled per sample): the same names, shapes, dtypes and values as ``initial_state(batch)``."""
    from training.execution import zero_state

    model = build_model(small_genotype("stereo"))
    ref, got = model.initial_state(5), zero_state(model, 5)
    assert ref.keys() == got.keys()
    for k in ref:
        assert got[k].shape == ref[k].shape and got[k].dtype == ref[k].dtype and torch.equal(got[k], ref[k])
        assert got[k].stride(0) == 0


@pytest.mark.parametrize("name", ["cifar10", "stereo"])
def test_multistep_training_runs_convolutions_that_share_an_input_as_one(name):
    """Under multistep training, the convolutions that read the same value with the same op run as one
    convolution (``compiler.ops.convbn_together``, no module call), and the stereo feature network's right
    instance runs with the left one (``compiler.views``: no call of its own): evaluation over the same batch
    calls every op's module, training none of the members' nor the right instance's (their values and
    gradients are those of eager within 1e-5 by the tests above)."""
    from compiler.interpret import _same_input_ops, submodule
    from compiler.views import view_twins

    g = small_genotype(name)
    model = build_model(g)
    grouped = {n.name for m in _same_input_ops(model.plan.graph).values() for n in m}
    right = {n.name for n in model.plan.graph if n.kind == "op"} & set(view_twins(model.plan.graph).values())
    assert grouped and (g.task != "stereo" or right)
    members = len(grouped) + len(right - grouped)
    calls = []
    convs = {id(c): c for n in model.plan.graph if n.kind == "op"  # (not the training-only auxiliary head's)
             if (c := getattr(submodule(model, n.module), "conv", None)) is not None}
    for conv in convs.values():  # (once each: the stereo feature network's modules serve both views)
        conv.register_forward_hook(lambda *a: calls.append(1))
    batch = _batch(g, torch.float32)
    size = len(batch["label"]) if "label" in batch else batch["left"].shape[1]
    cfg = task_defaults(TrainConfig(genotype="", out="", windows=2, burn_in=0, batch_size=size, timesteps=2,
                                    exec="multistep"), g)
    trainer = Trainer(cfg, g, model, None, None, Dist(), log=lambda s: None)
    counts = {}
    for training in (False, True):
        model.train(training)
        calls.clear()
        with torch.no_grad():
            trainer.batch_loss(batch)
        counts[training] = len(calls)
    assert counts[True] == counts[False] - members, (counts, members)


@pytest.mark.parametrize("name", sorted(n for n in SMALL if n.startswith("stereo")))
def test_both_views_at_once_give_the_separate_runs_values(name, monkeypatch):
    """The stereo feature network on both views at once (``compiler.views``) against its two instances run
    one after the other, multistep training in float64: the same matching costs and running averages, and
    every gradient within 1e-12; the twins are found node for node."""
    from compiler import interpret, views
    from training.execution import stereo_costs

    g = small_genotype(name)
    torch.manual_seed(0)
    model = build_model(g).double()
    twins = views.view_twins(model.plan.graph)
    assert twins and len(twins) == sum(".left." in n.name for n in model.plan.graph)
    batch = _batch(g, torch.float64)
    model.initial_state = _typed(model.initial_state, torch.float64)
    results, interleaved, interleave = [], [], views.interleave
    for together in (False, True):
        if not together:
            monkeypatch.setattr(interpret, "batchable", lambda modules: False)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(interpret, "interleave", lambda *a: interleaved.append(1) or interleave(*a))
        views._TWINS.clear()
        m = copy.deepcopy(model).train()
        costs = torch.stack(stereo_costs(m, batch["left"], batch["right"], 1, "multistep"))
        grads = torch.autograd.grad(costs.square().mean(), [p for p in m.parameters() if p.requires_grad],
                                    allow_unused=True)
        results.append((costs, grads, [b.clone() for k, b in m.named_buffers() if "running" in k]))
    (c0, g0, s0), (c1, g1, s1) = results
    assert interleaved  # the views ran at once in the second run
    torch.testing.assert_close(c1, c0, rtol=1e-12, atol=1e-14)
    for a, b in zip(s0, s1, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(g0, g1, strict=True):
        if b is None:
            assert a is None
            continue
        assert float((a - b).abs().max()) <= 1e-12 * max(float(b.abs().max()), 1e-30)


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_runs_every_convolution_in_that_order_from_a_grey_image_on(channels):
    """Under --layout channels-last every 2-D convolution after the stem reads a channels-last input (no
    conversion forward or backward), also where the image has one channel: its stem weight's strides are
    set explicitly, since a one-channel tensor counts as contiguous in both orders."""
    from training.execution import channels_last

    g = small_genotype("cifar10", **{"input.channels": channels})
    model = build_model(g).eval()  # (in training, convolutions that share an input run as one: no module call)
    channels_last(model)
    assert all(m.weight.stride(1) == 1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    x = torch.rand(4, channels, g.input.height, g.input.width)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.forward_steps({"image": x.unsqueeze(0).expand(3, *x.shape)}, model.initial_state(4))
    for h in hooks:
        h.remove()
    readers = [t for t in seen if t.shape[1] != channels]  # every convolution but the stem
    assert readers and all(t.stride(1) == 1 for t in readers), [t.stride() for t in readers if t.stride(1) != 1]


@pytest.mark.parametrize("steps", [1, 3])
def test_forward_steps_gives_per_step_outputs_of_t_by_b_for_any_t(steps):
    """forward_steps over T steps (T = 1 included, which runs the per-step path) returns every output and
    every layer's spike counts as (T, B, ...), the values of T calls of forward."""
    g = small_genotype("stereo_small")
    model = build_model(g)
    randomize_bn(model)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    shape = (steps, 2, g.input.bins * (2 if g.input.encoding == "polarity_split" else 1), g.input.height,
             g.input.width)
    inputs = {k: (torch.rand(shape, generator=gen) < 0.2).float() for k in ("left", "right")}
    with torch.no_grad():
        got, _ = model.forward_steps(inputs, model.initial_state(2))
        state, ref = model.initial_state(2), []
        for t in range(steps):
            out, state = model({k: v[t] for k, v in inputs.items()}, state)
            ref.append(out)
    assert got["disparity"].shape[:2] == (steps, 2)
    assert got["spikes"] and set(got["spikes"]) == set(ref[0]["spikes"])
    for k, v in got["spikes"].items():
        assert v.shape == (steps, 2), (k, v.shape)
        assert torch.equal(v, torch.stack([r["spikes"][k] for r in ref])), k
    assert torch.allclose(got["disparity"], torch.stack([r["disparity"] for r in ref]), atol=1e-4)


@pytest.mark.parametrize("name,other", [("cifar10", "channels-last"), ("stereo", "channels-last"),
                                        ("stereo", "conv3d-channels-last")])
def test_channels_last_float32_matches_the_plain_order(name, other):
    """--layout channels-last (and conv3d-channels-last) changes only the memory order: float32 loss and
    gradients as in the plain order within the rounding of another summation order, and the checkpoint's
    weights are in the plain order."""
    g = small_genotype(name)
    torch.manual_seed(0)
    model = build_model(g)
    batch = _batch(g, torch.float32)
    out = {}
    for layout in ("nchw", other):
        size = len(batch["label"]) if "label" in batch else batch["left"].shape[1]
        cfg = task_defaults(TrainConfig(genotype="", out="", windows=2, burn_in=1, batch_size=size, timesteps=3,
                                        exec="multistep", layout=layout), g)
        m = copy.deepcopy(model)
        trainer = Trainer(cfg, g, m, None, None, Dist(), log=lambda s: None)
        assert trainer.layout == layout
        m.train()
        loss, _ = trainer.batch_loss(batch)
        grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
        out[layout] = (float(loss.detach()), grads)
        state = trainer.state("")["model"]
        assert all(v.is_contiguous() for v in state.values())
        if layout == "channels-last":
            assert any(p.dim() == 4 and not p.is_contiguous() for p in m.parameters())
        if name == "stereo" and layout != "nchw":  # every 3-D weight channels-last, the 2-D ones only if asked
            assert all(p.is_contiguous(memory_format=torch.channels_last_3d) and not p.is_contiguous()
                       for p in m.parameters() if p.dim() == 5)
            assert all(p.is_contiguous() for p in m.parameters() if p.dim() == 4) == (layout != "channels-last")
    (l0, g0), (l1, g1) = out["nchw"], out[other]
    assert abs(l1 - l0) <= 1e-5 * abs(l0)
    # A gradient that is mathematically zero (the cost layer's BatchNorm bias: a constant added to every
    # disparity's cost leaves the softmax over them unchanged) holds a rounding residue that depends on the
    # summation order; such a tensor (its largest entry below GRAD_ROUNDING float32 ulps of the model's
    # largest gradient) must stay below that in both orders. Every other tensor: 1e-5 of its own maximum.
    assert_float32_grads_close(g1, g0)


def test_a_channels_last_step_adds_no_tensors_of_two_memory_orders():
    """Channels-last keeps every gradient in that order (``compiler.order``: downsampling and concat
    backwards): no addition in the forward or backward of a channels-last training step adds tensors of two
    memory orders, which runs element by element (a channel slice or a plain tensor added to a channels-last
    one: 6-7x the time of two channels-last tensors; docs/training.md, *Execution speed*)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    g = small_genotype("cifar10")
    torch.manual_seed(0)
    model = build_model(g)
    batch = _batch(g, torch.float32)
    cfg = task_defaults(TrainConfig(genotype="", out="", batch_size=len(batch["label"]), timesteps=3,
                                    exec="multistep", layout="channels-last"), g)
    trainer = Trainer(cfg, g, model, None, None, Dist(), log=lambda s: None)
    adds, mixed = [], []

    class Additions(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor) and isinstance(args[1], torch.Tensor):
                a, b = args[0], args[1]
                if a.dim() == 4 and a.shape == b.shape and a.shape[1] > 1:
                    adds.append(func)
                    if a.stride() != b.stride():
                        mixed.append((str(func), tuple(a.shape), a.stride(), b.stride()))
            return func(*args, **(kwargs or {}))

    model.train()
    with Additions():
        loss, _ = trainer.batch_loss(batch)
        torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    assert len(adds) > 0 and not mixed, mixed[:4]


def assert_float32_grads_close(grads, ref_grads) -> None:
    """Each gradient within 1e-5 of its own maximum, but a rounding residue (a tensor whose largest entry lies
    below GRAD_ROUNDING float32 ulps of the model's largest gradient) stays below that in both."""
    top = max(float(b.abs().max()) for b in ref_grads if b is not None)
    residue = GRAD_ROUNDING * float(torch.finfo(torch.float32).eps) * top
    for a, b in zip(grads, ref_grads, strict=True):
        if b is None:
            continue
        scale = float(b.abs().max())
        if scale < residue:
            assert float(a.abs().max()) < residue
            continue
        assert float((a - b).abs().max()) <= 1e-5 * max(scale, 1e-30)


def test_layout_on_the_command_line(tmp_path, capsys):
    """--layout is an option of training.train: the log names the layout used and why; a resumed run keeps
    its layout, and another one given on --resume is refused in one line; an unknown one is refused."""
    from tests.test_resume_options import FIRST
    from training.train import main

    out = tmp_path / "run"
    assert main([*FIRST, "--out", str(out), "--layout", "channels-last", "--stop-after", "1"]) == 0
    assert "layout channels-last (--layout)" in capsys.readouterr().out
    assert main([*FIRST, "--out", str(out), "--resume"]) == 0
    assert "layout channels-last (--layout)" in capsys.readouterr().out
    assert main([*FIRST, "--out", str(out), "--resume", "--layout", "nchw"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --layout 'nchw'") and "\n" not in err, err
    with pytest.raises(SystemExit) as e:
        main([*FIRST, "--out", str(tmp_path / "other"), "--layout", "nhwc"])
    assert e.value.code == 2


def test_kernel_loops_vectorise_under_the_build_flags(tmp_path):
    """The kernel's float loops must compile to vector code under its build flags on this CPU. Under GCC's
    default -ftrapping-math the fire's and the surrogate's selects count as control flow on an AVX2 CPU, so
    the loops stayed scalar with a branch per element (10x slower; ``compiler/fused_kernel.py``, CFLAGS).
    The loops alone (the kernel's own source, float instantiations: the forward, its replay in the backward,
    the reverse recurrence) are compiled with the vectoriser's report; no loop of theirs may be left "not
    vectorized"."""
    import shutil
    import subprocess

    from compiler import fused_kernel

    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++ here: the kernel falls back to its PyTorch version")
    src = fused_kernel._SOURCE
    loops = src[src.index("static constexpr int64_t BLOCK"):src.index("#define DISPATCH_FLAGS")]
    calls = []
    for hard, adaptive in itertools.product(("true", "false"), repeat=2):
        calls += [f"fwd_block<float, float, {hard}, {adaptive}, {writes}>(n, T, N, n, I, v, a, y, u, as, s, s, s, s);"
                  for writes in ("true, false", "true, true", "false, true")]  # spikes / and u / u alone (replay)
        calls += [f"bwd_block<float, float, {hard}, {adaptive}, {k}>"
                  "(n, T, N, n, I, u, as, v, a, y, s, s, s, s, s, s);" for k in range(4)]
    code = ("#include <cmath>\n#include <cstdint>\n" + loops +
            "void run(int64_t n, int64_t T, int64_t N, float* I, float* v, float* a, float* y, float* u,"
            " float* as, float s) {\n" + "\n".join(calls) + "\n}\n")
    path = tmp_path / "loops.cpp"
    path.write_text(code)
    flags = [f for f in fused_kernel.CFLAGS if f != "-fopenmp"]
    out = subprocess.run([cxx, "-std=c++17", *flags, "-fopt-info-vec-all", "-c", str(path),
                          "-o", str(tmp_path / "l.o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    first = code.index("static constexpr int64_t BLOCK")
    loop_lines = {code[:first].count("\n") + 1 + i for i, ln in enumerate(loops.splitlines())
                  if ln.strip().startswith("for (int64_t j = 0; j < n")}
    assert len(loop_lines) == 2
    ours = [ln for ln in out.stderr.splitlines() if ln.startswith(f"{path}:")]  # not the headers' loops
    missed = [ln for ln in ours if "couldn't vectorize loop" in ln and int(ln.split(":")[1]) in loop_lines]
    done = [ln for ln in ours if "loop vectorized" in ln and int(ln.split(":")[1]) in loop_lines]
    assert not missed, "\n".join(missed[:4])
    assert {int(ln.split(":")[1]) for ln in done} == loop_lines


def test_conv3d_channels_last_hands_batchnorm_and_the_neurons_the_plain_order():
    """Under conv3d-channels-last a 3-D convolution computes in channels-last order (its weight's) and its
    output goes back to the plain order before BatchNorm and the neurons, which run slower over channels-last
    tensors of few channels: every BatchNorm3d input in a training step and in evaluation is plain."""
    from training.execution import apply_layout

    g = small_genotype("stereo")
    torch.manual_seed(0)
    model = build_model(g)
    apply_layout(model, "conv3d-channels-last")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(not m.weight.is_contiguous() for m in convs)
    outs, bn_in = [], []
    hooks = [m.register_forward_hook(lambda mod, args, out: outs.append(out)) for m in convs]
    hooks += [m.register_forward_pre_hook(lambda mod, args: bn_in.append(args[0]))
              for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    batch = _batch(g, torch.float32)
    cfg = task_defaults(TrainConfig(genotype="", out="", windows=2, burn_in=1, batch_size=batch["left"].shape[1],
                                    exec="step", layout="conv3d-channels-last"), g)
    trainer = Trainer(cfg, g, model, None, None, Dist(), log=lambda s: None)
    model.train()
    trainer.batch_loss(batch)[0].backward()
    model.eval()
    with torch.no_grad():
        trainer.batch_loss(batch)
    for h in hooks:
        h.remove()
    assert outs and all(o.is_contiguous(memory_format=torch.channels_last_3d) for o in outs if o.shape[1] > 1)
    assert bn_in and all(t.is_contiguous() for t in bn_in)


@pytest.mark.parametrize("k,disparities,shift", [(3, 6, 1), (3, 4, 2), (5, 5, 1), (1, 3, 1)])
def test_the_volume_convolved_from_the_views_equals_the_volume_convolved(k, disparities, shift):
    """A ConvBN handed the two views (``ViewPair``) gives the values and gradients (views, weight,
    BatchNorm) of the same ConvBN on their cost volume, in training mode, within float64 rounding."""
    from compiler.ops import ConvBN, cost_volume
    from compiler.volume import ViewPair

    gen = torch.Generator().manual_seed(k * 100 + disparities)
    c, co = 3, 4
    m = ConvBN(2 * c, co, 3, k).double().train()
    with torch.no_grad():
        m.conv.weight.copy_(torch.randn(m.conv.weight.shape, generator=gen, dtype=torch.float64))
    left, right = (torch.rand((2, c, 5, 11), generator=gen, dtype=torch.float64).requires_grad_() for _ in "lr")
    gy = torch.randn((2, co, disparities, 5, 11), generator=gen, dtype=torch.float64)
    out = []
    for x in (cost_volume(left, right, disparities, shift), ViewPair(left, right, disparities, shift)):
        y = m(x)
        grads = torch.autograd.grad(y, [left, right, m.conv.weight, m.bn.weight, m.bn.bias], gy)
        out.append((y.detach(), grads))
    (y0, g0), (y1, g1) = out
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["eager", "step", "multistep"])
def test_step_modes_convolve_the_volume_from_the_views(mode):
    """step and multistep hand the matching network's first convolution the two views (the volume is never
    built); eager builds the volume (the reference). Nothing of it outlives the training step."""
    from compiler.volume import ViewPair

    g = small_genotype("stereo")
    torch.manual_seed(0)
    model = build_model(g)
    first = model.nets[g.head.matching].layers[0].op
    seen = []
    hook = first.register_forward_pre_hook(lambda mod, args: seen.append(type(args[0])))
    batch = _batch(g, torch.float32)
    cfg = task_defaults(TrainConfig(genotype="", out="", windows=2, burn_in=1, batch_size=batch["left"].shape[1],
                                    exec=mode), g)
    trainer = Trainer(cfg, g, model, None, None, Dist(), log=lambda s: None)
    model.train()
    trainer.batch_loss(batch)[0].backward()
    hook.remove()
    assert seen and set(seen) == {torch.Tensor if mode == "eager" else ViewPair}
    assert "volume" not in vars(model)


def test_bf16_and_replaced_modules_build_the_volume():
    """The views reach the first matching convolution only in float32 and only while it is the compiled
    ConvBN (a searcher may replace it); a classification model has no volume."""
    from training.execution import views_for_volume

    g = small_genotype("stereo")
    model = build_model(g)
    for mode, precision, expect in (("multistep", "fp32", True), ("multistep", "bf16", False),
                                    ("eager", "fp32", False)):
        with views_for_volume(model, mode, precision):
            assert ("volume" in vars(model)) == expect, (mode, precision)
    layers = model.nets[g.head.matching].layers
    layers[0].op = torch.nn.Sequential(layers[0].op)
    with views_for_volume(model, "multistep", "fp32"):
        assert "volume" not in vars(model)
    classifier = build_model(small_genotype("cifar10"))
    with views_for_volume(classifier, "multistep", "fp32"):
        assert "volume" not in vars(classifier)


@pytest.mark.parametrize("shape,size", [((2, 3, 6, 16, 22), (3, 8, 11)), ((2, 3, 6, 16, 21), (2, 4, 7)),
                                        ((2, 3, 3, 8, 11), (6, 16, 22)), ((2, 3, 48, 64), (16, 32)),
                                        ((2, 3, 7, 9), (3, 4)), ((2, 3, 5, 7, 9), (6, 8, 10)),
                                        ((2, 3, 16, 22), (48, 64))])
def test_training_resample_gives_nearest_resampling_exactly(shape, size):
    """The training step's resampling (strided slices for whole-factor downsampling in every layout,
    channels-last 3-D upsampling where the 3-D convolutions compute channels-last) gives F.interpolate's
    nearest values and gradients bit for bit; outside training it is F.interpolate's."""
    from compiler.ops import resample, training_resample

    gen = torch.Generator().manual_seed(len(shape) * 10 + size[0])
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    gy = torch.randn((*shape[:2], *size), generator=gen, dtype=torch.float64)
    ref = F.interpolate(x, size=size, mode="nearest")
    (g_ref,) = torch.autograd.grad(ref, x, gy)
    down = all(a >= b and a % b == 0 for a, b in zip(shape[2:], size, strict=True))
    for channels_last_3d in (True, False):
        with training_resample(channels_last_3d):
            y = resample(x, size)
        (g,) = torch.autograd.grad(y, x, gy)
        assert torch.equal(y, ref) and torch.equal(g, g_ref)
        if down:  # a whole-factor downsampling: a strided view, whatever the layout
            assert not y.is_contiguous()
        if len(shape) == 5 and size[0] > shape[2]:
            assert y.is_contiguous(memory_format=torch.channels_last_3d) == channels_last_3d
    assert resample(x, size).is_contiguous()


@pytest.mark.parametrize("order", [torch.contiguous_format, torch.channels_last, torch.channels_last_3d])
def test_strided_downsampling_gives_its_gradient_in_the_input_order(order):
    """Whole-factor downsampling in training (``StridedPick``) returns its gradient in the input's memory order
    (autograd's slice backward made plain-order zeros, and a channels-last network mixed the two orders from
    there on), with F.interpolate's values and gradients bit for bit."""
    from compiler.ops import resample, training_resample

    rank = 5 if order is torch.channels_last_3d else 4
    shape, size = ((2, 3, 4, 8, 12), (2, 4, 3)) if rank == 5 else ((2, 3, 8, 12), (4, 3))
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).contiguous(memory_format=order).requires_grad_()
    gy = torch.randn((*shape[:2], *size), generator=gen, dtype=torch.float64)
    xr = x.detach().contiguous().requires_grad_()
    ref = F.interpolate(xr, size=size, mode="nearest")
    (g_ref,) = torch.autograd.grad(ref, xr, gy)
    with training_resample(False):
        y = resample(x, size)
    (g,) = torch.autograd.grad(y, x, gy)
    assert torch.equal(y, ref) and torch.equal(g, g_ref)
    assert g.is_contiguous(memory_format=order)


@pytest.mark.parametrize("cl", [False, True])
def test_concat_gives_channels_last_inputs_gradients_of_their_own(cl):
    """The concat node in training (``CatChannels``): ``torch.cat``'s values and gradients bit for bit; a
    channels-last input's gradient is a channels-last tensor of its own (adding a channel slice to a
    channels-last gradient runs element by element), a plain input's the slice autograd gives."""
    from compiler.order import concat_channels

    gen = torch.Generator().manual_seed(7)
    xs = [torch.randn(2, c, 5, 6, generator=gen) for c in (3, 4, 2)]
    if cl:
        xs[0] = xs[0].contiguous(memory_format=torch.channels_last)
        xs[2] = xs[2].contiguous(memory_format=torch.channels_last)
    gy = torch.randn(2, 9, 5, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    ins = [x.clone().requires_grad_() for x in xs]
    refs = [x.clone().requires_grad_() for x in xs]
    y = concat_channels(ins)
    ref = torch.cat(refs, dim=1)
    assert torch.equal(y, ref)
    grads, g_ref = torch.autograd.grad(y, ins, gy), torch.autograd.grad(ref, refs, gy)
    for k, (g, r) in enumerate(zip(grads, g_ref, strict=True)):
        assert torch.equal(g, r)
        own = cl and k in (0, 2)
        assert (g.is_contiguous(memory_format=torch.channels_last) and g.data_ptr() != gy.data_ptr()) if own \
            else not g.is_contiguous()
    with torch.no_grad():  # evaluation (and the exported graph): torch.cat
        assert concat_channels(ins).grad_fn is None and torch.equal(concat_channels(ins), ref)


def test_a_channels_last_3d_convolution_reads_its_input_in_its_order():
    """``in_order_of`` converts a 3-D convolution's input to channels-last where its weight is (autograd then
    saves the converted input; the convolution would otherwise convert it forward and again backward), and
    leaves every other input as it is."""
    from compiler.ops import in_order_of

    x = torch.rand(2, 4, 3, 5, 6)
    w_cl = torch.rand(3, 4, 3, 3, 3).contiguous(memory_format=torch.channels_last_3d)
    assert in_order_of(w_cl, x).is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(in_order_of(w_cl, x), x)
    assert in_order_of(torch.rand(3, 4, 3, 3, 3), x) is x
    x2 = torch.rand(2, 4, 5, 6)
    assert in_order_of(torch.rand(3, 4, 3, 3).contiguous(memory_format=torch.channels_last), x2) is x2


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_optimiser_step_is_the_per_parameter_loop_bit_for_bit(optimizer):
    """With ``--optimizer-impl foreach`` the training optimisers update all parameters with multi-tensor ops:
    the same bits as PyTorch's per-parameter loop over several steps (weight decay and momentum included)."""
    from training.loop import make_optimizer

    g = small_genotype("stereo")
    torch.manual_seed(0)
    params = [p.detach().clone() for p in build_model(g).parameters()]
    cfg = TrainConfig(genotype="", out="", optimizer=optimizer, lr=1e-2, weight_decay=1e-3, schedule="constant",
                      optimizer_impl="foreach")
    gen = torch.Generator().manual_seed(3)
    grads = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(3)]
    a = [p.clone().requires_grad_() for p in params]
    b = [p.clone().requires_grad_() for p in params]
    opt_a = make_optimizer(cfg, a)[0]
    opt_b = (torch.optim.Adam(b, lr=1e-2, weight_decay=1e-3, foreach=False) if optimizer == "adam" else
             torch.optim.SGD(b, lr=1e-2, momentum=cfg.momentum, weight_decay=1e-3, foreach=False))
    assert opt_a.param_groups[0]["foreach"] is True
    for step in grads:
        for pa, pb, gr in zip(a, b, step, strict=True):
            pa.grad, pb.grad = gr.clone(), gr.clone()
        opt_a.step()
        opt_b.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_fused_optimiser_is_the_default_and_the_loop_within_rounding(optimizer):
    """``--optimizer-impl fused`` (the default): PyTorch's fused Adam / SGD, the per-parameter loop's formula
    rounded otherwise: within 1e-12 of the loop over several steps in float64, 1e-6 in float32 (relative to
    each weight's size); an unknown implementation is a one-line error."""
    from training.errors import TrainError
    from training.execution import optimizer_in_use
    from training.loop import make_optimizer

    g = small_genotype("stereo")
    torch.manual_seed(0)
    cfg = TrainConfig(genotype="", out="", optimizer=optimizer, lr=1e-2, weight_decay=1e-3, schedule="constant")
    assert cfg.optimizer_impl == "fused"
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        params = [p.detach().clone().to(dtype) for p in build_model(g).parameters()]
        gen = torch.Generator().manual_seed(3)
        grads = [[torch.randn(p.shape, generator=gen, dtype=dtype) for p in params] for _ in range(3)]
        a = [p.clone().requires_grad_() for p in params]
        b = [p.clone().requires_grad_() for p in params]
        opt_a = make_optimizer(cfg, a)[0]
        opt_b = (torch.optim.Adam(b, lr=1e-2, weight_decay=1e-3, foreach=False) if optimizer == "adam" else
                 torch.optim.SGD(b, lr=1e-2, momentum=cfg.momentum, weight_decay=1e-3, foreach=False))
        assert opt_a.param_groups[0]["fused"] is True and optimizer_in_use(opt_a) == "fused"
        for step in grads:
            for pa, pb, gr in zip(a, b, step, strict=True):
                pa.grad, pb.grad = gr.clone(), gr.clone()
            opt_a.step()
            opt_b.step()
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=tol, atol=tol * float(y.detach().abs().max()))
    with pytest.raises(TrainError, match="unknown --optimizer-impl 'fast'"):
        make_optimizer(TrainConfig(genotype="", out="", optimizer=optimizer, optimizer_impl="fast"), a)


@pytest.mark.parametrize("k", [3, 5])
def test_the_border_as_one_2d_convolution_equals_the_3d_one(k):
    """The last k//2 output columns of the volume's convolution computed by one 2-D convolution (the strip's
    columns folded into channels, the training step's choice) equal the export's 3-D convolution of the
    strip, values and gradients, in float64."""
    from compiler.volume import _border_as_2d

    gen = torch.Generator().manual_seed(k)
    r = k // 2
    strip = torch.randn((2, 6, 4, 5, 3 * r), generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn((3, 6, k, k, k), generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = F.conv3d(strip, weight, bias, padding=(r, r, 0))
    got = _border_as_2d(strip, weight, bias)
    gy = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, [strip, weight, bias], gy),
                    torch.autograd.grad(ref, [strip, weight, bias], gy), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims,factors,k", [(2, (2, 2), 3), (2, (3, 2), 3), (2, (2, 2), 5), (2, (2, 2), 1),
                                            (3, (2, 2, 2), 3), (3, (1, 2, 2), 3), (3, (2, 2, 2), 5)])
def test_the_upsampled_convolution_on_the_coarse_grid_equals_it_on_the_fine_one(dims, factors, k):
    """A convolution of a nearest-upsampled input computed on the coarse grid with the phase kernels
    (compiler.upsample) equals the convolution of the upsampled input: values and the gradients of the
    input, the weight and the bias, float64 within 1e-12, at every border."""
    from compiler.upsample import Upsampled, materialise, upsampled_conv

    gen = torch.Generator().manual_seed(k + sum(factors))
    coarse = (3, 4, 5)[-dims:] if dims == 3 else (4, 5)
    x = torch.randn((2, 3, *coarse), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn((4, 3, *([k] * dims)), generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    u = Upsampled(x, factors)
    fine = materialise(u)
    assert fine.shape[2:] == tuple(n * f for n, f in zip(coarse, factors, strict=True))
    ref = (F.conv2d if dims == 2 else F.conv3d)(fine, w, bias, padding=k // 2)
    got = upsampled_conv(u, w, bias)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, [x, w, bias], gy), torch.autograd.grad(ref, [x, w, bias], gy),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_only_resampled_values_that_convolutions_alone_read_stay_coarse(monkeypatch):
    """Multistep training hands a resampled value on coarse (an ``Upsampled``) only where every reader is a
    convolution that takes it; a module a searcher replaced, and the step modes, get the fine tensor. The
    stereo model's upsamplings (the feature network's cell, the matching network's cells and its cost
    layer) are all read by convolutions."""
    import compiler.ops as ops
    from compiler.interpret import _lazy_upsamples
    from compiler.upsample import whole_factors

    assert whole_factors((3, 4), (6, 8)) == (2, 2) and whole_factors((3, 4), (3, 8)) == (1, 2)
    assert whole_factors((3, 4), (3, 4)) is None and whole_factors((2, 4), (3, 8)) is None
    assert whole_factors((4,), (2,)) is None
    g = small_genotype("stereo_small_fine")
    model = build_model(g)
    lazy = _lazy_upsamples(list(model.plan.graph), model)
    assert {"matching.cost:resample", "feature.left.cell1:resample.c_prev", "feature.right.cell1:resample.c_prev",
            "matching.cell3:resample.c_prev", "matching.cell3:resample.c_prev_prev"} <= lazy, sorted(lazy)
    real, calls = ops.upsampled_conv, []
    monkeypatch.setattr(ops, "upsampled_conv", lambda *a, **k: calls.append(1) or real(*a, **k))
    batch = _batch(g, torch.float32)
    _loss_and_grads(g, model, batch, "step", torch.float32)
    assert not calls  # the step modes upsample
    _loss_and_grads(g, model, batch, "multistep", torch.float32)
    assert len(calls) == 8  # 4 upsampled values (each read by its convolutions as one: the views at once, a
    # cell's edges from one input together), in the burn-in and the windows
    layers = model.nets["matching"].layers
    layers[len(layers) - 1].op = torch.nn.Sequential(layers[len(layers) - 1].op)  # a searcher's wrapper
    assert "matching.cost:resample" not in _lazy_upsamples(list(model.plan.graph), model)


def test_bf16_is_refused_for_3d_convolutions_where_their_weight_gradients_are_wrong(monkeypatch):
    """bf16_conv3d_gradients_ok agrees with a direct look at the shape it probes (a 3x3x3 kernel over a 2-deep
    input, bfloat16 weight gradient against float32); where it fails, a model with 3-D convolutions is refused
    under --precision bf16 on a CPU (one line, the fix named), a classification model and float32 are not."""
    import training.execution as ex
    from training.errors import TrainError

    ok = ex.bf16_conv3d_gradients_ok()
    gen = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x = (torch.rand(2, 16, 2, 4, 6, generator=gen) < 0.3).float()
    g = torch.randn(2, 16, 2, 4, 6, generator=gen)
    (ref,) = torch.autograd.grad(conv(x), conv.weight, g)
    wrong = 0
    for _ in range(5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        (got,) = torch.autograd.grad(out.float(), conv.weight, g)
        wrong += bool(not torch.isfinite(got).all() or (got - ref).abs().max() > 0.05 * ref.abs().max())
    assert ok == (wrong == 0), (ok, wrong)
    stereo, classifier = build_model(small_genotype("stereo")), build_model(small_genotype("cifar10"))
    monkeypatch.setattr(ex, "bf16_conv3d_gradients_ok", lambda: False)
    with pytest.raises(TrainError, match="bfloat16 3-D convolutions give wrong weight gradients") as exc:
        ex.check_bf16_model(stereo, "bf16", "cpu")
    assert "--precision fp32" in str(exc.value) and "\n" not in str(exc.value)
    for model, precision, device in ((classifier, "bf16", "cpu"), (stereo, "fp32", "cpu"), (stereo, "bf16", "cuda")):
        ex.check_bf16_model(model, precision, device)
    monkeypatch.setattr(ex, "bf16_conv3d_gradients_ok", lambda: True)
    ex.check_bf16_model(stereo, "bf16", "cpu")


def test_bf16_stereo_training_is_refused_in_one_line_where_3d_gradients_are_wrong(tmp_path, monkeypatch, capsys):
    import training.execution as ex
    from training.train import main

    monkeypatch.setattr(ex, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(ex, "bf16_conv3d_gradients_ok", lambda: False)
    small = [a for k, v in SMALL["stereo_small"].items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "r"
    rc = main([str(GENOTYPES / "stereo_small.yaml"), *small, "--out", str(out), "--epochs", "1", "--max-batches", "1",
               "--train-seeds", "100", "--val-seeds", "0", "--seconds", "0.5", "--windows", "2", "--burn-in", "1",
               "--batch-size", "1", "--precision", "bf16", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "3-D convolutions" in err, err
    assert not out.exists()


def test_bf16_stereo_search_is_refused_in_one_line_where_3d_gradients_are_wrong(tmp_path, monkeypatch, capsys):
    import training.execution as ex
    from tests.helpers import ROOT
    from training.search.cli import main

    monkeypatch.setattr(ex, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(ex, "bf16_conv3d_gradients_ok", lambda: False)
    out = tmp_path / "s"
    rc = main(["spikedhs", str(ROOT / "searchspaces" / "stereo_small.yaml"), "--out", str(out), "--precision", "bf16",
               "--epochs", "2", "--warmup", "1", "--train-seeds", "100-103", "--val-seeds", "0", "--seconds", "0.5",
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "3-D convolutions" in err, err
    assert not out.exists()


def test_forward_steps_computes_only_the_outputs_asked_for_with_the_same_values_and_state():
    """forward_steps(outputs=...) (training's stereo_costs: the cost alone, and nothing but state in the burn-in)
    runs the nodes those outputs and the state need: the estimator is left out, the cost and the state after
    the steps are bit-identical to the full run's, and a training step's gradients too."""
    from training.execution import stereo_costs, zero_state

    g = small_genotype("stereo_small")
    model = build_model(g)
    randomize_bn(model)
    gen = torch.Generator().manual_seed(0)
    shape = (4, 2, g.input.bins * (2 if g.input.encoding == "polarity_split" else 1), g.input.height, g.input.width)
    inputs = {k: (torch.rand(shape, generator=gen) < 0.2).float() for k in ("left", "right")}
    kinds = {n.kind for n in model._nodes_for(("cost",))}
    assert "estimator" not in kinds and "cost" in kinds and "estimator" in {n.kind for n in model.plan.graph}
    assert "cost" not in {n.kind for n in model._nodes_for(())}
    assert {n.name for n in model.plan.graph if n.state} <= {n.name for n in model._nodes_for(())}
    model.eval()
    with torch.no_grad():
        full, full_state = model.forward_steps(inputs, model.initial_state(2))
        part, part_state = model.forward_steps(inputs, model.initial_state(2), outputs=("cost",))
        _, none_state = model.forward_steps(inputs, model.initial_state(2), outputs=())
    assert set(part) == {"cost", "spikes"} and torch.equal(part["cost"], full["cost"])
    for k, v in full_state.items():
        assert torch.equal(part_state[k], v) and torch.equal(none_state[k], v), k
    with pytest.raises(KeyError, match="unknown model output"):
        model.forward_steps(inputs, model.initial_state(2), outputs=("depth",))
    model.train()  # training's loss through stereo_costs (pruned) against the full forward_steps: the same bits
    grads = []
    for pruned in (True, False):
        model.zero_grad()
        if pruned:
            costs = stereo_costs(model, inputs["left"], inputs["right"], 1, "multistep")
        else:
            state = zero_state(model, 2)
            with torch.no_grad():
                _, state = model.forward_steps({k: v[:1] for k, v in inputs.items()}, state)
            costs = list(model.forward_steps({k: v[1:] for k, v in inputs.items()}, state)[0]["cost"].unbind(0))
        torch.stack(costs).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert grads[0] and all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
