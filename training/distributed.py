"""Multi-process training with ``torch.distributed``: set-up from torchrun's environment, gradient
sums, and a BatchNorm whose statistics span every process.

Every process draws the same global batch order and takes its own slice of each batch; losses are
sums divided by the global count, and gradients are summed over processes, so N processes compute
the gradient a single process would on the same global batch (up to float rounding).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "cpu") -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, NCCL on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size())


def one_machine_note(d: Dist, device: str) -> str | None:
    """The run log's advice where several processes share one CPU machine (torchrun's LOCAL_WORLD_SIZE is the
    whole world): every BatchNorm layer waits for all processes twice a step (``GlobalBatchNorm``), and in every
    measurement so far two threads were faster than two processes (docs/training.md, *Distributed training*)."""
    if not d.enabled or not device.startswith("cpu"):
        return None
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    if not local.isdigit() or int(local) != d.world:
        return None
    return (f"processes: {d.world} on one CPU machine (gloo); each BatchNorm layer waits for all of them twice a "
            f"step: on one machine --threads {d.world} in one process has been faster (docs/training.md, "
            f"Distributed training)")


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(x: Tensor, d: Dist) -> Tensor:
    """Sum a tensor over processes (no autograd); identity for one process."""
    if not d.enabled:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def sum_gradients(params, d: Dist) -> None:
    """Sum every parameter's gradient over processes (a parameter without one counts as zeros)."""
    if not d.enabled:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def broadcast_module(module: nn.Module, d: Dist) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    if not d.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any rank) whose training statistics are over the batch of every process.

    Sums and squared sums are all-reduced with autograd (``torch.distributed.nn``), so gradients
    flow as in one process with the whole batch. Same parameters and buffers as ``BatchNorm2d/3d``,
    hence the same state dict. Works on CPU (gloo), unlike ``nn.SyncBatchNorm``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        return self.forward_chunks(x, 1)

    def forward_chunks(self, x: Tensor, chunks: int, stacked=None) -> Tensor:
        """``torch.cat([self(c) for c in x.chunk(chunks)])`` (equal chunks along the batch: the time steps a
        multistep layer stacks, ``compiler.ops.Stacked``) with one all-reduce for all of them instead of one
        per chunk (and one in the backward): each chunk is normalised with its own statistics over every
        process, and the running averages are updated chunk after chunk, as separate calls update them: now,
        or, with ``stacked`` (a module several nodes run, the stereo feature network on its two views), at the
        end of the steps in step order (``Stacked.defer_call``), so that the two views' updates interleave
        step by step as in one process and in the step-by-step model."""
        if not self.training or not dist.is_initialized():
            return torch.cat([self(c) for c in x.chunk(chunks)])
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable all-reduce

        c = x.shape[1]
        xs = x.reshape(chunks, x.shape[0] // chunks, *x.shape[1:])
        dims = [1] + list(range(3, xs.dim()))
        n_local = torch.full((chunks, 1), float(xs[0].numel() // c), dtype=x.dtype)
        stats = torch.cat([xs.sum(dims), (xs * xs).sum(dims), n_local], dim=1)  # (chunks, 2C + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of a private API
            stats = all_reduce(stats)
        n = stats[:, -1:]
        mean = stats[:, :c] / n
        var = stats[:, c:2 * c] / n - mean * mean
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            for k in range(chunks):
                update = functools.partial(self._update_running, m, mean[k].detach(),
                                           var[k].detach() * n[k] / (n[k] - 1))
                if stacked is None:
                    update()
                else:
                    stacked.defer_call(k // stacked.views, self, update)
        shape = [chunks, 1, c] + [1] * (xs.dim() - 3)
        y = (xs - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape[1:]) + self.bias.view(shape[1:])
        return y.reshape(x.shape)

    @torch.no_grad()
    def _update_running(self, m: float, mean: Tensor, var: Tensor) -> None:
        """One call's running-average update from its batch mean and unbiased variance."""
        self.running_mean.mul_(1 - m).add_(mean, alpha=m)
        self.running_var.mul_(1 - m).add_(var, alpha=m)
        self.num_batches_tracked.add_(1)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm of ``module`` (in place) for a ``GlobalBatchNorm`` with the same tensors."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module


