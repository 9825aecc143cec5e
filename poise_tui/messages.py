"""Messages the run watcher posts to the screens (from a worker thread; post_message is thread-safe)."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from core.runstate import EngineState
from poise_tui.rundata import Curve


class ArchiveUpdated(Message):
    """archive.json changed: the full candidate list (the tree diffs it against what it shows)."""

    def __init__(self, candidates: list[Any]) -> None:
        super().__init__()
        self.candidates = candidates

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, (ArchiveUpdated, ArchiveUnreadable))


class ArchiveUnreadable(Message):
    """archive.json exists but cannot be read (corrupt): why, in core's words. The watcher keeps going."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, (ArchiveUpdated, ArchiveUnreadable))


class EngineUpdated(Message):
    def __init__(self, state: EngineState) -> None:
        super().__init__()
        self.state = state

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EngineUpdated)


class CurvesUpdated(Message):
    """Curves of the selected node, its parent and the baseline (high rate while training)."""

    def __init__(self, cand_id: str, curves: dict[str, Curve]) -> None:
        super().__init__()
        self.cand_id = cand_id
        self.curves = curves  # label ("c004", "parent c002", "baseline") -> Curve

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CurvesUpdated)


class LogsUpdated(Message):
    def __init__(self, cand_id: str, text: str) -> None:
        super().__init__()
        self.cand_id = cand_id
        self.text = text

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogsUpdated)


class OutcomesUpdated(Message):
    """Applied inbox commands (newest last)."""

    def __init__(self, outcomes: list[dict[str, Any]]) -> None:
        super().__init__()
        self.outcomes = outcomes


class DiffLoaded(Message):
    def __init__(self, cand_id: str, against: str, text: str) -> None:
        super().__init__()
        self.cand_id, self.against, self.text = cand_id, against, text
