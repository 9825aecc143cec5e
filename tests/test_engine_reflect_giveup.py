"""After `reflect_giveup_after` unusable reflections in a row, the engine stops asking the LLM for them
and stores the numeric summary, saying why (a 135M model's reflections cost 20-40 s each and are noise).
Real engine, jobs, git and TinyDB; the LLM is FakeOpenAIServer replying garbage to reflection requests."""

from __future__ import annotations

from pathlib import Path

from engine_support import FakeOpenAIServer, check_consistent, copy_run, poise, session_cache
from engine_support import base_run as _base_run

from core.archive import Archive


def test_unusable_reflections_stop_the_llm_reflection_calls(tmp_path_factory, tmp_path: Path) -> None:
    cache = session_cache(tmp_path_factory)
    with FakeOpenAIServer(reflect=["this is not json"] * 5) as srv:
        run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", srv.base_url, budget=3, confirm_top_k=0,
                       reflect_giveup_after=2)
        poise(["run", run], cache, timeout=900)
    assert srv.counts["reflect"] == 2  # the third candidate's reflection did not reach the LLM
    cands = {c.id: c for c in check_consistent(run)}
    asked, skipped = [cands["c001"], cands["c002"]], cands["c003"]
    for c in asked:
        assert c.status == "reflected" and c.reflection["fallback"] and "not asked" not in c.reflection["error"]
        assert c.costs["llm_tokens"] > 0
    assert skipped.status == "reflected" and skipped.reflection["fallback"]
    assert skipped.reflection["error"].startswith("LLM not asked: its last 2 reflections in this run were unusable (")
    assert skipped.reflection["diagnosis"]  # the numeric summary is still there for later proposals
    assert len(Archive.open(run, readonly=True).all()) == 4
