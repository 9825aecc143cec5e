"""What the engine publishes for the status bar: LLM throughput from the archive's recorded costs."""

from __future__ import annotations

from core.cli import init_run
from core.engine import Engine


def test_llm_tokens_per_s_is_tokens_over_llm_seconds(tmp_path):
    run = init_run(tmp_path / "run")
    engine = Engine(run)
    assert engine.llm_tokens_per_s() == 0.0
    engine.archive.add_cost("seed", "propose", wall_s=5.0, llm_tokens=300, llm_s=4.0)
    engine.archive.add_cost("seed", "reflect", wall_s=2.0, llm_tokens=100, llm_s=1.0)
    assert engine.llm_tokens_per_s() == 80.0
    engine.publish(stage="idle")
    from core.runstate import read_state

    assert read_state(run).llm_tokens_per_s == 80.0 and read_state(run).llm_tokens == 400
