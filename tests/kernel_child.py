"""For the child interpreters of the kernel tests (tests/test_landlock.py, tests/test_netns.py): each confines
itself, then tries things and reports, per attempt, "ok" or the OSError the kernel raised."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def recorder(report: dict[str, Any]) -> Callable[[str, Callable[[], Any]], None]:
    def attempt(name: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            report[name] = "ok"
        except OSError as exc:
            report[name] = exc.__class__.__name__

    return attempt
