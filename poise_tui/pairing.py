"""Paired differences between two candidates over their shared seeds, formatted for tables.

The statistics are core.stats.paired_difference (the run's interval over shared seeds), the same
numbers the report shows; this module only turns them into short cells.
"""

from __future__ import annotations

from core.stats import DEFAULT_INTERVAL, StatsError, paired_difference


def paired_text(a: dict[str, float], b: dict[str, float], scale: float = 100.0, method: str = DEFAULT_INTERVAL) -> str:
    """"+1.2 [-0.3, +2.6]" for a - b over shared seeds, by interval `method` (the run's, as a's metric stores
    it); "—" when there is nothing to pair."""
    if not a or not b:
        return "—"
    try:
        d = paired_difference(a, b, method=method)
    except StatsError:
        return "no shared seeds"
    if d["n"] == 1:
        return f"{d['mean'] * scale:+.1f} (n=1)"
    return f"{d['mean'] * scale:+.1f} [{d['lo'] * scale:+.1f}, {d['hi'] * scale:+.1f}]"
