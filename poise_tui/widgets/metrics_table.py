"""Metrics of a candidate: per part and split, per seed, with paired differences to reference candidates."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from core.eval_noise import seeds_on_other_warm_starts
from core.stats import DEFAULT_INTERVAL
from poise_tui.pairing import paired_text
from poise_tui.rundata import per_seed, score_of, splits_of

PARTS = ("selection", "heldout")


def metric_rows(cand: Any, refs: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows (part, split, mean [CI], per seed, Δ vs each ref); refs maps a column name to a candidate or None."""
    unpaired = {name: _unpaired(cand, ref) for name, ref in refs.items()}
    rows = []
    for part in PARTS:
        for split in splits_of(cand, part):
            score = score_of(cand, part, split)
            mine = per_seed(cand, part, split)
            cells = [part, split, _score_text(score), " ".join(f"{s}:{v * 100:.1f}" for s, v in mine.items())]
            method = score.interval if score is not None else DEFAULT_INTERVAL
            cells += [paired_text(mine, per_seed(ref, part, split), method=method, unpaired=unpaired[name])
                      if ref is not None else "—" for name, ref in refs.items()]
            rows.append(tuple(cells))
    return rows


def _unpaired(cand: Any, ref: Any) -> list[str]:
    """Seeds the two trained from different warm starts: no pair on any split, so computed once per reference."""
    if ref is None:
        return []
    return seeds_on_other_warm_starts(getattr(cand, "results", None) or {}, getattr(ref, "results", None) or {})


def _score_text(score: Any) -> str:
    if score is None:
        return "—"
    return f"{score.mean * 100:.1f} [{score.lo * 100:.1f}, {score.hi * 100:.1f}]"


class MetricsTable(DataTable[str]):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(zebra_stripes=True, cursor_type="row", **kwargs)

    def show(self, cand: Any, refs: dict[str, Any]) -> None:
        self.clear(columns=True)
        self.add_columns("part", "split", "mean [95% CI]", "per seed", *(f"Δ {name}" for name in refs))
        rows = metric_rows(cand, refs) if cand is not None else []
        for row in rows:
            self.add_row(*row)
        if not rows:
            never = cand is not None and cand.status in ("rejected", "vetoed")  # the screen says why
            self.add_row("—", f"never evaluated ({cand.status})" if never else "not evaluated yet", "", "",
                         *("" for _ in refs))
