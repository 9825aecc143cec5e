"""Elite confirmation: the best candidates are re-evaluated on fresh seeds before they count as the
run's best. Selection picked them on the seeds they were trained with, so their scores carry the
winner's curse; fresh seeds give an unbiased second look (POISE.md, "Weaknesses we must not copy").

A confirmed candidate carries the tag `confirmed`; its metrics then pool every seed it ran. The seed
(GRPO) is evaluated on the same fresh seeds once (Engine.evaluate_baseline): the paired difference to
the baseline then has pairs that selection never saw, and the report gives it on those alone.

Termination of confirmation (the engine asks `to_confirm` whenever it has nothing else to do):
each confirmation tags one candidate `confirmed` whatever its fresh seeds did ("looked at"), and
creates no candidate, so the unconfirmed scored candidates strictly decrease and the loop ends.
The winner's curse makes a confirmed elite tend to drop, which lets the next unconfirmed one into
the top k; `MAX_CONFIRM_ROUNDS` caps such a cascade at that many times k confirmations per burst
(the confirmations recorded since the newest candidate was created), so the cost stays bounded at
MAX_CONFIRM_ROUNDS * k * len(seeds) jobs per burst, plus len(seeds) for the baseline when its fresh
seeds are new. A new candidate starts a new burst, so with
`confirm_when = "each_round"` a later winner still gets its fresh seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.archive import Candidate

CONFIRMED_TAG = "confirmed"
SCORED = ("evaluated", "reflected")
# The history reason of the status move that ends a confirmation (counted for the burst cap).
CONFIRM_REASON = "confirmed on fresh seeds"
MAX_CONFIRM_ROUNDS = 2


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


def is_confirmed(cand: Candidate) -> bool:
    return CONFIRMED_TAG in (cand.tags or [])


def confirmations_since(archive, t: float) -> int:
    """Confirmations whose ending status move was recorded after time t."""
    return sum(1 for c in archive.all() for h in c.history
               if str(h.get("reason", "")).startswith(CONFIRM_REASON) and float(h.get("at", 0.0)) > t)


def to_confirm(archive, k: int) -> list:
    """The elites to confirm now: unconfirmed, reflected (no stage of theirs is pending), within the
    burst cap (module docstring). Empty when k <= 0, which turns confirmation off."""
    if k <= 0:
        return []
    newest = max((c.created_at for c in archive.all() if c.id != "seed"), default=0.0)
    left = MAX_CONFIRM_ROUNDS * k - confirmations_since(archive, newest)
    todo = [c for c in unconfirmed_elites(archive, k) if c.status == "reflected"]
    return todo[:max(left, 0)]


def best_confirmed(cands: Sequence[Candidate]) -> Candidate | None:
    """The run's best: the confirmed scored candidate (not the seed) with the highest selection Overall."""
    pool = [c for c in cands if c.status in SCORED and c.id != "seed" and is_confirmed(c)
            and selection_overall(c) is not None]
    return min(pool, key=lambda c: (-selection_overall(c), c.id), default=None)  # type: ignore[operator]
