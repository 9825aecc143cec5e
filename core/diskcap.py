"""`[limits] disk_mb`: how much a job may write under its job dir, all files together.

The kernel caps one file (RLIMIT_FSIZE, `file_mb`) but not their number, and Landlock lets a job write
anywhere beneath its job dir, so a candidate that writes files in a loop would fill the disk the whole run
shares (the archive, the engine's logs, every later job). There is no per-directory quota without root, so
the supervisor measures the job dir's allocated blocks twice a second, stops the job when it is over, and
deletes what it wrote. Between two measurements a job writing at ~1 GB/s overshoots by ~0.5 GB.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

DISK_POLL_S = 0.5
KEEP_BYTES = 1 << 20  # files up to this size are reports (spec, result, metrics, sandbox.txt) and stay
LOG_TAIL_BYTES = 64 << 10
LOGS = ("stdout.log", "stderr.log")


def disk_bytes(root: Path) -> int:
    """Bytes the files under root occupy on disk: allocated blocks, so a sparse file counts what it uses."""
    total, stack = 0, [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue  # deleted meanwhile
        except OSError:
            continue
    return total


class DiskWatch:
    """Measures one job dir at most every DISK_POLL_S; `exceeded()` says why the job must stop, once over."""

    def __init__(self, job_dir: Path, disk_mb: int) -> None:
        self.job_dir = Path(job_dir)
        self.disk_mb = int(disk_mb)
        self.fired = ""
        self._next = 0.0

    def exceeded(self) -> str:
        if self.disk_mb <= 0 or self.fired:
            return self.fired
        now = time.monotonic()
        if now < self._next:
            return ""
        self._next = now + DISK_POLL_S
        used = disk_bytes(self.job_dir)
        if used > self.disk_mb << 20:
            self.fired = (f"wrote {used >> 20} MiB under its job dir, over [limits] disk_mb = {self.disk_mb} "
                          "(what it wrote was deleted)")
        return self.fired


def reclaim(job_dir: Path) -> None:
    """After a job was stopped for its disk use (its processes are dead): delete every file over KEEP_BYTES
    and cut the logs to their last LOG_TAIL_BYTES, which hold the traceback."""
    for path in sorted(Path(job_dir).rglob("*"), reverse=True):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            if path.parent == Path(job_dir) and path.name in LOGS:
                if size > LOG_TAIL_BYTES:
                    _keep_tail(path, size)
            elif size > KEEP_BYTES or path.stat().st_blocks * 512 > KEEP_BYTES:
                path.unlink()
        except OSError:
            continue


def _keep_tail(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        fh.seek(size - LOG_TAIL_BYTES)
        tail = fh.read()
    path.write_bytes(b"[poise: the log was cut to its tail]\n" + tail)
