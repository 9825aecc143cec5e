"""Inbox commands against a live engine (a `poise run` subprocess): pause/resume, set_directive, an unknown id,
rerun on new seeds, fork with a directive, veto, and stop (the running job is cancelled and resumes later)."""

from __future__ import annotations

from pathlib import Path

from engine_support import (
    FakeOpenAIServer,
    check_consistent,
    copy_run,
    engine_log,
    poise,
    read_engine_json,
    session_cache,
    start_engine,
    wait_for,
)
from engine_support import base_run as _base_run

from core.archive import Archive
from core.config import load_config, save_config
from core.engine import reap_orphan_jobs
from core.inbox import command_outcomes, send_command


def outcome(run: Path, cmd_id: str) -> dict | None:
    return next((o for o in command_outcomes(run) if o["id"] == cmd_id), None)


def applied(run: Path, cmd_id: str, proc, timeout: float = 120) -> dict:
    return wait_for(lambda: outcome(run, cmd_id), timeout, f"command {cmd_id} to be applied", proc=proc, run=run)


def status_of(run: Path, cid: str) -> str | None:
    arch = Archive.open(run, readonly=True)
    return arch.get(cid).status if cid in arch else None


def prompts(srv: FakeOpenAIServer) -> list[str]:
    return [body["messages"][-1]["content"] for kind, body in srv.requests if kind == "propose"]


def test_inbox_commands_steer_a_live_engine(tmp_path_factory, tmp_path: Path) -> None:
    cache = session_cache(tmp_path_factory)
    with FakeOpenAIServer(delay_s=0.2) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=1)
        cfg = load_config(run / "run.toml")
        cfg.tiny.steps = 30  # long enough that `stop` reliably lands while c002's job is still training
        cfg.early_kill.zero_reward_steps = 1000  # the 8-step warm start earns 0 reward: not a divergence here
        save_config(cfg, run / "run.toml")
        proc = start_engine(run, cache)
        try:
            _pause_and_commands_while_paused(run, proc, srv)
            _resume_rerun_fork_veto(run, proc, srv)
            _stop_cancels_training(run, proc, srv)
        finally:
            if proc.poll() is None:
                proc.kill()
            reap_orphan_jobs(run / "jobs")
        assert read_engine_json(run)["state"] == "stopped"
        assert status_of(run, "c002") == "training"  # the cancelled job reruns on resume
        poise(["run", run], cache, timeout=600)
    cands = {c.id: c for c in check_consistent(run)}
    c2 = cands["c002"]
    assert c2.status == "reflected" and c2.results["0"]["outcome"] == "evaluated"
    assert [h["status"] for h in c2.history] == ["proposed", "implemented", "verified", "training", "evaluated", "reflected"]


def _pause_and_commands_while_paused(run: Path, proc, srv: FakeOpenAIServer) -> None:
    pause = send_command(run, "pause")
    assert applied(run, pause, proc)["ok"]
    wait_for(lambda: read_engine_json(run).get("state") == "paused", 60, "state paused", proc=proc, run=run)
    bad = applied(run, send_command(run, "veto", id="c999"), proc)
    assert not bad["ok"] and "no candidate 'c999'" in bad["outcome"]
    bad_rerun = applied(run, send_command(run, "rerun", id="nope"), proc)
    assert not bad_rerun["ok"] and "no candidate 'nope'" in bad_rerun["outcome"]
    directive = applied(run, send_command(run, "set_directive", directive="shorter responses at equal accuracy"), proc)
    assert directive["ok"] and "shorter responses" in directive["outcome"]
    assert read_engine_json(run)["directive"] == "shorter responses at equal accuracy"  # what the TUI shows
    assert applied(run, send_command(run, "rerun", id="seed", seeds=[3]), proc)["ok"]
    assert applied(run, send_command(run, "fork", id="seed", directive="try sequence-level clipping"), proc)["ok"]
    # All of that was applied while paused: the loop listens, but started no new work.
    assert read_engine_json(run)["state"] == "paused" and srv.counts["propose"] == 0 and status_of(run, "c001") is None


def _resume_rerun_fork_veto(run: Path, proc, srv: FakeOpenAIServer) -> None:
    assert applied(run, send_command(run, "resume"), proc)["ok"]
    wait_for(lambda: status_of(run, "c001"), 180, "the fork's child c001", proc=proc, run=run)
    veto = applied(run, send_command(run, "veto", id="c001"), proc)
    assert veto["ok"], veto
    seed = Archive.open(run, readonly=True).get("seed")
    assert "3" in seed.results and 3 in seed.seeds and seed.metrics["selection"]["overall"]["n"] == 2
    # The rerun ends reflected: "re-evaluated" when the seed was reflected before the pause, else the pipeline
    # reflects it once after the rerun (a queued rerun owns the node until its seeds are done).
    assert seed.status == "reflected" and seed.history[-1]["reason"] in (
        "re-evaluated on seeds [3]", "no reflection (seed or ablation)"), [(h["status"], h["reason"][:40]) for h in seed.history]
    assert [h["status"] for h in seed.history][-3:] == ["training", "evaluated", "reflected"]
    assert "try sequence-level clipping" in prompts(srv)[0]  # the fork's directive reached the proposer
    assert status_of(run, "c001") == "vetoed"


def _stop_cancels_training(run: Path, proc, srv: FakeOpenAIServer) -> None:
    def training_c002() -> bool:
        st = read_engine_json(run)
        return st.get("stage") == "train" and st.get("candidate") == "c002" and "step" in st.get("message", "")

    wait_for(training_c002, 240, "c002 training", proc=proc, run=run)
    assert "shorter responses at equal accuracy" in prompts(srv)[1]  # set_directive reached the next round
    stop = send_command(run, "stop")
    assert proc.wait(timeout=60) == 0, engine_log(run)
    assert outcome(run, stop)["ok"]
    assert (run / "jobs" / "c002" / "0" / "result.json").exists()
    from core.jobspec import JobResult

    assert JobResult.load(run / "jobs" / "c002" / "0").outcome == "cancelled"
