"""A plain GRPO candidate (group-normalised advantages, PPO clip, k3 KL to the reference).

Tests and benchmarks of recipe `tiny` use it when the seed template
workspace/algorithm.py is not available; like any candidate it imports only torch
and the contract. HPARAMS are tuned for the tiny recipe's scale (a ~100K-parameter
model); 1e-5 as in the seed template workspace/algorithm.py. Higher lrs (1e-4, 3e-4) made
the warm start's arithmetic worse within 60 steps.
"""

from __future__ import annotations

import torch

HPARAMS = {
    "lr": 1e-5,
    "clip_eps": 0.2,
    "kl_coef": 0.04,
    "entropy_coef": 0.0,
    "max_grad_norm": 1.0,
    "eps": 1e-6,
}


def compute_advantages(batch, hp):
    """A_i = (R_i - mean_g) / (std_g + eps) over each group g. Returns [B]."""
    r = batch.rewards  # [B]
    _, inv = torch.unique(batch.group_ids, return_inverse=True)
    n = torch.zeros(int(inv.max()) + 1).index_add_(0, inv, torch.ones_like(r))  # [G]
    mean = torch.zeros_like(n).index_add_(0, inv, r) / n  # [G]
    var = torch.zeros_like(n).index_add_(0, inv, (r - mean[inv]) ** 2) / (n - 1).clamp(min=1)  # [G]
    return (r - mean[inv]) / (var[inv].sqrt() + hp["eps"])  # [B]


def compute_policy_loss(logprobs, batch, advantages, hp):
    """PPO-clip surrogate + kl_coef * k3 KL - entropy_coef * H, token mean. logprobs [B, T]."""
    mask = batch.response_mask  # [B, T]
    adv = advantages if advantages.dim() == 2 else advantages[:, None]  # [B, 1] or [B, T]
    ratio = torch.exp(logprobs - batch.old_logprobs)  # [B, T]
    clipped = ratio.clamp(1 - hp["clip_eps"], 1 + hp["clip_eps"])
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # [B, T]
    if batch.ref_logprobs is not None and hp["kl_coef"] > 0:
        d = batch.ref_logprobs - logprobs
        per_token = per_token + hp["kl_coef"] * (torch.exp(d) - d - 1)
    if batch.entropy is not None and hp["entropy_coef"] > 0:
        per_token = per_token - hp["entropy_coef"] * batch.entropy
    denom = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / denom
    clip_frac = (((ratio - clipped).abs() > 1e-8).float() * mask).sum() / denom
    return loss, {"clip_frac": float(clip_frac)}
