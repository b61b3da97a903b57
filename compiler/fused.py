"""Fused spiking neurons for training: a threshold neuron's update over T steps (charge, fire, reset and the
surrogate gradient) as ONE autograd function whose forward keeps only the membrane potentials (and, for an
adaptive threshold, the adaptation state) that its backward needs.

The family covers every spiking kind of ``compiler.neurons`` (LIF, IF = LIF at tau = 1, ALIF): a kind says
what it is through ``NeuronModule.fused_params()`` (its definition, once); a kind without one (LI, ReLU, a
kind registered later) runs its plain step. The equations, with ``thr = V_th + beta * a`` (beta = 0 but for
ALIF):

    u[t] = tau * v[t-1] + I[t];  y[t] = H(u[t] - thr[t]);  v[t] = u[t] (1 - y[t])  or  u[t] - thr[t] y[t];
    a[t+1] = tau_a * a[t] + y[t]

Two implementations compute the same thing: ``torch_steps`` / ``torch_backward`` in PyTorch operations (the
reference and the fallback) and a C++ kernel (``compiler.fused_kernel``), built lazily and used when it
compiled. ``set_impl`` chooses ("plain" switches fusion off: the unfused per-step graph of today).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from .fused_kernel import load as load_kernel
from .fused_kernel import reason as kernel_reason  # noqa: F401 - why the C++ kernel is not in use
from .surrogates import SURROGATE_GRADS

IMPLS = ("plain", "torch", "cpp", "auto")
SURROGATE_CODES = {"dspike": 0, "triangle": 1, "superspike": 2, "arctan": 3}  # the C++ kernel's
_impl = {"name": "auto"}


@dataclass(frozen=True)
class ThresholdParams:
    """What the fused update of one threshold neuron layer needs (plain floats, read at each call)."""

    tau: float
    threshold: float
    hard: bool
    surrogate: str
    b: float
    adaptive: bool = False  # ALIF: threshold + beta * a, a carried as state
    beta: float = 0.0
    tau_a: float = 0.0


def set_impl(name: str) -> None:
    """``plain`` (no fusion), ``torch`` (the fused function in torch ops), ``cpp`` (the C++ kernel; falls back
    to ``torch`` with a logged reason when it cannot be built) or ``auto`` (the C++ kernel where it builds)."""
    if name not in IMPLS:
        raise ValueError(f"unknown neuron implementation {name!r}; use one of {', '.join(IMPLS)}")
    _impl["name"] = name


@contextlib.contextmanager
def using(name: str):
    """``set_impl(name)`` for the code inside, then the previous choice again."""
    old = _impl["name"]
    set_impl(name)
    try:
        yield
    finally:
        _impl["name"] = old


def impl() -> str:
    """The implementation in use now: plain, torch or cpp."""
    name = _impl["name"]
    if name in ("cpp", "auto"):
        return "cpp" if load_kernel() is not None else "torch"
    return name


# ------------------------------------------------------------------------------ the reference (torch ops)
def torch_steps(p: ThresholdParams, current: Tensor, v: Tensor, a: Tensor | None):
    """Forward over T = current.shape[0] steps without autograd: (y, u, a_seq, v_T, a_T)."""
    us, ys, a_seq = [], [], []
    for t in range(current.shape[0]):
        u = p.tau * v + current[t]
        thr = p.threshold + p.beta * a if p.adaptive else p.threshold
        y = (u - thr >= 0).to(u.dtype)
        v = u * (1 - y) if p.hard else u - thr * y
        if p.adaptive:
            a_seq.append(a)
            a = p.tau_a * a + y
        us.append(u)
        ys.append(y)
    a_stack = torch.stack(a_seq) if p.adaptive else None
    return torch.stack(ys), torch.stack(us), a_stack, v, a


def surrogate_grads(p: ThresholdParams, u: Tensor, a_seq: Tensor | None) -> Tensor:
    """dy/du at every step, (T, ...), with the surrogate's own (vectorised) function."""
    thr = p.threshold + p.beta * a_seq if p.adaptive else p.threshold
    return SURROGATE_GRADS[p.surrogate](u - thr, p.b)


def torch_backward(p: ThresholdParams, gy: Tensor, g: Tensor, gv: Tensor, ga: Tensor | None, u: Tensor,
                   a_seq: Tensor | None):
    """Gradients (d current, d v[-1], d a[0]) from those of (y, v_T, a_T), the reverse recurrence; ``g`` the
    surrogate gradients (``surrogate_grads``)."""
    gi = torch.empty_like(u)
    for t in range(u.shape[0] - 1, -1, -1):
        thr = p.threshold + p.beta * a_seq[t] if p.adaptive else p.threshold
        y = (u[t] - thr >= 0).to(u.dtype)
        gy_t = gy[t] + ga if p.adaptive else gy[t]
        gy_t = gy_t - u[t] * gv if p.hard else gy_t - thr * gv
        du = gy_t * g[t] + (gv * (1 - y) if p.hard else gv)
        if p.adaptive:
            dthr = -gy_t * g[t] if p.hard else -gy_t * g[t] - y * gv
            ga = p.tau_a * ga + p.beta * dthr
        gi[t] = du
        gv = p.tau * du
    return gi, gv, ga


# ------------------------------------------------------------------------------------- autograd function
class ThresholdSteps(torch.autograd.Function):
    """(current (T, ...), v, a) -> (y (T, ...), v_T, a_T) in one function. The forward saves u (and a before
    each step) for its backward; where the current is bfloat16 (autocast) the C++ kernel saves instead what it
    read, the current (half the size of the float32 u) and the first state, writes no membrane sequence, and its
    backward replays the forward's arithmetic block by block to get u back, bit for bit. The C++ kernel
    takes a bfloat16 current (autocast) beside float32 state: spikes bfloat16 (0 and 1 are exact), membranes
    float32, the current's gradient bfloat16; the torch version works in one type."""

    @staticmethod
    def forward(ctx, current: Tensor, v: Tensor, a: Tensor | None, p: ThresholdParams, use_cpp: bool):
        kernel = load_kernel() if use_cpp else None
        ctx.set_materialize_grads(False)  # an unused final state's gradient stays None, not a tensor of zeros
        if kernel is not None:
            current, v0, a0 = current.contiguous(), _repeating(v), None if a is None else _repeating(a)
            # a bfloat16 current is half the size of the float32 membranes: keep it (and the first state) and let
            # the backward replay the membranes; else keep the membranes (the replay's arithmetic costs more
            # than reading them back: docs/training.md, *Execution speed*)
            replay = current.element_size() < v0.element_size()
            y, v_t, a_t, u, a_seq = kernel.fwd(current, v0, _or_empty(a0), *_scalars(p), not replay)
            a_t = a_t if p.adaptive else None
            if replay:
                ctx.save_for_backward(current, v0, a0, None, None)
            else:
                ctx.save_for_backward(None, None, None, u, a_seq if p.adaptive else None)
        else:
            y, u, a_seq, v_t, a_t = torch_steps(p, current, v, a)
            ctx.save_for_backward(u, a_seq)
        ctx.p, ctx.kernel, ctx.y_dtype = p, kernel, y.dtype
        return y, v_t, a_t

    @staticmethod
    def backward(ctx, gy: Tensor, gv: Tensor, ga: Tensor | None):
        p = ctx.p
        if ctx.kernel is not None:  # (an unused final state: an empty gradient, zeros in the kernel)
            current, v0, a0, u, a_seq = ctx.saved_tensors
            like = current if u is None else u
            gy = torch.zeros_like(like, dtype=ctx.y_dtype) if gy is None else gy
            gi, gv0, ga0 = ctx.kernel.bwd(gy.contiguous(), _or_empty(gv), _or_empty(ga), _or_empty(current),
                                          _or_empty(v0), _or_empty(a0), _or_empty(u), _or_empty(a_seq),
                                          *_scalars(p), SURROGATE_CODES[p.surrogate], p.b)
            ga0 = ga0 if p.adaptive else None
        else:
            u, a_seq = ctx.saved_tensors
            gy = torch.zeros_like(u, dtype=ctx.y_dtype) if gy is None else gy
            gv = torch.zeros_like(u[0]) if gv is None else gv
            if p.adaptive and ga is None:
                ga = torch.zeros_like(u[0])
            gi, gv0, ga0 = torch_backward(p, gy, surrogate_grads(p, u, a_seq), gv, ga, u, a_seq)
        return gi, gv0, ga0, None, None


def _repeating(state: Tensor) -> Tensor:
    """A state without its leading broadcast dimensions (stride 0: a batch's initial state, one sample's
    expanded over the batch, ``training.execution``): the kernel repeats its elements over the rest instead of
    reading a copy for every sample."""
    while state.dim() > 0 and state.stride(0) == 0:
        state = state[0]
    return state


def _or_empty(t: Tensor | None) -> Tensor:
    """An absent tensor as an empty one; the kernel copies states of any strides itself, in one pass."""
    return torch.empty(0) if t is None else t


def _scalars(p: ThresholdParams) -> tuple:
    return p.tau, p.threshold, p.beta, p.tau_a, p.hard, p.adaptive


def threshold_steps(p: ThresholdParams, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict]:
    """The fused update of a threshold neuron over ``current``'s leading T axis from ``state``: the outputs
    (T, ...) and the state after the last step."""
    use_cpp = impl() == "cpp" and p.surrogate in SURROGATE_CODES
    v = state["v"]
    dtype = torch.promote_types(current.dtype, v.dtype)  # float32 membranes under bfloat16 autocast
    v = v.to(dtype)
    if not (use_cpp and current.dtype == torch.bfloat16):
        current = current.to(dtype)  # the C++ kernel reads a bfloat16 current itself and writes bfloat16 spikes
    a = state["a"] if p.adaptive else None
    if use_cpp and _channels_last(current):
        # (T, B, C, H, W) in channels-last memory: the kernel runs over (T, B, H, W, C), its own contiguous
        # order, so neither the current nor the spikes change layout (element-wise: the same values)
        perm, back = (0, 1, 3, 4, 2), (0, 1, 4, 2, 3)
        y, v_t, a_t = ThresholdSteps.apply(current.permute(perm), v.permute(0, 2, 3, 1),
                                           None if a is None else a.permute(0, 2, 3, 1), p, use_cpp)
        y, v_t = y.permute(back), v_t.permute(0, 3, 1, 2)
        a_t = None if a_t is None else a_t.permute(0, 3, 1, 2)
    else:
        y, v_t, a_t = ThresholdSteps.apply(current, v, a, p, use_cpp)
    return y, ({"v": v_t, "a": a_t} if p.adaptive else {"v": v_t})


def _channels_last(current: Tensor) -> bool:
    """Whether a (T, B, C, H, W) current lies in channels-last order (and not also in the plain one), or is a
    channel slice of such a tensor (one output of convolutions run together, ``compiler.ops.convbn_together``:
    the kernel then reads a channels-last copy, and its spikes stay channels-last)."""
    return current.dim() == 5 and current.shape[2] > 1 and not current.is_contiguous() \
        and current.stride(2) == 1 and current.stride(4) >= current.shape[2]
