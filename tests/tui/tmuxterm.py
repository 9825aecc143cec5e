"""A real terminal for end-to-end tests: tmux on a private socket, read by capture-pane.

A private socket (`tmux -L`) keeps the test's server apart from any tmux the developer (or a
parallel test) runs, and `close()` ends exactly that server. Sessions are started with an
explicit `env ...` prefix because a tmux server, once running, does not pass the client's
environment to new sessions.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, what: str, detail: Callable[[], str] | None = None,
         interval: float = 0.2) -> T:
    """predicate()'s first truthy value; fail after timeout seconds, naming `what` and showing detail()."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail() if detail else ''}")
        time.sleep(interval)


def candidate_ids(text: str) -> set[str]:
    """Archive node ids on a screen: the seed and c001, c002, ..."""
    return set(re.findall(r"\b(seed|c\d{3})\b", text))


class TmuxTerm:
    """One tmux server (private socket) holding the test's terminal sessions."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def _tmux(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check,
                              timeout=30)

    def start(self, name: str, argv: list[str], cwd: Path, env: Mapping[str, str], size: tuple[int, int] = (80, 24)
              ) -> None:
        """A detached session running argv in cwd with env, at size (columns, rows)."""
        assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        command = f"cd {shlex.quote(str(cwd))} && exec env {assigns} {shlex.join(argv)}"
        self._tmux("new-session", "-d", "-s", name, "-x", str(size[0]), "-y", str(size[1]), command, check=True)

    def screen(self, name: str) -> str:
        """What the session's pane shows now, one line per row ('' once the session is gone)."""
        return self._tmux("capture-pane", "-p", "-t", name).stdout

    def keys(self, name: str, *keys: str) -> None:
        """Key names as tmux knows them (Enter, Escape, f, ...)."""
        self._tmux("send-keys", "-t", name, *keys, check=True)

    def type(self, name: str, text: str) -> None:
        """Literal text, typed as it is (no key-name lookup)."""
        self._tmux("send-keys", "-t", name, "-l", text, check=True)

    def pane_pid(self, name: str) -> int:
        return int(self._tmux("display-message", "-p", "-t", name, "#{pane_pid}", check=True).stdout.strip())

    def has(self, name: str) -> bool:
        return self._tmux("has-session", "-t", name).returncode == 0

    def kill_session(self, name: str) -> None:
        """Close the session as closing a terminal window does: its processes get SIGHUP."""
        self._tmux("kill-session", "-t", name)

    def close(self) -> None:
        self._tmux("kill-server")
