"""How fast a stop ends an LLM call in flight: one proposal call with the embedded model (compose
schema), stopped 1, 2 and 3 s into it; printed: how long after the stop the call ended, and after how
many generated tokens. The reference is the same call run in full. Then the same while a long
prompt (~1K tokens, read cold) is being read: stopped 0.5, 1 and 2 s into it.

    .venv/bin/python bench/bench_llm_stop.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import LLMCancelled
from core.llm.llamacpp import LlamaCppLLM
from core.operators.implement import RegistryLibrary
from core.operators.propose import proposal_schema

MESSAGES = [
    {"role": "system", "content": "You design reinforcement learning algorithms for language models. Reply in JSON."},
    {"role": "user", "content": "Propose a change to GRPO: pick mechanisms and parameters, with title, motivation, "
                                "mechanism, hypothesis, expected signals."},
]


LONG_PROMPT = [{"role": "user", "content": " ".join(
    f"Robot {i} painted a picture with {i % 7 + 1} colours and {i % 5 + 2} brushes." for i in range(60))
    + " Which robot used the most brushes?"}]


def stopped_after(llm: LlamaCppLLM, schema: dict | None, delay: float, messages: list = MESSAGES
                  ) -> tuple[float, str]:
    """(seconds from the stop to the end of the call, how far it got) for a stop `delay` s into the call."""
    llm.forget_prompts()
    stop, stamp = threading.Event(), {}

    def fire() -> None:
        time.sleep(delay)
        stamp["t"] = time.perf_counter()
        stop.set()

    threading.Thread(target=fire, daemon=True).start()
    try:
        llm.chat(messages, schema=schema, max_tokens=400, temperature=0.7, seed=2, should_stop=stop.is_set)
    except LLMCancelled as exc:
        return time.perf_counter() - stamp["t"], str(exc)
    return float("nan"), "the call finished before the stop"


def main() -> None:
    llm = LlamaCppLLM(prompt_cache_mb=0, repeat_penalty=1.15)
    schema = proposal_schema("compose", RegistryLibrary().infos())
    t0 = time.perf_counter()
    full = llm.chat(MESSAGES, schema=schema, max_tokens=400, temperature=0.7, seed=2)
    print(f"full call: {full.completion_tokens} tokens in {time.perf_counter() - t0:.2f} s")
    for delay in (1.0, 2.0, 3.0):
        seconds, how = stopped_after(llm, schema, delay)
        print(f"stop {delay:.0f} s in: the call ended {seconds:.3f} s later: {how}")
    llm.forget_prompts()
    t0 = time.perf_counter()
    llm.chat(LONG_PROMPT, max_tokens=1)
    print(f"reading the long prompt: {llm.stats.last_read} tokens in {time.perf_counter() - t0:.2f} s")
    for delay in (0.5, 1.0, 2.0):
        seconds, how = stopped_after(llm, None, delay, LONG_PROMPT)
        print(f"stop {delay:.1f} s into the long prompt: the call ended {seconds:.3f} s later: {how}")


if __name__ == "__main__":
    main()
