"""Fills its own worktree with torch.save inside compute_advantages: torch opens the files in C++, so the
audit hook (which keeps candidate code out of the worktree) never sees them, and Landlock allows the
worktree because the trainer writes there. Each file is under file_mb; only [limits] disk_mb stops it."""

import os

import torch

HPARAMS = {"lr": 1e-3}
HERE = os.path.dirname(os.path.abspath(__file__))


def compute_advantages(batch, hp):
    junk = torch.ones(1 << 20)  # 4 MiB of real blocks a file
    i = 0
    print("started filling the worktree", flush=True)
    while True:
        torch.save(junk, os.path.join(HERE, f"junk-{i:05d}.pt"))
        i += 1


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * 0).sum(), {}
