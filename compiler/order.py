"""Memory order of a convolution's operands (shared by ``compiler.ops`` and ``compiler.upsample``)."""

from __future__ import annotations

import torch
from torch import Tensor


def in_order_of(weight: Tensor, x: Tensor) -> Tensor:
    """A 3-D convolution's input in its weight's order: channels-last where the weight is. The convolution
    would convert a plain input itself, forward, and again in the backward from the plain input it saved;
    converted here, the converted input is what autograd saves (one transpose instead of two)."""
    if x.dim() == 5 and weight.dim() == 5 and not weight.is_contiguous() \
            and weight.is_contiguous(memory_format=torch.channels_last_3d):
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
