"""Memory order: of a convolution's operands (shared by ``compiler.ops`` and ``compiler.upsample``), and the
training step's autograd functions that keep it in the backward (channel splits and concatenations, strided
downsampling)."""

from __future__ import annotations

import torch
from torch import Tensor


def memory_order(x: Tensor) -> torch.memory_format:
    """The channels-last order ``x`` lies in (2-D or 3-D), or the plain order: where both describe it (one
    channel, say), the plain one."""
    for order, rank in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
        if x.dim() == rank and not x.is_contiguous() and x.is_contiguous(memory_format=order):
            return order
    return torch.contiguous_format


def in_order_of(weight: Tensor, x: Tensor) -> Tensor:
    """A 3-D convolution's input in its weight's order: channels-last where the weight is. The convolution
    would convert a plain input itself, forward, and again in the backward from the plain input it saved;
    converted here, the converted input is what autograd saves (one transpose instead of two)."""
    if x.dim() == 5 and memory_order(weight) is torch.channels_last_3d:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


class SplitChannels(torch.autograd.Function):
    """``y.split(sizes, dim=1)`` whose backward puts the pieces' gradients together in ``y``'s own memory order
    (autograd's split backward makes a plain-order tensor, and BatchNorm's backward over a channels-last input
    with a plain-order gradient ran 6x slower than the whole step gained)."""

    @staticmethod
    def forward(ctx, y: Tensor, sizes: list[int]):
        ctx.sizes, ctx.like = sizes, (y.shape, y.stride(), y.dtype, y.device)
        return tuple(y.split(sizes, dim=1))

    @staticmethod
    def backward(ctx, *grads: Tensor):
        shape, stride, dtype, device = ctx.like
        out = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        start = 0
        for size, g in zip(ctx.sizes, grads, strict=True):
            part = out.narrow(1, start, size)
            part.zero_() if g is None else part.copy_(g)
            start += size
        return out, None


class CatChannels(torch.autograd.Function):
    """``torch.cat(xs, dim=1)`` whose backward hands each channels-last input a channels-last gradient its own,
    not a channel slice of the output's gradient: a node's spikes that feed both the cell's output and a
    convolution get their two gradients added, and adding a channel slice (of either order) to a channels-last
    tensor runs element by element (1.0-1.2 ms against 0.17 for 256 x 16 x 16 x 16 bfloat16 values, one
    thread; docs/training.md, *Execution speed*), while the copy costs 0.18 ms. Plain-order inputs get slices,
    as autograd's own backward gives them. The same values either way."""

    @staticmethod
    def forward(ctx, *xs: Tensor):
        ctx.sizes = [x.shape[1] for x in xs]
        ctx.orders = [memory_order(x) is torch.channels_last for x in xs]
        return torch.cat(xs, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pieces = grad.split(ctx.sizes, dim=1)
        return tuple(g.contiguous(memory_format=torch.channels_last) if cl else g
                     for g, cl in zip(pieces, ctx.orders, strict=True))


def concat_channels(xs: list[Tensor]) -> Tensor:
    """The concat node's value: ``CatChannels`` where a gradient may flow (training), ``torch.cat`` otherwise
    (evaluation, and the exported graph's Concat)."""
    if torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export() and any(x.requires_grad for x in xs):
        return CatChannels.apply(*xs)
    return torch.cat(xs, dim=1)


class StridedPick(torch.autograd.Function):
    """``x[:, :, ::f0, ::f1, ...]`` (nearest downsampling by whole factors) whose backward writes the gradient
    into zeros in ``x``'s own memory order, in one strided copy: autograd's slice backward makes plain-order
    zeros, one per sliced axis, so a channels-last network's gradient turned plain there and every addition
    and convolution backward after it mixed the two orders. The same values and gradients, bit for bit (each
    kept value is read once)."""

    @staticmethod
    def forward(ctx, x: Tensor, factors: tuple[int, ...]):
        ctx.factors, ctx.shape, ctx.order = factors, x.shape, memory_order(x)
        return x[_picks(factors)]

    @staticmethod
    def backward(ctx, grad: Tensor):
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.order).zero_()
        out[_picks(ctx.factors)] = grad
        return out, None


def _picks(factors: tuple[int, ...]) -> tuple[slice, ...]:
    return (slice(None), slice(None), *(slice(None, None, f) for f in factors))
