"""The stereo matching network's first convolution computed from the two views' features, without their
cost volume: ``volume_conv`` (the derivation and its borders: ``compiler.factorize``), shared by the export's
factorised layer (``compiler.factorize.CostVolumeConv``, fixed kernels) and the training step
(``compiler.ops.ConvBN`` handed a ``ViewPair``, the live weight)."""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class ViewPair(NamedTuple):
    """The two views' features, (B, C, h, w) each, in place of their cost volume: what the first matching
    layer reads where it convolves the volume without building it (the export's ``CostVolumeConv``, and a
    ``ConvBN`` while training, ``training.execution.views_for_volume``)."""

    left: Tensor
    right: Tensor
    disparities: int
    shift: int


def view_pair(left: Tensor, right: Tensor, disparities: int, shift: int = 1) -> ViewPair:
    """The volume builder of a model whose first matching convolution reads the views (``cost_volume``'s
    signature): a factorised model's (``compiler.factorize``), and a training model's inside
    ``training.execution.views_for_volume``."""
    return ViewPair(left, right, disparities, shift)


def _total(terms) -> Tensor:
    """The sum of tensors (no ``0 +`` start term, which would trace as an extra Add)."""
    return functools.reduce(operator.add, terms)


def taps_of(d: int, k: int, disparities: int) -> tuple[int, ...]:
    """The disparity taps t of a k-deep kernel whose slice d + t - k//2 lies inside the volume."""
    return tuple(t for t in range(k) if 0 <= d + t - k // 2 < disparities)


def split_volume_kernel(weight: Tensor) -> tuple[Tensor, Tensor]:
    """A (Co, 2C, k, k, k) kernel on the volume as two 2-D kernels (k * Co, C, k, k), the left and the right
    view's, rows t*Co..(t+1)*Co holding disparity tap t."""
    co, c2, k = weight.shape[0], weight.shape[1], weight.shape[2]
    c = c2 // 2
    return (weight[:, :c].permute(2, 0, 1, 3, 4).reshape(k * co, c, k, k),
            weight[:, c:].permute(2, 0, 1, 3, 4).reshape(k * co, c, k, k))


def volume_conv(left: Tensor, right: Tensor, kernels: tuple[Tensor, Tensor], weight: Tensor, bias: Tensor | None,
                disparities: int, shift: int, width: int, border_2d: bool = False) -> Tensor:
    """``conv3d(cost_volume(left, right, disparities, shift), weight, bias, padding=k//2)`` without the
    volume: each view convolved once with ``kernels`` (``split_volume_kernel(weight)``), every disparity a
    shifted slice and a sum, the last k//2 columns by the 3-D convolution on the volume's last columns
    (``compiler.factorize`` derives it and its borders). ``width`` is the views' width (a python int, so
    that a traced graph holds no shape arithmetic). ``border_2d``: those columns by one 2-D convolution
    instead (``_border_as_2d``; the training step's choice, the export keeps the 3-D one)."""
    w_left, w_right = kernels
    k = weight.shape[2]
    co, big_d, s, w = weight.shape[0], disparities, shift, width
    r = k // 2
    al = F.conv2d(left, w_left, padding=r)  # (B, k*Co, h, w)
    # columns u = -r .. w-1 of AR, then zeros so that every shifted read below is a plain slice
    ar = F.conv2d(F.pad(right, (r, 0)), w_right, padding=r)  # (B, k*Co, h, w + r)
    ar = F.pad(ar, ((big_d - 1) * s + r * s - r, r * s))
    span = w + (big_d - 1) * s  # T(u') for u' = -(D-1)s .. w-1
    sums: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
    slices = []
    for d in range(big_d):
        taps = taps_of(d, k, big_d)
        if taps not in sums:
            t_right = _total(ar[:, t * co:(t + 1) * co, :, (2 * r - t) * s:(2 * r - t) * s + span] for t in taps)
            t_left = _total(al[:, t * co:(t + 1) * co] for t in taps)
            sums[taps] = (t_right, t_left)
        t_right, t_left = sums[taps]
        start = (big_d - 1 - d) * s
        slices.append(t_right[..., start:start + w] + t_left)  # (B, Co, h, w)
    out = torch.stack(slices, dim=2)  # (B, Co, D, h, w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1)
    if r:
        border = _border_strip(left, right, big_d, s, w, r)
        last = _border_as_2d(border, weight, bias) if border_2d else F.conv3d(border, weight, bias, padding=(r, r, 0))
        out = torch.cat([out[..., :w - r], last], dim=-1)
    return out


def _border_strip(left: Tensor, right: Tensor, big_d: int, s: int, w: int, r: int) -> Tensor:
    """The volume's last 2r columns and r columns of zeros past them, (B, 2C, D, h, 3r): what the last r
    output columns of the convolution read."""
    padded = F.pad(right, ((big_d - 1) * s, 0))
    first = w - 2 * r
    right_v = torch.stack([padded[..., first + (big_d - 1 - d) * s: first + (big_d - 1 - d) * s + 2 * r]
                           for d in range(big_d)], dim=2)  # (B, C, D, h, 2r)
    left_v = left[..., first:].unsqueeze(2).expand(-1, -1, big_d, -1, -1)
    return F.pad(torch.cat([left_v, right_v], dim=1), (0, r))  # zeros past column w-1


def _border_as_2d(strip: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv3d(strip, weight, bias, padding=(r, r, 0))`` (output width r) as one 2-D convolution over the
    (D, h) plane: the strip's 3r columns folded into the input channels, the r output columns into the
    output channels, the kernel placed at each output column's offset among zeros. The same MACs; oneDNN
    runs a 3-column-wide 3-D convolution at about 2 GMAC/s on a CPU, a plain 2-D one many times faster."""
    co, c2, k = weight.shape[0], weight.shape[1], weight.shape[2]
    r, width = k // 2, strip.shape[-1]
    b, _, big_d, h, _ = strip.shape
    # (Co, r, 2C, k_d, k_h, 3r): output column xo reads strip columns xo .. xo + k - 1 with taps 0 .. k - 1
    placed = torch.stack([F.pad(weight, (xo, width - k - xo)) for xo in range(r)], dim=1)
    w2 = placed.permute(0, 1, 2, 5, 3, 4).reshape(co * r, c2 * width, k, k)
    b2 = None if bias is None else bias.repeat_interleave(r)
    x2 = strip.permute(0, 1, 4, 2, 3).reshape(b, c2 * width, big_d, h)
    y = F.conv2d(x2, w2, b2, padding=(r, r))  # (B, Co * r, D, h)
    return y.view(b, co, r, big_d, h).permute(0, 1, 3, 4, 2)  # (B, Co, D, h, r)
