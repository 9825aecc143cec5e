"""Reflection operator: a mechanism-level diagnosis of one evaluated candidate against its parent.

Input: the proposal, the diff against the parent, curve statistics computed here from
metrics.jsonl rows (`curve_stats`), and metrics of candidate, parent and baseline with their CIs.
Output (JSON schema): diagnosis, evidence, design_principle, next_steps. It is stored in the
archive and fed into later proposals. A weak model (the 135M default) may fail the schema; then
a deterministic fallback built from the numbers is stored, with the error, and the loop goes on.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.llm.base import LLM
from core.llm.config import LLMConfig
from core.operators import CallRecord, Rejection, call_json, degenerate_fields, implausible_fields
from core.operators.context import (
    Section,
    curve_stats,
    fit_sections,
    format_curves,
    format_metric,
    load_prompt,
    prompt_window,
)
from core.stats import StatsError, interval_text, paired_metrics

__all__ = ["Reflection", "ReflectionInput", "curve_stats", "reflect", "unified_diff"]

# Bounded so a constrained reply (~4 chars per token) ends well inside reflect_max_tokens instead of being cut.
FIELDS = {"diagnosis": 400, "evidence": 300, "design_principle": 200, "next_steps": 250}
REFLECT_SCHEMA = {
    "type": "object",
    "properties": {k: {"type": "string", "maxLength": n} for k, n in FIELDS.items()},
    "required": list(FIELDS),
    "additionalProperties": False,
}


@dataclass
class ReflectionInput:
    """What the reflector sees. metrics: {"selection": {split|"overall": {mean, lo, hi, n}}} for each node."""

    candidate_id: str
    proposal: dict[str, Any]
    diff: str
    rows: list[dict[str, Any]] = field(default_factory=list)         # candidate's metrics.jsonl (one seed or merged)
    parent_rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent_metrics: dict[str, Any] = field(default_factory=dict)
    baseline_metrics: dict[str, Any] = field(default_factory=dict)
    outcome: str = "evaluated"                                        # or diverged / crashed / timed_out
    unpaired_seeds: list[str] = field(default_factory=list)          # trained from another warm start than the parent's


@dataclass
class Reflection:
    diagnosis: str
    evidence: str
    design_principle: str
    next_steps: str
    error: str = ""          # why the LLM reflection failed, when `fallback` is True
    fallback: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unified_diff(parent_source: str, source: str) -> str:
    return "".join(difflib.unified_diff(parent_source.splitlines(True), source.splitlines(True),
                                        "parent/algorithm.py", "candidate/algorithm.py"))


def reflect(llm: LLM, inp: ReflectionInput, *, cfg: LLMConfig) -> tuple[Reflection, CallRecord]:
    """One schema-constrained reflection; on any failure a numeric fallback with the error recorded."""
    record = CallRecord("reflect")
    messages, fit = fit_sections(load_prompt("reflect"), reflection_sections(inp), llm.count_tokens,
                                 prompt_window(llm, cfg, cfg.reflect_max_tokens), cfg.reflect_max_tokens)
    record.dropped_sections, record.trimmed_sections = fit.dropped, fit.trimmed
    data = call_json(llm, messages, REFLECT_SCHEMA, record, max_tokens=cfg.reflect_max_tokens,
                     temperature=cfg.reflect_temperature, seed=cfg.seed)
    if isinstance(data, Rejection):
        return fallback_reflection(inp, data.reason), record
    loops = degenerate_fields(data, list(FIELDS))
    if loops:
        record.error = f"degenerate reply: repetitive text in {', '.join(loops)}"
        return fallback_reflection(inp, record.error), record
    not_prose = implausible_fields(data, ["diagnosis", "design_principle"])
    if not_prose:
        record.error = f"implausible reply: no prose in {', '.join(not_prose)}"
        return fallback_reflection(inp, record.error), record
    return Reflection(**{k: str(data[k]).strip() for k in FIELDS}), record


def reflection_sections(inp: ReflectionInput) -> list[Section]:
    prop = "\n".join(f"{k}: {v}" for k, v in inp.proposal.items() if isinstance(v, str) and v)
    return [
        Section(f"Candidate {inp.candidate_id} (outcome: {inp.outcome})", prop, 100, required=True),
        Section("Metrics: candidate | parent | baseline", metrics_table(inp), 95, required=True),
        Section("Candidate training curves", format_curves(curve_stats(inp.rows)), 90),
        Section("Parent training curves", format_curves(curve_stats(inp.parent_rows)), 60),
        Section("Diff against the parent", inp.diff or "(no diff)", 80, min_lines=6),
    ]


def metrics_table(inp: ReflectionInput, part: str = "selection") -> str:
    """One line per split: candidate | parent | baseline, each mean [lo, hi] and the paired verdict."""
    cand, par, base = (m.get(part) or {} for m in (inp.metrics, inp.parent_metrics, inp.baseline_metrics))
    splits = sorted(set(cand) | set(par), key=lambda k: (k != "overall", k))
    lines = [f"{s}: {format_metric(cand.get(s))} | {format_metric(par.get(s))} | {format_metric(base.get(s))}"
             f" ({_verdict(cand.get(s), par.get(s), inp.unpaired_seeds)} vs parent)" for s in splits]
    return "\n".join(lines) or "no metrics (the candidate was not evaluated)"


def _verdict(a: dict | None, b: dict | None, unpaired: Sequence[str] = ()) -> str:
    """Paired over the seeds both were trained on from the same warm start: better/worse when the interval of
    the per-seed differences excludes 0. Seed noise is shared by a candidate and its parent on the same seed,
    so comparing the two unpaired intervals hid clear differences. Without such seeds: better/worse only when
    the unpaired intervals do not overlap."""
    if not a or not b or "mean" not in a or "mean" not in b:
        return "n/a"
    try:
        d = paired_metrics(a, b, exclude=unpaired)
    except StatsError:
        d = None  # no seed to pair
    if d is not None and d["n"] >= 2:
        word = "better" if d["lo"] > 0 else "worse" if d["hi"] < 0 else "no clear difference"
        return f"{word}, paired over {d['n']} seeds: {interval_text(d, '+.3f')}"
    if "lo" in a and "hi" in b and a["lo"] > b["hi"]:
        return "better"
    if "hi" in a and "lo" in b and a["hi"] < b["lo"]:
        return "worse"
    return "no clear difference"


def fallback_reflection(inp: ReflectionInput, error: str) -> Reflection:
    """What the numbers alone say, so later proposals still get a reflection for this node."""
    overall = metrics_table(inp).splitlines()[0]
    stats = curve_stats(inp.rows)
    curves = "; ".join(f"{k} {s['start']:.3g}->{s['end']:.3g}" for k, s in stats.items()) or "no curves"
    title = inp.proposal.get("title", inp.candidate_id)
    return Reflection(
        diagnosis=f"{title}: outcome {inp.outcome}; {overall}",
        evidence=f"curves: {curves}",
        design_principle="",
        next_steps="",
        error=f"LLM reflection failed, numeric summary stored instead: {error}",
        fallback=True,
    )
