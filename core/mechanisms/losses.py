"""Policy losses: fn(logprobs [B, T], batch, advantages, mask [B, T], **params) -> (per_token_loss [B, T], metrics).

The per-token loss is *not* reduced here: the aggregation mode (a separate,
named mechanism) turns it into a scalar, so a loss never re-implements
token-mean versus sequence-mean. `mask` is the effective loss mask
(response_mask times any mask mechanisms); metrics are plain floats.
"""

# ruff: noqa: UP037  (quoted "RolloutBatch": render copies these functions into a file without that import)

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from core.mechanisms.helpers import masked_mean, token_advantages
from core.mechanisms.registry import helper, register_policy_loss

if TYPE_CHECKING:
    from core.contract import RolloutBatch

@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logprobs: torch.Tensor,
    batch: "RolloutBatch",
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate per token; eps_high > eps_low is DAPO's clip-higher.

    Shapes: logprobs, batch.old_logprobs, mask [B, T]; advantages [B] or [B, T] -> loss [B, T].
    Formula: r = exp(logp - logp_old), l = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A).
    Cite: Schulman et al. 2017 (arXiv 1707.06347); Yu et al. 2025, DAPO (arXiv 2503.14476) for clip-higher.
    """
    adv = token_advantages(advantages, mask)  # [B, T]
    ratio = torch.exp(logprobs - batch.old_logprobs)  # [B, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    loss = -torch.min(ratio * adv, clipped * adv)
    was_clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    return loss, {"clip_frac": float(masked_mean(was_clipped.to(mask.dtype), mask))}


@register_policy_loss("gspo")
def gspo_loss(
    logprobs: torch.Tensor,
    batch: "RolloutBatch",
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO: one length-normalised importance ratio per sequence, clipped at the sequence level.

    Shapes: logprobs [B, T]; advantages [B] -> loss [B, T] (the sequence value on every token).
    Formula: s_i = exp(sum_t m (logp - logp_old) / |o_i|) = (pi/pi_old)^(1/|o_i|),
    l_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i). Pair with seq-mean-token-mean.
    Cite: Zheng et al. 2025, Group Sequence Policy Optimization (arXiv 2507.18071);
    TRL importance_sampling_level="sequence".
    """
    adv = token_advantages(advantages, mask)[:, :1]  # [B, 1]
    log_s = ((logprobs - batch.old_logprobs) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    s = torch.exp(log_s)  # [B, 1]
    loss = -torch.min(s * adv, torch.clamp(s, 1 - eps_low, 1 + eps_high) * adv)
    was_clipped = ((s < 1 - eps_low) & (adv < 0)) | ((s > 1 + eps_high) & (adv > 0))
    return loss.expand_as(mask), {"clip_frac": float(was_clipped.to(mask.dtype).mean())}


@register_policy_loss("gmpo")
def gmpo_loss(
    logprobs: torch.Tensor,
    batch: "RolloutBatch",
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.4,
    eps_high: float = 0.4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GMPO: geometric mean of token ratios, each clipped in log space, so outlier tokens count less.

    Shapes: logprobs [B, T]; advantages [B] or [B, T] -> loss [B, T] (the sequence value on every token).
    Formula: d_t = logp - logp_old, d'_t = sgn(A) min(sgn(A) d_t, sgn(A) clip(d_t, -eps_low, eps_high)),
    l_i = -mean_t(A) * exp(mean_t d'_t). Pair with seq-mean-token-mean.
    Cite: Zhao et al. 2025, Geometric-Mean Policy Optimization (arXiv 2507.20673); verl geo_mean.
    """
    adv = token_advantages(advantages, mask)  # [B, T]
    sign = torch.sign(adv)
    log_ratio = logprobs - batch.old_logprobs  # [B, T]
    clipped = torch.clamp(log_ratio, -eps_low, eps_high)
    log_ratio_min = sign * torch.min(sign * log_ratio, sign * clipped)
    n_tok = mask.sum(-1).clamp(min=1.0)  # [B]
    ratio = torch.exp((log_ratio_min * mask).sum(-1) / n_tok)  # [B]
    seq_adv = (adv * mask).sum(-1) / n_tok  # [B]
    loss = (-seq_adv * ratio).unsqueeze(1).expand_as(mask)
    frac = masked_mean(torch.ne(log_ratio, clipped).to(mask.dtype), mask)
    return loss, {"clip_frac": float(frac)}


@register_policy_loss("cispo")
def cispo_loss(
    logprobs: torch.Tensor,
    batch: "RolloutBatch",
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ratio_max: float = 5.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CISPO: clip the stop-gradient importance weight, never the token's gradient.

    Shapes: logprobs [B, T]; advantages [B] or [B, T] -> loss [B, T].
    Formula: l_t = -sg(min(r_t, ratio_max)) A log pi(t), r_t = exp(logp - logp_old)
    (TRL passes ratio_max as epsilon_high).
    Cite: MiniMax 2025, MiniMax-M1 (arXiv 2506.13585); TRL loss_type="cispo".
    """
    adv = token_advantages(advantages, mask)  # [B, T]
    ratio = torch.exp(logprobs - batch.old_logprobs)
    weight = torch.clamp(ratio, max=ratio_max).detach()
    frac = masked_mean(((ratio > ratio_max) & (adv > 0)).to(mask.dtype), mask)
    return -weight * adv * logprobs, {"clip_frac": float(frac)}


@register_policy_loss("sapo")
def sapo_loss(
    logprobs: torch.Tensor,
    batch: "RolloutBatch",
    advantages: torch.Tensor,
    mask: torch.Tensor,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SAPO: a smooth sigmoid gate on the ratio instead of PPO's hard clip.

    Shapes: logprobs [B, T]; advantages [B] or [B, T] -> loss [B, T].
    Formula: l_t = -(4 / tau) sigmoid(tau (r_t - 1)) A, tau = tau_pos if A > 0 else tau_neg.
    Cite: Gao et al. 2025, Soft Adaptive Policy Optimization (arXiv 2511.20347); TRL loss_type="sapo".
    """
    adv = token_advantages(advantages, mask)  # [B, T]
    ratio = torch.exp(logprobs - batch.old_logprobs)
    tau = torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))
    return -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv, {}


@register_policy_loss("pg")
def pg_loss(logprobs: torch.Tensor, batch: "RolloutBatch", advantages: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain policy gradient (REINFORCE / GPG): no ratio and no clipping, fully on-policy.

    Shapes: logprobs [B, T]; advantages [B] or [B, T] -> loss [B, T].
    Formula: l_t = -A log pi(t).
    Cite: Williams 1992 (REINFORCE); Chu et al. 2025, GPG (arXiv 2504.02546).
    """
    return -token_advantages(advantages, mask) * logprobs, {}


@register_policy_loss("clip_cov")
def clip_cov_loss(
    logprobs: torch.Tensor,
    batch: "RolloutBatch",
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    cov_ratio: float = 2e-4,
    cov_lb: float = 1.0,
    cov_ub: float = 5.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clip-Cov: detach the gradient of the few tokens whose logp-advantage covariance is highest.

    Shapes: logprobs [B, T]; advantages [B] or [B, T] -> loss [B, T].
    Formula: cov_t = (A_t - mean A)(logp_t - mean logp); among unclipped tokens with cov in (lb, ub),
    the top max(1, cov_ratio * N) by cov get zero loss; the rest is the PPO clip loss.
    Deterministic top-k (verl picks at random among the candidates).
    Cite: Cui et al. 2025, The Entropy Mechanism of RL for Reasoning LMs (arXiv 2505.22617).
    """
    adv = token_advantages(advantages, mask)  # [B, T]
    base, metrics = ppo_clip_loss(logprobs, batch, adv, mask, eps_low=eps_low, eps_high=eps_high)
    ratio = torch.exp(logprobs - batch.old_logprobs).detach()
    unclipped = -adv * ratio >= -adv * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    cov = (adv - masked_mean(adv, mask)) * (logprobs.detach() - masked_mean(logprobs.detach(), mask))
    eligible = (mask > 0) & unclipped & (cov > cov_lb) & (cov < cov_ub)
    chosen = top_k_mask(torch.where(eligible, cov, torch.full_like(cov, float("-inf"))), cov_ratio, mask)
    metrics["cov_frac"] = float(masked_mean(chosen.to(mask.dtype), mask))
    return torch.where(chosen, torch.zeros_like(base), base), metrics


@register_policy_loss("kl_cov")
def kl_cov_loss(
    logprobs: torch.Tensor,
    batch: "RolloutBatch",
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cov_ratio: float = 2e-4,
    kl_coef: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL-Cov: an |log-ratio| penalty on the tokens whose logp-advantage covariance is highest.

    Shapes: logprobs [B, T]; advantages [B] or [B, T] -> loss [B, T].
    Formula: l_t = -A r_t, plus kl_coef |logp - logp_old| on the top max(1, cov_ratio * N) tokens by
    cov_t = (A_t - mean A)(logp_t - mean logp).
    Cite: Cui et al. 2025, The Entropy Mechanism of RL for Reasoning LMs (arXiv 2505.22617).
    """
    adv = token_advantages(advantages, mask)  # [B, T]
    log_ratio = logprobs - batch.old_logprobs
    loss = -adv * torch.exp(log_ratio)
    cov = (adv - masked_mean(adv, mask)) * (logprobs.detach() - masked_mean(logprobs.detach(), mask))
    chosen = top_k_mask(torch.where(mask > 0, cov, torch.full_like(cov, float("-inf"))), cov_ratio, mask)
    loss = torch.where(chosen, loss + kl_coef * log_ratio.abs(), loss)
    return loss, {"cov_frac": float(masked_mean(chosen.to(mask.dtype), mask))}


@helper
def top_k_mask(scores: torch.Tensor, ratio: float, mask: torch.Tensor) -> torch.Tensor:
    """Bool [B, T]: the top max(1, ratio * #tokens) finite entries of scores [B, T]."""
    k = max(1, int(ratio * float(mask.sum())))
    flat = scores.flatten()
    k = min(k, int(torch.isfinite(flat).sum()))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        chosen[torch.topk(flat, k).indices] = True
    return chosen.view_as(scores)
