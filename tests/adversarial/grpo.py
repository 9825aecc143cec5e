"""A well-behaved GRPO candidate (group-normalised advantages, clipped ratio, optional k3 KL)."""

import torch

from core.contract import RolloutBatch

HPARAMS = {"lr": 1e-3, "clip_eps": 0.2, "kl_coef": 0.01, "eps": 1e-6}


def compute_advantages(batch: RolloutBatch, hp: dict) -> torch.Tensor:
    groups = torch.unique(batch.group_ids)
    adv = torch.zeros_like(batch.rewards)                                  # [B]
    for g in groups:
        rows = batch.group_ids == g
        r = batch.rewards[rows]
        adv[rows] = (r - r.mean()) / (r.std(unbiased=False) + hp["eps"])
    return adv


def compute_policy_loss(logprobs, batch, advantages, hp):
    mask = batch.response_mask                                             # [B, T]
    ratio = torch.exp(logprobs - batch.old_logprobs)                       # [B, T]
    adv = advantages[:, None] if advantages.dim() == 1 else advantages     # [B, 1] or [B, T]
    clipped = torch.clamp(ratio, 1 - hp["clip_eps"], 1 + hp["clip_eps"])
    per_token = -torch.minimum(ratio * adv, clipped * adv)                 # [B, T]
    if batch.ref_logprobs is not None:
        d = batch.ref_logprobs - logprobs
        per_token = per_token + hp["kl_coef"] * (torch.exp(d) - d - 1)     # k3 estimator
    per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)         # [B]
    loss = per_seq.mean()
    clip_frac = ((ratio - clipped).abs() > 0).float().mul(mask).sum() / mask.sum()
    return loss, {"clip_frac": float(clip_frac)}
