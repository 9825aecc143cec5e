"""Proposal operator: N structured proposals for one parent.

Context (as prioritised sections, trimmed to fit): the parent's code, metrics, curve summary and
reflection; a tiered reference set chosen by the caller from the archive (Pareto front,
structurally contrasting nodes, nodes outside the lineage); literature priors from the mechanism
library; an optional directive. Each proposal is one JSON object (schema below) with the change in
the configured mode. For `compose` the schema's mechanism names are an enum, so a grammar-constrained
model (even the 135M SmolLM2) can only name registered mechanisms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from core.llm.base import LLM
from core.llm.config import LLMConfig
from core.operators import CallRecord, Rejection, call_json, degenerate_fields, implausible_fields
from core.operators.context import (
    P_CONTRAST,
    P_CURVES,
    P_OUTSIDE,
    P_PARENT_CODE,
    P_PARENT_METRICS,
    P_PARETO,
    P_PRIORS,
    P_REFLECTION,
    P_REQUIRED,
    NodeView,
    Section,
    fit_sections,
    fit_text,
    format_curves,
    format_metrics,
    format_node_summary,
    format_reflection,
    load_prompt,
    nodes_section,
    prompt_window,
    summary_title,
    user_budget,
)
from core.operators.implement import MechanismInfo, MechanismLibrary

ChangeMode = Literal["compose", "edit", "rewrite"]
# maxLength keeps a grammar-constrained reply well inside propose_max_tokens (~4 chars per token of prose):
# a reply cut at max_tokens is invalid JSON and the whole call is wasted.
TEXT_FIELDS = {"title": 60, "motivation": 240, "mechanism": 240, "hypothesis": 200, "expected_signals": 200}


@dataclass
class Proposal:
    """One proposed algorithm. `change`: compose {"composition": {...}}, edit {"edits": [...]}, rewrite {"code": str}."""

    title: str
    motivation: str
    mechanism: str
    hypothesis: str
    expected_signals: str
    mode: str
    change: dict[str, Any]
    parent_id: str = ""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Proposal:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class ProposalContext:
    """Everything a proposal sees; the reference tiers are computed by the caller from the archive."""

    parent: NodeView
    pareto: list[NodeView] = field(default_factory=list)
    contrasting: list[NodeView] = field(default_factory=list)
    outside: list[NodeView] = field(default_factory=list)
    directive: str = ""
    use_reflection: bool = True
    use_priors: bool = True


@dataclass
class ProposalRound:
    proposals: list[Proposal] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)


# ----------------------------------------------------------------------------------- schema


def change_schema(mode: str, infos: list[MechanismInfo]) -> dict:
    """The JSON schema of just the change (also what a repair returns)."""
    props, required = _change_props(mode, infos)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def proposal_schema(mode: str, infos: list[MechanismInfo]) -> dict:
    """One proposal: the text fields first (the model reasons before it commits to a change), then the change."""
    props: dict[str, Any] = {k: {"type": "string", "maxLength": n} for k, n in TEXT_FIELDS.items()}
    change_props, change_required = _change_props(mode, infos)
    props.update(change_props)
    return {"type": "object", "properties": props, "required": [*TEXT_FIELDS, *change_required],
            "additionalProperties": False}


def list_schema(mode: str, infos: list[MechanismInfo], n: int) -> dict:
    item = proposal_schema(mode, infos)
    return {"type": "object", "properties": {"proposals": {"type": "array", "items": item, "minItems": n, "maxItems": n}},
            "required": ["proposals"], "additionalProperties": False}


def _change_props(mode: str, infos: list[MechanismInfo]) -> tuple[dict[str, Any], list[str]]:
    if mode == "compose":
        return {"composition": composition_schema(infos)}, ["composition"]
    if mode == "edit":
        block = {"type": "object", "properties": {"search": {"type": "string"}, "replace": {"type": "string"}},
                 "required": ["search", "replace"], "additionalProperties": False}
        return {"edits": {"type": "array", "items": block, "minItems": 1, "maxItems": 8}}, ["edits"]
    return {"code": {"type": "string"}}, ["code"]


# kind -> (key in core.mechanisms.Composition.from_dict, shape, required). "step" is {"name", **params};
# "name" a bare name; "list" a list of steps. Kinds not listed here are not composable.
SLOTS: dict[str, tuple[str, str, bool]] = {
    "advantage": ("advantage", "step", True),
    "policy_loss": ("policy_loss", "step", True),
    "aggregation": ("aggregation", "name", False),
    "kl": ("kl", "name", False),
    "entropy": ("entropy", "step", False),
    "filter": ("filters", "list", False),
    "mask": ("masks", "list", False),
    "shaping": ("shaping", "list", False),
}


def composition_schema(infos: list[MechanismInfo]) -> dict:
    """One slot per mechanism kind, names as enums and only known numeric parameters: a grammar-constrained
    model can only write a composition that names registered mechanisms in the right places."""
    by_kind: dict[str, list[MechanismInfo]] = {}
    for m in infos:
        by_kind.setdefault(m.kind, []).append(m)
    props: dict[str, Any] = {}
    required = []
    for kind, (key, shape, needed) in SLOTS.items():
        if kind not in by_kind:
            continue
        names = {"type": "string", "enum": [m.name for m in by_kind[kind]]}
        step = _step_schema(by_kind[kind])
        props[key] = {"step": step, "name": names, "list": {"type": "array", "items": step, "maxItems": 2}}[shape]
        required += [key] if needed else []
    if "kl" in props:
        props["kl_coef"] = {"type": "number"}
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _step_schema(mechs: list[MechanismInfo]) -> dict:
    """{"name": ..., **params}: one alternative per mechanism, so the grammar allows only that mechanism's
    own numeric parameters (a union would let a small model give rloo the sigma_min of av)."""
    return {"anyOf": [_one_step(m) for m in mechs]}


def _one_step(m: MechanismInfo) -> dict:
    props: dict[str, Any] = {"name": {"type": "string", "enum": [m.name]}}
    props.update({p: {"type": "number"} for p in m.params})
    return {"type": "object", "properties": props, "required": ["name"], "additionalProperties": False}


def change_from_reply(mode: str, data: dict) -> dict[str, Any]:
    """The schema-valid reply's change in Proposal.change form."""
    if mode == "compose":
        return {"composition": _clean_composition(data.get("composition") or {})}
    if mode == "edit":
        return {"edits": [{"search": e["search"], "replace": e["replace"]} for e in data.get("edits") or []]}
    return {"code": data.get("code", "")}


def _clean_composition(comp: dict) -> dict:
    """Small models repeat a list entry ("dynamic_sampling" twice); a repeat means nothing, keep the first."""
    out = dict(comp)
    for key in ("filters", "masks", "shaping"):
        if isinstance(out.get(key), list):
            out[key] = _dedupe(out[key])
    return out


def _dedupe(items: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for m in items:
        if m["name"] not in seen:
            seen.add(m["name"])
            out.append(m)
    return out


# ----------------------------------------------------------------------------------- context


def priors_text(infos: list[MechanismInfo], with_formula: bool = True) -> str:
    lines = []
    for m in infos:
        params = ", ".join(f"{k}={v:g}" for k, v in m.params.items())
        lines.append(f"- {m.name} ({m.kind}): {m.idea}" + (f" | {m.formula}" if with_formula and m.formula else "")
                     + (f" | params: {params}" if params else ""))
    return "\n".join(lines)


def interleave_kinds(infos: list[MechanismInfo]) -> list[MechanismInfo]:
    """Round-robin over kinds (slot order), so a list trimmed from the end still offers every slot."""
    order = [*SLOTS, *sorted({m.kind for m in infos} - set(SLOTS))]
    queues = [[m for m in infos if m.kind == kind] for kind in order]
    out: list[MechanismInfo] = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return out


# Share of the user-message budget the mechanism list may take. Fixed, so the list renders the same in
# every proposal call of a run (a cacheable prefix) and the parent's sections keep the rest.
PRIORS_SHARE = 0.4
# Tokens the mechanism list always leaves for the parent's summary and the directive (measured: a
# summary with a composition, CI and curve line is ~110 SmolLM2 tokens), so at small budgets the
# list gives way first. A constant too, so the list stays the same in every call.
PARENT_RESERVE = 160


def proposal_system(mode: str, n: int = 1) -> str:
    return load_prompt("propose", n=str(n), change_help=load_prompt(f"change_{mode}"))


def proposal_sections(ctx: ProposalContext, infos: list[MechanismInfo], mode: str, *,
                      priors_room: int | None = None, count: Callable[[str], int] | None = None) -> list[Section]:
    """Static first, variable last: the mechanism list (the same in every call; fitted to `priors_room`
    tokens when given), then the parent, the references and the directive. All N calls of a round are
    identical, so llama.cpp reuses the evaluated prompt and calls 2..N pay only for generation; calls
    for other parents reuse the system prompt and the mechanism list. On a CPU the prompt is most of a
    call's cost. The parent's summary is required: trimming never leaves a prompt without its parent."""
    secs = [_priors_section(infos, mode, priors_room, count) if ctx.use_priors and infos else None,
            *_parent_sections(ctx, mode),
            nodes_section("Pareto-front nodes", ctx.pareto, P_PARETO),
            nodes_section("Structurally contrasting nodes", ctx.contrasting, P_CONTRAST),
            nodes_section("Nodes outside this lineage", ctx.outside, P_OUTSIDE),
            Section("Directive", ctx.directive, P_REQUIRED, required=True) if ctx.directive else None]
    return [s for s in secs if s is not None]


def names_by_kind(infos: list[MechanismInfo]) -> str:
    """'- advantage: av, dr_grpo, ...': one line per kind, so every name is in the prompt however tight it is."""
    kinds = [*SLOTS, *sorted({m.kind for m in infos} - set(SLOTS))]
    lines = [f"- {k}: " + ", ".join(m.name for m in infos if m.kind == k) for k in kinds]
    return "\n".join(line for line in lines if not line.endswith(": "))


def _priors_section(infos: list[MechanismInfo], mode: str, room: int | None,
                    count: Callable[[str], int] | None) -> Section | None:
    # The index of names first (trimming cuts from the end), then one description per mechanism.
    # compose: the schema's enums carry the names and params; the formulas matter to code-writing modes.
    text = names_by_kind(infos) + "\n" + priors_text(interleave_kinds(infos), with_formula=mode != "compose")
    if room is not None and count is not None:
        text = fit_text(text, count, room)
    # compose cannot work without it; in code modes it gives way to the required parent code.
    return Section("Known mechanisms (literature priors)", text, P_PRIORS, required=mode == "compose",
                   min_lines=2) if text else None


def _parent_sections(ctx: ProposalContext, mode: str) -> list[Section]:
    p = ctx.parent
    # The reflection ablation (use_reflection False) must not leak the principle through the summary.
    secs = [Section(summary_title(p), format_node_summary(p, ctx.use_reflection), P_REQUIRED, required=True)]
    code = _parent_code(p, mode)
    if code:
        secs.append(Section(f"Parent {p.id} code", code, P_PARENT_CODE, required=mode != "compose"))
    secs += [Section("Parent metrics per split (selection, mean [95% CI])", format_metrics(p.metrics, skip=["overall"]),
                     P_PARENT_METRICS),
             Section("Parent training curves", format_curves(p.curves), P_CURVES)]
    if ctx.use_reflection and p.reflection:
        secs.append(Section("Parent reflection", format_reflection(p.reflection, REFLECTION_DETAIL), P_REFLECTION))
    return secs


REFLECTION_DETAIL = ("diagnosis", "evidence", "next_steps")  # the principle is in the parent's summary


def _parent_code(p: NodeView, mode: str) -> str:
    """The code edit/rewrite must quote; in compose the summary's mechanisms say it all when there is a composition."""
    if mode == "compose" and p.composition:
        return ""
    return f"algorithm.py:\n```python\n{p.source}\n```" if p.source else ""


def proposal_as_text(prop: Proposal) -> str:
    return "\n".join(f"{k}: {getattr(prop, k)}" for k in TEXT_FIELDS)


# ----------------------------------------------------------------------------------- operator


def propose(llm: LLM, ctx: ProposalContext, *, n: int, mode: str, cfg: LLMConfig, library: MechanismLibrary,
            seed: int | None = None) -> ProposalRound:
    """N proposals for ctx.parent: one call each with seed+i (per_call), or one call returning a list.
    `seed` (default cfg.seed): the engine passes a per-round value so rounds do not repeat each other."""
    infos = library.infos()
    base = cfg.seed if seed is None else seed
    if cfg.proposal_batching == "list":
        return _propose_list(llm, ctx, n, mode, cfg, infos, base)
    rnd = ProposalRound()
    for i in range(n):
        out, record = _propose_one(llm, ctx, mode, cfg, infos, base + i)
        rnd.calls.append(record)
        (rnd.rejections if isinstance(out, Rejection) else rnd.proposals).append(out)
    return rnd


def proposal_messages(llm: LLM, ctx: ProposalContext, mode: str, cfg: LLMConfig, infos: list[MechanismInfo],
                      record: CallRecord, n: int = 1) -> list:
    """The [system, user] prompt of one proposal call, fitted to [llm] max_prompt_tokens."""
    system = proposal_system(mode, n)
    max_tokens = cfg.propose_max_tokens * n
    window = prompt_window(llm, cfg, max_tokens)
    budget = user_budget(system, llm.count_tokens, window, max_tokens)
    room = min(int(PRIORS_SHARE * budget), budget - PARENT_RESERVE)
    sections = proposal_sections(ctx, infos, mode, priors_room=room, count=llm.count_tokens)
    messages, fit = fit_sections(system, sections, llm.count_tokens, window, max_tokens)
    record.dropped_sections, record.trimmed_sections = fit.dropped, fit.trimmed
    return messages


def _propose_one(llm: LLM, ctx: ProposalContext, mode: str, cfg: LLMConfig, infos: list[MechanismInfo],
                 seed: int) -> tuple[Proposal | Rejection, CallRecord]:
    record = CallRecord("propose")
    messages = proposal_messages(llm, ctx, mode, cfg, infos, record)
    data = call_json(llm, messages, proposal_schema(mode, infos), record, max_tokens=cfg.propose_max_tokens,
                     temperature=cfg.temperature, seed=seed)
    if isinstance(data, Rejection):
        return data, record
    return _checked_proposal(data, mode, ctx.parent.id, seed, record), record


def _checked_proposal(data: dict, mode: str, parent_id: str, seed: int, record: CallRecord) -> Proposal | Rejection:
    """Schema-valid is not enough: a looping small model fills every field with repeats."""
    loops = degenerate_fields(data, list(TEXT_FIELDS))
    if loops:
        record.error = f"degenerate reply: repetitive text in {', '.join(loops)}"
        return Rejection(record.error, stage="propose", detail=json.dumps(data)[:400])
    return _to_proposal(data, mode, parent_id, seed)


def _propose_list(llm: LLM, ctx: ProposalContext, n: int, mode: str, cfg: LLMConfig,
                  infos: list[MechanismInfo], seed: int) -> ProposalRound:
    record = CallRecord("propose")
    messages = proposal_messages(llm, ctx, mode, cfg, infos, record, n)
    data = call_json(llm, messages, list_schema(mode, infos, n), record, max_tokens=cfg.propose_max_tokens * n,
                     temperature=cfg.temperature, seed=seed)
    rnd = ProposalRound(calls=[record])
    if isinstance(data, Rejection):
        rnd.rejections.append(data)
        return rnd
    for item in data["proposals"]:
        out = _checked_proposal(item, mode, ctx.parent.id, seed, record)
        (rnd.rejections if isinstance(out, Rejection) else rnd.proposals).append(out)
    return rnd


def _to_proposal(data: dict, mode: str, parent_id: str, seed: int) -> Proposal:
    text = {k: str(data.get(k, "")).strip() for k in TEXT_FIELDS}
    change = change_from_reply(mode, data)
    if implausible_fields(text, ["title"]):
        # A small model's title is often not prose; name the node by what it changes instead.
        text["title"] = composition_title(change.get("composition")) or text["title"] or f"{mode} change"
    return Proposal(**text, mode=mode, change=change, parent_id=parent_id, seed=seed)


def composition_title(comp: dict | None) -> str:
    """'vm advantage + cispo loss + fixed entropy': the mechanisms a composition picks, in slot order."""
    if not isinstance(comp, dict):
        return ""
    parts = []
    for slot, value in comp.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            name = item.get("name") if isinstance(item, dict) else item
            if isinstance(name, str) and name:
                parts.append(f"{name} {slot.replace('_', ' ')}")
    return " + ".join(parts)[:80]
