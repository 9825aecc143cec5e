"""Screening operator: rank N proposals before any compute is spent; only the top one is implemented.

Two kinds of evidence, combined:
  * cheap deterministic gates: the proposal implements (renders / edits apply / code parses), the
    static check passes, the code differs from the parent's (modulo comments and formatting), and
    neither its composition nor its code is already in the archive. A failed gate ranks last and
    skips the LLM call.
  * an LLM score (JSON schema, integers 1-5) on consistency, feasibility, novelty and expected gain.
Probe-batch duplicate detection (same behaviour, different code) belongs to verification (probes).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from core.llm.base import LLM
from core.llm.config import LLMConfig
from core.operators import CallRecord, Rejection, call_json
from core.operators.context import (
    NodeView,
    Section,
    fit_sections,
    format_metrics,
    load_prompt,
    nodes_section,
    prompt_window,
)
from core.operators.implement import MechanismLibrary, StaticCheck, implement
from core.operators.propose import Proposal, proposal_as_text

CRITERIA = ("consistency", "feasibility", "novelty", "expected_gain")
NEUTRAL_SCORE = 3  # used when the LLM score is unavailable: the gates still rank the proposal
SCORE_SCHEMA = {
    "type": "object",
    "properties": {**{c: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for c in CRITERIA},
                   "reason": {"type": "string", "maxLength": 160}},
    "required": [*CRITERIA, "reason"],
    "additionalProperties": False,
}


@dataclass
class Screened:
    """One proposal's verdict. `source` is its implementation when the gates passed (reuse it: no second render)."""

    proposal: Proposal
    passed: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    llm_scores: dict[str, int] = field(default_factory=dict)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.proposal.title, "passed": self.passed, "score": self.score,
                "reasons": self.reasons, "llm_scores": self.llm_scores}


@dataclass
class ScreenResult:
    ranking: list[Screened] = field(default_factory=list)  # best first
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def best(self) -> Screened | None:
        """The proposal to implement, or None when every one failed a gate."""
        return self.ranking[0] if self.ranking and self.ranking[0].passed else None


def composition_key(composition: dict | None) -> str:
    """Identity of a composition: same slots, same names, same params; list order ignored (filters, masks)."""
    return json.dumps(_canonical(composition or {}), sort_keys=True)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def code_key(source: str) -> str:
    """Identity of code modulo comments, docstring-free formatting and whitespace (the AST dump); raw text if it does not parse."""
    try:
        text = ast.dump(ast.parse(source))
    except SyntaxError:
        text = source
    return hashlib.sha256(text.encode()).hexdigest()


def screen(
    llm: LLM,
    proposals: list[Proposal],
    *,
    parent: NodeView,
    archive: list[NodeView],
    library: MechanismLibrary,
    check: StaticCheck,
    cfg: LLMConfig,
) -> ScreenResult:
    """Rank `proposals` best first; `archive` are the nodes novelty is judged against (the caller picks them)."""
    known_comps = {composition_key(n.composition) for n in archive if n.composition}
    known_code = {code_key(n.source) for n in archive if n.source}
    result = ScreenResult()
    for i, prop in enumerate(proposals):
        verdict = _gates(prop, parent, known_comps, known_code, library, check)
        if verdict.passed and len(proposals) > 1:  # one proposal: nothing to rank, save the LLM call
            _llm_score(llm, verdict, parent, archive, cfg, i, result.calls)
        result.ranking.append(verdict)
    result.ranking.sort(key=lambda s: (s.passed, s.score), reverse=True)
    return result


def _gates(prop: Proposal, parent: NodeView, known_comps: set[str], known_code: set[str],
           library: MechanismLibrary, check: StaticCheck) -> Screened:
    source = implement(prop, parent.source, library, check)
    if isinstance(source, Rejection):
        return Screened(prop, False, 0.0, [f"not implementable: {source.reason}"])
    if code_key(source) == code_key(parent.source):
        return Screened(prop, False, 0.0, ["no-op: the code equals the parent's (modulo comments and formatting)"])
    comp = prop.change.get("composition")
    if comp is not None and composition_key(comp) in known_comps:
        return Screened(prop, False, 0.0, ["duplicate: this composition is already in the archive"])
    if code_key(source) in known_code:
        return Screened(prop, False, 0.0, ["duplicate: this code is already in the archive"])
    return Screened(prop, True, 0.0, ["gates passed: implements, static check ok, differs from parent, new"], source=source)


def _llm_score(llm: LLM, verdict: Screened, parent: NodeView, archive: list[NodeView], cfg: LLMConfig,
               index: int, calls: list[CallRecord]) -> None:
    record = CallRecord("screen")
    calls.append(record)
    # Most-shared first, the proposal last, so llama.cpp (and its saved states) re-reads only the tail:
    # the archive list only grows at its end between rounds, the parent is shared by a round's calls.
    sections = [nodes_section("Archive nodes", archive, 40),
                Section(f"Parent {parent.id} metrics", format_metrics(parent.metrics), 80),
                Section("Proposal", proposal_as_text(verdict.proposal), 100, required=True),
                Section("Change", json.dumps(verdict.proposal.change)[:4000], 90)]
    sections = [s for s in sections if s is not None]
    messages, fit = fit_sections(load_prompt("screen"), sections, llm.count_tokens,
                                 prompt_window(llm, cfg, cfg.screen_max_tokens), cfg.screen_max_tokens)
    record.dropped_sections, record.trimmed_sections = fit.dropped, fit.trimmed
    data = call_json(llm, messages, SCORE_SCHEMA, record, max_tokens=cfg.screen_max_tokens,
                     temperature=cfg.reflect_temperature, seed=cfg.seed + index)
    scores = {c: NEUTRAL_SCORE for c in CRITERIA} if isinstance(data, Rejection) else {c: int(data[c]) for c in CRITERIA}
    verdict.llm_scores = scores
    verdict.score = sum(scores.values()) / (5.0 * len(CRITERIA))  # in [0.2, 1]
    verdict.reasons.append(f"llm score unavailable ({data.reason}); neutral score used" if isinstance(data, Rejection)
                           else f"llm: {data['reason']}")
