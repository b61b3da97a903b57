"""Training losses: sub-pixel cross entropy for stereo (paper eq. 6), cross entropy with an auxiliary
head for classification, and the energy term of HNS (journal eq. 28).

Each task loss returns ``(sum, count)`` rather than a mean, so that a distributed run can divide
by the count over all processes and match a single process on the same global batch exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def laplace_target(gt: Tensor, disparities: int, step: float, diversity: float = 2.0) -> Tensor:
    """Discretised Laplace distribution over the cost indices: (B, H, W) -> (B, D, H, W).

    p[d] = exp(-|D(d) - gt| / b) / sum_d' exp(-|D(d') - gt| / b), with D(d) = d * step (pixels) and
    b the diversity (paper: 2). NaN ground truth gives NaN rows (masked by the caller).
    """
    d = torch.arange(disparities, dtype=gt.dtype, device=gt.device).view(1, -1, 1, 1) * step
    logits = -torch.abs(d - gt.unsqueeze(1)) / diversity  # (B, D, H, W)
    return torch.softmax(logits, dim=1)


def valid_disparity(gt: Tensor, max_disparity: float) -> Tensor:
    """Pixels that count: finite ground truth in (0, max_disparity]."""
    return torch.isfinite(gt) & (gt > 0) & (gt <= max_disparity)


def subpixel_cross_entropy(cost: Tensor, gt: Tensor, step: float, diversity: float = 2.0,
                           max_disparity: float | None = None, teacher: Tensor | None = None,
                           teacher_weight: float = 0.0) -> tuple[Tensor, Tensor]:
    """Paper eq. 6 on a matching cost (B, D, H, W) (low = good match) and disparity gt (B, H, W) in px.

    -sum_d Laplace(D(d) | gt, b) log softmax_d(-cost), summed over valid pixels. Returns the sum and
    the number of valid pixels. With a ``teacher`` cost (B, D, H, W) the target is
    ``(1 - teacher_weight) * Laplace + teacher_weight * softmax(-teacher)`` (``--distill``; not in the papers).
    """
    disparities = cost.shape[1]
    limit = (disparities - 1) * step if max_disparity is None else max_disparity
    mask = valid_disparity(gt, limit)  # (B, H, W)
    safe_gt = torch.where(mask, gt, torch.zeros_like(gt))
    target = laplace_target(safe_gt, disparities, step, diversity)  # (B, D, H, W)
    if teacher is not None:
        if teacher.shape != cost.shape:
            raise ValueError(f"teacher cost {tuple(teacher.shape)} against the model's {tuple(cost.shape)}")
        target = (1 - teacher_weight) * target + teacher_weight * torch.softmax(-teacher.to(target.dtype), dim=1)
    logp = F.log_softmax(-cost, dim=1)
    per_pixel = -(target * logp).sum(dim=1)  # (B, H, W)
    total = torch.where(mask, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total, mask.sum()


def disparity_smooth_l1(disparity: Tensor, gt: Tensor, max_disparity: float) -> Tensor:
    """Smooth-L1 (Huber, beta 1 px) error of an estimated disparity (B, H, W) against ``gt`` (B, H, W) in px,
    summed over the pixels that count (``valid_disparity``). Not in the papers: the optional second term of
    ``--disparity-l1``, which trains the estimator's output (what 1PA scores) and not only the cost's shape."""
    mask = valid_disparity(gt, max_disparity)
    safe_gt = torch.where(mask, gt, disparity.detach())
    per_pixel = F.smooth_l1_loss(disparity, safe_gt, reduction="none", beta=1.0)
    return torch.where(mask, per_pixel, torch.zeros_like(per_pixel)).sum()


def classification_loss(logits: Tensor, labels: Tensor, aux_logits: Tensor | None,
                        aux_weight: float) -> tuple[Tensor, Tensor]:
    """Summed cross entropy (+ ``aux_weight`` x that of the auxiliary head) and the sample count."""
    total = F.cross_entropy(logits, labels, reduction="sum")
    if aux_logits is not None and aux_weight > 0:
        total = total + aux_weight * F.cross_entropy(aux_logits, labels, reduction="sum")
    return total, torch.tensor(labels.shape[0])


def energy_loss(probs: list[Tensor], factors: Tensor) -> Tensor:
    """HNS energy term: sum over layers of sum_k softmax(alpha_l)_k * rho_k (journal eq. 28)."""
    if not probs:
        return torch.zeros(())
    return torch.stack([(p * factors).sum() for p in probs]).sum()
