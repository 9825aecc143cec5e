"""Which files of a run changed since the last poll: by (mtime_ns, size), so polling costs a few stat calls."""

from __future__ import annotations

import os
from pathlib import Path

Stamp = tuple[int, int]


def stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def dir_stamp(path: Path, pattern: str) -> Stamp:
    """A combined stamp of every file matching pattern under path (new, grown or rewritten files change it)."""
    try:
        stamps = [stamp(p) for p in path.glob(pattern)]
    except OSError:
        return (0, 0)
    return (max((s[0] for s in stamps), default=0), sum(s[1] for s in stamps) + len(stamps))


class ChangeTracker:
    """Remembers the last stamp of each key; `changed` is True the first time and on every change."""

    def __init__(self) -> None:
        self._seen: dict[str, Stamp] = {}

    def changed(self, key: str, current: Stamp) -> bool:
        if self._seen.get(key) == current:
            return False
        self._seen[key] = current
        return True

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._seen if k.startswith(prefix)]:
            del self._seen[key]
