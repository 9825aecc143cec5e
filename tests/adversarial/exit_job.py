"""Ends in the way its argument names, to check that a job forked from the zygote exits as a fresh
interpreter would: `python -m tests.adversarial.exit_job <mode>`."""

import atexit
import sys
import threading
import time
from pathlib import Path


def late_write(name: str) -> None:
    time.sleep(0.3)
    Path(name).write_text("written")


mode = sys.argv[1]
if mode == "raise":
    raise RuntimeError("the job failed on purpose")
if mode == "exit3":
    sys.exit(3)
if mode == "exit_message":
    sys.exit("a message instead of a code")
if mode == "thread":  # a non-daemon thread outlives the main module: exit waits for it
    threading.Thread(target=late_write, args=("thread.txt",)).start()
if mode == "atexit":
    atexit.register(lambda: Path("atexit.txt").write_text("written"))
if mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(600)
print("done", mode, flush=True)
