"""Loss aggregation modes: fn(per_token_loss [B, T], mask [B, T], max_response_len) -> scalar.

Named and chosen, never re-implemented inside a loss (verl's loss_agg_mode).
"""

from __future__ import annotations

import torch

from core.mechanisms.registry import register_aggregation


@register_aggregation("token-mean")
def token_mean(loss: torch.Tensor, mask: torch.Tensor, max_response_len: int) -> torch.Tensor:
    """Every token of the batch weighs the same (DAPO, BNPO; long answers weigh more).

    Shapes: loss, mask [B, T] -> scalar.
    Formula: L = sum_{i,t} m l / sum_{i,t} m.
    Cite: Yu et al. 2025, DAPO (arXiv 2503.14476); TRL loss_type="dapo"/"bnpo".
    """
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


@register_aggregation("seq-mean-token-mean")
def seq_mean_token_mean(loss: torch.Tensor, mask: torch.Tensor, max_response_len: int) -> torch.Tensor:
    """Average tokens within each response, then responses (original GRPO; biased toward short answers).

    Shapes: loss, mask [B, T] -> scalar.
    Formula: L = mean_i (sum_t m l / max(sum_t m, 1)).
    Cite: Shao et al. 2024, DeepSeekMath (arXiv 2402.03300); TRL loss_type="grpo".
    """
    per_seq = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]
    return per_seq.mean()


@register_aggregation("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss: torch.Tensor, mask: torch.Tensor, max_response_len: int) -> torch.Tensor:
    """Sum tokens per response, divide by a constant (the generation limit), average responses: no length bias.

    Shapes: loss, mask [B, T] -> scalar.
    Formula: L = sum_{i,t} m l / (B * max_response_len).
    Cite: Liu et al. 2025, Dr. GRPO (arXiv 2503.20783); TRL loss_type="dr_grpo".
    """
    return (loss * mask).sum() / (loss.shape[0] * max_response_len)
