"""A job entry that binds a unix socket where vLLM's engine would (VLLM_RPC_BASE_PATH, else TMPDIR) and where
it would without poise's setting (TMPDIR), then writes what happened, and the GPUs it sees, to ipc.json in its
job dir.

The socket is made by multiprocessing's Listener in a thread, so the frames that make it are the stdlib's,
as they would be vLLM's (trusted library code) in a real job; the audit hook only bans candidate sockets."""

import functools
import json
import os
import sys
import tempfile
import threading
import uuid
from multiprocessing.connection import Listener

NAME = f"engine-core-input-{uuid.uuid4()}"  # the length of vLLM's names, and then some


def attempt(folder: str) -> str:
    outcome = []
    path = os.path.join(folder, NAME)
    thread = threading.Thread(target=functools.partial(Listener, path, "AF_UNIX"))
    threading.excepthook = lambda args: outcome.append(f"{args.exc_type.__name__}: {args.exc_value}")
    thread.start()
    thread.join()
    if os.path.exists(path):
        return "bound"  # left for the test to delete: the audit hook allows no Python removal outside the job
    return outcome[0] if outcome else "no socket and no error"


report = {"VLLM_RPC_BASE_PATH": os.environ.get("VLLM_RPC_BASE_PATH"), "name": NAME,
          "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
report["tmpdir"] = attempt(tempfile.gettempdir())
if report["VLLM_RPC_BASE_PATH"]:
    report["vllm_base"] = attempt(report["VLLM_RPC_BASE_PATH"])
with open("ipc.json", "w") as fh:  # the job's cwd is its job dir
    json.dump(report, fh)
sys.exit(0)
