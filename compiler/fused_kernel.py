"""The C++ kernel of the fused threshold neuron (``compiler.fused``): the forward recurrence over T steps and
the reverse recurrence of its backward with the surrogate gradient computed in the same pass, in blocks of
elements, parallel over blocks, the loops over elements vectorised by the compiler for this CPU
(``-march=native``: without it the compiler targets the baseline x86-64 vector width, and the kernel ran 7x
(forward) and 9x (backward) slower on a training layer, measured side by side with
``python benchmarks/bench_neuron_kernel.py``; the build is cached per CPU kind, ``cpu_key``).

Built lazily, on first use (or ahead by ``python -m compiler.fused_kernel``, which ``make setup`` runs), with
the machine's C++ compiler through ``torch.utils.cpp_extension.load_inline`` and cached by torch
(``TORCH_EXTENSIONS_DIR``, default ~/.cache/torch_extensions): the first build takes about a minute, later
processes load the cached library. If there is no compiler or the build fails,
``load()`` returns None once, logs the reason, and the fused function runs its PyTorch version.
The forward arithmetic is that of the PyTorch version, operation for operation in the tensor's dtype (no
fused multiply-add: -ffp-contract=off), so forward values are bit-identical to it. The backward may fuse
multiplies and adds (``bwd_block`` is compiled with ``fp-contract=fast``: 2.32 -> 2.01 ms min over 150 calls
of T=4 x 786,432 elements, one thread, side by side with the build without), and in float32 the Dspike
surrogate's tanh is a rational approximation (absolute error below 4e-7): gradients within the 1e-5
relative (float64: 1e-12) that tests/test_execution.py checks.
"""

from __future__ import annotations

import hashlib
import logging
import shutil

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>

// Elements are independent: each thread takes a block of them and runs the T steps over the block, the
// innermost loop over contiguous elements (vectorised by the compiler; branch-free selects).
static constexpr int64_t BLOCK = 4096;

// tanh: the library's in double; in float a rational approximation (absolute error below 4e-7) that the
// compiler vectorises, where a call to tanhf per element would cost more than the whole recurrence.
static inline double fast_tanh(double x) { return std::tanh(x); }
static inline float fast_tanh(float x) {
  const float c = 7.90531110763549805f;
  x = x > c ? c : (x < -c ? -c : x);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

// The surrogate gradients of compiler.surrogates at z = u - threshold (kind: dspike, triangle, superspike,
// arctan); ``k`` is b / 2 / tanh(b / 2) for dspike (one multiplication instead of a division per element;
// values within a rounding of the reference's).
template <typename S, int KIND>
static inline S surrogate(S z, S b, S k) {
  if (KIND == 0) {
    const S x = z + S(0.5);
    const S t = fast_tanh(b * (x - S(0.5)));
    const S g = k * (S(1) - t * t);
    return (x >= S(0) && x <= S(1)) ? g : S(0);
  }
  if (KIND == 1) { const S r = S(1) - std::abs(z); return b * (r > S(0) ? r : S(0)); }
  if (KIND == 2) { const S d = b * std::abs(z) + S(1); return S(1) / (d * d); }
  const S pz = S(3.14159265358979323846) * z;
  return (b / S(3)) / (S(1) + pz * pz);
}

// TI: the type of the input current and of the spikes (S, or bfloat16 under autocast: read as S, spikes 0/1 exact).
// One block of n elements over T steps; I and y advance N elements a step, u and as (the membrane, and a before
// each step) us elements. The forward pass writes the spikes (WRITE_Y) and updates the state v, a in place; it
// also writes u, as (WRITE_U) where the backward reads them back. The backward's replay (WRITE_Y false,
// WRITE_U true) runs the same arithmetic from the saved current and first state and writes one block's u, as
// into its own buffers: one function, so the replayed membranes are bit for bit the forward's.
template <typename S, typename TI, bool HARD, bool ADAPTIVE, bool WRITE_Y, bool WRITE_U>
static void fwd_block(int64_t n, int64_t T, int64_t N, int64_t us, const TI* __restrict__ I, S* __restrict__ v,
                      S* __restrict__ a, TI* __restrict__ y, S* __restrict__ u, S* __restrict__ as, S tau, S th,
                      S beta, S tau_a) {
  for (int64_t t = 0; t < T; ++t) {
    const TI* __restrict__ It = I + t * N;
#pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) {
      S uu = tau * v[j];
      uu = uu + static_cast<S>(It[j]);
      S thr = th;
      if (ADAPTIVE) { S ba = beta * a[j]; thr = th + ba; if (WRITE_U) as[t * us + j] = a[j]; }
      const S z = uu - thr;
      const S yy = z >= S(0) ? S(1) : S(0);
      if (HARD) { v[j] = uu * (S(1) - yy); } else { S ty = thr * yy; v[j] = uu - ty; }
      if (ADAPTIVE) { S ta = tau_a * a[j]; a[j] = ta + yy; }
      if (WRITE_U) u[t * us + j] = uu;
      if (WRITE_Y) y[t * N + j] = static_cast<TI>(yy);
    }
  }
}

// The reverse recurrence of one block: gy and gi advance N elements a step, u and as us.
template <typename S, typename TI, bool HARD, bool ADAPTIVE, int KIND>
__attribute__((optimize("fp-contract=fast")))
static void bwd_block(int64_t n, int64_t T, int64_t N, int64_t us, const TI* __restrict__ gy, const S* __restrict__ u,
                      const S* __restrict__ as, S* __restrict__ gv, S* __restrict__ ga, TI* __restrict__ gi, S tau,
                      S th, S beta, S tau_a, S b, S k) {
  for (int64_t t = T - 1; t >= 0; --t) {
    const TI* __restrict__ gyt_ = gy + t * N;
    TI* __restrict__ git = gi + t * N;
#pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) {
      S thr = th;
      if (ADAPTIVE) { S ba = beta * as[t * us + j]; thr = th + ba; }
      const S uu = u[t * us + j];
      const S z = uu - thr;
      const S yy = z >= S(0) ? S(1) : S(0);
      const S gg = surrogate<S, KIND>(z, b, k);
      S gyt = static_cast<S>(gyt_[j]);
      if (ADAPTIVE) gyt = gyt + ga[j];
      if (HARD) { S ug = uu * gv[j]; gyt = gyt - ug; } else { S tg = thr * gv[j]; gyt = gyt - tg; }
      S du = gyt * gg;
      if (HARD) { S r = gv[j] * (S(1) - yy); du = du + r; } else { du = du + gv[j]; }
      if (ADAPTIVE) {
        S dthr = -gyt * gg;
        if (!HARD) { S yg = yy * gv[j]; dthr = dthr - yg; }
        S ta = tau_a * ga[j]; S bd = beta * dthr; ga[j] = ta + bd;
      }
      git[j] = static_cast<TI>(du);
      gv[j] = tau * du;
    }
  }
}

#define DISPATCH_FLAGS(HARD, ADAPTIVE, ...)                                             \
  if (HARD && ADAPTIVE) { constexpr bool H = true, A = true; __VA_ARGS__; }             \
  else if (HARD) { constexpr bool H = true, A = false; __VA_ARGS__; }                   \
  else if (ADAPTIVE) { constexpr bool H = false, A = true; __VA_ARGS__; }               \
  else { constexpr bool H = false, A = false; __VA_ARGS__; }

// Whether the current is bfloat16 read into a wider state (the spikes then bfloat16 too), else one type.
static bool mixed(const torch::Tensor& I, const torch::Tensor& state) {
  if (I.scalar_type() == state.scalar_type()) return false;
  TORCH_CHECK(I.scalar_type() == at::kBFloat16, "fused neuron: current ", I.scalar_type(), " with state ",
              state.scalar_type(), ": the current is the state's type or bfloat16");
  return true;
}

// dst[j] = src[(lo + j) % M] for j < n: a block of a state that repeats with period M (an initial state
// broadcast over the batch is passed once, M elements, instead of as a copy for every sample).
template <typename S>
static void fill_block(S* __restrict__ dst, const S* __restrict__ src, int64_t M, int64_t lo, int64_t n) {
  int64_t r = lo % M, j = 0;
  while (j < n) {
    const int64_t c = std::min(n - j, M - r);
    std::copy(src + r, src + r + c, dst + j);
    j += c;
    r = 0;
  }
}

template <typename S, typename TI>
static void fwd_typed(const torch::Tensor& I, const torch::Tensor& v0, const torch::Tensor& a0, torch::Tensor& y,
                      torch::Tensor& vT, torch::Tensor& aT, torch::Tensor& u, torch::Tensor& aseq, double tau_,
                      double th_, double beta_, double tau_a_, bool hard, bool adaptive) {
  const int64_t T = I.size(0), N = vT.numel(), M = v0.numel();
  const bool keep = u.numel() > 0;
  const TI* Ip = I.data_ptr<TI>();
  const S* v0p = v0.data_ptr<S>();
  const S* a0p = adaptive ? a0.data_ptr<S>() : nullptr;
  TI* yp = y.data_ptr<TI>();
  S* v = vT.data_ptr<S>();
  S* a = adaptive ? aT.data_ptr<S>() : nullptr;
  S* up = keep ? u.data_ptr<S>() : nullptr;
  S* asp = keep && adaptive ? aseq.data_ptr<S>() : nullptr;
  at::parallel_for(0, N, BLOCK, [&](int64_t lo0, int64_t hi0) {
    for (int64_t lo = lo0; lo < hi0; lo += BLOCK) {
      const int64_t n = std::min(hi0, lo + BLOCK) - lo;
      S* al = a ? a + lo : nullptr;
      fill_block(v + lo, v0p, M, lo, n);
      if (adaptive) fill_block(al, a0p, M, lo, n);
      if (keep) {
        DISPATCH_FLAGS(hard, adaptive, fwd_block<S, TI, H, A, true, true>(n, T, N, N, Ip + lo, v + lo, al, yp + lo,
                       up + lo, asp ? asp + lo : nullptr, S(tau_), S(th_), S(beta_), S(tau_a_)))
      } else {
        DISPATCH_FLAGS(hard, adaptive, fwd_block<S, TI, H, A, true, false>(n, T, N, N, Ip + lo, v + lo, al, yp + lo,
                       nullptr, nullptr, S(tau_), S(th_), S(beta_), S(tau_a_)))
      }
    }
  });
}

// A contiguous copy of a state of any strides (a channels-last membrane, say) in one pass.
static torch::Tensor dense(const torch::Tensor& x) {
  return x.is_contiguous() ? x : torch::empty(x.sizes(), x.options()).copy_(x);
}

// The first state's elements, checked against the step's N: all N of them, or M of them repeated N / M times
// (the initial state of a batch, broadcast over its samples).
static torch::Tensor first_state(const torch::Tensor& x, int64_t N, const char* what) {
  TORCH_CHECK(x.numel() > 0 && N % x.numel() == 0, "fused neuron: ", what, " of ", x.numel(),
              " elements does not repeat into ", N);
  return dense(x);
}

// I (T, N...) contiguous; v0, a0 (a0 empty unless adaptive): the state before the first step, N elements of any
// strides or M of them that repeat (N % M == 0) -> y (I's type), v_T, a_T (the state's type, I's shape without
// T), and where ``keep``: u and a before each step (T, N...) for the backward (else empty: it replays them).
std::vector<torch::Tensor> fwd(torch::Tensor I, torch::Tensor v0, torch::Tensor a0, double tau_, double th_,
                               double beta_, double tau_a_, bool hard, bool adaptive, bool keep) {
  TORCH_CHECK(I.is_contiguous() && I.dim() >= 1, "fused neuron: the current must be contiguous, (T, ...)");
  auto empty = torch::empty({0}, v0.options());
  auto y = torch::empty_like(I);
  auto vT = torch::empty(I.sizes().slice(1), v0.options());
  const int64_t N = vT.numel();
  auto aT = adaptive ? torch::empty(I.sizes().slice(1), v0.options()) : empty;
  auto u = keep && N ? torch::empty(I.sizes(), v0.options()) : empty;
  auto aseq = keep && N && adaptive ? torch::empty(I.sizes(), v0.options()) : empty;
  if (N == 0) return {y, vT, aT, u, aseq};
  if (I.size(0) == 0) {  // no step: the state stays the first one (of all N elements)
    vT.copy_(v0.expand(vT.sizes()));
    if (adaptive) aT.copy_(a0.expand(aT.sizes()));
    return {y, vT, aT, u, aseq};
  }
  auto v0d = first_state(v0, N, "v0");
  auto a0d = adaptive ? first_state(a0, N, "a0") : empty;
  const bool bf16 = mixed(I, v0);
  AT_DISPATCH_FLOATING_TYPES(v0.scalar_type(), "fused_threshold_fwd", [&] {
    if (bf16) fwd_typed<scalar_t, c10::BFloat16>(I, v0d, a0d, y, vT, aT, u, aseq, tau_, th_, beta_, tau_a_, hard,
                                                 adaptive);
    else fwd_typed<scalar_t, scalar_t>(I, v0d, a0d, y, vT, aT, u, aseq, tau_, th_, beta_, tau_a_, hard, adaptive);
  });
  return {y, vT, aT, u, aseq};
}

#define DISPATCH_KIND(KIND, ...)                                                        \
  if (KIND == 0) { constexpr int K = 0; __VA_ARGS__; }                                  \
  else if (KIND == 1) { constexpr int K = 1; __VA_ARGS__; }                             \
  else if (KIND == 2) { constexpr int K = 2; __VA_ARGS__; }                             \
  else { constexpr int K = 3; __VA_ARGS__; }

template <typename S, typename TI>
static void bwd_typed(const torch::Tensor& gy, const torch::Tensor& I, const torch::Tensor& v0,
                      const torch::Tensor& a0, const torch::Tensor& u, const torch::Tensor& aseq, torch::Tensor& gv,
                      torch::Tensor& ga, torch::Tensor& gi, double tau_, double th_, double beta_, double tau_a_,
                      bool hard, bool adaptive, int64_t kind, double b_) {
  const int64_t T = gy.size(0), N = gv.numel();
  const bool replay = u.numel() == 0;
  const int64_t M = replay ? v0.numel() : 1;
  const TI* Ip = replay ? I.data_ptr<TI>() : nullptr;
  const TI* gyp = gy.data_ptr<TI>();
  TI* gip = gi.data_ptr<TI>();
  const S* v0p = replay ? v0.data_ptr<S>() : nullptr;
  const S* a0p = replay && adaptive ? a0.data_ptr<S>() : nullptr;
  const S* up = replay ? nullptr : u.data_ptr<S>();
  const S* asp = !replay && adaptive ? aseq.data_ptr<S>() : nullptr;
  S* gvp = gv.data_ptr<S>();
  S* gap = adaptive ? ga.data_ptr<S>() : nullptr;
  const S k = S(b_ / 2.0 / std::tanh(b_ / 2.0));
  at::parallel_for(0, N, BLOCK, [&](int64_t lo0, int64_t hi0) {
    // where replaying, this chunk's buffers: the state of one block, and its membranes (and a) at every step
    const int64_t nb = replay ? BLOCK : 0;
    std::vector<S> vb(nb), abuf(adaptive ? nb : 0), ub(T * nb), ab(adaptive ? T * nb : 0);
    for (int64_t lo = lo0; lo < hi0; lo += BLOCK) {
      const int64_t n = std::min(hi0, lo + BLOCK) - lo;
      const S* ul = up ? up + lo : ub.data();
      const S* al = asp ? asp + lo : ab.data();
      const int64_t us = replay ? n : N;
      if (replay) {
        fill_block(vb.data(), v0p, M, lo, n);
        if (adaptive) fill_block(abuf.data(), a0p, M, lo, n);
        DISPATCH_FLAGS(hard, adaptive, fwd_block<S, TI, H, A, false, true>(n, T, N, n, Ip + lo, vb.data(),
                       abuf.data(), nullptr, ub.data(), ab.data(), S(tau_), S(th_), S(beta_), S(tau_a_)))
      }
      DISPATCH_FLAGS(hard, adaptive, DISPATCH_KIND(kind, bwd_block<S, TI, H, A, K>(n, T, N, us, gyp + lo, ul, al,
                     gvp + lo, gap ? gap + lo : nullptr, gip + lo, S(tau_), S(th_), S(beta_), S(tau_a_), S(b_), k)))
    }
  });
}

// The reverse recurrence with the surrogate gradient (kind, temperature b) computed in place; gy and the
// current's gradient in the spikes' type (bfloat16 under autocast), the rest in the state's. The membranes are
// u, aseq where the forward kept them, else (u empty) replayed block by block from the current I and the first
// state v0 (a0) that the forward read.
std::vector<torch::Tensor> bwd(torch::Tensor gy, torch::Tensor gvT, torch::Tensor gaT, torch::Tensor I,
                               torch::Tensor v0, torch::Tensor a0, torch::Tensor u, torch::Tensor aseq, double tau_,
                               double th_, double beta_, double tau_a_, bool hard, bool adaptive, int64_t kind,
                               double b_) {
  const bool replay = u.numel() == 0;
  TORCH_CHECK(gy.is_contiguous() && gy.dim() >= 1, "fused neuron: the spikes' gradient must be contiguous, (T, ...)");
  TORCH_CHECK(replay ? I.is_contiguous() && I.sizes() == gy.sizes() && I.scalar_type() == gy.scalar_type()
                     : u.is_contiguous() && u.sizes() == gy.sizes() && (!adaptive || aseq.sizes() == gy.sizes()),
              "fused neuron: the saved current or membranes do not match the spikes' gradient");
  const auto& opts = replay ? v0.options() : u.options();
  const int64_t N = gy.size(0) ? gy.numel() / gy.size(0) : 0;
  auto empty = torch::empty({0}, opts);
  auto gi = torch::empty(gy.sizes(), gy.options());
  auto state = gy.sizes().slice(1);
  auto gv = gvT.numel() ? torch::empty(state, opts).copy_(gvT) : torch::zeros(state, opts);
  auto ga = !adaptive ? empty : gaT.numel() ? torch::empty(state, opts).copy_(gaT) : torch::zeros(state, opts);
  if (N == 0) return {gi, gv, ga};
  auto v0d = replay ? first_state(v0, N, "v0") : empty;
  auto a0d = replay && adaptive ? first_state(a0, N, "a0") : empty;
  const bool bf16 = mixed(gy, gv);
  AT_DISPATCH_FLOATING_TYPES(gv.scalar_type(), "fused_threshold_bwd", [&] {
    if (bf16) bwd_typed<scalar_t, c10::BFloat16>(gy, I, v0d, a0d, u, aseq, gv, ga, gi, tau_, th_, beta_, tau_a_,
                                                 hard, adaptive, kind, b_);
    else bwd_typed<scalar_t, scalar_t>(gy, I, v0d, a0d, u, aseq, gv, ga, gi, tau_, th_, beta_, tau_a_, hard,
                                       adaptive, kind, b_);
  });
  return {gi, gv, ga};
}
"""

# -fopenmp: ATen's at::parallel_for is an inline OpenMP region, so without it the kernel ran on one thread
# whatever torch.get_num_threads() said (2 threads: the neuron's forward 1.17x, its backward 1.02x faster
# than one thread, against 1.6-1.9x for the convolutions; docs/training.md).
# -mprefer-vector-width=512: GCC vectorises for 256-bit registers by default even where the CPU has 512-bit
# ones (-fopt-info-vec: "loop vectorized using 32 byte vectors"); with 512 the bfloat16 backward, bound by
# the rational tanh's arithmetic, ran 0.92-1.02 -> 0.67-0.70 ms on 4 x 262,144 elements (1 thread), the
# same bits (each element's operations are the same in any vector width), float32 within noise. No effect
# on a CPU without 512-bit vectors.
# -fno-trapping-math: under GCC's default (-ftrapping-math) a float comparison may raise an exception, so the
# selects (the fire ``z >= 0 ? 1 : 0``, the surrogate's window) may not be evaluated speculatively; with
# AVX-512 GCC still vectorises them with mask registers, but on an AVX2 CPU the forward loop stayed scalar
# with a branch per element ("not vectorized: control flow in loop") and so did most of the backward: an AMD
# EPYC (AVX2) ran the kernel at the baseline x86-64 speed, no faster than the eager torch ops (forward 21.9
# -> 2.2 ms, backward 41.3 -> 3.6 ms on T=4 x 786,432 elements, 1 thread: ``python
# benchmarks/bench_neuron_kernel.py``, which builds both; outputs and gradients bit-identical for every
# reset and surrogate; tests/test_execution.py::test_kernel_loops_vectorise_under_the_build_flags). No
# floating-point trap is ever enabled, and the flag allows no reassociation or contraction: the values are
# those of the build without it.
CFLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-march=native", "-fopenmp", "-mprefer-vector-width=512"]

_state: dict = {}


def cpu_key() -> str:
    """A short hash of this CPU's model and instruction-set flags: the kernel is compiled for the CPU it runs
    on (``-march=native``), and the cache (often a home folder shared by several machines) keeps one build
    per CPU kind, so that a build for another CPU is never loaded here."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        import platform
        text = platform.processor() + platform.machine()
    lines = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return hashlib.sha256("\n".join(sorted(set(lines))).encode()).hexdigest()[:12]


def build_extension(prefix: str, source: str, functions: list[str], state: dict, label: str):
    """A C++ extension built from ``source`` with ``CFLAGS`` (cached by torch per CPU kind, source and flags),
    or None, with the reason in ``state["reason"]`` and logged once (``label``: what falls back), where it
    cannot be built."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        state["reason"] = "no C++ compiler (g++ or c++) on PATH"
    else:
        try:
            from torch.utils.cpp_extension import load_inline

            # one cached build per source and flags
            source_key = hashlib.sha256((source + " ".join(CFLAGS)).encode()).hexdigest()[:8]
            return load_inline(f"{prefix}_{cpu_key()}_{source_key}", cpp_sources=[source], functions=functions,
                               extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as exc:  # noqa: BLE001 - any build failure means: use the torch version
            state["reason"] = f"building the C++ kernel failed: {' '.join(str(exc).split())[:300]}"
    log.warning("%s: %s; using the PyTorch version", label, state["reason"])
    return None


def load():
    """The built kernel, or None (with the reason logged once) where it cannot be built."""
    if "kernel" not in _state:
        _state["kernel"] = build_extension("snn_fused_threshold", _SOURCE, ["fwd", "bwd"], _state,
                                           "fused neurons")
    return _state["kernel"]


def reason() -> str | None:
    """Why the kernel is not in use (None while it is, or before ``load``)."""
    return _state.get("reason")


if __name__ == "__main__":  # ``python -m compiler.fused_kernel``: build (or find) the cached kernel now
    print("fused neuron kernel:", "built" if load() is not None else f"not built ({reason()})")
