"""Raises while being imported."""

HPARAMS = {"lr": 1e-3}


def _broken_helper():
    raise RuntimeError("candidate exploded at import")


_broken_helper()
