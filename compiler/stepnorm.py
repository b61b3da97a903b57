"""BatchNorm of T time steps stacked in the batch, each step with its own batch statistics, in one call.

Under ``compiler.ops.time_steps`` (training's multi-step mode) a convolution runs once over all T steps,
and BatchNorm must then normalise each step (and view) as the step-by-step model does: with that step's
batch statistics. Done as T calls of ``F.batch_norm`` and a concatenation, the calls cost more than their
arithmetic at the small sizes of the stereo model (a (4, 8, 8, 11) step: about 19 us forward and backward per
step) and do not get faster with a second thread: one step of ``benchmarks/bench_train.py``'s stereo
set-up spent 9.4 ms of 97 in ``native_batch_norm`` at one thread and 9.2 ms at two (426 calls; a one-off
profile, docs/training.md "Twentieth session"). ``StepBatchNorm`` is the same computation as one autograd
function over all groups, a C++ kernel (built with ``compiler.fused_kernel``'s flags and cache) that
accumulates in float64 as ATen's CPU BatchNorm does; values within the rounding of another summation order.
It also returns each group's mean and unbiased variance (float64), from which the running averages are
updated group after group with ATen's formula (``update_running``).

Used for plain-order (contiguous) float32 / float64 tensors while the fused neurons use their C++ kernel
(``compiler.neuron_impl() == "cpp"``); anything else (channels-last, bfloat16 under autocast, the torch or
plain neuron implementations, a kernel that did not build) takes the T calls as before.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fused import impl as neuron_impl
from .fused_kernel import build_extension

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>

// Sums over a row of n values in double, in 8 independent lanes that the compiler vectorises (a single double
// accumulator is a serial chain of additions: no reordering is allowed without -ffast-math), then the lanes.
template <typename S>
static inline void row_sums(const S* __restrict__ x, int64_t n, double* acc) {
  int64_t s = 0;
  for (; s + 8 <= n; s += 8)
    for (int k = 0; k < 8; ++k) acc[k] += x[s + k];
  for (; s < n; ++s) acc[s % 8] += x[s];
}

template <typename S>
static inline void row_sq(const S* __restrict__ x, int64_t n, double mean, double* acc) {
  int64_t s = 0;
  for (; s + 8 <= n; s += 8)
    for (int k = 0; k < 8; ++k) { const double d = x[s + k] - mean; acc[k] += d * d; }
  for (; s < n; ++s) { const double d = x[s] - mean; acc[s % 8] += d * d; }
}

template <typename S>
static inline void row_dy(const S* __restrict__ gy, const S* __restrict__ x, int64_t n, double mean, double* sum,
                          double* dot) {
  int64_t s = 0;
  for (; s + 8 <= n; s += 8)
    for (int k = 0; k < 8; ++k) { const double d = gy[s + k]; sum[k] += d; dot[k] += d * (x[s + k] - mean); }
  for (; s < n; ++s) { const double d = gy[s]; sum[s % 8] += d; dot[s % 8] += d * (x[s] - mean); }
}

static inline double lanes(const double* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// x: (G * B, C, S) contiguous; group g is rows g * B .. g * B + B - 1. Per (g, c): mean and biased variance over
// (B, S) accumulated in double; out = x * alpha + beta with alpha = invstd * w, beta = b - mean * alpha (ATen's
// transform). Returns out, mean and invstd (x's type, for the backward), mean and unbiased variance (double).
template <typename S>
static void fwd_typed(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, torch::Tensor& out,
                      torch::Tensor& mean_s, torch::Tensor& invstd_s, torch::Tensor& mean_d, torch::Tensor& var_d,
                      int64_t G, double eps) {
  const int64_t C = x.size(1), B = x.size(0) / G, Sz = x.numel() / x.size(0) / C;
  const S* xp = x.data_ptr<S>(); S* op = out.data_ptr<S>();
  const S* wp = w.data_ptr<S>(); const S* bp = b.data_ptr<S>();
  S* ms = mean_s.data_ptr<S>(); S* is = invstd_s.data_ptr<S>();
  double* md = mean_d.data_ptr<double>(); double* vd = var_d.data_ptr<double>();
  const int64_t n = B * Sz;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, n));
  at::parallel_for(0, G * C, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t gc = lo; gc < hi; ++gc) {
      const int64_t g = gc / C, c = gc % C;
      double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, acq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < B; ++i) row_sums(xp + ((g * B + i) * C + c) * Sz, Sz, acc);
      const double mean = lanes(acc) / n;
      for (int64_t i = 0; i < B; ++i) row_sq(xp + ((g * B + i) * C + c) * Sz, Sz, mean, acq);
      const double sq = lanes(acq);
      const double invstd = 1.0 / std::sqrt(sq / n + eps);
      md[gc] = mean;
      vd[gc] = n > 1 ? sq / (n - 1) : std::numeric_limits<double>::quiet_NaN();
      ms[gc] = static_cast<S>(mean);
      is[gc] = static_cast<S>(invstd);
      const S alpha = static_cast<S>(invstd * wp[c]);
      const S beta = static_cast<S>(bp[c] - mean * invstd * wp[c]);
      for (int64_t i = 0; i < B; ++i) {
        const int64_t o = ((g * B + i) * C + c) * Sz;
        for (int64_t s = 0; s < Sz; ++s) op[o + s] = xp[o + s] * alpha + beta;
      }
    }
  });
}

std::vector<torch::Tensor> bn_fwd(torch::Tensor x, torch::Tensor w, torch::Tensor b, int64_t G, double eps) {
  TORCH_CHECK(x.is_contiguous() && x.dim() >= 2 && G > 0 && x.size(0) % G == 0, "step batch norm: bad input");
  const int64_t C = x.size(1);
  auto out = torch::empty_like(x);
  auto mean_s = torch::empty({G, C}, x.options()), invstd_s = torch::empty({G, C}, x.options());
  auto dopt = x.options().dtype(torch::kFloat64);
  auto mean_d = torch::empty({G, C}, dopt), var_d = torch::empty({G, C}, dopt);
  auto wc = w.contiguous(), bc = b.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "step_bn_fwd", [&] {
    fwd_typed<scalar_t>(x, wc, bc, out, mean_s, invstd_s, mean_d, var_d, G, eps);
  });
  return {out, mean_s, invstd_s, mean_d, var_d};
}

// ATen's training backward per (g, c): sum_dy = sum(gy), dot = sum(gy * (x - mean)) in double;
// gx = (gy - sum_dy / n - (x - mean) * dot * invstd^2 / n) * invstd * w; gw and gb summed over g in order.
template <typename S>
static void bwd_typed(const torch::Tensor& gy, const torch::Tensor& x, const torch::Tensor& mean_s,
                      const torch::Tensor& invstd_s, const torch::Tensor& w, torch::Tensor& gx, torch::Tensor& gw,
                      torch::Tensor& gb, int64_t G) {
  const int64_t C = x.size(1), B = x.size(0) / G, Sz = x.numel() / x.size(0) / C;
  const S* gp = gy.data_ptr<S>(); const S* xp = x.data_ptr<S>(); S* gxp = gx.data_ptr<S>();
  const S* ms = mean_s.data_ptr<S>(); const S* is = invstd_s.data_ptr<S>(); const S* wp = w.data_ptr<S>();
  const int64_t n = B * Sz;
  std::vector<double> dots(G * C), sums(G * C);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, n));
  at::parallel_for(0, G * C, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t gc = lo; gc < hi; ++gc) {
      const int64_t g = gc / C, c = gc % C;
      const double mean = ms[gc];
      double as[8] = {0, 0, 0, 0, 0, 0, 0, 0}, ad[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < B; ++i) {
        const int64_t o = ((g * B + i) * C + c) * Sz;
        row_dy(gp + o, xp + o, Sz, mean, as, ad);
      }
      const double sum = lanes(as), dot = lanes(ad);
      sums[gc] = sum; dots[gc] = dot;
      const double invstd = is[gc];
      const S grad_mean = static_cast<S>(sum / n);
      const S proj = static_cast<S>(dot * invstd * invstd / n);
      const S scale = static_cast<S>(invstd * wp[c]);
      const S m = static_cast<S>(mean);
      for (int64_t i = 0; i < B; ++i) {
        const int64_t o = ((g * B + i) * C + c) * Sz;
        for (int64_t s = 0; s < Sz; ++s) gxp[o + s] = (gp[o + s] - grad_mean - (xp[o + s] - m) * proj) * scale;
      }
    }
  });
  S* gwp = gw.data_ptr<S>(); S* gbp = gb.data_ptr<S>();
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int64_t g = 0; g < G; ++g) { sw += dots[g * C + c] * is[g * C + c]; sb += sums[g * C + c]; }
    gwp[c] = static_cast<S>(sw); gbp[c] = static_cast<S>(sb);
  }
}

// The running averages after G training calls, one per group in order, as ATen updates them after each:
// r = f_g * stat_g + (1 - f_g) * r in double, stored in the buffer's type each time. mean, var: (G, C) double
// (any strides), factors: (G) double.
void bn_running(torch::Tensor rm, torch::Tensor rv, torch::Tensor mean, torch::Tensor var, torch::Tensor factors) {
  TORCH_CHECK(rm.is_contiguous() && rv.is_contiguous() && mean.scalar_type() == at::kDouble &&
              var.scalar_type() == at::kDouble && factors.scalar_type() == at::kDouble, "step batch norm: running");
  const int64_t G = mean.size(0), C = mean.size(1);
  auto m = mean.accessor<double, 2>(), v = var.accessor<double, 2>();
  auto f = factors.accessor<double, 1>();
  AT_DISPATCH_FLOATING_TYPES(rm.scalar_type(), "step_bn_running", [&] {
    scalar_t* rmp = rm.data_ptr<scalar_t>(); scalar_t* rvp = rv.data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t g = 0; g < G; ++g) {
        rmp[c] = static_cast<scalar_t>(f[g] * m[g][c] + (1 - f[g]) * rmp[c]);
        rvp[c] = static_cast<scalar_t>(f[g] * v[g][c] + (1 - f[g]) * rvp[c]);
      }
  });
}

std::vector<torch::Tensor> bn_bwd(torch::Tensor gy, torch::Tensor x, torch::Tensor mean_s, torch::Tensor invstd_s,
                                  torch::Tensor w, int64_t G) {
  auto gyc = gy.contiguous(), wc = w.contiguous();
  auto gx = torch::empty_like(x);
  auto gw = torch::empty({x.size(1)}, x.options()), gb = torch::empty({x.size(1)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "step_bn_bwd", [&] {
    bwd_typed<scalar_t>(gyc, x, mean_s, invstd_s, wc, gx, gw, gb, G);
  });
  return {gx, gw, gb};
}
"""

_state: dict = {}


def load():
    """The built kernel, or None where it cannot be built (``compiler.fused_kernel.build_extension``)."""
    if "kernel" not in _state:
        _state["kernel"] = build_extension("snn_step_bn", _SOURCE, ["bn_fwd", "bn_bwd", "bn_running"], _state,
                                           "per-step BatchNorm")
    return _state["kernel"]


class StepBatchNorm(torch.autograd.Function):
    """(x (G * B, C, ...), weight, bias) -> (out, mean, var): each of the G groups of B rows normalised with its
    own batch statistics; ``mean`` and ``var`` (unbiased, float64, (G, C)) for the running averages, no
    gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float):
        out, mean, invstd, mean_d, var_d = load().bn_fwd(x, weight, bias, groups, eps)
        ctx.groups = groups
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.mark_non_differentiable(mean_d, var_d)
        return out, mean_d, var_d

    @staticmethod
    def backward(ctx, gout: Tensor, _gm, _gv):
        x, mean, invstd, weight = ctx.saved_tensors
        gx, gw, gb = load().bn_bwd(gout, x, mean, invstd, weight, ctx.groups)
        return gx, gw, gb, None, None


def in_use() -> bool:
    """Whether the multi-step mode's BatchNorm takes this kernel where a tensor allows (``applies``): the fused
    neurons run their C++ kernel and this kernel built."""
    return neuron_impl() == "cpp" and load() is not None


def applies(x: Tensor, groups: int, weight: Tensor | None) -> bool:
    """Whether ``step_batch_norm`` takes ``x`` in ``groups``: plain order, float32 / float64 (the affine weights
    of the same type), more than one value per group and channel (else ``F.batch_norm``'s own error), while
    the fused neurons run their C++ kernel and this kernel built."""
    return weight is not None and x.dtype in (torch.float32, torch.float64) and weight.dtype == x.dtype \
        and x.is_contiguous() and x.device.type == "cpu" and x.dim() >= 3 and x.shape[0] % groups == 0 \
        and x.numel() // (groups * x.shape[1]) > 1 and in_use()


def step_batch_norm(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``x``'s G groups each normalised with its own statistics (``applies`` must hold): (out, mean, var)."""
    return StepBatchNorm.apply(x, weight, bias, groups, eps)


@torch.no_grad()
def update_running(bn: torch.nn.Module, mean: Tensor, var: Tensor) -> None:
    """``bn``'s running averages after G training calls, one per row of ``mean`` and ``var`` ((G, C) float64:
    the groups' batch means and unbiased variances) in order, as ATen updates them after each call: the count
    up by one, factor = momentum (or 1 / count), ``running = factor * stat + (1 - factor) * running`` in
    float64, stored in the buffer's type (one kernel call for all G)."""
    start = int(bn.num_batches_tracked)
    groups = mean.shape[0]
    factors = [float(bn.momentum) if bn.momentum is not None else 1.0 / (start + g + 1) for g in range(groups)]
    bn.num_batches_tracked.add_(groups)
    load().bn_running(bn.running_mean, bn.running_var, mean, var, torch.tensor(factors, dtype=torch.float64))

def reason() -> str | None:
    """Why the kernel is not in use (None while it is, or before ``load``)."""
    return _state.get("reason")


if __name__ == "__main__":  # ``python -m compiler.stepnorm``: build (or find) the cached kernel now
    print("per-step BatchNorm kernel:", "built" if load() is not None else f"not built ({reason()})")
