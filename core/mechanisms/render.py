"""Render a Composition as one self-contained algorithm.py that satisfies the contract.

The file holds the source of every chosen mechanism and of the helpers they
call (copied with inspect.getsource, decorators removed), HPARAMS with every
parameter spelled out, and the contract functions that wire them together.
It imports only torch, math and typing, so the proposer model can read and
edit it and the sandbox's import allow-list accepts it.
"""

from __future__ import annotations

import inspect
import pprint
import textwrap
import types
from collections.abc import Callable

from core.mechanisms.compose import Composition
from core.mechanisms.registry import by_function_name, get

HEADER = '''"""{title}

Rendered from the POISE mechanism library: {summary}.
Every function below is a copy of a registered mechanism; edit freely, the
contract (workspace/CONTRACT.md) is all that the trainer relies on.
"""

import math
from typing import Any

import torch
'''


def render(comp: Composition, title: str = "A policy-optimization algorithm composed from known mechanisms.") -> str:
    """Source text of algorithm.py for `comp`."""
    fns = _chosen_functions(comp)
    hp = pprint.pformat(comp.to_hparams(), width=100, sort_dicts=False)
    parts = [HEADER.format(title=title, summary=comp.summary()), f"HPARAMS: dict[str, Any] = {hp}\n"]
    parts += [_function_source(fn) for fn in _with_dependencies(fns)]
    parts += [_filter_source(comp), _advantages_source(comp), _loss_source(comp)]
    return "\n\n".join(p.rstrip() + "\n" for p in parts if p)


def _chosen_functions(comp: Composition) -> list[Callable]:
    fns = [s.info.fn for s in comp.filters + comp.shaping + comp.masks]
    fns += [comp.advantage.info.fn, comp.policy_loss.info.fn, get("aggregation", comp.aggregation).fn]
    if comp.kl:
        fns += [get("kl", comp.kl).fn, get("helper", "masked_mean").fn]
    if comp.entropy:
        fns.append(comp.entropy.info.fn)
    return fns


def _with_dependencies(roots: list[Callable]) -> list[Callable]:
    """Roots plus every registered function they call, transitively; callees first, no repeats."""
    registered = {name: info.fn for name, info in by_function_name().items()}
    ordered: list[Callable] = []

    def visit(fn: Callable) -> None:
        if fn in ordered:
            return
        for name in sorted(_global_names(fn.__code__)):
            dep = registered.get(name)
            if dep is not None and dep is not fn:
                visit(dep)
        ordered.append(fn)

    for fn in roots:
        visit(fn)
    return ordered


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions and comprehensions
            names |= _global_names(const)
    return names


def _function_source(fn: Callable) -> str:
    """The function's source without its registry decorator."""
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def "))
    return "\n".join(lines[start:]) + "\n"


def _filter_source(comp: Composition) -> str:
    if not comp.filters:
        return ""
    body = [f'    keep = keep & {s.info.fn.__name__}(batch, **hp["filters"]["{s.name}"])' for s in comp.filters]
    return "\n".join([
        "def filter_groups(batch, hp: dict) -> torch.Tensor:",
        '    """Dynamic sampling: bool [B], True = keep this row for the update."""',
        "    keep = torch.ones_like(batch.valid)  # [B]",
        *body,
        "    return keep",
    ])


def _advantages_source(comp: Composition) -> str:
    shaping = [f'    rewards = {s.info.fn.__name__}(batch, rewards, **hp["shaping"]["{s.name}"])' for s in comp.shaping]
    return "\n".join([
        "def compute_advantages(batch, hp: dict) -> torch.Tensor:",
        '    """Reward shaping, then the advantage estimator: [B] or [B, T]."""',
        "    rewards = batch.rewards  # [B]",
        *shaping,
        f'    return {comp.advantage.info.fn.__name__}(batch, rewards, **hp["advantage"])',
    ])


def _loss_source(comp: Composition) -> str:
    masks = [f'    mask = mask * {s.info.fn.__name__}(batch, **hp["masks"]["{s.name}"])' for s in comp.masks]
    lines = [
        "def compute_policy_loss(logprobs: torch.Tensor, batch, advantages: torch.Tensor, hp: dict):",
        '    """Per-token loss, KL to the reference, aggregation, entropy bonus -> (loss, metrics)."""',
        "    mask = batch.response_mask  # [B, T]",
        *masks,
        f"    per_token, metrics = {comp.policy_loss.info.fn.__name__}(",
        '        logprobs, batch, advantages, mask, **hp["policy_loss"]',
        "    )",
    ]
    if comp.kl:
        lines += [
            '    if batch.ref_logprobs is not None and hp["kl_coef"] != 0:',
            f"        kl = {get('kl', comp.kl).fn.__name__}(logprobs, batch.ref_logprobs)  # [B, T]",
            '        per_token = per_token + hp["kl_coef"] * kl',
            '        metrics["kl"] = float(masked_mean(kl.detach(), mask))',
        ]
    lines.append(f"    loss = {get('aggregation', comp.aggregation).fn.__name__}(per_token, mask, batch.max_response_len)")
    if comp.entropy:
        lines += [
            "    if batch.entropy is not None:",
            f'        loss = loss - {comp.entropy.info.fn.__name__}(batch.entropy, mask, **hp["entropy"])',
        ]
    lines.append("    return loss, metrics")
    return "\n".join(lines)
