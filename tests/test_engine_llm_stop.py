"""A stop that arrives while an LLM call runs ends the call (LLMCancelled), and the engine stops cleanly:
no proposal is rejected for it, the archive and repo stay consistent, and `poise run` resumes.

The engine, archive, git repo and jobs are real and run in this process; the LLM is FakeInterruptedLLM,
which plays a user sending `stop` in the middle of its generation (the real backend's part, ending a
llama.cpp generation at the next token, is tested in tests/test_llm_stop.py)."""

from __future__ import annotations

from pathlib import Path

from engine_support import FakeOpenAIServer, check_consistent, copy_run, poise, read_engine_json, session_cache
from engine_support import base_run as _base_run

from core.engine import Engine
from core.errors import LLMCancelled
from core.inbox import send_command
from core.llm.base import StoppableLLM


class FakeInterruptedLLM:
    """Stands in for the model: each call receives a `stop` from the user mid-generation, then ends as
    the real backend does once its should_stop check sees it."""

    n_ctx = 16384

    def __init__(self, run: Path) -> None:
        self.run, self.calls, self.stopped = run, 0, 0

    def chat(self, messages, *, should_stop=None, **kwargs):
        self.calls += 1
        send_command(self.run, "stop")
        if should_stop is not None and should_stop():
            self.stopped += 1
            raise LLMCancelled("LLM call stopped after 7 generated tokens (0.3 s)", 7)
        raise AssertionError("the engine's stop request did not reach the LLM call")

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


def test_a_stop_during_a_proposal_call_stops_the_engine_and_resume_finishes(
        tmp_path_factory, tmp_path: Path, monkeypatch) -> None:
    cache = session_cache(tmp_path_factory)
    monkeypatch.setenv("POISE_CACHE_DIR", str(cache))
    with FakeOpenAIServer() as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=1, prefetch_proposals=False)
        before = {c.id for c in check_consistent(run)}
        engine = Engine(run)
        fake = FakeInterruptedLLM(run)
        engine.discovery._llm = StoppableLLM(fake, engine.cancel_requested)  # what Discovery.llm builds, on the fake
        assert engine.run(budget=1) == 0
        assert fake.calls == 1 and fake.stopped == 1  # the first proposal call was ended, nothing after it ran
        assert read_engine_json(run)["state"] == "stopped"
        cands = check_consistent(run)
        assert {c.id for c in cands} == before  # nothing recorded, in particular no rejection for the stop
        assert srv.counts.get("propose", 0) == 0
        poise(["run", run, "--budget", "1"], cache, timeout=600)  # resume: the proposal is made again
    cands = check_consistent(run)
    new = [c for c in cands if c.id not in before]
    assert len(new) == 1 and new[0].status == "reflected"
    assert read_engine_json(run)["state"] == "finished"
