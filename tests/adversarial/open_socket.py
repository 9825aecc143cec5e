"""Opens a TCP socket at import time."""

import socket

socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 9))

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    return batch.rewards


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * batch.response_mask).sum(), {}
