"""compiler.stepnorm: BatchNorm of T stacked steps in one call gives what T calls of F.batch_norm give
(outputs, gradients, running averages), and training's multi-step mode uses it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from compiler import fused, stepnorm

torch.set_num_threads(1)

# the kernel is used with the neurons' C++ kernel only (``stepnorm.applies``): both must have built
pytestmark = pytest.mark.skipif(stepnorm.load() is None or fused.load_kernel() is None,
                                reason="the C++ kernels did not build here")


def _per_call(x, groups, w, b, eps):
    return torch.cat([F.batch_norm(c, None, None, w, b, True, 0.0, eps) for c in x.chunk(groups)])


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("shape,groups", [((3, 5, 7, 9), 3), ((2, 4, 3, 5, 6), 4), ((6, 2, 1, 13), 1),
                                          ((4, 8, 16, 17), 2)])
def test_values_and_gradients_are_those_of_one_call_per_group(shape, groups, dtype, tol):
    gen = torch.Generator().manual_seed(sum(shape) + groups)
    x0 = torch.randn((groups * shape[0], *shape[1:]), generator=gen, dtype=dtype) * 2.5 + 0.7
    w0 = torch.randn(shape[1], generator=gen, dtype=dtype)
    b0 = torch.randn(shape[1], generator=gen, dtype=dtype)
    g = torch.randn(x0.shape, generator=gen, dtype=dtype)
    got, ref = [], []
    for fn, out in ((lambda x, w, b: stepnorm.step_batch_norm(x, groups, w, b, 1e-5)[0], got),
                    (lambda x, w, b: _per_call(x, groups, w, b, 1e-5), ref)):
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        y = fn(x, w, b)
        y.backward(g)
        out += [y.detach(), x.grad, w.grad, b.grad]
    for a, r, what in zip(got, ref, ("out", "d x", "d weight", "d bias"), strict=True):
        assert float((a - r).abs().max()) <= tol * float(r.abs().max()), what


def test_float64_gradients_pass_gradcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((6, 3, 4, 5), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: stepnorm.StepBatchNorm.apply(x, w, b, 3, 1e-5)[0], (x, w, b))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_averages_are_those_of_one_training_call_per_group(momentum):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((4 * 5, 6, 7, 3), generator=gen) * 3 + 1
    bn = torch.nn.BatchNorm2d(6, momentum=momentum)
    bn.num_batches_tracked.fill_(2)
    ref = copy.deepcopy(bn)
    for chunk in x.chunk(4):
        ref(chunk)
    _, mean, var = stepnorm.step_batch_norm(x, 4, bn.weight, bn.bias, bn.eps)
    stepnorm.update_running(bn, mean, var)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 6
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-6, atol=1e-7)


def test_applies_only_where_it_computes_the_same():
    x = torch.randn(8, 4, 5, 5)
    w = torch.ones(4)
    with fused.using("cpp"):
        assert stepnorm.applies(x, 2, w)
        assert not stepnorm.applies(x.to(memory_format=torch.channels_last), 2, w)  # channels-last: T calls
        assert not stepnorm.applies(x.bfloat16(), 2, w.bfloat16())  # autocast's bfloat16: T calls
        assert not stepnorm.applies(x, 2, None)  # no affine weights
        assert not stepnorm.applies(x, 3, w)  # groups that do not divide the batch
        assert not stepnorm.applies(torch.randn(2, 4, 1, 1), 2, w)  # one value per group: F.batch_norm's error
    with fused.using("torch"):  # the reference implementation keeps the T calls
        assert not stepnorm.applies(x, 2, w)


def test_the_multistep_mode_runs_it_and_matches_the_per_call_path(monkeypatch):
    """One training step of the stereo model (its shared feature network's deferred updates and its convolutions
    run together included) with the kernel and with T calls: the same loss, gradients and running averages."""
    from compiler import build_model, ops
    from tests.helpers import small_genotype
    from tests.test_execution import _batch, _loss_and_grads, assert_float32_grads_close

    g = small_genotype("stereo_small")
    torch.manual_seed(0)
    model = build_model(g)
    batch = _batch(g, torch.float32)
    calls = []
    real = stepnorm.StepBatchNorm.forward
    monkeypatch.setattr(stepnorm.StepBatchNorm, "forward", staticmethod(lambda *a: calls.append(1) or real(*a)))
    loss, grads, stats = _loss_and_grads(g, model, batch, "multistep", torch.float32, "cpp")
    assert calls  # the kernel ran
    n = len(calls)
    monkeypatch.setattr(ops, "step_norm_applies", lambda *a: False)
    ref_loss, ref_grads, ref_stats = _loss_and_grads(g, model, batch, "multistep", torch.float32, "cpp")
    assert len(calls) == n
    assert abs(float(loss - ref_loss)) <= 1e-5 * abs(float(ref_loss))
    assert_float32_grads_close(grads, ref_grads)  # (a mathematically zero gradient: its rounding residue)
    for a, b in zip(stats, ref_stats, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_log_says_how_batchnorm_runs():
    from types import SimpleNamespace

    from training.execution import execution_line

    def line(mode):
        trainer = SimpleNamespace(exec=mode, cfg=SimpleNamespace(precision="fp32"), layout="nchw", layout_why="auto",
                                  optimizer=SimpleNamespace(param_groups=[{"fused": None, "foreach": True}]))
        return execution_line(trainer, "1 thread(s)")

    with fused.using("cpp"):
        assert "BatchNorm of all steps in one call (cpp)" in line("multistep")
        assert "BatchNorm per step," in line("step")
        assert line("step").endswith(", optimizer foreach")
    with fused.using("torch"):
        assert "BatchNorm per step (the neurons run in torch)" in line("multistep")
