"""The surrogate gradients of the Heaviside spike, and the spike function that uses them.

Each surrogate takes v = u - V_th (distance to the threshold) and the temperature b, returns dy/du.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def dspike_grad(v: Tensor, b: float) -> Tensor:
    """Dspike (supplement eq. 7): b/2 (1 - tanh^2(b (x - 1/2))) / tanh(b/2) for 0 <= x <= 1, x = v + 1/2."""
    x = v + 0.5
    g = (b / 2) * (1 - torch.tanh(b * (x - 0.5)) ** 2) / math.tanh(b / 2)
    return torch.where((x >= 0) & (x <= 1), g, torch.zeros_like(g))


def triangle_grad(v: Tensor, b: float) -> Tensor:
    """Triangle (supplement eq. 8): b max(0, 1 - |x - 1/2|), x = v + 1/2."""
    return b * torch.clamp(1 - torch.abs(v), min=0)


def superspike_grad(v: Tensor, b: float) -> Tensor:
    """SuperSpike (supplement eq. 9): 1 / (b |x| + 1)^2, x = v."""
    return 1.0 / (b * torch.abs(v) + 1) ** 2


def arctan_grad(v: Tensor, b: float) -> Tensor:
    """ArcTan (supplement eq. 10): (b/3) / (1 + (pi x)^2), x = v."""
    return (b / 3) / (1 + (math.pi * v) ** 2)


SURROGATE_GRADS = {"dspike": dspike_grad, "triangle": triangle_grad,
                   "superspike": superspike_grad, "arctan": arctan_grad}


class _Spike(torch.autograd.Function):
    """Heaviside forward, surrogate backward."""

    @staticmethod
    def forward(ctx, v: Tensor, kind: str, b: float) -> Tensor:
        ctx.save_for_backward(v)
        ctx.kind, ctx.b = kind, b
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (v,) = ctx.saved_tensors
        return grad * SURROGATE_GRADS[ctx.kind](v, ctx.b), None, None


def spike(v: Tensor, kind: str = "dspike", b: float = 3.0) -> Tensor:
    """y = H(v) with the named surrogate gradient. Exported to ONNX as a comparison."""
    if torch.onnx.is_in_onnx_export() or not v.requires_grad:
        return (v >= 0).to(v.dtype)
    return _Spike.apply(v, kind, b)
