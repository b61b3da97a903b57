"""The torch modules and functions of the ops a lowered graph runs: every registered op's module factory
(``BUILDERS[name](in_channels, out_channels, dims, stride)``), nearest resampling, the stereo cost volume
and disparity estimator, the training-only auxiliary classifier. The registry (``compiler.registry.OPS``)
holds each op's shape rule and cost; a test checks that both name the same ops, so adding an op is one
``OPS.register`` and one ``BUILDERS.register``."""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ir import Classifier
from .order import SplitChannels, StridedPick, in_order_of
from .registry import OPS, Registry
from .stepnorm import applies as step_norm_applies
from .stepnorm import step_batch_norm, update_running
from .upsample import Upsampled, materialise, takes_upsampled, upsampled_conv, whole_factors
from .volume import ViewPair, split_volume_kernel, volume_conv


class Stacked:
    """T time steps stacked in the batch (time-major) while ``SNNModel.forward_steps`` runs, and the
    BatchNorm running-average updates its layers owe, applied at the end in step order."""

    def __init__(self, steps: int, shared: frozenset[int] = frozenset()):
        self.steps = steps
        self.shared = shared  # id() of the modules more than one node runs (their BatchNorm updates defer)
        self.updates: list[tuple[int, int, nn.Module, Tensor]] = []  # (step, call order, BatchNorm, input)
        self.views = 1  # > 1 while a shared network runs on its views at once: (step, view, sample) in the batch

    def chunks(self, y: Tensor) -> list[tuple[int, Tensor]]:
        """``y``'s BatchNorm chunks with their step: one per step and view (``compiler.views``)."""
        return [(i // self.views, c) for i, c in enumerate(y.chunk(self.steps * self.views))]

    def defer(self, t: int, bn: nn.Module, x: Tensor) -> None:
        self.updates.append((t, len(self.updates), bn, x.detach()))

    def defer_call(self, t: int, bn: nn.Module, update) -> None:
        """As ``defer``, for a BatchNorm that updates its own running averages (``update()``, no arguments:
        ``training.distributed.GlobalBatchNorm``, whose statistics are over every process)."""
        self.updates.append((t, len(self.updates), bn, update))

    def defer_stats(self, t: int, bn: nn.Module, mean: Tensor, var: Tensor) -> None:
        """As ``defer``, from the batch's mean and unbiased variance (float64; ``compiler.stepnorm``)."""
        self.updates.append((t, len(self.updates), bn, (mean, var)))

    def running_from_stats(self, bn: nn.Module, mean: Tensor, var: Tensor, deferred: bool) -> None:
        """``bn``'s running averages from its groups' batch statistics ((G, C) float64, ``compiler.stepnorm``)
        in step order: now, or (``deferred``: a module several nodes run) at the end, as ``defer`` does."""
        if not deferred:
            update_running(bn, mean, var)
            return
        for g in range(mean.shape[0]):
            self.defer_stats(g // self.views, bn, mean[g:g + 1], var[g:g + 1])

    def apply(self) -> None:
        """The running averages as T separate steps update them: step by step, in graph order within a step
        (a module shared by two nodes, the stereo feature network, sees its inputs interleaved as then)."""
        with torch.no_grad():
            for _, _, bn, x in sorted(self.updates, key=lambda u: u[:2]):
                if callable(x):
                    x()
                    continue
                if isinstance(x, tuple):
                    update_running(bn, *x)
                    continue
                bn.num_batches_tracked.add_(1)
                factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                F.batch_norm(x, bn.running_mean, bn.running_var, None, None, True, factor, bn.eps)
        self.updates.clear()


STACKED: contextvars.ContextVar[Stacked | None] = contextvars.ContextVar("stacked", default=None)


@contextlib.contextmanager
def time_steps(steps: int, shared: frozenset[int] = frozenset()):
    """Run the ops inside as ``steps`` time steps stacked in the batch: BatchNorm normalises each step with
    its own batch statistics, and updates its running averages in step order (those of modules in
    ``shared``, which several nodes run, at the end)."""
    stacked = Stacked(steps, shared)
    token = STACKED.set(stacked)
    try:
        yield
        stacked.apply()
    finally:
        STACKED.reset(token)


def plain_batchnorm(bn: nn.Module) -> bool:
    return type(bn) in (nn.BatchNorm2d, nn.BatchNorm3d) and bn.track_running_stats and bn.running_mean is not None


def plain_3d(y: Tensor) -> Tensor:
    """A 3-D convolution's output in the plain order. A Conv3d whose weight lies in channels-last memory
    (``training.execution.conv3d_channels_last``) computes in that order, 1.4-3x faster forward and
    backward than in the plain one on a CPU, and returns channels-last; BatchNorm and the neurons run
    slower over channels-last tensors of few channels, so the output goes back to the plain order here
    (nothing at all where it already is, so a traced or exported graph holds no op for it). 2-D outputs keep
    their order (``--layout channels-last``)."""
    return y.contiguous() if y.dim() == 5 and not y.is_contiguous() else y


class ConvBN(nn.Module):
    """Convolution (2-D or 3-D, padding k//2, no bias) followed by BatchNorm; outputs a current.

    Under ``time_steps(T)`` in training mode the input holds T steps stacked in the batch: the convolution
    runs once over all of them and BatchNorm once per step, with that step's batch statistics (all steps in
    one call where ``compiler.stepnorm`` applies, else one call per step); the running averages are updated
    as T separate calls would (``Stacked.apply``). A ``ViewPair`` input (the stereo
    matching network's first convolution while training, ``training.execution.views_for_volume``) is
    convolved as its cost volume would be, without building it (``volume_conv``)."""

    def __init__(self, in_channels: int, out_channels: int, dims: int, kernel: int, stride: int = 1):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv = conv(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = bn(out_channels)

    def forward(self, x: Tensor | ViewPair) -> Tensor:
        stacked = STACKED.get()
        if stacked is None or not self.bn.training:
            return self.bn(plain_3d(self._conv(x)))
        y = plain_3d(self._conv(x))
        if hasattr(self.bn, "forward_chunks"):  # training.distributed's BatchNorm: one all-reduce for all steps
            return self.bn.forward_chunks(y, stacked.steps * stacked.views,
                                          stacked if id(self) in stacked.shared else None)
        bn = self.bn
        if plain_batchnorm(bn) and step_norm_applies(y, stacked.steps * stacked.views, bn.weight):
            out, mean, var = step_batch_norm(y, stacked.steps * stacked.views, bn.weight, bn.bias, bn.eps)
            stacked.running_from_stats(bn, mean, var, id(self) in stacked.shared)
            return out
        chunks = stacked.chunks(y)
        if id(self) not in stacked.shared or not plain_batchnorm(self.bn):  # (SyncBatchNorm: its own calls)
            return torch.cat([self.bn(y) for _, y in chunks])
        bn, out = self.bn, []
        for t, y in chunks:
            stacked.defer(t, bn, y)
            out.append(F.batch_norm(y, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
        return torch.cat(out)

    def _conv(self, x: Tensor | ViewPair | Upsampled) -> Tensor:
        if isinstance(x, Upsampled):
            if takes_upsampled(self.conv):
                return upsampled_conv(x, self.conv.weight, self.conv.bias)
            x = materialise(x)
        if not isinstance(x, ViewPair):
            return self.conv(in_order_of(self.conv.weight, x))
        w = self.conv.weight  # the volume's convolution from the views, differentiable in the weight
        return volume_conv(x.left, x.right, split_volume_kernel(w), w, self.conv.bias, x.disparities, x.shift,
                           x.left.shape[-1], border_2d=True)


def convbn_together(modules: list[nn.Module], x: Tensor) -> list[Tensor] | None:
    """The outputs of several ``ConvBN`` that read the same input, under ``time_steps`` in training mode, from
    one convolution with their weights stacked and one BatchNorm per step over all their channels (their
    running averages updated per module, in step order, as ``Stacked.apply`` does): the same values within
    the rounding of another summation order, and in the backward one gradient for the input instead of one
    per convolution added up. None where that does not apply (another module, kernel, stride or padding,
    BatchNorm without affine weights or running averages, not under ``time_steps``, evaluation)."""
    stacked = STACKED.get()
    if stacked is None or len(modules) < 2 or len({id(m) for m in modules}) < len(modules) \
            or any(type(m) is not ConvBN for m in modules):
        return None
    c0, bn0 = modules[0].conv, modules[0].bn
    for m in modules:
        conv, bn = m.conv, m.bn
        if not bn.training or not plain_batchnorm(bn) or not bn.affine \
                or type(conv) is not type(c0) or conv.groups != 1 or conv.bias is not None or bn.eps != bn0.eps \
                or (conv.in_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation) != \
                (c0.in_channels, c0.kernel_size, c0.stride, c0.padding, c0.dilation):
            return None
    shared = any(id(m) in stacked.shared for m in modules)
    if not shared and not _same_update_factor([m.bn for m in modules]):
        return None
    sizes = [m.conv.out_channels for m in modules]
    conv = F.conv2d if isinstance(c0, nn.Conv2d) else F.conv3d
    kernel = torch.cat([m.conv.weight for m in modules])
    if isinstance(x, Upsampled) and takes_upsampled(c0):
        y = plain_3d(upsampled_conv(x, kernel))
    else:
        x = materialise(x)
        y = plain_3d(conv(in_order_of(kernel, x), kernel, None, c0.stride, c0.padding, c0.dilation))
    weight, bias = torch.cat([m.bn.weight for m in modules]), torch.cat([m.bn.bias for m in modules])
    if step_norm_applies(y, stacked.steps * stacked.views, weight):
        return _together_in_one_call(modules, y, weight, bias, stacked, shared)
    running = None if shared else (torch.cat([m.bn.running_mean for m in modules]),
                                   torch.cat([m.bn.running_var for m in modules]))
    out = []
    for t, chunk in stacked.chunks(y):
        if shared:  # the views of a shared network update its running averages interleaved, at the end
            for m, part in zip(modules, chunk.split(sizes, dim=1), strict=True):
                stacked.defer(t, m.bn, part)
            out.append(F.batch_norm(chunk, None, None, weight, bias, True, 0.0, bn0.eps))
            continue
        for m in modules:
            m.bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn0.num_batches_tracked) if bn0.momentum is None else bn0.momentum
        out.append(F.batch_norm(chunk, *running, weight, bias, True, factor, bn0.eps))
    if not shared:
        with torch.no_grad():
            for m, mean, var in zip(modules, running[0].split(sizes), running[1].split(sizes), strict=True):
                m.bn.running_mean.copy_(mean)
                m.bn.running_var.copy_(var)
    return list(SplitChannels.apply(torch.cat(out), sizes))


def _together_in_one_call(modules: list[nn.Module], y: Tensor, weight: Tensor, bias: Tensor, stacked: Stacked,
                          shared: bool) -> list[Tensor]:
    """``convbn_together``'s BatchNorm of every step in one call (``compiler.stepnorm``), then each module's
    running averages in step order (a shared module's at the end, interleaved with its other nodes)."""
    groups, sizes = stacked.steps * stacked.views, [m.conv.out_channels for m in modules]
    out, mean, var = step_batch_norm(y, groups, weight, bias, modules[0].bn.eps)
    start = 0
    for m, size in zip(modules, sizes, strict=True):
        stacked.running_from_stats(m.bn, mean[:, start:start + size], var[:, start:start + size], shared)
        start += size
    return list(SplitChannels.apply(out, sizes))


def _same_update_factor(bns: list[nn.Module]) -> bool:
    """Whether one running-average update serves all of ``bns``: the same momentum, and where it is None
    (a cumulative average, factor 1 / num_batches_tracked) the same count of batches so far."""
    m0 = bns[0].momentum
    if any(bn.momentum != m0 for bn in bns):
        return False
    return m0 is not None or len({int(bn.num_batches_tracked) for bn in bns}) == 1


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


TRAINING_RESAMPLE: contextvars.ContextVar[str | None] = contextvars.ContextVar("training_resample", default=None)


@contextlib.contextmanager
def training_resample(channels_last_3d: bool):
    """Inside, ``resample`` takes the training step's faster forms, the same values and gradients: nearest
    downsampling by whole factors is a strided slice (its backward a strided copy into zeros, in the gradient's
    own order; bit for bit ``F.interpolate``'s values and gradients: each kept value is read once), in every
    layout. With ``channels_last_3d`` (the 3-D convolutions computed channels-last,
    ``training.execution.conv3d_channels_last``) also: nearest 3-D upsampling reads and writes channels-last
    order (the coarse input is converted instead of the 8x larger output), and an upsampling whose readers are
    all convolutions is not carried out (``Upsampled``, ``compiler.upsample``; within float rounding). Export
    and evaluation keep ``F.interpolate``, the graph's Resize."""
    token = TRAINING_RESAMPLE.set("all" if channels_last_3d else "slices")
    try:
        yield
    finally:
        TRAINING_RESAMPLE.reset(token)


def resample(x: Tensor, size: tuple[int, ...] | None, lazy: bool = False) -> Tensor | Upsampled:
    """Nearest resampling to a trellis level's size (keeps spikes binary). ``lazy`` (every reader of the
    value is a convolution that takes an ``Upsampled``, ``compiler.interpret``): inside
    ``training_resample(True)``, outside autocast, an upsampling by whole factors is not carried out and
    its readers convolve on the coarse grid (``compiler.upsample``)."""
    if size is None or tuple(x.shape[2:]) == tuple(size):
        return x
    mode = TRAINING_RESAMPLE.get()
    if mode is not None:
        factors = whole_factors(tuple(x.shape[2:]), tuple(size)) if lazy and mode == "all" else None
        if factors is not None and not torch.is_autocast_enabled(x.device.type):
            return Upsampled(x, factors)
        pairs = list(zip(x.shape[2:], size, strict=True))
        if all(a >= b and a % b == 0 for a, b in pairs):  # nearest picks source index i * (a // b)
            return StridedPick.apply(x, tuple(a // b for a, b in pairs))
        if mode == "all" and x.dim() == 5 and all(a <= b for a, b in pairs):
            x = x.contiguous(memory_format=torch.channels_last_3d)
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
        best = _argmin_d(cost).to(cost.dtype)
        near = torch.abs(d - best) < support
        logits = torch.where(near, logits, torch.full_like(logits, -1e4))
    prob = torch.softmax(logits, dim=1)
    return (prob * d).sum(dim=1) * step


def _argmin_d(cost: Tensor) -> Tensor:
    """``argmin`` over the disparity axis (1), keeping it: the first minimal index, NaN counted minimal.
    Outside ONNX export through ``min(dim).indices``, the same indices (tests/test_compiler_units.py) from a kernel
    4-9x faster than ``argmin``'s over a non-innermost axis on CPU ((16, 17, 48, 64): 1.9 against 8.3 ms,
    1 thread), which also runs on both threads (argmin ran slower on 2 than on 1); export keeps ArgMin."""
    if torch.onnx.is_in_onnx_export():
        return torch.argmin(cost, dim=1, keepdim=True)
    return cost.min(dim=1, keepdim=True).indices


def aux_head(in_channels: int, head: Classifier) -> nn.Module:
    """The training-only auxiliary classifier (not part of the exported graph)."""
    return nn.Sequential(ConvBN(in_channels, head.aux_channels, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(head.aux_channels, head.classes))
