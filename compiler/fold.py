"""Folding BatchNorm into the preceding convolution, for every conv rank.

``fold_conv_bn_weights`` is a pure function on tensors; ``fold_batchnorm`` folds every ConvBN pair
of a model in eval mode and returns a new model (the input is left as it was) in which each pair is
a ``FoldedConv``: the convolution alone, with the folded bias.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .ops import ConvBN, FoldedConv


class FoldError(ValueError):
    """A model or a conv+BN pair cannot be folded; the message names it."""


def fold_conv_bn_weights(weight: Tensor, bias: Tensor | None, mean: Tensor, var: Tensor, eps: float,
                         gamma: Tensor | None, beta: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return (weight, bias) of one convolution equal to conv followed by BN in eval mode.

    BN(z) = gamma * (z - mean) / sqrt(var + eps) + beta, with z = W * x + b, so
    W' = W * s and b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps), per output channel.
    Works for any conv rank: the scale broadcasts over the weight's trailing dimensions.
    """
    out_channels = weight.shape[0]
    if gamma is None:
        gamma = torch.ones(out_channels, dtype=weight.dtype, device=weight.device)
    if beta is None:
        beta = torch.zeros(out_channels, dtype=weight.dtype, device=weight.device)
    if bias is None:
        bias = torch.zeros(out_channels, dtype=weight.dtype, device=weight.device)
    scale = gamma * torch.rsqrt(var + eps)  # (C_out,)
    new_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    new_bias = (bias - mean) * scale + beta
    return new_weight, new_bias


def _fold_pair(name: str, pair: ConvBN) -> FoldedConv:
    conv, bn = pair.conv, pair.bn
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise FoldError(f"{name}: expected a BatchNorm after the convolution, found {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise FoldError(f"{name}: BatchNorm keeps no running statistics (track_running_stats=False), "
                        "so its eval output depends on the batch and cannot be folded")
    if bn.num_features != conv.out_channels:
        raise FoldError(f"{name}: BatchNorm has {bn.num_features} features, the convolution "
                        f"{conv.out_channels} output channels")
    with torch.no_grad():
        w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                    bn.weight if bn.affine else None, bn.bias if bn.affine else None)
        conv.weight.copy_(w)
        if conv.bias is None:
            conv.bias = nn.Parameter(b)
        else:
            conv.bias.copy_(b)
    return FoldedConv(conv)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every conv+BN pair folded into one convolution."""
    if model.training:
        raise FoldError("the model is in training mode: BatchNorm uses batch statistics there; "
                        "call model.eval() before folding")
    folded = copy.deepcopy(model)
    for parent_name, parent in list(folded.named_modules()):
        for key, child in list(parent.named_children()):
            if isinstance(child, ConvBN):
                name = f"{parent_name}.{key}" if parent_name else key
                parent._modules[key] = _fold_pair(name, child)
    return folded
