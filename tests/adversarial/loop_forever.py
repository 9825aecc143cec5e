"""Never returns from compute_advantages (it says so first, so a test can tell the loop from a slow start)."""

HPARAMS = {"lr": 1e-3}


def compute_advantages(batch, hp):
    print("entered the endless loop", flush=True)
    n = 0
    while True:
        n += 1


def compute_policy_loss(logprobs, batch, advantages, hp):
    return (logprobs * 0).sum(), {}
