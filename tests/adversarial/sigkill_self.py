"""Sends SIGKILL to its own process at import time."""

import os
import signal

os.kill(os.getpid(), signal.SIGKILL)

HPARAMS = {"lr": 1e-3}
