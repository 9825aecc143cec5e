"""The backend-neutral LLM interface: one `chat` call with optional JSON-schema output and per-call accounting."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


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
