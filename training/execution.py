"""How the training loop runs the model over time: the execution mode and the precision.

Execution modes (``--exec``), all giving the same losses and gradients (float32 within 1e-5 relative,
float64 within 1e-12; tests/test_execution.py):

- ``eager``      today's step-by-step model with the plain (unfused) neuron step: the reference;
- ``step``       step by step, each spiking neuron layer's update one fused autograd function
                 (``compiler.fused``; its C++ kernel where it builds);
- ``multistep``  ``SNNModel.forward_steps``: every convolution once over the T steps stacked in the batch
                 (BatchNorm with per-step statistics), each neuron layer's fused recurrence over T at once.
                 Models with delayed edges step inside it; searchers that replace modules run ``step``.

Precision (``--precision``): ``fp32``, or ``bf16``: convolutions under bfloat16 autocast where the hardware
runs it natively (AMX / AVX512-BF16 CPUs, CUDA), membranes and state in float32.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from compiler import fused, stepnorm
from compiler.ops import ConvBN
from compiler.volume import view_pair

from .config import OPTIMIZER_IMPLS
from .errors import TrainError

EXEC_MODES = ("eager", "step", "multistep")
PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("auto", "nchw", "channels-last", "conv3d-channels-last")


def resolve_exec(requested: str | None, model) -> str:
    """The mode a run uses: the one asked for, else multistep where the model offers it (then step). A
    searcher's neurons (DGS's probes, TPS's and HNS's mixtures) step inside the multi-step mode
    (``compiler.interpret.run_steps``: they have no fused update), so searchers do not change it. An
    explicit multistep that cannot run is an error."""
    can_multi = hasattr(model, "forward_steps")
    if requested is None:
        return "multistep" if can_multi else "step"
    if requested not in EXEC_MODES:
        raise TrainError(f"unknown --exec {requested!r}", f"use one of {', '.join(EXEC_MODES)}")
    if requested == "multistep" and not can_multi:
        raise TrainError("--exec multistep needs a model that runs all T steps at once (forward_steps)",
                         "use --exec step")
    return requested


def cpuinfo_text() -> str:
    """/proc/cpuinfo's text ('' where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), read from /proc/cpuinfo."""
    flags = cpuinfo_text()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def check_precision(precision: str, device: str) -> None:
    if precision not in PRECISIONS:
        raise TrainError(f"unknown --precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not device.startswith("cuda") and not cpu_has_bf16():
        raise TrainError("--precision bf16 needs a CPU with AMX or AVX512-BF16 (or CUDA); this one has neither",
                         "use --precision fp32")


@functools.cache
def bf16_conv3d_gradients_ok() -> bool:
    """Whether this CPU's bfloat16 3-D convolution gives the weight gradient float32 gives, on the shape found
    wrong: a 3x3x3 kernel over an input only 2 deep (the matching network's coarsest level at small inputs).
    torch 2.13's oneDNN on an AVX512-BF16 CPU without AMX returned inf and NaN there, and different values on
    every call (docs/training.md, "bfloat16 and 3-D convolutions"); an AMX CPU ran the same model right."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # 8 -> 8 channels ran right there; 16 -> 8, 8 -> 16 and wider did not
        torch.manual_seed(0)
        conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x = (torch.rand(2, 16, 2, 4, 6, generator=gen) < 0.3).float()
    g = torch.randn(2, 16, 2, 4, 6, generator=gen)
    (ref,) = torch.autograd.grad(conv(x), conv.weight, g)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        (got,) = torch.autograd.grad(out.float(), conv.weight, g)
        if not torch.isfinite(got).all() or (got - ref).abs().max() > 0.05 * ref.abs().max():
            return False
    return True


def check_bf16_model(model: torch.nn.Module, precision: str, device: str) -> None:
    """``--precision bf16`` on a CPU trains a model with 3-D convolutions only where ``bf16_conv3d_gradients_ok``:
    elsewhere it would train on wrong gradients without a word."""
    if precision != "bf16" or device.startswith("cuda"):
        return
    if any(isinstance(m, torch.nn.Conv3d) for m in model.modules()) and not bf16_conv3d_gradients_ok():
        raise TrainError("--precision bf16: this CPU's bfloat16 3-D convolutions give wrong weight gradients "
                         "(a 3x3x3 kernel over a 2-deep input, checked against float32 at start)",
                         "use --precision fp32 for a model with 3-D convolutions (stereo)")


def autocast(precision: str, device: str):
    """The context the forward runs in: bfloat16 autocast for bf16, nothing for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def channels_last(model: torch.nn.Module) -> None:
    """Put every 2-D convolution's weight in channels-last memory order (values unchanged).

    A convolution whose weight is channels-last computes in that order and returns its output in it;
    BatchNorm, additions, concatenation, nearest resampling and the fused neuron (``compiler.fused``) keep
    the order, so a 2-D network runs channels-last from its first convolution on. 3-D convolutions keep
    theirs (``conv3d_channels_last``). The strides are set explicitly: a weight of one input channel (a stem
    that reads a grey image) is already "contiguous" in both orders, and ``contiguous(memory_format=...)``
    would leave it with the plain strides, so that its convolution returned the plain order and every reader
    of the stem's spikes converted them again, forward and backward."""
    _weights_in(model, torch.nn.Conv2d, torch.channels_last)


def conv3d_channels_last(model: torch.nn.Module) -> None:
    """Put every 3-D convolution's weight in channels-last memory order (values unchanged): each then
    computes in that order (oneDNN's direct kernels instead of its plain-order path, 1.4-3x faster forward
    and backward on the stereo matching network's few channels) and ``compiler.ops.plain_3d`` returns its
    output to the plain order, in which BatchNorm and the neurons are faster."""
    _weights_in(model, torch.nn.Conv3d, torch.channels_last_3d)


def _weights_in(model: torch.nn.Module, kind: type, memory_format: torch.memory_format) -> None:
    for m in model.modules():
        if isinstance(m, kind):
            w = torch.empty(m.weight.shape, dtype=m.weight.dtype, device=m.weight.device,
                            memory_format=memory_format)
            m.weight.data = w.copy_(m.weight.data)


def conv3d_in_channels_last(layout: str) -> bool:
    """Whether a resolved layout computes the 3-D convolutions channels-last."""
    return layout in ("channels-last", "conv3d-channels-last")


def apply_layout(model: torch.nn.Module, layout: str) -> None:
    """Put the model's convolution weights in ``layout``'s memory order (a resolved layout, not auto)."""
    if layout == "channels-last":
        channels_last(model)
    if conv3d_in_channels_last(layout):
        conv3d_channels_last(model)


def resolve_layout(requested: str, precision: str, device: str, model: torch.nn.Module) -> tuple[str, str]:
    """The memory order a run uses, and why. ``auto``: channels-last under bf16 on a CPU for a model whose
    convolutions are all 2-D (measured on an AMX CPU: 12-15 % less time per classification batch; on an
    AVX512-BF16 CPU without AMX 1.07-1.11x the plain order's rate since its gradients stay channels-last,
    docs/training.md, "Twenty-seventh session"; no gain on the stereo model, whose 3-D matching convolutions
    dominate);
    conv3d-channels-last in float32 on a CPU for a model
    with 3-D convolutions (the stereo model: 3-D convolutions computed channels-last, everything else in
    the plain order; docs/training.md, "Execution speed" and "Run 13"); nchw otherwise (float32
    2-D models stay exactly as they were)."""
    if requested not in LAYOUTS:
        raise TrainError(f"unknown --layout {requested!r}", f"use one of {', '.join(LAYOUTS)}")
    if requested != "auto":
        return requested, "--layout"
    kinds = {type(m) for m in model.modules()}
    cpu = not device.startswith("cuda")
    if precision == "bf16" and cpu and torch.nn.Conv2d in kinds and torch.nn.Conv3d not in kinds:
        return "channels-last", "auto: bf16 on a CPU, 2-D convolutions only"
    if precision == "fp32" and cpu and torch.nn.Conv3d in kinds:
        return "conv3d-channels-last", "auto: fp32 on a CPU, 3-D convolutions"
    return "nchw", "auto"


def neurons(mode: str):
    """The fused-neuron choice of a mode (eager: plain steps)."""
    return fused.using("plain" if mode == "eager" else "auto")


@contextlib.contextmanager
def views_for_volume(model: torch.nn.Module, mode: str, precision: str = "fp32"):
    """Inside, a stereo model's first matching convolution reads the two views and convolves their cost
    volume without building it (``compiler.volume.volume_conv``: each view once with the kernel's disparity
    taps stacked, every disparity a shifted slice and a sum; D times fewer MACs for that layer, the same
    values within float rounding), in the step and multistep modes in float32; eager builds the volume, the
    reference, and so does bf16 (there each tap's output would be rounded to bfloat16 before the taps are
    summed, where the 3-D convolution rounds once: not measured on accuracy). Nothing changes where the
    factorisation does not apply (``compiler.factorize.why_not``) or a searcher replaced that convolution's
    module. The model's parameters and state dict are untouched."""
    if mode == "eager" or precision != "fp32" or not _volume_conv_applies(model):
        yield
        return
    model.volume = view_pair  # an instance attribute over the class's cost_volume, for this block only
    try:
        yield
    finally:
        del model.volume


def _volume_conv_applies(model: torch.nn.Module) -> bool:
    from compiler.factorize import why_not
    from compiler.model import SNNModel

    if not isinstance(model, SNNModel) or "volume" in vars(model) or why_not(model) is not None:
        return False
    return type(model.nets[model.genotype.head.matching].layers[0].op) is ConvBN


def _running_sum(values) -> Tensor | None:
    total = None
    for v in values:
        v = v.float()  # float32 sums of bfloat16 outputs (a no-op in float32 and float64)
        total = v if total is None else total + v
    return total


def zero_state(model, batch: int) -> dict[str, Tensor]:
    """The model's initial state for ``batch`` samples as zeros broadcast from one sample's (no memory
    filled per sample): training never writes into a state tensor, the neurons read it and the fused
    kernel copies it into its own once."""
    return {k: v.expand(batch, *v.shape[1:]) for k, v in model.initial_state(1).items()}


def class_logits(model, x: Tensor, steps: int, mode: str) -> tuple[Tensor, Tensor | None]:
    """The image fed for ``steps`` steps: logits and auxiliary logits (None without) summed over the steps,
    added step after step in every mode."""
    state = zero_state(model, x.shape[0])
    if mode == "multistep":
        out, _ = model.forward_steps({"image": x.unsqueeze(0).expand(steps, *x.shape)}, state)
        aux = out["aux_logits"].unbind(0) if "aux_logits" in out else ()
        return _running_sum(out["logits"].unbind(0)), _running_sum(aux)
    logits, aux = [], []
    for _ in range(steps):
        out, state = model({"image": x}, state)
        logits.append(out["logits"])
        if "aux_logits" in out:
            aux.append(out["aux_logits"])
    return _running_sum(logits), _running_sum(aux)


def stereo_costs(model, left: Tensor, right: Tensor, burn: int, mode: str) -> list[Tensor]:
    """Windows (L, B, ...): the burn-in windows without gradient, then the matching cost of each later one."""
    state = zero_state(model, left.shape[1])
    if mode == "multistep":
        if burn:
            with torch.no_grad():
                _, state = model.forward_steps({"left": left[:burn], "right": right[:burn]}, state, outputs=())
        out, _ = model.forward_steps({"left": left[burn:], "right": right[burn:]}, state, outputs=("cost",))
        return [c.float() for c in out["cost"].unbind(0)]
    if burn:
        with torch.no_grad():
            for t in range(burn):
                _, state = model({"left": left[t], "right": right[t]}, state)
    costs = []
    for t in range(burn, len(left)):
        out, state = model({"left": left[t], "right": right[t]}, state)
        costs.append(out["cost"].float())
    return costs


def choose_threads(requested: int | None) -> tuple[int, str]:
    """Intra-op threads for a run and why: ``requested`` (``--threads``), else the cores this process may use
    (``os.sched_getaffinity``) less those other processes keep busy (the 1-minute load average, rounded):
    two threads beside a busy neighbour run slower than one."""
    if requested:
        return requested, "--threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    threads = max(1, min(cores, cores - busy))
    return threads, f"{cores} core(s), load average {os.getloadavg()[0]:.2f}"


def neuron_impl() -> str:
    """The fused neurons' implementation in use: cpp, or torch with the reason the C++ kernel is not."""
    name = fused.impl()
    return name if name == "cpp" else f"{name} ({fused.kernel_reason()})"


def check_optimizer_impl(requested: str) -> None:
    """``--optimizer-impl`` names one of ``OPTIMIZER_IMPLS`` (checked before a run starts, and by
    ``optimizer_impl``)."""
    if requested not in OPTIMIZER_IMPLS:
        raise TrainError(f"unknown --optimizer-impl {requested!r}", f"use one of {', '.join(OPTIMIZER_IMPLS)}")


def optimizer_impl(requested: str, params: list[torch.Tensor]) -> str:
    """How the optimiser updates the weights (``--optimizer-impl``): ``fused``, PyTorch's fused Adam and SGD
    (one kernel per step for all parameters), where every parameter is a floating tensor on a CPU or CUDA
    device, else ``foreach`` (a few multi-tensor ops per step; the same bits as the per-parameter loop).
    Fused updates are the same formula rounded otherwise (they differ from foreach in the last bits); the
    stereo training step is 1.02-1.03x faster with them (docs/training.md, "Twenty-first session")."""
    check_optimizer_impl(requested)
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return "fused" if requested == "fused" and fusable else "foreach"


def optimizer_in_use(opt) -> str:
    """The implementation an optimiser steps with (``--optimizer-impl``): a resumed one keeps the saved
    state's (its parameter groups hold it), so a run begun with foreach resumes exactly."""
    return "fused" if opt.param_groups[0].get("fused") else "foreach"


def execution_line(trainer, threads: str) -> str:
    """The log's ``execution:`` line of a run (training or search): mode, precision, threads, the neurons'
    implementation, layout and why."""
    return (f"execution: --exec {trainer.exec}, --precision {trainer.cfg.precision}, {threads}, "
            f"neurons {neuron_impl()}, {batchnorm_impl() if trainer.exec == 'multistep' else 'BatchNorm per step'}, "
            f"layout {trainer.layout} ({trainer.layout_why}), optimizer {optimizer_in_use(trainer.optimizer)}")


def batchnorm_impl() -> str:
    """How the multi-step mode runs BatchNorm over T steps: one C++ call (``compiler.stepnorm``, with the
    neurons' C++ kernel) or one call per step, with the reason."""
    if stepnorm.in_use():
        return "BatchNorm of all steps in one call (cpp)"
    return "BatchNorm per step (the neurons run in torch)" if fused.impl() != "cpp" \
        else f"BatchNorm per step ({stepnorm.reason()})"


def set_up_execution(cfg) -> str:
    """Check ``--precision``, set the threads of a run and how malloc keeps freed memory (``training.allocator``);
    returns what was chosen and why, for its log."""
    from . import allocator

    check_precision(cfg.precision, cfg.device)
    malloc = allocator.configure()
    threads, why = choose_threads(cfg.threads)
    torch.set_num_threads(threads)
    return f"{threads} thread(s) ({why}), {malloc}"
