"""Malformed LLM output through the whole loop: the engine replays the malformed corpus (tests/data/malformed)
from an HTTP LLM double, never crashes, records every rejection with its reason in the archive, and stops
cleanly after MAX_EMPTY_ROUNDS empty rounds with a message that says what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_support import (
    FakeOpenAIServer,
    check_consistent,
    copy_run,
    poise,
    proposal,
    read_engine_json,
    session_cache,
    trained,
)
from engine_support import base_run as _base_run

from core.engine import MAX_EMPTY_ROUNDS

CORPUS = Path(__file__).parent / "data" / "malformed"
CASES = {c["file"]: c for c in json.loads((CORPUS / "cases.json").read_text())["pipeline"]}
PROPOSALS_PER_ROUND = 2

# Per change mode: the corpus files replayed as proposals, in order (then cycled).
BY_MODE = {
    "compose": ["truncated_json.txt", "wrong_schema.json", "unknown_mechanism.json", "missing_advantage.json",
                "edit_reply_in_compose_mode.json", "empty.txt", "prose_not_json.txt"],
    "edit": ["search_nomatch.json", "search_ambiguous.json", "noop_edit.json"],
    "rewrite": ["code_imports_os.json", "code_syntax_error.json", "missing_function.json", "huge_reply.txt"],
}
# The corpus reasons were written against a shorter parent and a stand-in static check; with the real ones:
EXTRA_REASONS = {"noop_edit.json": "no-op", "search_ambiguous.json": "block 2 of 2: SEARCH text is ambiguous",
                 "missing_function.json": "missing required top-level function `def compute_policy_loss"}


def corpus(name: str) -> str:
    return (CORPUS / name).read_text()


def replay(files: list[str]):
    return lambda i: corpus(files[i % len(files)])


@pytest.mark.parametrize("mode", list(BY_MODE))
def test_only_garbage_stops_cleanly_with_every_rejection_recorded(mode: str, tmp_path_factory, tmp_path: Path) -> None:
    cache = session_cache(tmp_path_factory)
    files = BY_MODE[mode]
    with FakeOpenAIServer(default_propose=replay(files)) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=2, change_mode=mode,
                       proposals_per_parent=PROPOSALS_PER_ROUND)
        out = poise(["run", run], cache, timeout=300, check=False)
    assert out.returncode == 1, out.stderr[-3000:]
    assert f"{MAX_EMPTY_ROUNDS} rounds in a row produced no usable proposal" in out.stderr
    state = read_engine_json(run)
    assert state["state"] == "stopped" and state["message"].startswith("error:") and "[llm] model_path" in state["message"]
    cands = check_consistent(run)
    rejected = [c for c in cands if c.id != "seed"]
    assert srv.counts["propose"] == MAX_EMPTY_ROUNDS * PROPOSALS_PER_ROUND
    assert len(rejected) == srv.counts["propose"], [(c.id, c.status) for c in rejected]  # one record per reply
    assert all(c.status == "rejected" and [h["status"] for h in c.history] == ["proposed", "rejected"] for c in rejected)
    assert not trained(cands)
    # Each reply's own reason is on exactly one record (within a round, parse failures are recorded before
    # screening failures, so the records are not in request order).
    reasons = [c.history[-1]["reason"] for c in rejected]
    for i in range(srv.counts["propose"]):
        name = files[i % len(files)]
        expected = EXTRA_REASONS.get(name) or CASES[name]["reason"]
        match = next((r for r in reasons if expected in r), None)
        assert match is not None, (name, expected, reasons)
        reasons.remove(match)


PROBE_FAILING = json.dumps({
    "title": "Clipped rewards", "motivation": "m", "mechanism": "x", "hypothesis": "h", "expected_signals": "e",
    "code": "import torch\nHPARAMS = {'lr': 1e-5}\n\n\ndef compute_advantages(batch, hp):\n    return batch.rewards[:1]  # wrong shape\n\n\n"
            "def compute_policy_loss(logprobs, batch, advantages, hp):\n    m = batch.response_mask\n"
            "    return -(logprobs * m).sum() / m.sum(), {}\n"})


def test_bad_replies_mid_loop_do_not_stop_a_good_candidate(tmp_path_factory, tmp_path: Path) -> None:
    """Garbage proposals, a malformed screening score and a malformed reflection around one valid proposal:
    the valid one is trained and reflected (with the numeric fallback), the rest are recorded rejections."""
    cache = session_cache(tmp_path_factory)
    # round 1: two unusable replies; round 2: two valid ones, so screening asks the LLM (and gets garbage)
    script = [corpus("truncated_json.txt"), corpus("unknown_mechanism.json"), proposal(0), proposal(1)]
    with FakeOpenAIServer(propose=script, screen=[corpus("screen_bad_score.json")],
                          reflect=[corpus("reflect_wrong_schema.json")]) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=1,
                       proposals_per_parent=PROPOSALS_PER_ROUND)
        poise(["run", run], cache, timeout=600)
    cands = check_consistent(run)
    (good,) = trained(cands)
    assert good.status == "reflected" and good.reflection["fallback"] and "does not match the schema" in good.reflection["error"]
    assert any("neutral score" in r for s in good.proposal["screening"] for r in s["reasons"])
    reasons = [c.history[-1]["reason"] for c in cands if c.status == "rejected"]
    assert len(reasons) == 2 and "not valid JSON" in reasons[0] and "is not one of" in reasons[1]
    assert srv.counts["screen"] == 2 and all(s["llm_scores"] for s in good.proposal["screening"])


def test_failed_verification_with_a_malformed_repair_is_rejected_with_its_reason(tmp_path_factory, tmp_path: Path) -> None:
    """Code that parses but breaks the contract fails the probes; the repair reply imports a forbidden module,
    so the bounded repair gives up and the candidate is rejected with the probe failure as its reason."""
    cache = session_cache(tmp_path_factory)
    with FakeOpenAIServer(propose=[PROBE_FAILING], repair=[corpus("repair_imports_os.json")],
                          default_propose=replay(["code_syntax_error.json"])) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=1, change_mode="rewrite",
                       repair_attempts=2)
        out = poise(["run", run], cache, timeout=300, check=False)
    assert out.returncode == 1, out.stderr[-3000:]
    cands = check_consistent(run)
    first = cands[1]
    assert first.title == "Clipped rewards" and first.status == "rejected", first.history
    assert [h["status"] for h in first.history] == ["proposed", "implemented", "rejected"]
    assert first.verification["stage"] == "probes" and not first.verification["ok"]
    assert first.history[-1]["reason"] and srv.counts["repair"] == 1  # the forbidden fix ended the repair loop
    assert "repair" in first.costs["wall_s"] and first.costs["llm_tokens"] > 0


def test_an_llm_server_that_is_down_stops_the_engine_and_rejects_nothing(tmp_path_factory, tmp_path: Path) -> None:
    """Unreachable is no verdict on a proposal: recording a rejection per call would burn the run's budget
    and end it with 'use a stronger model'. The engine stops at once and says what to do."""
    import socket

    cache = session_cache(tmp_path_factory)
    with socket.socket() as s:  # a loopback port that nothing listens on once this block ends
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", f"http://127.0.0.1:{port}/v1", budget=2)
    out = poise(["run", run], cache, timeout=300, check=False)
    assert out.returncode == 1, out.stderr[-3000:]
    state = read_engine_json(run)
    assert state["state"] == "stopped" and "cannot reach" in state["message"] and "server running" in state["message"]
    cands = check_consistent(run)
    assert [c.id for c in cands] == ["seed"], [(c.id, c.status, c.history[-1]["reason"]) for c in cands]
