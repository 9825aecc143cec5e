"""Elite confirmation: once the budget is spent (or each round), the best candidates are re-evaluated on fresh
seeds by the real engine before they count as the run's best; it costs no candidate budget, ends, survives
kill -9 and `stop`, and the report, `poise status` and the run's best only trust confirmed candidates.

The unit tests drive core.elites on a real archive; the engine tests run `poise run` (real jobs, git,
TinyDB) with the LLM served by FakeOpenAIServer, on copies of the session's base run (seed evaluated).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from engine_support import (
    FULL_LIFE,
    FakeOpenAIServer,
    check_consistent,
    copy_run,
    engine_log,
    poise,
    queued,
    read_engine_json,
    session_cache,
    start_engine,
    trained,
    wait_for,
    write_test_config,
)
from engine_support import base_run as _base_run

from core.archive import Archive, Candidate
from core.elites import (
    CONFIRM_REASON,
    MAX_CONFIRM_ROUNDS,
    best_confirmed,
    elites,
    is_confirmed,
    mark_confirmed,
    to_confirm,
)
from core.inbox import send_command
from core.jobspec import JobResult
from core.report import write_report

# ------------------------------------------------------------------------------------------ unit: the rule


def result(overall: float) -> JobResult:
    return JobResult("evaluated", eval={"selection": {"a": overall}, "heldout": {"a": overall}},
                     overall={"selection": overall, "heldout": overall})


def add_reflected(archive: Archive, cid: str, overall: float, seeds=(0,)) -> None:
    parent = [] if cid == "seed" else ["seed"]
    archive.add(Candidate(id=cid, title=cid, parent_ids=parent, status="proposed", seeds=list(seeds),
                          created_at=time.time()))
    for st in ("implemented", "verified", "training"):
        archive.set_status(cid, st)
    for s in seeds:
        archive.record_result(cid, s, result(overall))
    archive.set_status(cid, "evaluated")
    archive.set_status(cid, "reflected")


def confirm_like_the_engine(archive: Archive, cid: str, fresh_overall: float) -> None:
    """The archive moves of Engine.confirm, with a fresh seed that scored `fresh_overall`."""
    archive.set_status(cid, "training")
    archive.record_result(cid, 1, result(fresh_overall))
    archive.set_status(cid, "evaluated")
    archive.set_status(cid, "reflected", f"{CONFIRM_REASON} [1]")
    mark_confirmed(archive, cid)


def confirm_until_done(archive: Archive, k: int, fresh) -> list[str]:
    """Confirm what to_confirm asks for until it asks for nothing; fresh(cid) is the fresh seed's score."""
    done: list[str] = []
    for _ in range(100):  # far above any legal number of confirmations: a loop that never ends fails below
        todo = to_confirm(archive, k)
        if not todo:
            return done
        for c in todo:
            confirm_like_the_engine(archive, c.id, fresh(c.id))
            done.append(c.id)
    raise AssertionError(f"confirmation did not end: {done}")


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    arch = Archive.open(tmp_path, create=True)
    add_reflected(arch, "seed", 0.9)
    for i, u in enumerate((0.8, 0.7, 0.6, 0.5, 0.45, 0.3), 1):
        add_reflected(arch, f"c00{i}", u)
    return arch


def test_elites_that_hold_up_are_confirmed_once_and_the_rest_is_left_alone(archive: Archive) -> None:
    done = confirm_until_done(archive, 2, fresh=lambda cid: archive.get(cid).score())
    assert done == ["c001", "c002"]  # the top 2 (not the seed), each once
    assert best_confirmed(archive.all()).id == "c001"
    assert archive.get("c001").metrics["selection"]["overall"]["n"] == 2  # pooled over both seeds
    assert not any(is_confirmed(archive.get(c)) for c in ("seed", "c003", "c004"))


def test_a_winners_curse_cascade_is_capped_per_burst(archive: Archive) -> None:
    """Every fresh seed scores 0: each confirmed elite drops out and lets the next one in; the cap ends it."""
    done = confirm_until_done(archive, 2, fresh=lambda cid: 0.0)
    assert len(done) == MAX_CONFIRM_ROUNDS * 2 and done == ["c001", "c002", "c003", "c004"]
    # Unconfirmed c005 (0.45) now leads c001 ((0.8 + 0.0) / 2): the cap leaves it unconfirmed, and the run's
    # best stays the best confirmed candidate.
    assert [c.id for c in elites(archive, 2)] == ["c005", "c001"] and to_confirm(archive, 2) == []
    assert best_confirmed(archive.all()).id == "c001"


def test_a_new_candidate_starts_a_new_burst(archive: Archive) -> None:
    confirm_until_done(archive, 1, fresh=lambda cid: 0.0)
    assert to_confirm(archive, 1) == []
    time.sleep(0.01)  # created strictly after the last confirmation (history times are wall-clock)
    add_reflected(archive, "c007", 0.95)
    assert [c.id for c in to_confirm(archive, 1)] == ["c007"]


def test_zero_turns_confirmation_off_and_busy_elites_wait(archive: Archive) -> None:
    assert to_confirm(archive, 0) == [] and to_confirm(archive, -1) == []
    archive.set_status("c001", "training")  # a rerun in flight: not idle, not scored
    assert [c.id for c in to_confirm(archive, 1)] == ["c002"]


def test_report_and_best_trust_only_confirmed_candidates(archive: Archive, tmp_path: Path) -> None:
    confirm_like_the_engine(archive, "c002", 0.7)
    archive.close()
    text = write_report(tmp_path).read_text()
    summary = text.split("## Genealogy")[0]
    assert "Run's best (confirmed on fresh seeds): `c002` (c002)" in summary
    assert "Best by selection: `c001` (unconfirmed) (c001)" in summary
    table = text.split("## Best candidates")[1].split("###")[0]
    assert "| `c001` | c001 (unconfirmed) |" in table and "| `c002` | c002 |" in table
    assert "Mechanisms: confirmed" not in text and "Confirmed on fresh seeds; seeds run: 0, 1." in text


def test_the_report_pairs_a_confirmed_candidate_with_the_seed_on_the_fresh_seeds_alone(archive: Archive) -> None:
    from core.report import _fresh_line

    confirm_like_the_engine(archive, "c002", 0.7)  # seed 0: 0.7, fresh seed 1: 0.7
    archive.set_status("seed", "training")
    archive.record_result("seed", 1, result(0.85))  # seed 0: 0.9, fresh seed 1: 0.85
    seed, c002 = archive.get("seed"), archive.get("c002")
    # Over both seeds the difference is ((0.7 - 0.9) + (0.7 - 0.85)) / 2 = -0.175; on fresh seed 1 alone -0.15.
    line = _fresh_line(c002, seed, run_seeds=[0])
    assert "fresh seeds alone (1)" in line and "paired difference to the seed -0.150 (n=1)" in line
    assert _fresh_line(c002, seed, run_seeds=None) == "" and _fresh_line(c002, seed, run_seeds=[0, 1]) == ""


def test_the_report_shows_the_runs_best_below_the_top_n(archive: Archive, tmp_path: Path) -> None:
    confirm_like_the_engine(archive, "c005", 0.45)
    archive.close()
    text = write_report(tmp_path, top_n=2).read_text()
    table = text.split("## Best candidates")[1].split("###")[0]
    ranks = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert [(r.strip(), cid.strip()) for r, cid in ranks] == [("1", "`c001`"), ("2", "`c002`"), ("5", "`c005`")]
    assert "### `c005`: c005\n" in text


# ------------------------------------------------------------------------------------------ engine: real runs


@pytest.fixture
def cache(tmp_path_factory) -> Path:
    return session_cache(tmp_path_factory)


def candidate(run: Path, cid: str) -> Candidate:
    return Archive.open(run, readonly=True).get(cid)


def statuses(c: Candidate) -> list[str]:
    return [h["status"] for h in c.history]


def test_each_round_confirms_the_best_on_fresh_seeds_outside_the_budget(tmp_path_factory, tmp_path: Path,
                                                                           cache: Path) -> None:
    with FakeOpenAIServer() as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=2,
                       confirm_top_k=1, confirm_when="each_round")
        poise(["run", run], cache, timeout=600)
    cands = check_consistent(run)
    new = [c for c in cands if c.id != "seed"]
    assert len(new) == 2 and len(trained(cands)) == 2, [(c.id, c.status) for c in cands]
    # 2 proposals: c002's, made while c001 trained with the seed as its parent, is kept although c001's
    # confirmation then ran the seed on the fresh seed too (a new seed leaves what the prompt showed as it was).
    assert srv.counts["propose"] == 2 and "propose_discarded" not in candidate(run, "seed").costs.get("wall_s", {})
    assert candidate(run, "c002").costs["overlapped_s"]["propose"] > 0
    assert srv.counts["reflect"] == 2  # a confirmation reflects on nothing: no LLM call
    state = read_engine_json(run)
    assert state["state"] == "finished" and state["candidates_done"] == 2 and queued(run) == []
    # c001 was the only candidate, hence the top 1, before c002 was proposed: confirmed at once, on seed 1.
    c001, c002 = (candidate(run, c) for c in ("c001", "c002"))
    confirmed_at = next(h["at"] for h in c001.history if h["reason"].startswith(CONFIRM_REASON))
    assert is_confirmed(c001) and confirmed_at < c002.created_at
    for c in (c for c in new if is_confirmed(c)):
        assert sorted(c.results) == ["0", "1"] and c.seeds == [0, 1]  # seed 1 is fresh: the run's seeds are [0]
        assert c.metrics["selection"]["overall"]["n"] == 2 and c.metrics["heldout"]["overall"]["n"] == 2
        assert statuses(c) == [*FULL_LIFE, "training", "evaluated", "reflected"], c.history
        assert c.costs["wall_s"]["confirm"] > 0 and c.costs["wall_s"]["train"] > 0  # kept apart in the costs
    # Termination: the top 1 ends confirmed, or this burst (after c002) used its cap of confirmations.
    top = elites(Archive.open(run, readonly=True), 1)[0]
    assert is_confirmed(top) or sum(is_confirmed(c) for c in new) == 1 + MAX_CONFIRM_ROUNDS
    best = best_confirmed(Archive.open(run, readonly=True).all())
    assert f"best (confirmed): {best.id} " in poise(["status", run], cache).stdout
    poise(["report", run], cache)
    assert f"Run's best (confirmed on fresh seeds): `{best.id}`" in (run / "report" / "report.md").read_text()
    assert_baseline_paired_on_fresh_seeds(run, [1])


def assert_baseline_paired_on_fresh_seeds(run: Path, fresh: list[int]) -> None:
    """The seed ran the confirmation's fresh seeds too, kept its status, and is no confirmed candidate; so the
    paired difference of the run's best to it has pairs that selection never saw."""
    seed = candidate(run, "seed")
    assert seed.seeds == [0, *fresh] and seed.status == "reflected" and not is_confirmed(seed), seed.history
    assert seed.history[-1]["reason"].startswith(f"evaluated on seeds {fresh} as the baseline of "), seed.history
    assert seed.costs["wall_s"]["confirm"] > 0
    line = next(x for x in (run / "report" / "report.md").read_text().splitlines() if x.startswith("Run's best"))
    assert f"(n={1 + len(fresh)})." in line.split("paired difference to the seed")[1], line


def wait_confirm_job(run: Path, proc, cid: str = "c001") -> None:
    """Until the engine runs cid's confirmation job on fresh seed 1 (its job dir exists, no result yet)."""
    def running() -> bool:
        st = read_engine_json(run)
        return st.get("pid") == proc.pid and st.get("stage") == "confirm" and (run / "jobs" / cid / "1").exists()

    wait_for(running, 300, f"{cid}'s confirmation job", proc=proc, run=run, interval=0.02)


def assert_mid_confirmation(run: Path, training: str = "c001") -> None:
    c = candidate(run, training)
    assert c.status == "training" and "1" not in c.results and not is_confirmed(candidate(run, "c001")), c.history
    assert [(x["kind"], x["id"], x["seeds"], x["baseline"]) for x in queued(run)] == [("confirm", "c001", [1], "seed")]


def test_confirmation_survives_stop_and_kill_9_and_zero_turns_it_off(tmp_path_factory, tmp_path: Path,
                                                                        cache: Path) -> None:
    with FakeOpenAIServer() as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=1, confirm_top_k=0)
        poise(["run", run], cache, timeout=600)
        c001 = candidate(run, "c001")
        assert statuses(c001) == FULL_LIFE and not is_confirmed(c001) and queued(run) == []  # 0 = off
        assert "best (selection): " in poise(["status", run], cache).stdout

        write_test_config(run, srv.base_url, budget=1, confirm_top_k=1)
        proc = start_engine(run, cache)  # the budget is spent: straight to the confirmation
        wait_confirm_job(run, proc)
        send_command(run, "stop")
        assert proc.wait(timeout=120) == 0, engine_log(run)
        assert read_engine_json(run)["state"] == "stopped"
        assert_mid_confirmation(run)

        proc = start_engine(run, cache)
        wait_confirm_job(run, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the engine only: its job lives on until the next start reaps it
        proc.wait(timeout=30)
        assert_mid_confirmation(run)

        # Killed again between the fresh seed's result and the end of the confirmation: c001 is `evaluated`,
        # which the pipeline would reflect on again; the queued confirmation owns it instead.
        proc = start_engine(run, cache, POISE_FAULT="confirm:evaluated")
        assert proc.wait(timeout=300) == -signal.SIGKILL, engine_log(run)
        assert candidate(run, "c001").status == "evaluated" and len(queued(run)) == 1

        # Killed during the baseline's job on the fresh seed: c001 is confirmed, the item (and the seed) wait.
        proc = start_engine(run, cache)
        wait_confirm_job(run, proc, "seed")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        seed = candidate(run, "seed")
        assert seed.status == "training" and "1" not in seed.results and is_confirmed(candidate(run, "c001"))
        assert [x["id"] for x in queued(run)] == ["c001"]

        poise(["run", run], cache, timeout=600)
    c001 = candidate(run, "c001")
    assert is_confirmed(c001) and sorted(c001.results) == ["0", "1"] and c001.seeds == [0, 1]
    assert c001.metrics["selection"]["overall"]["n"] == 2
    assert statuses(c001) == [*FULL_LIFE, "training", "evaluated", "reflected"], c001.history
    assert sorted(p.name for p in (run / "jobs" / "c001").iterdir() if p.name.isdigit()) == ["0", "1"]
    seed = candidate(run, "seed")
    assert seed.seeds == [0, 1] and seed.status == "reflected" and statuses(seed)[-3:] == ["training", "evaluated", "reflected"]
    assert srv.counts["propose"] == 1 and srv.counts["reflect"] == 1  # no new candidate, no second reflection
    state = read_engine_json(run)
    assert state["state"] == "finished" and state["candidates_done"] == 1 and queued(run) == []
    check_consistent(run)


def test_the_tree_marks_confirmed_candidates_only() -> None:
    from poise_tui.widgets.archive_tree import ArchiveTree

    tree = ArchiveTree()
    tree._cands = {c.id: c for c in (Candidate(id="c001", title="t", status="reflected", tags=["grpo", "confirmed"]),
                                     Candidate(id="c002", title="t", status="reflected", tags=["grpo"]))}
    assert "✓" in tree._label("c001").plain and "✓" not in tree._label("c002").plain


@pytest.mark.parametrize("fresh_outcome", ["evaluated", "diverged"])
def test_a_fresh_seed_that_fails_is_no_confirmation(tmp_path_factory, tmp_path: Path, fresh_outcome: str) -> None:
    """Engine.confirm on a real run; the re-evaluation itself is a fake (it records one fresh seed's outcome),
    since this is about what confirm concludes from it: a diverged fresh seed leaves the mean resting on the
    seeds that selected the candidate, so it is not tagged confirmed, and the history says why."""
    from core.engine import Engine

    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    engine = Engine(run)

    def fake_reevaluate(cid: str, seeds: list[int], stage: str):
        engine.archive.set_status(cid, "training")
        outcome = result(0.5) if fresh_outcome == "evaluated" else JobResult("diverged", "KL 9.1 > max_kl 5")
        engine.archive.record_result(cid, seeds[0], outcome)
        engine.archive.set_status(cid, fresh_outcome)
        return engine.archive.get(cid)

    engine.reevaluate = fake_reevaluate
    assert engine.confirm({"id": "seed", "seeds": [7]})
    seed = engine.archive.get("seed")
    assert seed.status == "reflected" and is_confirmed(seed) == (fresh_outcome == "evaluated")
    if fresh_outcome == "diverged":
        assert "not confirmed: seed 7 diverged" in seed.history[-1]["reason"]
