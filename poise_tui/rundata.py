"""Everything the TUI reads from a run directory, in plain Python (no Textual).

Plain so it can run inside worker threads and be unit-tested without an app.
The archive is read only through `core.archive`, diffs only through
`core.workspace`; both are imported lazily so a missing or broken module shows
up as a message in the UI instead of a crash at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PoiseError
from core.inbox import command_outcomes
from core.jobspec import read_metrics
from core.runstate import EngineState, read_state
from core.stats import DEFAULT_INTERVAL

BASELINE_ID = "seed"
# (metrics.jsonl key, label shown in the Curves tab); order = the order `[` / `]` cycle through.
CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("reward_mean", "reward"),
    ("accuracy", "accuracy"),
    ("valid_rate", "validity"),
    ("entropy", "entropy"),
    ("kl", "KL"),
    ("response_length", "length"),
    ("grad_norm", "grad norm"),
    ("kept_frac", "kept by filter_groups"),  # logged only by candidates with a filter; 0 = no update that step
)
# A curve: metric key -> (steps, seed-averaged values).
Curve = dict[str, tuple[list[int], list[float]]]


class TuiError(PoiseError):
    """Something the TUI was asked to do cannot be done; the message says what to do instead."""


@dataclass(frozen=True)
class Score:
    """A mean with its confidence interval, as the archive stores it."""

    mean: float
    lo: float
    hi: float
    n: int = 0
    interval: str = DEFAULT_INTERVAL  # the method of lo/hi (the run's [stats] interval)

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2.0


def score_of(cand: Any, part: str = "selection", split: str = "overall") -> Score | None:
    """The candidate's score on one split of one part, or None when it has not been evaluated."""
    entry = ((getattr(cand, "metrics", None) or {}).get(part) or {}).get(split)
    if not entry or entry.get("mean") is None:
        return None
    mean = float(entry["mean"])
    return Score(mean, float(entry.get("lo", mean)), float(entry.get("hi", mean)), int(entry.get("n", 0)),
                 str(entry.get("interval", DEFAULT_INTERVAL)))


def per_seed(cand: Any, part: str, split: str) -> dict[str, float]:
    """Per-seed scores keyed by seed as a string (the archive may store a dict or a list)."""
    entry = ((getattr(cand, "metrics", None) or {}).get(part) or {}).get(split) or {}
    raw = entry.get("per_seed") or {}
    if isinstance(raw, list):
        seeds = list(getattr(cand, "seeds", None) or range(len(raw)))
        return {str(s): float(v) for s, v in zip(seeds, raw)}
    return {str(k): float(v) for k, v in raw.items()}


def parent_id(cand: Any) -> str | None:
    parents = getattr(cand, "parent_ids", None) or []
    return parents[0] if parents else None


def delta_to_parent(cand: Any, by_id: dict[str, Any]) -> float | None:
    parent = by_id.get(parent_id(cand) or "")
    mine, theirs = score_of(cand), score_of(parent) if parent is not None else None
    if mine is None or theirs is None:
        return None
    return mine.mean - theirs.mean


def why_not_run(cand: Any) -> str:
    """Why a candidate will never train or be scored (rejected, vetoed), in one line; "" when it may still be.

    A rejected candidate's reason is in its verification record (with the failed stage); a vetoed one's, or
    one rejected outside verification (a lost branch), only in its status history."""
    status = getattr(cand, "status", "")
    if status not in ("rejected", "vetoed"):
        return ""
    verdict = getattr(cand, "verification", None) or {}
    reason = "" if status == "vetoed" or verdict.get("ok") else str(verdict.get("reason") or "")
    if not reason:
        entries = [h for h in getattr(cand, "history", None) or [] if h.get("status") == status]
        reason = str(entries[-1].get("reason") or "") if entries else ""
    stage = verdict.get("stage") if status == "rejected" and not verdict.get("ok") else None
    where = f" at the {stage} stage" if stage else ""
    return f"{cand.id} was {status}{where}: {reason or 'no reason recorded'}"


def splits_of(cand: Any, part: str) -> list[str]:
    """Split names of one part, "overall" first."""
    names = list(((getattr(cand, "metrics", None) or {}).get(part) or {}).keys())
    return sorted(names, key=lambda n: (n != "overall", n))


def average_curve(runs: list[list[dict[str, Any]]]) -> Curve:
    """Average per-step metrics over seeds; a step missing in some seeds averages the ones that have it."""
    sums: dict[str, dict[int, list[float]]] = {}
    for rows in runs:
        for row in rows:
            step = int(row.get("step", 0))
            for key, _ in CURVE_METRICS:
                value = row.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    sums.setdefault(key, {}).setdefault(step, []).append(float(value))
    curve: Curve = {}
    for key, by_step in sums.items():
        steps = sorted(by_step)
        curve[key] = (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps])
    return curve


def as_displayed(line: str) -> str:
    """What a terminal would show of a log line: a progress bar (tqdm) redraws itself after `\r`, so only the
    text after the last `\r` is still visible; the rest would be one long line of stale redraws."""
    return line.rstrip("\r").rsplit("\r", 1)[-1]


def tail(path: Path, lines: int, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a file as a terminal shows them, reading at most max_bytes from its end (logs
    can be huge)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # Split on newlines only: splitlines() would also break at every `\r` of a progress bar.
    shown = [as_displayed(line) for line in data.split("\n")]
    if shown and not shown[-1]:
        shown.pop()  # the file's final newline
    return "\n".join(shown[-lines:])


def _written_at(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class RunReader:
    """Read-only view of one run directory. Not thread-safe: one per thread."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._archive: Any = None

    def archive(self) -> Any:
        """The run's Archive (readonly), or None while archive.json does not exist yet."""
        if self._archive is None:
            if not (self.run_dir / "archive.json").exists():
                return None
            from core.archive import Archive  # lazy: keeps the import path light and errors visible in the UI
            from core.config import stats_interval

            self._archive = Archive.open(self.run_dir, readonly=True, interval=stats_interval(self.run_dir))
        return self._archive

    def candidates(self) -> list[Any]:
        archive = self.archive()
        if archive is None:
            return []
        archive.refresh()
        return list(archive.all())

    def engine(self) -> EngineState:
        return read_state(self.run_dir)

    def outcomes(self) -> list[dict[str, Any]]:
        return command_outcomes(self.run_dir)

    def job_dirs(self, cand_id: str) -> list[Path]:
        """The candidate's job directories, one per seed, in seed order."""
        root = self.run_dir / "jobs" / cand_id
        if not root.is_dir():
            return []
        return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name))

    def curve(self, cand_id: str) -> Curve:
        return average_curve([read_metrics(d / "metrics.jsonl") for d in self.job_dirs(cand_id)])

    def log_tail(self, cand_id: str, lines: int = 60) -> str:
        """stdout and stderr tails of every seed, each under a header line; "" when no job has logged yet.
        The log written last comes last, so the newest output is at the bottom, where the Log scrolls to."""
        logs = [job / name for job in self.job_dirs(cand_id) for name in ("stdout.log", "stderr.log")]
        parts = []
        for path in sorted(logs, key=_written_at):
            text = tail(path, lines)
            if text:
                parts.append(f"── seed {path.parent.name} {path.name} ──\n{text}")
        return "\n".join(parts)

    def diff(self, cand_id: str, against: str = "parent") -> str:
        """Unified diff of the candidate's algorithm.py, or a message saying why there is none."""
        try:
            from core.workspace import Workspace
        except ImportError:
            return "# diffs need core/workspace.py, which this installation lacks"
        if not (self.run_dir / "repo").exists():
            return f"# no repo/ in {self.run_dir}; the engine creates it when the run starts"
        try:
            with Workspace.open(self.run_dir) as ws:
                return ws.diff(cand_id, against=against) or "# no changes"
        except PoiseError as exc:
            return f"# {exc}"

    def finished(self) -> bool:
        return self.engine().state == "finished"
