"""kill -9 resume: SIGKILL the engine at many points of the loop, run `poise run` again, and check that the
archive and the git repo stay consistent and the budget is met with nothing lost or duplicated.

Kill points are reached in three ways: polling engine.json for a stage (propose and reflect are made
slow by the LLM double, verify and train are slow by nature), the POISE_FAULT hook for the instants
between two writes (git commit vs archive record, result vs status), and seeded random times.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
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
    read_engine_json,
    session_cache,
    start_engine,
    trained,
    wait_for,
)
from engine_support import base_run as _base_run

from core.engine import reap_orphan_jobs

ROOT = Path(__file__).resolve().parent.parent
from core.jobspec import read_metrics

STAGE_TOUR = [("stage", "propose"), ("fault", "implement:committed"), ("stage", "verify"), ("stage", "train"),
              ("stage", "reflect")]
WRITE_TOUR = [("fault", "propose:recorded"), ("fault", "verify:recorded"), ("fault", "train:result"),
              ("fault", "reflect:recorded")]
RANDOM_TOUR = [("random", 0), ("random", 1), ("random", 2)]


def job_processes(run: Path) -> list[int]:
    """Pids of live processes whose cwd is inside the run's job dirs (jobs left behind)."""
    root = str((run / "jobs").resolve())
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        if cwd.startswith(root):
            pids.append(int(entry.name))
    return pids


def kill_once(run: Path, cache: Path, how: str, arg) -> bool:
    """Start the engine and crash it at one point; returns when it is dead, and whether the kill landed
    (a random kill time can fall after a resumed engine has already finished the run)."""
    if how == "fault":
        proc = start_engine(run, cache, POISE_FAULT=arg)
        wait_for(lambda: proc.poll() is not None, 300, f"the engine to die at fault point {arg}", run=run)
        assert proc.returncode == -signal.SIGKILL, f"engine exited {proc.returncode} before reaching {arg}\n{engine_log(run)}"
        return True
    proc = start_engine(run, cache)
    if how == "stage":
        def at_stage() -> bool:
            st = read_engine_json(run)
            # propose names the parent (the seed); the seed's own reflection (no LLM) is not the point
            return st.get("pid") == proc.pid and st.get("stage") == arg and not (arg != "propose" and st.get("candidate") == "seed")

        wait_for(at_stage, 300, f"stage {arg}", proc=proc, run=run, interval=0.02)
    else:
        # Timed from the first published state: an engine killed while taking its lock leaves
        # engine.lock.acquire behind, which blocks the next start for 10 s by design (core/lock.py).
        wait_for(lambda: read_engine_json(run).get("pid") == proc.pid, 120, "the engine to start", proc=proc, run=run)
        # Jobs start warm (core/zygote.py), so a whole budget-1 run takes only a few seconds.
        if not _sleep_unless_exit(proc, random.Random(1000 + arg).uniform(0.3, 4.0)):
            assert proc.returncode == 0, engine_log(run)
            return False
    os.kill(proc.pid, signal.SIGKILL)  # only the engine, like `kill -9 <pid>`: its jobs live on as orphans
    proc.wait(timeout=30)
    return True


def _sleep_unless_exit(proc, delay: float) -> bool:
    """True when the engine is still running after `delay` (what we want), False when it ended first."""
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        return True
    return False


@pytest.mark.parametrize("tour", [STAGE_TOUR, WRITE_TOUR, RANDOM_TOUR], ids=["stages", "archive-writes", "random"])
def test_kill_9_anywhere_then_resume(tour, tmp_path_factory, tmp_path: Path) -> None:
    cache = session_cache(tmp_path_factory)
    with FakeOpenAIServer(delay_s=0.4) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=1)
        try:
            landed = []
            for how, arg in tour:
                landed.append(kill_once(run, cache, how, arg))
                check_consistent(run)
            assert landed[0], "the first kill must land mid-run, or the tour tests nothing"
            poise(["run", run], cache, timeout=600)
        finally:
            reap_orphan_jobs(run / "jobs")  # a failed test must not leave training jobs behind
    cands = check_consistent(run)
    done = trained(cands)
    assert len(done) == 1, [(c.id, c.status, [h["status"] for h in c.history]) for c in cands]
    c = done[0]
    assert [h["status"] for h in c.history] == FULL_LIFE, c.history  # nothing half-recorded, nothing recorded twice
    assert c.reflection and c.verification["ok"] and c.results["0"]["outcome"] == "evaluated"
    steps = [r["step"] for r in read_metrics(run / "jobs" / c.id / "0" / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 3, f"metrics of two attempts mixed: {steps}"
    assert not job_processes(run), "a job outlived the engine"
    assert read_engine_json(run)["state"] == "finished"
    assert srv.counts["reflect"] >= 1


def test_engine_start_reaps_jobs_left_by_a_killed_engine(tmp_path_factory, tmp_path: Path) -> None:
    """Jobs run in their own session and survive a kill -9 of the engine; they would keep writing into job
    directories that the resumed engine reuses. recover() kills them, and only them."""
    from core import sandbox
    from core.config import LimitsConfig
    from core.engine import Engine

    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    job_dir = run / "jobs" / "c001" / "0"
    orphan = sandbox.spawn("tests.adversarial.exit_job", ["sleep"], job_dir=job_dir, project_root=ROOT,
                           limits=LimitsConfig(timeout_s=60, memory_mb=3072, cpu_s=120, file_mb=16, nproc=256))
    users_shell = subprocess.Popen(["sleep", "120"], cwd=job_dir, start_new_session=True)  # a user looking in
    bystander = subprocess.Popen(["sleep", "120"], cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "sleeping" not in (job_dir / "stdout.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the job has started (it prints, then sleeps)
        assert sorted(job_processes(run)) == sorted([orphan.pid, users_shell.pid])
        Engine(run).recover()
        assert orphan.popen.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None and users_shell.poll() is None
        assert job_processes(run) == [users_shell.pid]
    finally:
        orphan.kill_group(grace_s=1)
        orphan.close()
        for p in (users_shell, bystander):
            p.kill()
            p.wait()


def test_poise_eval_reaps_the_jobs_of_a_killed_poise_eval(tmp_path_factory, tmp_path: Path) -> None:
    """`poise eval` holds the run's lock like the engine; killed with -9, it leaves its job running in the
    job dir the next `poise eval` of that candidate reuses, so that one reaps it first."""
    from core import sandbox
    from core.config import LimitsConfig
    from core.engine import Engine

    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    job_dir = run / "jobs" / "seed" / "1"
    orphan = sandbox.spawn("tests.adversarial.exit_job", ["sleep"], job_dir=job_dir, project_root=ROOT,
                           limits=LimitsConfig(timeout_s=60, memory_mb=3072, cpu_s=120, file_mb=16, nproc=256))
    try:
        deadline = time.monotonic() + 30
        while "sleeping" not in (job_dir / "stdout.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the job has started (it prints, then sleeps)
        assert job_processes(run) == [orphan.pid]
        seed = Engine(run).evaluate_candidate("seed", seeds=[0])  # seed 0 is scored already: no new job
        assert seed.results["0"]["outcome"] == "evaluated"
        assert orphan.popen.wait(timeout=10) == -signal.SIGKILL
        assert not job_processes(run)
    finally:
        orphan.kill_group(grace_s=1)
        orphan.close()
