"""A job entry that binds a unix socket where vLLM's engine would (VLLM_RPC_BASE_PATH, else TMPDIR) and where
it would without poise's setting (TMPDIR), then writes what happened, and the GPUs it sees, to ipc.json in its
job dir.

The socket is made by multiprocessing's Listener in a pool thread, so the frames that make it are the stdlib's,
as they would be vLLM's (trusted library code) in a real job; the audit hook only bans candidate sockets."""

import json
import os
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Listener

NAME = f"engine-core-input-{uuid.uuid4()}"  # the length of vLLM's names, and then some


def attempt(folder: str) -> str:
    """Bind in `folder`, then close the listener, which deletes the socket file in Python, as vLLM's shutdown
    does. The pool's thread runs both, so no candidate frame is on the stack, as for vLLM's own code."""
    path = os.path.join(folder, NAME)
    with ThreadPoolExecutor(1) as pool:
        try:
            listener = pool.submit(Listener, path, "AF_UNIX").result()
        except OSError as exc:
            return f"{exc.__class__.__name__}: {exc}"
        if not os.path.exists(path):
            return "no socket and no error"
        try:
            pool.submit(listener.close).result()
        except PermissionError as exc:
            return f"bound, not removed: {exc}"
    return "bound and removed" if not os.path.exists(path) else "bound, still there"


report = {"VLLM_RPC_BASE_PATH": os.environ.get("VLLM_RPC_BASE_PATH"), "name": NAME,
          "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
report["tmpdir"] = attempt(tempfile.gettempdir())
if report["VLLM_RPC_BASE_PATH"]:
    report["vllm_base"] = attempt(report["VLLM_RPC_BASE_PATH"])
with open("ipc.json", "w") as fh:  # the job's cwd is its job dir
    json.dump(report, fh)
sys.exit(0)
