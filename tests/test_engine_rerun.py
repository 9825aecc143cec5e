"""A user's `rerun <id>` survives kill -9 and `stop`: it resumes on the seeds fixed when it was queued,
and the pipeline never takes the half-rerun candidate for an unfinished one (it would train it on the
run's seeds and reflect on it again). Real engine, jobs, git and TinyDB; the LLM is FakeOpenAIServer."""

from __future__ import annotations

import os
import signal
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
    wait_for,
)
from engine_support import base_run as _base_run

from core.archive import Archive
from core.engine import Engine
from core.errors import PoiseError
from core.inbox import send_command


def c001(run: Path):
    return Archive.open(run, readonly=True).get("c001")


def wait_rerun_job(run: Path, proc) -> None:
    def running() -> bool:
        st = read_engine_json(run)
        return st.get("pid") == proc.pid and (run / "jobs" / "c001" / "1").exists()

    wait_for(running, 300, "c001's rerun job on seed 1", proc=proc, run=run, interval=0.02)


def test_rerun_resumes_on_its_seeds_after_kill_and_stop(tmp_path_factory, tmp_path: Path) -> None:
    cache = session_cache(tmp_path_factory)
    with FakeOpenAIServer() as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=1, confirm_top_k=0)
        poise(["run", run], cache, timeout=600)
        assert [h["status"] for h in c001(run).history] == FULL_LIFE

        send_command(run, "rerun", id="c001")  # applied when the engine starts; fresh seed 1 (run seeds [0])
        proc = start_engine(run, cache)
        wait_rerun_job(run, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert c001(run).status == "training"
        assert [(x["kind"], x["id"], x["seeds"], x["was"]) for x in queued(run)] == [("rerun", "c001", [1], "reflected")]
        with pytest.raises(PoiseError, match="cannot rerun c001: it is training"):
            Engine(run).queue_rerun("by-hand", "c001", None)

        proc = start_engine(run, cache)
        wait_rerun_job(run, proc)
        send_command(run, "stop")
        assert proc.wait(timeout=120) == 0, engine_log(run)
        assert c001(run).status == "training" and len(queued(run)) == 1  # a stopped rerun stays queued

        poise(["run", run], cache, timeout=600)
    c = c001(run)
    assert c.status == "reflected" and sorted(c.results) == ["0", "1"] and c.seeds == [0, 1]
    assert [h["status"] for h in c.history] == [*FULL_LIFE, "training", "evaluated", "reflected"], c.history
    assert sorted(p.name for p in (run / "jobs" / "c001").iterdir() if p.name.isdigit()) == ["0", "1"]
    assert c.costs["wall_s"]["rerun"] > 0  # the rerun's jobs are not added to the first training's time
    assert srv.counts["reflect"] == 1 and srv.counts["propose"] == 1  # no second reflection, no new candidate
    assert queued(run) == [] and read_engine_json(run)["state"] == "finished"
    check_consistent(run)
