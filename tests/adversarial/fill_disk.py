"""Writes files into its job dir without end inside compute_advantages: each one is under the file-size
cap (RLIMIT_FSIZE), only their number is unbounded."""

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    chunk = b"\1" * (4 << 20)  # not sparse: real blocks
    i = 0
    print("started filling the disk", flush=True)
    while True:
        with open(f"junk-{i:06d}.bin", "wb") as fh:  # the job's cwd is its job dir
            fh.write(chunk)
        i += 1


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * 0).sum(), {}
