"""Returns a NaN loss (0/0): the probes must report it, a job must end diverged."""

import torch

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    return batch.rewards - batch.rewards.mean()


def compute_policy_loss(logprobs, batch, advantages, hp):
    per_token = -logprobs * advantages[:, None] * batch.response_mask
    loss = per_token.sum() * torch.tensor(float("nan"))
    return loss, {}
