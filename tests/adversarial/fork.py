"""Forks at import time (the child would outlive the sandbox's bookkeeping)."""

import os

os.fork()

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    return batch.rewards


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * batch.response_mask).sum(), {}
