"""Shared maths for mechanisms: group statistics and masked means.

Groups are given by arbitrary integer ids, not by position, so a batch whose
groups are interleaved or of unequal size is handled the same way.
"""

from __future__ import annotations

import torch

from core.mechanisms.registry import helper


@helper
def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group index [B] in 0..G-1 and the number of groups G."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, int(inverse.max().item()) + 1


@helper
def group_sum(x: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of x [B] over its group, broadcast back to [B]."""
    idx, n_groups = group_index(group_ids)
    sums = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add(0, idx, x)  # [G]
    return sums[idx]  # [B]


@helper
def group_mean(x: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of x [B] over its group, broadcast back to [B]."""
    count = group_sum(torch.ones_like(x), group_ids)  # [B]
    return group_sum(x, group_ids) / count


@helper
def group_max(x: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Per-sample max of x [B] over its group, broadcast back to [B]."""
    idx, n_groups = group_index(group_ids)
    init = torch.full((n_groups,), float("-inf"), dtype=x.dtype, device=x.device)
    return init.scatter_reduce(0, idx, x, reduce="amax")[idx]


@helper
def group_std(x: torch.Tensor, group_ids: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Per-sample std of x [B] over its group, [B]; Bessel-corrected when `unbiased` (as torch.std).

    A group of one sample has std 0 (not NaN) so it yields a zero advantage.
    """
    count = group_sum(torch.ones_like(x), group_ids)  # [B]
    sq_dev = (x - group_mean(x, group_ids)) ** 2  # [B]
    denom = (count - 1).clamp(min=1) if unbiased else count
    return (group_sum(sq_dev, group_ids) / denom).sqrt()


@helper
def batch_std(x: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Std of all of x (scalar); 0 for a single element."""
    if x.numel() < 2:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return x.std(unbiased=unbiased)


@helper
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (scalar); 0 when the mask is empty."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


@helper
def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over masked positions, with unbiased variance (as verl_F.masked_whiten)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask) * n / (n - 1).clamp(min=1.0)
    return (x - mean) * torch.rsqrt(var + eps)


@helper
def token_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Broadcast sequence advantages [B] (or pass through [B, T]) to [B, T]."""
    if advantages.dim() == 1:
        return advantages.unsqueeze(1).expand_as(mask)
    return advantages
