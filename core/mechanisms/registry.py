"""Decorator registry of known RL mechanisms (literature priors), in the style of verl's core_algos.

Every mechanism is one small, self-contained function registered under a *kind*
and a *name*. All functions of one kind share one signature (below), so a
candidate can swap one for another without glue code. The docstring is the
documentation the proposer model sees: its first line is the one-line idea,
and it must contain a `Formula:` line and a `Cite:` line.

Kinds and signatures (B = batch rows, T = response tokens):

    advantage    fn(batch, rewards [B], **params) -> Tensor [B] or [B, T]
    policy_loss  fn(logprobs [B, T], batch, advantages, **params) -> (per_token_loss [B, T], metrics)
    aggregation  fn(per_token_loss [B, T], mask [B, T], max_response_len) -> scalar
    kl           fn(logprobs [B, T], ref_logprobs [B, T]) -> per-token KL [B, T]
    entropy      fn(entropy [B, T], mask [B, T], **params) -> scalar bonus (subtracted from the loss)
    filter       fn(batch, rewards [B], **params) -> bool [B], True = keep (dynamic sampling)
    mask         fn(batch, **params) -> float [B, T], multiplied into the loss mask
    shaping      fn(batch, rewards [B], **params) -> rewards [B]
    helper       any signature; shared maths that mechanisms call (rendered with them)

Mechanism functions may use only torch, math and other registered functions:
that is what lets `render` copy their source into one self-contained algorithm.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from core.errors import MechanismError

KINDS = ("advantage", "policy_loss", "aggregation", "kl", "entropy", "filter", "mask", "shaping", "helper")

F = Callable[..., Any]


@dataclass(frozen=True)
class MechanismInfo:
    """What `poise mechanisms` lists and what the proposer reads as a literature prior."""

    name: str
    kind: str
    idea: str
    formula: str
    citation: str
    fn: F = field(repr=False, compare=False)

    @property
    def params(self) -> dict[str, Any]:
        """Keyword parameters and their defaults (the knobs a composition may set)."""
        sig = inspect.signature(self.fn)
        return {p.name: p.default for p in sig.parameters.values() if p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, dict[str, MechanismInfo]] = {k: {} for k in KINDS}


def register(kind: str, name: str) -> Callable[[F], F]:
    """Register `fn` as mechanism `name` of `kind`; refuses duplicates and undocumented functions."""
    if kind not in KINDS:
        raise MechanismError(f"unknown mechanism kind {kind!r}; valid kinds: {', '.join(KINDS)}")

    def decorator(fn: F) -> F:
        table = _REGISTRY[kind]
        if name in table and table[name].fn is not fn:
            raise MechanismError(
                f"{kind} mechanism {name!r} is already registered (by {table[name].fn.__qualname__}); "
                f"pick another name. Taken: {', '.join(sorted(table))}"
            )
        table[name] = _info(kind, name, fn)
        return fn

    return decorator


def _info(kind: str, name: str, fn: F) -> MechanismInfo:
    doc = inspect.getdoc(fn) or ""
    lines = [ln.strip() for ln in doc.splitlines()]
    formula = _field(lines, "Formula:")
    citation = _field(lines, "Cite:")
    if not lines or not lines[0] or (kind != "helper" and not (formula and citation)):
        raise MechanismError(
            f"{kind} mechanism {name!r} ({fn.__qualname__}) needs a docstring with a one-line idea, "
            "a 'Formula:' line and a 'Cite:' line"
        )
    return MechanismInfo(name=name, kind=kind, idea=lines[0], formula=formula, citation=citation, fn=fn)


def _field(lines: list[str], prefix: str) -> str:
    """The text after `prefix`, continued over the following indented-free lines until a blank one."""
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            parts = [line[len(prefix):].strip()]
            for nxt in lines[i + 1:]:
                if not nxt or nxt.endswith(":") or ":" in nxt.split(" ")[0]:
                    break
                parts.append(nxt)
            return " ".join(parts)
    return ""


register_advantage = partial(register, "advantage")  # verl: register_adv_est
register_policy_loss = partial(register, "policy_loss")
register_aggregation = partial(register, "aggregation")
register_kl = partial(register, "kl")
register_entropy = partial(register, "entropy")
register_filter = partial(register, "filter")
register_mask = partial(register, "mask")
register_shaping = partial(register, "shaping")


def helper(fn: F) -> F:
    """Register a shared maths helper under its own function name (rendered along with its callers)."""
    return register("helper", fn.__name__)(fn)


def get(kind: str, name: str) -> MechanismInfo:
    """The mechanism `name` of `kind`; the error lists the valid names."""
    if kind not in _REGISTRY:
        raise MechanismError(f"unknown mechanism kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    table = _REGISTRY[kind]
    if name not in table:
        raise MechanismError(f"unknown {kind} mechanism {name!r}; valid names: {', '.join(sorted(table))}")
    return table[name]


def list_mechanisms(kind: str | None = None) -> list[MechanismInfo]:
    """All registered mechanisms (helpers excluded unless asked for), sorted by kind order then name."""
    kinds = [kind] if kind is not None else [k for k in KINDS if k != "helper"]
    out: list[MechanismInfo] = []
    for k in kinds:
        if k not in _REGISTRY:
            raise MechanismError(f"unknown mechanism kind {k!r}; valid kinds: {', '.join(KINDS)}")
        out.extend(_REGISTRY[k][n] for n in sorted(_REGISTRY[k]))
    return out


def names(kind: str) -> list[str]:
    return [m.name for m in list_mechanisms(kind)]


def by_function_name() -> dict[str, MechanismInfo]:
    """Every registered function by its Python name (render resolves dependencies with this)."""
    return {m.fn.__name__: m for table in _REGISTRY.values() for m in table.values()}
