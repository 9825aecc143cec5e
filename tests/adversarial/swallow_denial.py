"""Tries to open a socket inside compute_advantages, swallows the refusal, and otherwise behaves."""

import socket

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)
    except OSError:
        pass  # pretend nothing happened
    return batch.rewards - batch.rewards.mean()


def compute_policy_loss(logprobs, batch, advantages, hp):
    loss = -(logprobs * advantages[:, None] * batch.response_mask).sum() / batch.response_mask.sum()
    return loss, {}
