"""`[limits] disk_mb`: how much a job may write under its job dir, all files together.

The kernel caps one file (RLIMIT_FSIZE, `file_mb`) but not their number, and Landlock lets a job write
anywhere beneath its job dir, so a candidate that writes files in a loop would fill the disk the whole run
shares (the archive, the engine's logs, every later job). There is no per-directory quota without root, so
the supervisor measures the job dir's allocated blocks twice a second, stops the job when it is over, and
deletes what it wrote. Between two measurements a job writing at ~1 GB/s overshoots by ~0.5 GB.

Every file, directory and link counts at least one 4 KiB block, even when empty: otherwise a loop making empty
files would cost nothing while it used up the file system's inodes (4096 MiB then allows ~1M entries).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.jobspec import remove_path

DISK_POLL_S = 0.5
KEEP_BYTES = 1 << 20  # files up to this size are reports (spec, result, metrics, sandbox.txt) and stay
LOG_TAIL_BYTES = 64 << 10
LOGS = ("stdout.log", "stderr.log")
ENTRY_MIN_BYTES = 4096
# What trusted code writes at the top of a job dir, kept even among junk.
REPORTS = frozenset({"spec.json", "result.json", "metrics.jsonl", "probe.json", "eval_progress.json", "sandbox.txt",
                     "sandbox_violations.log", *LOGS})
MAX_KEPT_FILES = 64  # more small files than this at the top of a stopped job dir are junk, not reports


def disk_bytes(root: Path, skip: str = "") -> int:
    """Bytes the entries under root occupy on disk: allocated blocks, so a sparse file counts what it uses, and
    at least ENTRY_MIN_BYTES an entry, so a million empty files count 4 GiB, not 0. `skip`: a dir left out."""
    total, stack = 0, [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if entry.path == skip:
                                continue
                            stack.append(entry.path)
                        total += max(entry.stat(follow_symlinks=False).st_blocks * 512, ENTRY_MIN_BYTES)
                    except OSError:
                        continue  # deleted meanwhile
        except OSError:
            continue
    return total


class DiskWatch:
    """Measures one job dir at most every DISK_POLL_S; `exceeded()` says why the job must stop, once over.

    `worktrees` are dirs the job may also write (Landlock allows the candidate's worktree, where C-level
    writes such as torch.save's escape the audit hook): what they grow by from this watch's creation counts
    too, and `reclaim` deletes what was added to them. Create the watch before the job starts. The model
    cache is not watched: jobs running side by side share it, so its growth cannot be charged to one."""

    def __init__(self, job_dir: Path, disk_mb: int, worktrees: tuple[str | Path, ...] | list = ()) -> None:
        self.job_dir = Path(job_dir)
        self.disk_mb = int(disk_mb)
        self.fired = ""
        self._next = 0.0
        self._skip = str(self.job_dir.resolve())  # a job dir inside a worktree (tests do that) counts once
        resolved = [Path(d).resolve() for d in worktrees] if self.disk_mb > 0 else []
        self._worktrees = {d: (disk_bytes(d, self._skip), entries(d, self._skip)) for d in resolved}

    def exceeded(self) -> str:
        if self.disk_mb <= 0 or self.fired:
            return self.fired
        now = time.monotonic()
        if now < self._next:
            return ""
        self._next = now + DISK_POLL_S
        grown = sum(max(0, disk_bytes(d, self._skip) - base) for d, (base, _) in self._worktrees.items())
        used = disk_bytes(self.job_dir) + grown
        if used > self.disk_mb << 20:
            where = "its job dir" + (" and its worktree" if self._worktrees else "")
            self.fired = (f"wrote {used >> 20} MiB under {where}, over [limits] disk_mb = {self.disk_mb} "
                          "(what it wrote was deleted)")
        return self.fired

    def reclaim(self) -> None:
        """After the job was stopped for its disk use: `reclaim` of the job dir, and every entry added to the
        worktrees since the watch was made (a checkout holds nothing else that is new)."""
        reclaim(self.job_dir)
        for folder, (_, before) in self._worktrees.items():
            for added in sorted(entries(folder, self._skip) - before, key=lambda p: p.count(os.sep), reverse=True):
                remove_path(folder / added)


def entries(root: Path, skip: str = "") -> set[str]:
    """Every path under root, relative to it (a checkout: a few files), but none in the dir `skip`."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != skip]
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            found.add(name if rel == "." else os.path.join(rel, name))
    return found


def reclaim(job_dir: Path) -> None:
    """After a job was stopped for its disk use (its processes are dead): delete every subdirectory, every
    file over KEEP_BYTES, and, when the top holds more than MAX_KEPT_FILES small files, all of them but the
    reports; cut the logs to their last LOG_TAIL_BYTES, which hold the traceback."""
    job_dir = Path(job_dir)
    try:
        entries = list(os.scandir(job_dir))
    except OSError:
        return
    small = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                remove_path(Path(entry.path))
            elif entry.name in LOGS:
                size = entry.stat(follow_symlinks=False).st_size
                if size > LOG_TAIL_BYTES:
                    _keep_tail(Path(entry.path), size)
            elif _occupied(entry) > KEEP_BYTES:
                os.unlink(entry.path)
            else:
                small.append(entry)
        except OSError:
            continue
    if len(small) > MAX_KEPT_FILES:
        for entry in small:
            if entry.name not in REPORTS:
                _unlink_quietly(entry.path)


def _occupied(entry: os.DirEntry) -> int:
    st = entry.stat(follow_symlinks=False)
    return max(st.st_size, st.st_blocks * 512)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _keep_tail(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        fh.seek(size - LOG_TAIL_BYTES)
        tail = fh.read()
    path.write_bytes(b"[poise: the log was cut to its tail]\n" + tail)
