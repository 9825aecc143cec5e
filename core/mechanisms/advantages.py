"""Advantage estimators: fn(batch, rewards [B], **params) -> Tensor [B] or [B, T].

`rewards` is batch.rewards after reward shaping; estimators must not read
batch.rewards directly (so that shaping composes with every estimator).
"""

# ruff: noqa: UP037  (quoted "RolloutBatch": render copies these functions into a file without that import)

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from core.mechanisms.helpers import batch_std, group_max, group_mean, group_std, group_sum, masked_whiten
from core.mechanisms.registry import register_advantage

if TYPE_CHECKING:
    from core.contract import RolloutBatch


@register_advantage("grpo")
def grpo_advantage(batch: "RolloutBatch", rewards: torch.Tensor, eps: float = 1e-4, scale: str = "group") -> torch.Tensor:
    """Group-relative advantage: reward minus its group mean, divided by the group std.

    Shapes: rewards [B] -> advantages [B].
    Formula: A_i = (R_i - mean_g(R)) / (std_g(R) + eps), std Bessel-corrected;
    scale="batch" divides by the batch std instead, scale="none" does not divide (TRL scale_rewards).
    Cite: Shao et al. 2024, DeepSeekMath (arXiv 2402.03300); TRL GRPOTrainer scale_rewards.
    """
    centred = rewards - group_mean(rewards, batch.group_ids)  # [B]
    if scale == "none":
        return centred
    std = batch_std(rewards) if scale == "batch" else group_std(rewards, batch.group_ids)
    return centred / (std + eps)


@register_advantage("dr_grpo")
def dr_grpo_advantage(batch: "RolloutBatch", rewards: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO: drop the std division, which over-weights easy and hard prompts.

    Shapes: rewards [B] -> advantages [B].
    Formula: A_i = R_i - mean_g(R)  (pair with aggregation seq-mean-token-sum-norm).
    Cite: Liu et al. 2025, Understanding R1-Zero-Like Training (arXiv 2503.20783).
    """
    return grpo_advantage(batch, rewards, scale="none")


@register_advantage("lite_ppo")
def lite_ppo_advantage(batch: "RolloutBatch", rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Lite PPO: group-mean baseline, batch-level std (more robust than a per-group std).

    Shapes: rewards [B] -> advantages [B].
    Formula: A_i = (R_i - mean_g(R)) / (std_batch(R) + eps).
    Cite: Liu et al. 2025, Tricks or Traps? A Deep Dive into RL for LLM Reasoning (arXiv 2508.08221).
    """
    return grpo_advantage(batch, rewards, eps=eps, scale="batch")


@register_advantage("rloo")
def rloo_advantage(batch: "RolloutBatch", rewards: torch.Tensor) -> torch.Tensor:
    """RLOO: each sample's baseline is the mean reward of the *other* samples of its group.

    Shapes: rewards [B] -> advantages [B].
    Formula: A_i = R_i - (sum_g R - R_i) / (G - 1) = G/(G-1) * (R_i - mean_g(R)); 0 for G = 1.
    Cite: Ahmadian et al. 2024, Back to Basics: REINFORCE-style optimization (arXiv 2402.14740).
    """
    count = group_sum(torch.ones_like(rewards), batch.group_ids)  # [B]
    others = (group_sum(rewards, batch.group_ids) - rewards) / (count - 1).clamp(min=1)
    return torch.where(count > 1, rewards - others, torch.zeros_like(rewards))


@register_advantage("reinforce_pp")
def reinforce_pp_advantage(batch: "RolloutBatch", rewards: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++: no group baseline; whiten the outcome reward over all response tokens of the batch.

    Shapes: rewards [B] -> advantages [B, T] (zero on padding).
    Formula: A_{i,t} = (R_i - mean_tok(R)) / sqrt(var_tok(R) + eps), statistics over masked tokens.
    Cite: Hu 2025, REINFORCE++ (arXiv 2501.03262); verl compute_reinforce_plus_plus_outcome_advantage.
    """
    mask = batch.response_mask  # [B, T]
    returns = rewards.unsqueeze(1) * mask  # [B, T]: outcome reward, gamma = 1
    return masked_whiten(returns, mask, eps) * mask


@register_advantage("reinforce_pp_baseline")
def reinforce_pp_baseline_advantage(batch: "RolloutBatch", rewards: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++-baseline: subtract the group mean, then whiten over all tokens of the batch.

    Shapes: rewards [B] -> advantages [B, T] (zero on padding).
    Formula: A_{i,t} = whiten_tok(R_i - mean_g(R)).
    Cite: Hu 2025, REINFORCE++ (arXiv 2501.03262); verl reinforce_plus_plus_baseline.
    """
    mask = batch.response_mask  # [B, T]
    centred = (rewards - group_mean(rewards, batch.group_ids)).unsqueeze(1) * mask  # [B, T]
    return masked_whiten(centred, mask, eps) * mask


@register_advantage("gpg")
def gpg_advantage(batch: "RolloutBatch", rewards: torch.Tensor, f_norm: float = 1.0) -> torch.Tensor:
    """GPG: group-mean baseline, rescaled by B / (samples in groups that carry signal).

    Shapes: rewards [B] -> advantages [B]. Pair with policy_loss "pg" (no ratio, no clip).
    Formula: A_i = alpha * (R_i - mean_g(R)) / f_norm, alpha = B / #{i : std_g(R) > 0}.
    Cite: Chu et al. 2025, GPG: A Simple and Strong RL Baseline (arXiv 2504.02546).
    """
    informative = (group_std(rewards, batch.group_ids) > 0).to(rewards.dtype)  # [B]
    alpha = rewards.shape[0] / informative.sum().clamp(min=1.0)
    return alpha * (rewards - group_mean(rewards, batch.group_ids)) / f_norm


@register_advantage("gdpo")
def gdpo_advantage(batch: "RolloutBatch", rewards: torch.Tensor, eps: float = 1e-4, batch_norm: bool = True) -> torch.Tensor:
    """GDPO: normalise each reward component within its group separately, then take their weighted sum.

    Shapes: batch.reward_parts name -> [B]; rewards [B] (used only when there are no parts) -> [B].
    Formula: A_i = sum_k w_k (R^k_i - mean_g(R^k)) / (std_g(R^k) + eps), then (batch_norm)
    (A - mean_B(A)) / (std_B(A) + eps). w_k = batch.reward_weights[k]: the weights the recipe's reward is
    made with, so a side signal (a part without a weight) is not turned into a reward; every part has
    w_k = 1 when the recipe gave no weights. Reward shaping reaches GDPO only through reward_parts.
    Cite: Liu et al. 2026, GDPO: Group reward-Decoupled normalization (arXiv 2601.05242);
    TRL multi_objective_aggregation="normalize_then_sum" (with its reward_weights).
    """
    weights = batch.reward_weights or dict.fromkeys(batch.reward_parts, 1.0)
    total = torch.zeros_like(rewards)
    for name, weight in weights.items():
        if weight:
            total = total + weight * grpo_advantage(batch, batch.reward_parts[name].to(rewards.dtype), eps=eps)
    if not batch.reward_parts:
        total = grpo_advantage(batch, rewards, eps=eps)
    if not batch_norm:
        return total
    return (total - total.mean()) / (batch_std(total) + eps)


@register_advantage("av")
def av_advantage(batch: "RolloutBatch", rewards: torch.Tensor, sigma_min: float = 0.1) -> torch.Tensor:
    """POISE AV: analytic-variance scale with a floor, so near-uniform groups do not explode.

    Shapes: rewards [B] -> advantages [B].
    Formula: sigma = sqrt(E_g[R^2] - E_g[R]^2) (the population group std; sqrt(p(1-p)) for binary R),
    A_i = (R_i - mean_g(R)) / max(sigma, sigma_min).
    Cite: Xia et al. 2026, POISE (arXiv 2603.23951), AV-GRPO.
    """
    mean = group_mean(rewards, batch.group_ids)  # [B]
    var = (group_mean(rewards * rewards, batch.group_ids) - mean * mean).clamp(min=0.0)
    return (rewards - mean) / var.sqrt().clamp(min=sigma_min)


@register_advantage("vm")
def vm_advantage(
    batch: "RolloutBatch",
    rewards: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    sigma_floor: float = 0.2,
    a_floor: float = -3.0,
    adv_clip: float = 2.0,
) -> torch.Tensor:
    """POISE VM: group statistics from format-valid samples only; invalid samples get a fixed A_floor.

    Shapes: rewards [B] in [0, 1], batch.valid [B], batch.lengths [B] -> advantages [B].
    Formula: mu = (sum_{i in V} R_i + alpha) / (|V| + alpha + beta), sigma = sqrt(mu (1 - mu));
    valid: a_i = (R_i - mu) / max(sigma, sigma_floor), negative a_i divided by clip(L_i / mean_V(L), 0.5, 2),
    then A_i = clip(a_i, +-adv_clip); invalid: A_i = a_floor. With a_floor < -adv_clip the order
    invalid < valid-wrong < valid-correct holds for every group.
    Cite: Xia et al. 2026, POISE (arXiv 2603.23951), VM-AV-GRPO.
    """
    valid = batch.valid.to(rewards.dtype)  # [B]
    n_valid = group_sum(valid, batch.group_ids)  # [B]
    mu = (group_sum(rewards * valid, batch.group_ids) + alpha) / (n_valid + alpha + beta)
    sigma = (mu * (1 - mu)).clamp(min=0.0).sqrt().clamp(min=sigma_floor)
    adv = (rewards - mu) / sigma  # [B]
    lengths = batch.lengths.to(rewards.dtype)
    mean_len = group_sum(lengths * valid, batch.group_ids) / n_valid.clamp(min=1.0)
    len_ratio = (lengths / mean_len.clamp(min=1.0)).clamp(0.5, 2.0)
    # Clip after the length division, so no valid sample can fall to the invalid floor.
    adv = torch.where(adv < 0, adv / len_ratio, adv).clamp(-adv_clip, adv_clip)
    return torch.where(batch.valid, adv, torch.full_like(adv, a_floor))


@register_advantage("fa")
def fa_advantage(
    batch: "RolloutBatch",
    rewards: torch.Tensor,
    eps: float = 1e-4,
    fail_invalid: float = -2.0,
    fail_valid: float = -0.5,
    adv_clip: float = 3.0,
) -> torch.Tensor:
    """POISE FA: all-fail groups still teach format (invalid -2, valid-wrong -0.5); others are clipped GRPO.

    Shapes: rewards [B] -> advantages [B].
    Formula: if max_g(R) <= 0: A_i = fail_invalid (invalid) or fail_valid (valid);
    else A_i = clip((R_i - mean_g) / (std_g + eps), -adv_clip, adv_clip).
    Cite: Xia et al. 2026, POISE (arXiv 2603.23951), FA (failure-aware advantages).
    """
    all_fail = group_max(rewards, batch.group_ids) <= 0  # [B]
    floor = torch.where(batch.valid, torch.full_like(rewards, fail_valid), torch.full_like(rewards, fail_invalid))
    grpo = grpo_advantage(batch, rewards, eps=eps).clamp(-adv_clip, adv_clip)
    return torch.where(all_fail, floor, grpo)

