"""The next round's proposals made while a candidate trains (core/prefetch.py), against the real engine,
archive, git repo and sandboxed jobs of recipe tiny, with the LLM served by FakeOpenAIServer over HTTP.

The overlap is read from the LLM double's clock (when each request arrived) against the candidates'
recorded history: a proposal that arrived between c001's `verified` and `evaluated` entries was made
while c001's training job ran, since nothing else happens in between.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from engine_support import (
    FULL_LIFE,
    FakeOpenAIServer,
    check_consistent,
    copy_run,
    kill_group,
    poise,
    read_engine_json,
    session_cache,
    start_engine,
    trained,
    wait_for,
)
from engine_support import base_run as _base_run

from core.archive import Archive, Candidate
from core.engine import reap_orphan_jobs
from core.inbox import command_outcomes, send_command
from core.llm.openai_compat import OpenAICompatLLM
from core.operators import CallRecord, Rejection, call_json
from core.prefetch import CancellableLLM, Prefetch, PrefetchCancelled, fingerprint, waited_parts

DIRECTIVE = "keep responses short"


class TimedServer(FakeOpenAIServer):
    """FakeOpenAIServer that also notes when each request arrived: (kind, time.time())."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[tuple[str, float]] = []
        self._arrival_lock = threading.Lock()

    def next_reply(self, kind: str) -> str:
        with self._arrival_lock:
            self.arrivals.append((kind, time.time()))
        return super().next_reply(kind)

    def times(self, kind: str) -> list[float]:
        return [t for k, t in self.arrivals if k == kind]


def at(cand, status: str) -> float:
    return next(h["at"] for h in cand.history if h["status"] == status)


def prompts(srv: FakeOpenAIServer) -> list[str]:
    return [body["messages"][-1]["content"] for kind, body in srv.requests if kind == "propose"]


# ------------------------------------------------------------------------------ parts, in milliseconds

def test_stale_reason_names_what_changed_since_the_snapshot(tmp_path: Path) -> None:
    arch = Archive.open(tmp_path, create=True)
    arch.add(Candidate(id="seed", origin="seed", status="evaluated"))
    arch.record_result("seed", 0, {"outcome": "evaluated", "overall": {"selection": 0.5}})
    arch.add(Candidate(id="c001", parent_ids=["seed"], status="verified"))
    pf = Prefetch(directive="d", parents=["seed"], known_ids=frozenset({"seed", "c001"}),
                  parent_prints={"seed": fingerprint(arch.get("seed"))}, rounds=1)
    arch.set_status("c001", "training")  # the candidate trained meanwhile moves on: still valid
    assert pf.stale_reason(arch, "d") == ""
    assert "directive changed to 'other'" in pf.stale_reason(arch, "other")
    arch.record_result("seed", 1, {"outcome": "evaluated", "overall": {"selection": 0.6}})  # a fresh seed (confirmation)
    assert pf.stale_reason(arch, "d") == "", "a new seed leaves what the prompt showed as it was"
    arch.set_status("seed", "training")  # re-evaluated right now
    assert "parent seed changed meanwhile (training)" in pf.stale_reason(arch, "d")
    arch.set_status("seed", "evaluated")
    arch.record_result("seed", 0, {"outcome": "evaluated", "overall": {"selection": 0.4}})  # a rerun of seed 0
    assert "parent seed changed meanwhile (seeds ['0'] rerun)" in pf.stale_reason(arch, "d")
    pf.parent_prints["seed"] = fingerprint(arch.get("seed"))
    arch.add(Candidate(id="c002", parent_ids=["seed"]))  # e.g. a fork's child
    assert "archive changed meanwhile (c002)" in pf.stale_reason(arch, "d")


def test_a_cancelled_prefetch_makes_no_more_llm_calls() -> None:
    cancelled = threading.Event()
    with FakeOpenAIServer() as srv:
        llm = CancellableLLM(OpenAICompatLLM(srv.base_url), cancelled)
        assert llm.chat([{"role": "user", "content": "hi"}]).text
        cancelled.set()
        with pytest.raises(PrefetchCancelled):
            llm.chat([{"role": "user", "content": "hi"}])
        # The operators turn it into a rejection, so a plan cut by a cancel ends at once.
        out = call_json(llm, [{"role": "user", "content": "hi"}], {"type": "object"}, CallRecord("propose"),
                        max_tokens=8, temperature=0.0, seed=0)
        assert isinstance(out, Rejection) and "dropped this background proposal" in out.reason
        assert len(srv.requests) == 1


def test_only_the_time_after_the_engine_began_waiting_counts_as_waited() -> None:
    from core.discovery import ChildPlan

    plans = [ChildPlan("a", "", started=0.0, finished=10.0), ChildPlan("b", "", started=10.0, finished=25.0)]
    assert waited_parts(plans, since=20.0) == [0.0, 5.0]
    assert waited_parts(plans, since=0.0) == [10.0, 15.0]


# ------------------------------------------------------------------------------ the engine, end to end

@pytest.mark.slow
def test_prefetch_overlaps_training_and_the_budget_caps_the_round(tmp_path_factory, tmp_path: Path) -> None:
    """Budget 3, two parents a round: each later proposal is made while the previous candidate trains, and
    the last round proposes for one parent although two are eligible (the budget has one candidate left)."""
    cache = session_cache(tmp_path_factory)
    with TimedServer(delay_s=0.3) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=3)
        _set_parents(run, 2)
        poise(["run", run], cache, timeout=900)
    cands = {c.id: c for c in check_consistent(run)}
    assert len(trained(list(cands.values()))) == 3
    assert sorted(cands) == ["c001", "c002", "c003", "seed"], [(c.id, c.status) for c in cands.values()]
    assert all([h["status"] for h in cands[c].history] == FULL_LIFE for c in ("c001", "c002", "c003"))
    # Round 3 had seed and c001 eligible; one proposal request per parent, so a second parent would show.
    assert len(srv.times("propose")) == 3
    first, second, third = srv.times("propose")
    assert first < at(cands["c001"], "proposed")  # the first round has nothing to overlap with
    for made, trainee in ((second, "c001"), (third, "c002")):
        assert at(cands[trainee], "verified") < made < at(cands[trainee], "evaluated"), (trainee, cands[trainee].history)
    for cid in ("c002", "c003"):
        costs = cands[cid].costs
        assert costs["overlapped_s"]["propose"] > 0 and costs["llm_tokens"] > 0, costs
        assert costs["wall_s"]["propose"] < costs["overlapped_s"]["propose"], costs  # the engine hardly waited
    assert "overlapped_s" not in cands["c001"].costs
    assert cands["c002"].parent_ids == ["seed"]  # chosen before c001 had a result: the price of the overlap
    assert read_engine_json(run)["state"] == "finished"


@pytest.mark.slow
def test_prefetch_off_proposes_after_reflection_and_caps_the_round(tmp_path_factory, tmp_path: Path) -> None:
    """Off is the sequential loop: propose, train, reflect, then the next proposal. Budget 2 with two
    parents a round: the second round has two eligible parents but creates only the one candidate left."""
    cache = session_cache(tmp_path_factory)
    with TimedServer() as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=2,
                       prefetch_proposals=False)
        _set_parents(run, 2)
        poise(["run", run], cache, timeout=900)
    cands = {c.id: c for c in check_consistent(run)}
    assert sorted(cands) == ["c001", "c002", "seed"] and len(trained(list(cands.values()))) == 2
    assert [k for k, _ in srv.arrivals] == ["propose", "reflect", "propose", "reflect"]
    assert srv.times("propose")[1] > at(cands["c001"], "reflected")
    assert all("overlapped_s" not in c.costs for c in cands.values())


@pytest.mark.slow
def test_directive_set_during_training_discards_the_prefetched_plan(tmp_path_factory, tmp_path: Path) -> None:
    cache = session_cache(tmp_path_factory)
    with TimedServer(delay_s=1.0) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=2)
        proc = _engine_prefetching(run, cache, srv, requests=2)
        try:
            cmd = send_command(run, "set_directive", directive=DIRECTIVE)
            assert proc.wait(timeout=600) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            reap_orphan_jobs(run / "jobs")
    assert next(o for o in command_outcomes(run) if o["id"] == cmd)["ok"]
    cands = {c.id: c for c in check_consistent(run)}
    assert sorted(cands) == ["c001", "c002", "seed"] and len(trained(list(cands.values()))) == 2
    texts = prompts(srv)
    assert len(texts) == 3 and DIRECTIVE not in texts[1] and DIRECTIVE in texts[2]
    assert cands["c002"].title.endswith("#2"), cands["c002"].title  # the fresh proposal, not the prefetched #1
    assert "overlapped_s" not in cands["c002"].costs
    # The discarded plan's call is still paid for, by the parent it was for.
    seed = cands["seed"]
    assert "propose_discarded" in seed.costs["wall_s"] and seed.costs["llm_tokens"] > 0, seed.costs


@pytest.mark.slow
def test_sigterm_or_kill_9_during_prefetch_loses_only_the_prefetch(tmp_path_factory, tmp_path: Path) -> None:
    """SIGTERM while a background proposal is in flight: the call is abandoned (LLMCancelled, the server
    request hung up), nothing is charged for it, and the engine exits cleanly. kill -9 at the same point:
    nothing of the prefetch was written. `poise run` then finishes."""
    cache = session_cache(tmp_path_factory)
    with TimedServer(delay_s=2.0) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=2)
        try:
            proc = _engine_prefetching(run, cache, srv, requests=2)
            t0 = time.time()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0 and time.time() - t0 < 30
            assert read_engine_json(run)["state"] == "stopped"
            cands = {c.id: c for c in check_consistent(run)}
            assert sorted(cands) == ["c001", "seed"], sorted(cands)
            seed_costs = cands["seed"].costs  # the abandoned call, made for this parent, is charged nowhere
            assert "propose_discarded" not in seed_costs["wall_s"] and seed_costs["llm_tokens"] == 0, seed_costs
            assert srv.arrivals[-1][0] == "propose"  # the call in flight was a proposal, and nothing came after

            proc = _engine_prefetching(run, cache, srv, requests=3)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert [c.id for c in check_consistent(run)] == ["seed", "c001"]  # the background round wrote nothing
            assert Archive.open(run, readonly=True).get("c001").status in ("verified", "training")
            poise(["run", run], cache, timeout=900)
        finally:
            reap_orphan_jobs(run / "jobs")
    cands = {c.id: c for c in check_consistent(run)}
    assert sorted(cands) == ["c001", "c002", "seed"] and len(trained(list(cands.values()))) == 2
    assert [h["status"] for h in cands["c002"].history] == FULL_LIFE
    assert read_engine_json(run)["state"] == "finished"


def _engine_prefetching(run: Path, cache: Path, srv: TimedServer, requests: int):
    """A started engine, returned once proposal request number `requests` arrived while c001 trains."""
    proc = start_engine(run, cache)

    def prefetching() -> bool:
        st = read_engine_json(run)
        return (len(srv.times("propose")) >= requests and st.get("pid") == proc.pid
                and st.get("stage") == "train" and st.get("candidate") == "c001")

    try:
        wait_for(prefetching, 300, f"proposal request {requests} while c001 trains", proc=proc, run=run, interval=0.02)
    except BaseException:
        kill_group(proc)
        raise
    return proc


def _set_parents(run: Path, n: int) -> None:
    from core.config import load_config, save_config

    cfg = load_config(run / "run.toml")
    cfg.search.selection.parents_per_round = n
    save_config(cfg, run / "run.toml")
