"""Elite confirmation picks the best scored candidates and gives them seeds nobody has used."""

from __future__ import annotations

import time

from core.archive import Archive, Candidate
from core.elites import CONFIRMED_TAG, elites, fresh_seeds, mark_confirmed, unconfirmed_elites
from core.jobspec import JobResult


def scored(archive: Archive, cid: str, overall: float, seeds=(0, 1)) -> None:
    parent = [] if cid == "seed" else ["seed"]
    archive.add(Candidate(id=cid, title=cid, parent_ids=parent, status="proposed", seeds=list(seeds), created_at=time.time()))
    for st in ("implemented", "verified", "training"):
        archive.set_status(cid, st)
    for s in seeds:
        archive.record_result(cid, s, JobResult("evaluated", eval={"selection": {"a": overall}, "heldout": {"a": overall}},
                                                overall={"selection": overall, "heldout": overall}))
    archive.set_status(cid, "evaluated")


def test_elites_are_the_best_non_seed_and_confirmation_sticks(tmp_path):
    archive = Archive.open(tmp_path, create=True)
    for cid, u in (("seed", 0.9), ("c001", 0.3), ("c002", 0.7), ("c003", 0.5)):
        scored(archive, cid, u)
    assert [c.id for c in elites(archive, 2)] == ["c002", "c003"]
    mark_confirmed(archive, "c002")
    mark_confirmed(archive, "c002")
    assert archive.get("c002").tags.count(CONFIRMED_TAG) == 1
    assert [c.id for c in unconfirmed_elites(archive, 2)] == ["c003"]


def test_fresh_seeds_avoid_every_used_seed(tmp_path):
    archive = Archive.open(tmp_path, create=True)
    scored(archive, "seed", 0.5, seeds=(0, 1, 5))
    assert fresh_seeds(archive.get("seed"), [0, 1, 2]) == [6, 7, 8]
