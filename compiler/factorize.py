"""Cost-volume factorisation: a pure pass that computes the matching network's first convolution from
the two views' features, without building the cost volume.

The volume is ``V[:, :C, d, y, x] = L[y, x]`` and ``V[:, C:, d, y, x] = R[y, x - d*s]`` (zero where
``x - d*s < 0``), for ``d = 0..D-1`` (``compiler.ops.cost_volume``). The first layer convolves it
with a ``k x k x k`` kernel ``W`` (padding ``r = k // 2``, stride 1). Convolution is linear, so with
``W_L = W[:, :C]`` and ``W_R = W[:, C:]`` and tap ``t`` of the disparity axis reading slice
``d + t - r``::

    O[d](y, x) = b + sum over taps t with 0 <= d + t - r < D of
                 AL_t(y, x) + AR_t(y, x - (d + t - r) * s)
    AL_t = conv2d(L, W_L[:, :, t]),  AR_t = conv2d(R, W_R[:, :, t])   (R zero outside its columns)

Each view is convolved once (the ``k`` taps stacked on the output channels) and every disparity is a
shifted slice and a sum: about ``D`` times fewer MACs than the 3-D convolution of the volume.

Borders, exactly:
- disparity axis: a tap reading a slice outside ``0..D-1`` is dropped (the conv's zero padding);
  only ``k`` distinct tap sets occur, each summed once.
- left: ``AR_t`` is computed ``r`` columns left of the image (``u = -r..-1`` read real columns of R
  through the kernel's right taps, as the zero-filled shifted map in V does); further left it is 0.
- right: in V the shifted map stops at column ``w - 1`` and the conv's padding reads zeros beyond,
  while ``AR_t`` would read real columns of R there. So the last ``r`` output columns are computed
  directly: the original 3-D convolution on the volume's last ``2r`` columns (``1/w`` of its work).

``factorize_cost_volume(model)`` returns a new model (the input is left as it was) whose stereo head
hands the views to ``CostVolumeConv`` instead of building the volume; inputs, outputs, state and
spikes are those of the original. It applies when the matching network's first layer is a conv
layer with a convolution op at stride 1 on the volume's own grid; otherwise it reports why not.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from .ir import ConvLayer
from .model import ConvBlock, SNNModel
from .volume import ViewPair, split_volume_kernel, taps_of, view_pair, volume_conv


class CostVolumeConv(nn.Module):
    """``conv3d(cost_volume(L, R, D, s), W, b, padding=k//2)`` (then ``bn``, if any) from the views.

    The 3-D kernel is rearranged once into two 2-D kernels with the ``k`` disparity taps stacked on
    the output channels (buffers, exported as initializers); the original kernel is kept for the
    right border. Sizes are the plan's (python ints), so the traced graph has no shape arithmetic.
    """

    def __init__(self, conv: nn.Conv3d, disparities: int, shift: int, size: tuple[int, int],
                 bn: nn.Module | None = None):
        super().__init__()
        k = conv.kernel_size[0]
        co = conv.weight.shape[0]
        w = conv.weight.detach()
        w_left, w_right = split_volume_kernel(w)  # (k_d * Co, C, k, k): rows t*Co..(t+1)*Co hold tap t
        self.register_buffer("w_left", w_left.clone())
        self.register_buffer("w_right", w_right.clone())
        self.register_buffer("weight", w.clone())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.bn = bn
        self.k, self.co, self.disparities, self.shift = k, co, disparities, shift
        self.h, self.w = size

    def taps(self, d: int) -> tuple[int, ...]:
        """The disparity taps t whose slice d + t - r lies inside the volume."""
        return taps_of(d, self.k, self.disparities)

    def forward(self, views: ViewPair) -> Tensor:
        left, right = views.left, views.right  # (B, C, h, w) each
        out = volume_conv(left, right, (self.w_left, self.w_right), self.weight, self.bias, self.disparities,
                          self.shift, self.w)
        return out if self.bn is None else self.bn(out)

    def macs(self, channels: int) -> int:
        """MACs per sample: the two 2-D convolutions and the right-border strip."""
        k, co, r, h, w = self.k, self.co, self.k // 2, self.h, self.w
        per_row = k * co * channels * k * k * h
        return per_row * w + per_row * (w + r) + co * 2 * channels * k ** 3 * self.disparities * h * r


def why_not(model: SNNModel) -> str | None:
    """None when the factorisation applies to ``model``, else the reason it does not."""
    if not any(node.kind == "cost_volume" for node in model.plan.graph):
        return "not a stereo model (no cost volume)"
    head = model.genotype.head
    net = model.plan.nets[head.matching]
    lp = net.layers[0]
    block = model.nets[head.matching].layers[0]
    if not isinstance(lp.layer, ConvLayer) or not isinstance(block, ConvBlock):
        return f"the first layer of network {head.matching!r} is a cell, not a conv layer"
    conv = getattr(block.op, "conv", None)
    if not isinstance(conv, nn.Conv3d):
        return f"{head.matching}.{lp.layer.name}: its op {lp.layer.op!r} is not a convolution"
    k = conv.kernel_size
    if (conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1 or len(set(k)) != 1
            or k[0] % 2 == 0 or conv.padding != (k[0] // 2,) * 3):
        return f"{head.matching}.{lp.layer.name}: only a stride-1, odd, cubic, 'same'-padded convolution is factorised"
    if lp.target is not None:
        return f"{head.matching}.{lp.layer.name}: its input is resampled to another level"
    if net.input_shape[3] <= 2 * (k[0] // 2):
        return "the feature maps are narrower than the kernel"
    return None


def factorize_cost_volume(model: SNNModel) -> tuple[SNNModel, dict | None]:
    """A copy of ``model`` with the first matching convolution computed from the views, and a record
    of what was done (layer, MACs of that layer before and after); ``(model, None)`` unchanged when
    the pass does not apply (``why_not`` says why)."""
    if why_not(model) is not None:
        return model, None
    head = model.genotype.head
    net_plan = model.plan.nets[head.matching]
    out = copy.deepcopy(model)
    block = out.nets[head.matching].layers[0]
    conv, bn = block.op.conv, getattr(block.op, "bn", None)
    channels, _, h, w = net_plan.input_shape
    block.op = CostVolumeConv(conv, head.disparities, head.shift, (h, w), bn)
    out.volume = view_pair  # the views in place of the volume
    layer = net_plan.layers[0]
    record = {"pass": "factorize_cost_volume", "layer": f"{head.matching}.{layer.layer.name}",
              "macs_before": int(layer.macs), "macs_after": int(block.op.macs(channels // 2))}
    return out, record
