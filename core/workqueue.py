"""The engine's persistent queue of requested work (reruns, forks), so a kill -9 loses no request.

Commands from the inbox are first appended here (keyed by command id, so re-applying a
command after a crash does not duplicate it) and only then retired from the inbox.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import CorruptArchiveError
from core.jobspec import write_json_atomic

UNTOUCHED = ("it was not changed: fix it, or delete it to drop the queued reruns, forks and confirmations "
             "it holds")


class WorkQueue:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "queue.json"
        self.items: list[dict[str, Any]] = self._load()

    def _load(self) -> list[dict[str, Any]]:
        """The queued items; a damaged file is refused, not read as empty (the next push would overwrite the
        reruns, forks and confirmations it holds)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise CorruptArchiveError(f"{self.path}: cannot be read ({exc}); {UNTOUCHED}") from None
        if not isinstance(data, list) or not all(isinstance(x, dict) and "kind" in x for x in data):
            raise CorruptArchiveError(f"{self.path}: expected a list of queued items with a \"kind\"; {UNTOUCHED}")
        return data

    def _save(self) -> None:
        write_json_atomic(self.path, self.items)

    def push(self, kind: str, cmd_id: str, **args: Any) -> None:
        if any(x.get("cmd_id") == cmd_id for x in self.items):
            return
        self.items.append({"kind": kind, "cmd_id": cmd_id, **args})
        self._save()

    def peek(self) -> dict[str, Any] | None:
        return self.items[0] if self.items else None

    def pop(self, item: dict[str, Any]) -> None:
        self.items = [x for x in self.items if x.get("cmd_id") != item.get("cmd_id")]
        self._save()

    def describe(self) -> list[str]:
        return [f"{x['kind']} {x.get('id', '')}".strip() for x in self.items]
