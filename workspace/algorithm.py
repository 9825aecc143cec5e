"""GRPO, exactly as DeepSeekMath defines it: the seed of the search.

Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning
in Open Language Models" (arXiv 2402.03300), section 4.1 (outcome supervision):

  1. advantage  A_i = (R_i - mean(R_group)) / (std(R_group) + eps), the same for every token of response i;
  2. PPO clip   ratio = pi / pi_old, surrogate = min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A);
  3. KL         k3 estimator of KL(pi || pi_ref), added per token with weight beta;
  4. reduction  mean over the tokens of each response, then mean over responses.

This file is the whole algorithm. The trainer calls the three definitions at the
bottom with a RolloutBatch (see CONTRACT.md for every field and shape). Edit
anything; keep the function signatures, keep it deterministic and free of I/O,
and give padding tokens no gradient.
"""

from typing import Any

import torch

# ----------------------------------------------------------------------------------------------
# Hyperparameters. The trainer reads lr, max_grad_norm and kl_coef (kl_coef > 0 makes it keep a
# frozen reference model and fill batch.ref_logprobs); the functions below read the rest.
# ----------------------------------------------------------------------------------------------
HPARAMS: dict[str, Any] = {
    "lr": 1e-5,             # AdamW learning rate
    "max_grad_norm": 1.0,   # gradient-norm clip before each optimizer step
    "std_eps": 1e-4,        # keeps the advantage finite when all rewards of a group are equal
    "clip_eps": 0.2,        # PPO clip range: the ratio may move within [1 - eps, 1 + eps]
    "kl_coef": 0.04,        # beta: weight of the per-token KL penalty to the reference policy
}


# ----------------------------------------------------------------------------------------------
# Group statistics. group_ids say which prompt each response answers; the G responses of one
# prompt form a group. Ids need not be contiguous or sorted.
# ----------------------------------------------------------------------------------------------
def group_mean_std(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (Bessel-corrected, as torch.std) of each sample's group, both [B]."""
    _, idx = torch.unique(group_ids, return_inverse=True)  # [B] dense group index
    n_groups = int(idx.max()) + 1
    # new_zeros: on the rewards' device (CUDA in recipe math), so index_add does not mix devices
    count = rewards.new_zeros(n_groups).index_add(0, idx, torch.ones_like(rewards))  # [G]
    mean = rewards.new_zeros(n_groups).index_add(0, idx, rewards) / count  # [G]
    sq_dev = (rewards - mean[idx]) ** 2  # [B]
    var = rewards.new_zeros(n_groups).index_add(0, idx, sq_dev) / (count - 1).clamp(min=1)
    return mean[idx], var.sqrt()[idx]


# ----------------------------------------------------------------------------------------------
# 1. Advantages
# ----------------------------------------------------------------------------------------------
def compute_advantages(batch, hp: dict) -> torch.Tensor:
    """Group-normalised outcome advantage, one value per response: [B]."""
    mean, std = group_mean_std(batch.rewards, batch.group_ids)  # [B], [B]
    return (batch.rewards - mean) / (std + hp["std_eps"])


# ----------------------------------------------------------------------------------------------
# 2-4. Policy loss: clipped surrogate + k3 KL, reduced per sequence then over the batch
# ----------------------------------------------------------------------------------------------
def compute_policy_loss(logprobs: torch.Tensor, batch, advantages: torch.Tensor, hp: dict):
    """GRPO objective as a loss to minimise -> (scalar loss, metrics)."""
    mask = batch.response_mask  # [B, T], 0 on padding
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # [B, 1] or [B, T]

    ratio = torch.exp(logprobs - batch.old_logprobs)  # [B, T]
    eps = hp["clip_eps"]
    clipped_ratio = torch.clamp(ratio, 1 - eps, 1 + eps)
    per_token = -torch.min(ratio * adv, clipped_ratio * adv)  # [B, T]
    clipped = ((ratio < 1 - eps) & (adv < 0)) | ((ratio > 1 + eps) & (adv > 0))

    metrics = {"clip_frac": float((clipped * mask).sum() / mask.sum().clamp(min=1.0))}
    if batch.ref_logprobs is not None and hp["kl_coef"] != 0:
        # k3 = pi_ref/pi - log(pi_ref/pi) - 1: unbiased, always >= 0 (Schulman 2020).
        log_ref_ratio = batch.ref_logprobs - logprobs  # [B, T]
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
        per_token = per_token + hp["kl_coef"] * kl
        metrics["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1.0))

    # Mean over each response's own tokens, then over responses (padding contributes nothing).
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]
    return per_seq.mean(), metrics
