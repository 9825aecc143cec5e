"""The engine lock: one live engine per run, detected by pid + heartbeat, never silently stolen.

Taking the lock uses O_CREAT|O_EXCL on a side file so two engines starting at the same
moment cannot both win. A stale lock (dead pid, or heartbeat older than STALE_AFTER_S)
is reported in the returned message and then replaced; a live one raises.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Self

from core.errors import EngineLockedError
from core.jobspec import write_json_atomic
from core.runstate import STALE_AFTER_S, holder_is_alive, lock_path, pid_alive, process_start, read_lock

HEARTBEAT_S = 5.0


class EngineLock:
    """Held by the engine, and by the CLI commands that write the run outside it (`poise eval`, `verify`, `add`):
    the archive and the repo have one writer at a time. `task` names the holder in what others are told."""

    def __init__(self, run_dir: Path, task: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.task = task
        self.path = lock_path(self.run_dir)
        self.stale_note = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> EngineLock:
        guard = self.path.with_suffix(".acquire")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if self._guard_owner_alive(guard):
                raise EngineLockedError(f"another engine is starting on {self.run_dir}; try again in a few seconds") from None
            guard.unlink(missing_ok=True)  # left by a process killed mid-acquire
            return self.acquire()
        os.write(fd, str(os.getpid()).encode())
        try:
            self._check_existing()
            self._beat()
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._heartbeat_loop, name="engine-heartbeat", daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _guard_owner_alive(guard: Path) -> bool:
        """The guard holds its creator's pid; an unreadable one (killed before writing it) is judged by age."""
        try:
            return pid_alive(int(guard.read_text().strip()))
        except (OSError, ValueError):
            try:
                return time.time() - guard.stat().st_mtime < 2
            except OSError:
                return False

    def _check_existing(self) -> None:
        lock = read_lock(self.run_dir)
        if not lock:
            return
        pid, beat = int(lock.get("pid", 0)), float(lock.get("heartbeat", 0))
        age = time.time() - beat
        if pid == os.getpid():
            return
        if holder_is_alive(lock):
            task = lock.get("task", "")
            if age >= STALE_AFTER_S:
                raise EngineLockedError(
                    f"{'`' + task + '`' if task else 'an engine'} (pid {pid}) holds {self.run_dir} but its heartbeat "
                    f"is {age:.0f}s old: is it stopped (Ctrl-Z)? Continue it with `kill -CONT {pid}`, or end it")
            if task:
                raise EngineLockedError(f"`{task}` (pid {pid}) is writing {self.run_dir}; wait for it to finish")
            raise EngineLockedError(
                f"an engine (pid {pid}) is running on {self.run_dir} (heartbeat {age:.0f}s ago); "
                "attach with poise-tui or stop it with `poise send <dir> stop`"
            )
        why = "its process is gone" if not pid_alive(pid) else f"its heartbeat is {age:.0f}s old"
        self.stale_note = f"took over a stale lock of engine pid {pid} ({why})"

    def _beat(self) -> None:
        write_json_atomic(self.path, {"pid": os.getpid(), "started": process_start(os.getpid()), "heartbeat": time.time(),
                                      "host": os.uname().nodename, "task": self.task})

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except OSError:
                pass  # disk full or run dir removed: the engine notices on its next write

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        lock = read_lock(self.run_dir)
        if lock and int(lock.get("pid", 0)) == os.getpid():
            self.path.unlink(missing_ok=True)
