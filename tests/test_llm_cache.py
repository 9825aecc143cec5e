"""The llama.cpp prompt-state cache: its bookkeeping (no model), and with the REAL embedded model that a
cached call reads almost none of its prompt and answers exactly what an uncached call answers."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from core.llm.config import LLMConfig
from core.llm.llamacpp import MIN_SUFFIX_TOKENS, PromptStateCache


class FakeState:
    """The fields of llama_cpp.LlamaState that the cache reads; stands in for a real saved state."""

    def __init__(self, tokens: list[int], kv_bytes: int) -> None:
        self.input_ids = np.array(tokens, dtype=np.intc)
        self.n_tokens = len(tokens)
        self.scores = np.ones((512, 100), dtype=np.single)  # the logits buffer copy the cache must drop
        self.llama_state_size = kv_bytes


def test_longest_prefix_wins_and_scores_are_dropped() -> None:
    cache = PromptStateCache(capacity_bytes=10_000)
    cache[(1, 2, 3, 9)] = FakeState([1, 2, 3, 9], 100)
    cache[(1, 2, 3, 4, 5, 6)] = FakeState([1, 2, 3, 4, 5, 6], 100)
    assert cache[(1, 2, 3, 4, 7, 8)].n_tokens == 6  # 4 shared tokens beat 3
    assert (1, 2, 8) in cache and (7,) not in cache
    with pytest.raises(KeyError):
        cache[(7, 7)]
    assert all(s.scores.nbytes <= 4 for s in cache._states.values())
    assert cache.cache_size < 2 * (100 + 4 + 6 * 4) + 1 and (cache.hits, cache.misses) == (1, 1)


def test_a_state_covering_the_whole_prompt_is_handed_out_short_of_its_end() -> None:
    cache = PromptStateCache(capacity_bytes=10_000)
    saved = FakeState([1, 2, 3, 4, 5, 6, 7], 100)  # prompt 1..5 plus a 2-token reply
    cache[tuple(range(1, 8))] = saved
    got = cache[(1, 2, 3, 4, 5)]
    assert got.n_tokens == 5 - MIN_SUFFIX_TOKENS and saved.n_tokens == 7  # a copy; the stored state is intact
    assert cache[(1, 2, 3, 9, 9, 9)] is saved  # a partial match needs no copy


def test_eviction_is_least_recently_used_by_bytes() -> None:
    cache = PromptStateCache(capacity_bytes=3 * 1000 + 100)
    for first in (1, 2, 3):
        cache[(first, 0)] = FakeState([first, 0], 1000)
    cache[(1, 5)]  # touch 1: now 2 is the least recently used
    cache[(4, 0)] = FakeState([4, 0], 1000)
    assert (2, 0) not in cache and all((k, 0) in cache for k in (1, 3, 4)) and len(cache) == 3
    cache[(5, 0)] = FakeState([5, 0], 10_000)  # larger than the capacity: cannot be kept, and empties the rest
    assert len(cache) == 0


# --------------------------------------------------------------------------------------------- real model

CFG = LLMConfig(n_ctx=2048, repeat_penalty=1.15)  # n_ctx as in test_operators_llama: one model load per process
SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                           "reason": {"type": "string", "maxLength": 80}},
          "required": ["title", "reason"], "additionalProperties": False}


def _messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# > 512 tokens (llama.cpp's batch): the size at which a whole-prompt hit used to change the greedy reply.
LONG_SYSTEM = "You design reinforcement-learning algorithms. Known mechanisms:\n" + "\n".join(
    f"- m{i}: scales the group advantage by {i / 10:.1f} and clips the ratio at {1 + i / 50:.2f}." for i in range(34))
A = _messages(LONG_SYSTEM, "Parent c003 uses gpg advantages and the gmpo loss. Propose one variant as JSON.")
B = _messages("You review proposals in one line.", "Score: av advantage with ppo_clip.")


@pytest.fixture(scope="module")
def models():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup compiles it)")
    from core.llm.llamacpp import LlamaCppLLM

    on = LlamaCppLLM(CFG.model_path, CFG.n_ctx, repeat_penalty=CFG.repeat_penalty, prompt_cache_mb=64)
    off = LlamaCppLLM(CFG.model_path, CFG.n_ctx, repeat_penalty=CFG.repeat_penalty, prompt_cache_mb=0)
    assert on._llama is off._llama  # one model, two cache settings
    return on, off


def _call(llm, messages, temperature: float = 0.0, seed: int = 3) -> tuple[str, int, float]:
    t0 = time.perf_counter()
    reply = llm.chat(messages, schema=SCHEMA, max_tokens=24, temperature=temperature, seed=seed)
    return reply.text, llm.stats.last_read, time.perf_counter() - t0


@pytest.fixture(scope="module")
def fresh(models) -> tuple[str, int, float]:
    """A's greedy reply read from scratch, without saved states: what every cached answer must equal."""
    off = models[1]
    off.forget_prompts()
    return _call(off, A)


@pytest.fixture(scope="module")
def warm(models) -> str:
    """The cache-on model after one cold call of A (its state saved)."""
    on = models[0]
    on.forget_prompts()
    return _call(on, A)[0]


def test_cached_prompt_is_not_read_again_and_answers_as_a_fresh_call(models, fresh, warm) -> None:
    on, _ = models
    fresh_text, fresh_read, fresh_s = fresh
    assert fresh_read > 512 and warm == fresh_text  # a cold call with the cache on is an ordinary call
    _call(on, B)  # another operator's prompt replaces the live context...
    text, read, seconds = _call(on, A)  # ...but A's state was saved
    assert read <= MIN_SUFFIX_TOKENS + 1 and text == fresh_text
    assert seconds < 0.5 * fresh_s, (seconds, fresh_s)


def test_seeded_sampling_and_the_grammar_behave_the_same_with_the_cache(models, warm) -> None:
    on, off = models
    off.forget_prompts()
    cold = _call(off, A, temperature=0.7, seed=5)
    assert cold[1] > 512
    _call(on, B)
    hot = [_call(on, A, temperature=0.7, seed=s) for s in (5, 6)]
    assert hot[0][1] <= MIN_SUFFIX_TOKENS + 1 and hot[0][0] == cold[0]  # from the saved state, the same sample
    assert hot[1][0] != hot[0][0]  # the seed, not the cache, decides the sample
    assert on.stats.reused_fraction > 0.3 and on.prompt_cache is not None and on.prompt_cache.hits >= 1


def test_run_toml_prompt_cache_mb_reaches_the_backend(models) -> None:
    from core.llm import make_llm

    assert make_llm(dataclasses.replace(CFG, prompt_cache_mb=0)).prompt_cache is None
    assert make_llm(dataclasses.replace(CFG, prompt_cache_mb=32)).prompt_cache.capacity_bytes == 32 << 20
