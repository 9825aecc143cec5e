"""Batch filters fn(batch, **params) -> bool [B] (True = keep), token masks fn(batch, **params) -> [B, T],
and reward shaping fn(batch, rewards [B], **params) -> rewards [B]."""

# ruff: noqa: UP037  (quoted "RolloutBatch": render copies these functions into a file without that import)

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from core.mechanisms.helpers import group_std
from core.mechanisms.registry import register_filter, register_mask, register_shaping

if TYPE_CHECKING:
    from core.contract import RolloutBatch


@register_filter("dynamic_sampling")
def dynamic_sampling_filter(batch: "RolloutBatch", min_std: float = 0.0) -> torch.Tensor:
    """DAPO dynamic sampling: drop groups whose rewards are all equal (all-0 / all-1): they carry no signal.

    Shapes: batch.rewards [B] -> keep bool [B].
    Formula: keep_i = std_g(R) > min_std (raw rewards, before shaping).
    Cite: Yu et al. 2025, DAPO (arXiv 2503.14476).
    """
    return group_std(batch.rewards, batch.group_ids) > min_std


@register_mask("truncation")
def truncation_mask(batch: "RolloutBatch") -> torch.Tensor:
    """Truncated-sample masking: responses cut at the length limit get no gradient (their reward is noise).

    Shapes: batch.truncated [B] -> mask [B, T]. Group statistics still include them.
    Formula: m_{i,t} = 1[not truncated_i].
    Cite: Yu et al. 2025, DAPO overlong filtering (arXiv 2503.14476); TRL mask_truncated_completions.
    """
    keep = (~batch.truncated).to(batch.response_mask.dtype)  # [B]
    return keep.unsqueeze(1).expand_as(batch.response_mask)


@register_mask("high_entropy")
def high_entropy_mask(batch: "RolloutBatch", top_frac: float = 0.2) -> torch.Tensor:
    """80/20 rule: train only on the top top_frac highest-entropy tokens ("forking" tokens).

    Shapes: batch.entropy [B, T] (may be None: then no masking) -> mask [B, T].
    Formula: m_t = 1[H_t >= quantile_{1 - top_frac}(H over response tokens)].
    Cite: Wang et al. 2025, Beyond the 80/20 Rule (arXiv 2506.01939); TRL top_entropy_quantile.
    """
    mask = batch.response_mask
    if batch.entropy is None:
        return torch.ones_like(mask)
    ent = batch.entropy.detach()
    threshold = torch.quantile(ent[mask > 0].float(), 1.0 - top_frac)
    return (ent >= threshold).to(mask.dtype)


@register_shaping("overlong_penalty")
def overlong_penalty_shaping(batch: "RolloutBatch", rewards: torch.Tensor, cache_frac: float = 0.2) -> torch.Tensor:
    """DAPO soft overlong punishment: a linear penalty in the last cache_frac of the length budget.

    Shapes: rewards, batch.lengths [B] -> rewards [B].
    Formula: L_c = cache_frac L_max; R += clip(((L_max - L_c) - |o|) / L_c, -1, 0).
    Cite: Yu et al. 2025, DAPO (arXiv 2503.14476).
    """
    l_max = float(batch.max_response_len)
    l_cache = max(cache_frac * l_max, 1.0)
    penalty = ((l_max - l_cache) - batch.lengths.to(rewards.dtype)) / l_cache
    return rewards + penalty.clamp(-1.0, 0.0)


@register_shaping("format_penalty")
def format_penalty_shaping(batch: "RolloutBatch", rewards: torch.Tensor, penalty: float = 0.5) -> torch.Tensor:
    """Strict format penalty: subtract a constant from unparseable answers (shipped with POISE's AV).

    Shapes: rewards, batch.valid [B] -> rewards [B].
    Formula: R_i -= penalty * 1[not valid_i].
    Cite: Xia et al. 2026, POISE (arXiv 2603.23951).
    """
    return rewards - penalty * (~batch.valid).to(rewards.dtype)
