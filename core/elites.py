"""Elite confirmation: the best candidates are re-evaluated on fresh seeds before they count as the
run's best. Selection picked them on the seeds they were trained with, so their scores carry the
winner's curse; fresh seeds give an unbiased second look (POISE.md, "Weaknesses we must not copy").

A confirmed candidate carries the tag `confirmed`; its metrics then pool every seed it ran.
"""

from __future__ import annotations

CONFIRMED_TAG = "confirmed"
SCORED = ("evaluated", "reflected")


def selection_overall(cand) -> float | None:
    m = (cand.metrics or {}).get("selection", {}).get("overall")
    return None if not m else float(m["mean"])


def elites(archive, k: int) -> list:
    """The top-k scored candidates (not the seed) by selection Overall, best first."""
    scored = [c for c in archive.all() if c.status in SCORED and c.id != "seed" and selection_overall(c) is not None]
    return sorted(scored, key=lambda c: (-selection_overall(c), c.id))[:k]  # type: ignore[operator]


def unconfirmed_elites(archive, k: int) -> list:
    return [c for c in elites(archive, k) if CONFIRMED_TAG not in (c.tags or [])]


def fresh_seeds(cand, run_seeds: list[int]) -> list[int]:
    """As many new seeds as the run uses, none of them seen by this candidate or the run before."""
    used = set(cand.seeds or []) | set(run_seeds)
    start = max(used) + 1 if used else 0
    return list(range(start, start + max(len(run_seeds), 1)))


def mark_confirmed(archive, cid: str) -> None:
    tags = list(archive.get(cid).tags or [])
    if CONFIRMED_TAG not in tags:
        archive.update(cid, tags=[*tags, CONFIRMED_TAG])
