"""KL estimators to the reference policy, fn(logprobs [B, T], ref_logprobs [B, T]) -> [B, T],
and entropy bonuses, fn(entropy [B, T], mask [B, T], **params) -> scalar (subtracted from the loss)."""

from __future__ import annotations

import torch

from core.mechanisms.registry import register_entropy, register_kl


@register_kl("k1")
def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1: the plain log-ratio; unbiased for KL(pi || ref) but high variance and can be negative.

    Shapes: logprobs, ref_logprobs [B, T] -> [B, T].
    Formula: k1 = log pi - log pi_ref.
    Cite: Schulman 2020, Approximating KL Divergence (joschu.net/blog/kl-approx.html).
    """
    return logprobs - ref_logprobs


@register_kl("k2")
def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2: half squared log-ratio; low variance, biased, always >= 0.

    Shapes: logprobs, ref_logprobs [B, T] -> [B, T].
    Formula: k2 = (log pi - log pi_ref)^2 / 2.
    Cite: Schulman 2020, Approximating KL Divergence (joschu.net/blog/kl-approx.html).
    """
    return 0.5 * (logprobs - ref_logprobs) ** 2


@register_kl("k3")
def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3: unbiased and always >= 0; the estimator GRPO uses.

    Shapes: logprobs, ref_logprobs [B, T] -> [B, T].
    Formula: k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1.
    Cite: Schulman 2020 (joschu.net/blog/kl-approx.html); Shao et al. 2024, DeepSeekMath (arXiv 2402.03300).
    """
    diff = ref_logprobs - logprobs  # [B, T]
    return torch.exp(diff) - diff - 1


@register_entropy("fixed")
def entropy_fixed(entropy: torch.Tensor, mask: torch.Tensor, coef: float = 1e-3) -> torch.Tensor:
    """Fixed entropy bonus: coef times the token-mean policy entropy, against premature collapse.

    Shapes: entropy, mask [B, T] -> scalar bonus (loss = loss - bonus).
    Formula: bonus = coef * sum m H / sum m.
    Cite: Williams & Peng 1991; TRL GRPOConfig.entropy_coef.
    """
    return coef * (entropy * mask).sum() / mask.sum().clamp(min=1.0)


@register_entropy("adaptive")
def entropy_adaptive(entropy: torch.Tensor, mask: torch.Tensor, coef: float = 5e-3, target: float = 0.2) -> torch.Tensor:
    """Adaptive entropy bonus: switch the bonus on only while entropy is at or below a target.

    Shapes: entropy, mask [B, T] -> scalar bonus. Stateless (the contract forbids state across calls):
    the gate is decided from this batch's detached entropy.
    Formula: H = sum m H_t / sum m; bonus = coef * H if sg(H) <= target else 0.
    Cite: He et al. 2025, Skywork Open Reasoner 1 (arXiv 2505.22312); TRL use_adaptive_entropy gate.
    """
    mean_entropy = (entropy * mask).sum() / mask.sum().clamp(min=1.0)
    gate = (mean_entropy.detach() <= target).to(entropy.dtype)
    return gate * coef * mean_entropy
