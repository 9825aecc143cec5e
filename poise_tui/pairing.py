"""Paired differences between two candidates over their shared seeds, formatted for tables.

The statistics are core.stats.paired_difference (the run's interval over shared seeds), the same
numbers the report shows; this module only turns them into short cells.
"""

from __future__ import annotations

from collections.abc import Collection

from core.stats import DEFAULT_INTERVAL, StatsError, interval_text, paired_difference


def paired_text(a: dict[str, float], b: dict[str, float], scale: float = 100.0, method: str = DEFAULT_INTERVAL,
                unpaired: Collection[str] = ()) -> str:
    """"+1.2 [-0.3, +2.6]" for a - b over shared seeds, by interval `method` (the run's, as a's metric stores
    it); "—" when there is nothing to pair. Seeds trained from other warm starts (`unpaired`) are left out;
    then the cell says how many seeds remain, or "other warm start" when none does."""
    if not a or not b:
        return "—"
    try:
        d = paired_difference(a, b, method=method, exclude=unpaired)
    except StatsError:
        return "other warm start" if unpaired else "no shared seeds"
    return interval_text(d, "+.1f", scale, n_suffix=" n={n}" if unpaired else "")
