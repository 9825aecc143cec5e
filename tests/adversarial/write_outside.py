"""Writes a file outside its job directory; the target path comes from POISE_TEST_TARGET."""

import os

with open(os.environ["POISE_TEST_TARGET"], "w") as fh:
    fh.write("escaped")

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    return batch.rewards


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * batch.response_mask).sum(), {}
