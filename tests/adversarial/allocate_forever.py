"""Allocates memory without bound inside compute_advantages."""

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    hoard = []
    while True:
        hoard.append(bytearray(64 * 1024 * 1024))  # the allocation that must fail


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * 0).sum(), {}
