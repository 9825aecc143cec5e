"""The backend-neutral LLM interface: one `chat` call with optional JSON-schema output and per-call accounting."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
StopCheck = Callable[[], bool]  # true once the caller wants the call in flight ended (LLMCancelled)


@dataclass
class LLMReply:
    """One completion. `data` is the parsed JSON object when a schema was requested and the text parsed, else None.

    Tokens and seconds are per call so the engine can record them in the archive and enforce the token budget.
    """

    text: str
    data: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str = ""  # "stop" | "length" (hit max_tokens: JSON is probably truncated)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@runtime_checkable
class LLM(Protocol):
    """What the operators need from a model. Backends: LlamaCppLLM (default) and OpenAICompatLLM."""

    n_ctx: int

    def chat(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        seed: int = 0,
        should_stop: StopCheck | None = None,
    ) -> LLMReply: ...

    def count_tokens(self, text: str) -> int: ...


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json_reply(text: str) -> Any:
    """The JSON value in a reply, or None. Grammar-constrained replies are bare JSON; others may wrap it in a fence."""
    candidates = [text.strip()] + [m.strip() for m in _FENCE.findall(text)]
    for cand in candidates:
        if not cand:
            continue
        try:
            # strict=False: llama.cpp's JSON grammar lets raw newlines into strings; the meaning is clear, keep it.
            return json.loads(cand, strict=False)
        except json.JSONDecodeError:
            continue
    return None


def messages_text(messages: list[Message]) -> str:
    """All message contents joined; what a preflight counts (plus a small per-message template overhead)."""
    return "\n".join(m.get("content", "") for m in messages)


# Chat templates add role markers around each message; 8 tokens each is generous for ChatML-style templates.
TEMPLATE_OVERHEAD_PER_MESSAGE = 8


def prompt_tokens(llm: LLM, messages: list[Message]) -> int:
    """Prompt size in the model's tokens, including a template allowance."""
    return llm.count_tokens(messages_text(messages)) + TEMPLATE_OVERHEAD_PER_MESSAGE * len(messages)


class StoppableLLM:
    """A backend whose calls end with LLMCancelled once `should_stop()` (the engine's stop request) is
    true, also in the middle of a generation; a per-call `should_stop` is checked as well. Everything
    else is the backend's own."""

    def __init__(self, llm: LLM, should_stop: StopCheck) -> None:
        self._llm, self._should_stop = llm, should_stop

    @property
    def n_ctx(self) -> int:
        return self._llm.n_ctx

    def chat(self, messages: list[Message], *, should_stop: StopCheck | None = None, **kwargs: Any) -> LLMReply:
        return self._llm.chat(messages, should_stop=any_of(self._should_stop, should_stop), **kwargs)

    def count_tokens(self, text: str) -> int:
        return self._llm.count_tokens(text)

    def __getattr__(self, name: str) -> Any:  # backend extras: stats, forget_prompts, prompt_cache
        return getattr(self._llm, name)


def any_of(*checks: StopCheck | None) -> StopCheck | None:
    live = [c for c in checks if c is not None]
    if not live:
        return None
    return lambda: any(c() for c in live)


def throttled(check: StopCheck, every_s: float = 0.2) -> StopCheck:
    """`check`, asked at most every `every_s` seconds: a per-token check must not read the inbox 50x a second."""
    last = [float("-inf"), False]

    def ask() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= every_s:
            last[0], last[1] = now, bool(check())
        return bool(last[1])

    return ask
