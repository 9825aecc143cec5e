"""Starts a shell command through subprocess at import time; it would create a marker file."""

import subprocess

subprocess.run(["sh", "-c", "touch spawned_marker"], check=True)

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    return batch.rewards


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * batch.response_mask).sum(), {}
