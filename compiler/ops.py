"""The torch modules and functions of the ops a lowered graph runs: every registered op's module factory
(``BUILDERS[name](in_channels, out_channels, dims, stride)``), nearest resampling, the stereo cost volume
and disparity estimator, the training-only auxiliary classifier. The registry (``compiler.registry.OPS``)
holds each op's shape rule and cost; a test checks that both name the same ops, so adding an op is one
``OPS.register`` and one ``BUILDERS.register``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ir import Classifier
from .registry import OPS, Registry


class ConvBN(nn.Module):
    """Convolution (2-D or 3-D, padding k//2, no bias) followed by BatchNorm; outputs a current."""

    def __init__(self, in_channels: int, out_channels: int, dims: int, kernel: int, stride: int = 1):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv = conv(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = bn(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class FoldedConv(nn.Module):
    """A ConvBN after BatchNorm folding (compiler.fold): the convolution with the folded bias alone.
    ``bn`` is None to say that there is none; parameter names stay those of the ConvBN."""

    bn = None

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class AvgPool(nn.Module):
    def __init__(self, dims: int, kernel: int):
        super().__init__()
        pool = nn.AvgPool2d if dims == 2 else nn.AvgPool3d
        self.pool = pool(kernel, stride=1, padding=kernel // 2, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x)


def _conv_builder(kernel: int):
    def build(in_channels: int, out_channels: int, dims: int, stride: int = 1) -> nn.Module:
        return ConvBN(in_channels, out_channels, dims, kernel, stride)
    return build


# One factory signature for every op: (in_channels, out_channels, dims, stride) -> module.
BUILDERS = Registry("op module")
for _name, _spec in OPS.items():
    if _spec.kind == "conv":
        BUILDERS.register(_name, _conv_builder(_spec.kernel))
BUILDERS.register("skip", lambda in_channels, out_channels, dims, stride=1: nn.Identity())
BUILDERS.register("avgpool3x3", lambda in_channels, out_channels, dims, stride=1: AvgPool(dims, 3))


def resample(x: Tensor, size: tuple[int, ...] | None) -> Tensor:
    """Nearest resampling to a trellis level's size (keeps spikes binary)."""
    if size is None or tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="nearest")


def cost_volume(left: Tensor, right: Tensor, disparities: int, shift: int = 1) -> Tensor:
    """(B, C, H, W) x2 -> (B, 2C, D, H, W): left features beside right features shifted by d * shift.

    Where x - d * shift falls outside the image the right half is zero.
    """
    b, c, h, w = left.shape
    pad = (disparities - 1) * shift
    padded = F.pad(right, (pad, 0))  # (B, C, H, pad + W)
    slices = [padded[..., pad - d * shift: pad - d * shift + w] for d in range(disparities)]
    right_v = torch.stack(slices, dim=2)  # (B, C, D, H, W)
    left_v = left.unsqueeze(2).expand(b, c, disparities, h, w)
    return torch.cat([left_v, right_v], dim=1)


def estimate_disparity(cost: Tensor, kind: str, support: int, step: float) -> Tensor:
    """Matching cost (B, D, H, W) -> disparity (B, H, W) in pixels: D(d) = d * step.

    ``subpixel`` (paper eq. 5): softmin over the d with |d - argmin| < support;
    ``soft_argmin``: softmin over every d.
    """
    d = torch.arange(cost.shape[1], dtype=cost.dtype, device=cost.device).view(1, -1, 1, 1)
    logits = -cost
    if kind == "subpixel":
        best = torch.argmin(cost, dim=1, keepdim=True).to(cost.dtype)
        near = torch.abs(d - best) < support
        logits = torch.where(near, logits, torch.full_like(logits, -1e4))
    prob = torch.softmax(logits, dim=1)
    return (prob * d).sum(dim=1) * step


def aux_head(in_channels: int, head: Classifier) -> nn.Module:
    """The training-only auxiliary classifier (not part of the exported graph)."""
    return nn.Sequential(ConvBN(in_channels, head.aux_channels, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(head.aux_channels, head.classes))
