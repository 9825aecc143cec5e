"""Rewards of recipe `math`: math-verify correctness and strict format validity.

A response is format-valid when it ends its reasoning with a final \\boxed{...} whose content math-verify
can parse. It is correct when it is valid and math-verify judges the boxed answer equal to the reference.
The two are the reward parts {"correct", "format"}; the scalar reward is correct + format_weight * format.

math-verify is imported lazily (it pulls sympy), so importing this module stays cheap. Its timeouts use
SIGALRM, so scoring must run in the main thread (TRL calls reward functions there).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from core.recipes.math.data import last_boxed

PROMPT_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def format_prompt(problem: str) -> list[dict[str, str]]:
    """The conversational prompt every candidate sees (the Qwen2.5-Math instruction)."""
    return [{"role": "user", "content": problem.strip() + PROMPT_SUFFIX}]


@dataclass(frozen=True)
class Score:
    correct: bool
    valid: bool


@functools.lru_cache(maxsize=1)
def _math_verify() -> Any:
    import math_verify

    return math_verify


@functools.lru_cache(maxsize=4096)
def _parse_boxed(content: str) -> tuple:
    # Wrapping in \boxed makes math-verify read exactly this content, not some other number in the text.
    return tuple(_math_verify().parse("\\boxed{" + content + "}"))


@functools.lru_cache(maxsize=65536)
def score(response: str, answer: str) -> Score:
    """Score one response against its reference answer (cached: TRL asks once per reward part)."""
    boxed = last_boxed(response)
    if boxed is None or not boxed.strip():
        return Score(correct=False, valid=False)
    pred = _parse_boxed(boxed)
    if not pred:
        return Score(correct=False, valid=False)
    gold = _parse_boxed(answer)
    return Score(correct=bool(gold) and bool(_math_verify().verify(list(gold), list(pred))), valid=True)


def _text(completion: Any) -> str:
    """TRL passes a string (standard format) or [{"role": "assistant", "content": ...}] (conversational)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if isinstance(m, dict))


def correct_reward(completions: list, answer: list[str], **_: Any) -> list[float]:
    """TRL reward function: 1.0 when the boxed answer is correct."""
    return [float(score(_text(c), a).correct) for c, a in zip(completions, answer, strict=True)]


def format_reward(completions: list, answer: list[str], **_: Any) -> list[float]:
    """TRL reward function: 1.0 when a final \\boxed{} answer is present and parseable."""
    return [float(score(_text(c), a).valid) for c, a in zip(completions, answer, strict=True)]


# TRL names each reward column by the function's __name__; the adapter maps these names to reward_parts.
correct_reward.__name__ = "correct"
format_reward.__name__ = "format"
REWARD_FUNCS = (correct_reward, format_reward)
