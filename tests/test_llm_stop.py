"""Ending an LLM call in flight: the stop-check helpers (no model), and with the REAL embedded model
that a stop ends a generation early, leaves the model answering exactly as before, and that a call no
longer silences the process's stderr (engine log lines written meanwhile by another thread survive)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.errors import LLMCancelled, PoiseError
from core.llm.base import StoppableLLM, any_of, throttled
from core.llm.config import LLMConfig
from core.llm.llamacpp import MIN_SUFFIX_TOKENS, READ_CHUNK_TOKENS

ROOT = Path(__file__).resolve().parents[1]


class FakeBackend:
    """Records the should_stop each call receives; stands in for a backend in the wrapper tests."""

    n_ctx = 100
    stats = "backend stats"

    def __init__(self) -> None:
        self.checks: list = []

    def chat(self, messages, *, should_stop=None, **kwargs):
        self.checks.append(should_stop)
        return "reply"

    def count_tokens(self, text: str) -> int:
        return len(text)


def test_stoppable_llm_passes_the_engines_check_and_the_callers_check() -> None:
    engine_stop, caller_stop = [False], [False]
    llm = StoppableLLM(FakeBackend(), lambda: engine_stop[0])
    llm.chat([], should_stop=lambda: caller_stop[0])
    check = llm._llm.checks[-1]
    assert not check()
    caller_stop[0] = True
    assert check()
    caller_stop[0], engine_stop[0] = False, True
    assert check()
    assert llm.n_ctx == 100 and llm.count_tokens("abc") == 3 and llm.stats == "backend stats"


def test_any_of_ignores_missing_checks() -> None:
    assert any_of(None, None) is None
    assert any_of(None, lambda: True)() is True


def test_throttled_asks_at_most_every_interval_and_stays_stopped() -> None:
    asked = []

    def check() -> bool:
        asked.append(1)
        return len(asked) >= 2

    t = throttled(check, every_s=3600.0)
    assert [t(), t(), t()] == [False, False, False] and len(asked) == 1  # within the interval: not asked again
    t = throttled(check, every_s=0.0)
    assert t() is True and t() is True and len(asked) == 2  # once true, never asked again


def test_cancelled_is_not_a_poise_error() -> None:
    """Operators turn PoiseErrors into rejections; a stop must not reject the proposal in flight."""
    assert not issubclass(LLMCancelled, PoiseError)


# --------------------------------------------------------------------------------------------- real model

CFG = LLMConfig(n_ctx=2048, repeat_penalty=1.15)  # as in test_llm_cache: one model load per process
STORY = [{"role": "user", "content": "Write a long story about a robot who learns to paint. Use many details."}]


@pytest.fixture(scope="module")
def llm():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup compiles it)")
    from core.llm.llamacpp import LlamaCppLLM

    return LlamaCppLLM(CFG.model_path, CFG.n_ctx, repeat_penalty=CFG.repeat_penalty, prompt_cache_mb=64)


def _after_n_asks(n: int):
    asked = []

    def check() -> bool:
        asked.append(1)
        return len(asked) > n

    return check


def test_a_stop_ends_the_generation_early_and_the_model_answers_as_before(llm) -> None:
    full = llm.chat(STORY, max_tokens=200, temperature=0.0, seed=1)
    assert full.completion_tokens > 60, full.text  # long enough for a stop to land in the middle
    calls_before = llm.stats.calls
    with pytest.raises(LLMCancelled) as err:
        llm.chat(STORY, max_tokens=200, temperature=0.0, seed=1, should_stop=_after_n_asks(1))
    assert 0 < err.value.completion_tokens < full.completion_tokens
    assert llm.stats.calls == calls_before  # a stopped call is not accounted as a reply
    again = llm.chat(STORY, max_tokens=200, temperature=0.0, seed=1)
    assert again.text == full.text


LONG_PROMPT = [{"role": "user", "content": " ".join(
    f"Robot {i} painted a picture with {i % 7 + 1} colours and {i % 5 + 2} brushes." for i in range(45))
    + " Which robot used the most brushes? Answer in one sentence."}]


def test_a_stop_lands_while_the_prompt_is_read_and_the_next_call_goes_on_from_there(llm) -> None:
    llm.forget_prompts()
    full = llm.chat(LONG_PROMPT, max_tokens=30, temperature=0.0, seed=1)
    to_read = llm.stats.last_read
    assert to_read > 4 * READ_CHUNK_TOKENS  # several pieces, so a stop can land between two of them
    llm.forget_prompts()
    with pytest.raises(LLMCancelled, match="while reading the prompt") as err:
        llm.chat(LONG_PROMPT, max_tokens=30, temperature=0.0, seed=1, should_stop=_after_n_asks(1))
    read, of = (int(n) for n in re.findall(r"(\d+) of the (\d+) tokens", str(err.value))[0])
    assert 0 < read < of and of >= to_read - 1  # stopped part-way (the counter may miss one token)
    assert err.value.completion_tokens == 0
    again = llm.chat(LONG_PROMPT, max_tokens=30, temperature=0.0, seed=1)
    assert again.text == full.text  # the partly read context answers like a fresh one
    assert llm.stats.last_read <= to_read - read + MIN_SUFFIX_TOKENS  # and only the rest was read


def test_a_stop_before_the_call_reads_nothing(llm) -> None:
    read_before = llm.stats.prompt_tokens_read
    with pytest.raises(LLMCancelled, match="before it started"):
        llm.chat(STORY, max_tokens=50, should_stop=lambda: True)
    assert llm.stats.prompt_tokens_read == read_before


def test_a_call_leaves_stderr_to_the_rest_of_the_process(tmp_path: Path) -> None:
    """Lines another thread writes to fd 2 while a llama.cpp call runs reach the log (the engine's case)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup compiles it)")
    script = textwrap.dedent("""
        import os, sys, threading
        from core.llm.llamacpp import LlamaCppLLM
        llm = LlamaCppLLM(n_ctx=1024, prompt_cache_mb=0)
        in_call, done = threading.Event(), threading.Event()

        def writer():
            in_call.wait()
            n = 0
            while not done.is_set():
                os.write(2, b"engine-line\\n"); n += 1
                done.wait(0.01)
            print(n, flush=True)

        def check():
            in_call.set()  # asked between generated tokens: the call is running
            return False

        t = threading.Thread(target=writer); t.start()
        try:
            llm.chat([{"role": "user", "content": "Count from one to thirty in words."}], max_tokens=60,
                     temperature=0.0, should_stop=check)
        finally:  # the writer must end even when the call fails
            in_call.set(); done.set(); t.join()
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = int(proc.stdout.split()[-1])
    assert written > 0 and proc.stderr.count("engine-line") == written
