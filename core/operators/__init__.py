"""The LLM operators of the POISE loop: propose, screen, implement (+ repair), reflect; and select, verify.

Shared here: `Rejection` (an operator's clean "no" with a reason, never an exception for bad model
output), `CallRecord` (tokens and seconds of one LLM call, for the archive and the token budget),
and `call_json` (one schema-constrained call whose every failure becomes a reason string).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import LLMUnavailableError, PoiseError
from core.llm.base import LLM, Message
from core.llm.schema import schema_errors


@dataclass
class Rejection:
    """An operator declined to produce a result. `stage` is the operator, `reason` says precisely why."""

    reason: str
    stage: str = ""
    detail: str = ""  # e.g. the offending reply text, clipped

    def __str__(self) -> str:
        return f"{self.stage}: {self.reason}" if self.stage else self.reason


@dataclass
class CallRecord:
    """Accounting of one LLM call: the engine sums these into the archive and the [budget] llm_tokens."""

    operator: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str = ""
    dropped_sections: list[str] = field(default_factory=list)
    trimmed_sections: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REPLY_CLIP = 400


def call_json(
    llm: LLM, messages: list[Message], schema: dict, record: CallRecord, *, max_tokens: int, temperature: float, seed: int
) -> dict | list | Rejection:
    """One structured call. Backend failures, truncated or non-JSON text and schema violations all
    become a Rejection whose reason names the problem; `record` gets tokens, seconds and the error."""
    try:
        reply = llm.chat(messages, schema=schema, max_tokens=max_tokens, temperature=temperature, seed=seed)
    except LLMUnavailableError:
        raise  # the backend is down: no verdict on this proposal; the engine stops and says why
    except PoiseError as exc:
        return _fail(record, f"LLM call failed: {exc}", "")
    record.prompt_tokens, record.completion_tokens, record.seconds = (
        reply.prompt_tokens, reply.completion_tokens, reply.seconds)
    if not reply.text.strip():
        return _fail(record, "the model returned an empty reply", "")
    if reply.data is None:
        cut = " (cut off at max_tokens)" if reply.finish_reason == "length" else ""
        return _fail(record, f"the reply is not valid JSON{cut}", reply.text)
    errors = schema_errors(reply.data, schema)
    if errors:
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return _fail(record, "the reply does not match the schema: " + "; ".join(errors[:3]) + more, reply.text)
    return reply.data


def _fail(record: CallRecord, reason: str, text: str) -> Rejection:
    record.error = reason
    return Rejection(reason, stage=record.operator, detail=text[:REPLY_CLIP])


# Text this repetitive ("sde_sde_sde...") compresses below this ratio; normal prose stays above ~0.4.
DEGENERATE_RATIO = 0.2
DEGENERATE_MIN_CHARS = 120


def degenerate_fields(data: dict, fields: list[str]) -> list[str]:
    """Names of prose fields that are a loop of repeated text: small models do this at temperature > 0."""
    bad = []
    for name in fields:
        text = str(data.get(name, "")).encode()
        if len(text) >= DEGENERATE_MIN_CHARS and len(zlib.compress(text, 9)) / len(text) < DEGENERATE_RATIO:
            bad.append(name)
    return bad


def implausible_fields(data: dict, fields: list[str], min_words: int = 2) -> list[str]:
    """Names of prose fields that are not prose: fewer than `min_words` alphabetic words
    (the 135M model fills schemas with "][" or a bare number). Such text must not steer later proposals."""
    bad = []
    for name in fields:
        words = [w for w in str(data.get(name, "")).split() if sum(ch.isalpha() for ch in w) >= 2]
        if len(words) < min_words:
            bad.append(name)
    return bad
