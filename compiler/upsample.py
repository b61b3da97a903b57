"""A convolution of a nearest-upsampled input computed on the coarse grid (training only).

Nearest upsampling by a whole factor f repeats each coarse value f times along an axis, so a k-tap
convolution (stride 1, zero padding k//2) of the upsampled signal is, at each of the f output phases p, a
convolution of the coarse signal with the taps that land on the same coarse value summed:

    y[f*m + p] = sum_o w[o] * u[f*m + p + o] = sum_o w[o] * x[m + floor((p + o) / f)]

so phase p's coarse kernel holds, at offset c, the sum of the w[o] with floor((p + o) / f) = c, for c
from -R to R, R = ceil((k//2) / f) (zero padding R on the coarse grid is the fine grid's zero padding
k//2, since a fine index below 0 or at f*n and above maps to a coarse one below 0 or at n and above).
One convolution with the f^dims phase kernels stacked on the output channels, then the phases
interleaved, gives the same values and gradients within float rounding (the taps summed before the
product). The multiply-adds are as many as on the fine grid, but the convolution has f^dims times the
output channels, which oneDNN runs far faster than a convolution to one or a few channels (the stereo
cost layer, 24 -> 1 channel on the 8 x 48 x 64 grid of the fine model: 442-507 ms forward and backward
on the upsampled input against 71-82 ms, one thread, a one-off script; docs/training.md, Run 14), and the
upsampled input is never built.

``resample`` hands an ``Upsampled`` (the coarse input and the factors) instead of the fine tensor where
every reader of the resampled value is a convolution that takes it (``compiler.interpret``); anything
else gets ``materialise(u)``, the fine tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .order import in_order_of


class Upsampled(NamedTuple):
    """A nearest upsampling not carried out: ``x`` (B, C, *coarse) and the whole factor of each spatial axis."""

    x: Tensor
    factors: tuple[int, ...]


def whole_factors(coarse: tuple[int, ...], fine: tuple[int, ...]) -> tuple[int, ...] | None:
    """The factor of each axis where ``fine`` is a whole multiple of ``coarse`` in every axis and larger in
    one, else None (nearest resampling to such a size repeats each value that many times)."""
    if len(coarse) != len(fine) or any(a <= 0 or b % a for a, b in zip(coarse, fine, strict=True)):
        return None
    factors = tuple(b // a for a, b in zip(coarse, fine, strict=True))
    return factors if any(f > 1 for f in factors) else None


def materialise(u: Tensor | Upsampled) -> Tensor:
    """The fine tensor: nearest upsampling carried out (a plain tensor as it is)."""
    if not isinstance(u, Upsampled):
        return u
    size = tuple(n * f for n, f in zip(u.x.shape[2:], u.factors, strict=True))
    return F.interpolate(u.x, size=size, mode="nearest")


def takes_upsampled(conv: torch.nn.Module) -> bool:
    """Whether ``conv`` (an nn.Conv2d/Conv3d) is one ``upsampled_conv`` computes: stride 1, dilation 1,
    one group, an odd kernel with zero padding k//2 on every axis."""
    k = conv.kernel_size
    return isinstance(conv, (torch.nn.Conv2d, torch.nn.Conv3d)) and conv.groups == 1 \
        and all(s == 1 for s in conv.stride) and all(d == 1 for d in conv.dilation) \
        and conv.padding_mode == "zeros" and all(n % 2 == 1 for n in k) \
        and tuple(conv.padding) == tuple(n // 2 for n in k)


def _phase_taps(f: int, k: int, dtype: torch.dtype, device) -> tuple[Tensor, int]:
    """(f, 2R+1, k): entry [p, c, o] is 1 where fine tap o of phase p reads coarse offset c - R."""
    r = k // 2
    big_r = -(-r // f)
    a = torch.zeros(f, 2 * big_r + 1, k, dtype=dtype, device=device)
    for p in range(f):
        for o in range(-r, r + 1):
            a[p, (p + o) // f + big_r, o + r] = 1
    return a, big_r


def phase_kernel(weight: Tensor, factors: tuple[int, ...]) -> tuple[Tensor, tuple[int, ...]]:
    """(Co, Ci, *k) -> the phase kernels (prod(factors) * Co, Ci, *(2R+1)), rows phase-major (the phase of
    the first axis slowest), and the coarse padding R of each axis."""
    dims = weight.dim() - 2
    letters = "abc"[:dims]
    taps, pads = zip(*(_phase_taps(f, k, weight.dtype, weight.device)
                       for f, k in zip(factors, weight.shape[2:], strict=True)), strict=True)
    # phase p_i, coarse c_i, tap o_i per axis i; weight (x, y, o_1..o_n) -> (p_1..p_n, x, y, c_1..c_n)
    spec = ",".join(f"{p}{c}{o}" for p, c, o in zip(letters, "ijk"[:dims], "opq"[:dims], strict=True))
    out = f"{letters}xy{'ijk'[:dims]}"
    kernel = torch.einsum(f"{spec},xy{'opq'[:dims]}->{out}", *taps, weight)
    return kernel.reshape(-1, weight.shape[1], *kernel.shape[-dims:]), tuple(pads)


def interleave_phases(y: Tensor, factors: tuple[int, ...], co: int) -> Tensor:
    """(B, prod(factors) * Co, *coarse) phase-major -> (B, Co, *(coarse * factors))."""
    dims = len(factors)
    b, coarse = y.shape[0], y.shape[2:]
    y = y.reshape(b, *factors, co, *coarse)  # (B, f_1..f_n, Co, n_1..n_n)
    order = [0, dims + 1] + [i for a in range(dims) for i in (dims + 2 + a, 1 + a)]
    return y.permute(order).reshape(b, co, *(n * f for n, f in zip(coarse, factors, strict=True)))


def upsampled_conv(u: Upsampled, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``conv(materialise(u), weight, bias, padding=k//2)`` on the coarse grid (module docstring); the
    input is converted to the phase kernel's memory order first (channels-last 3-D kernels stay so)."""
    dims = weight.dim() - 2
    kernel, pads = phase_kernel(weight, u.factors)
    kernel = in_order_of(weight, kernel)  # channels-last where the weight is
    x = in_order_of(kernel, u.x)
    conv = F.conv2d if dims == 2 else F.conv3d
    phases = 1
    for f in u.factors:
        phases *= f
    y = conv(x, kernel, None if bias is None else bias.repeat(phases), padding=pads)
    return interleave_phases(y, u.factors, weight.shape[0])
