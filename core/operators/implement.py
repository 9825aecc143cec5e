"""Implement operator: turn a chosen proposal into algorithm.py source, or a Rejection with a precise reason.

    compose -> the mechanism library renders the composition (no model-written code at all)
    edit    -> SEARCH/REPLACE blocks applied exactly to the parent's algorithm.py
    rewrite -> the model's whole file

Every result is parsed and statically checked here, so a bad reply is a Rejection, never an
exception. `repair` sends the exact verification error back to the model for one more attempt;
the caller (engine) bounds the number of attempts.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import PoiseError
from core.llm.base import LLM
from core.llm.config import LLMConfig
from core.operators import CallRecord, Rejection, call_json
from core.operators.context import Section, fit_sections, load_prompt, prompt_window

StaticCheck = Callable[[str], list[str]]


# ----------------------------------------------------------------------------------- mechanism library


@dataclass
class MechanismInfo:
    """A registered mechanism as prompts see it (a literature prior)."""

    name: str
    kind: str = ""
    idea: str = ""
    formula: str = ""
    citation: str = ""
    params: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_any(cls, m: Any) -> MechanismInfo:
        """From a registry entry (object or dict with name/kind/idea/formula/citation[/params])."""
        get = m.get if isinstance(m, dict) else (lambda k, d=None: getattr(m, k, d))
        params = get("params", None) or get("defaults", None) or {}
        return cls(str(get("name")), str(get("kind", "") or ""), str(get("idea", "") or ""),
                   str(get("formula", "") or ""), str(get("citation", "") or ""),
                   {k: float(v) for k, v in dict(params).items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


class MechanismLibrary(Protocol):
    """What the operators need from core.mechanisms: the priors, and rendering a composition to source."""

    def infos(self) -> list[MechanismInfo]: ...

    def render(self, composition: dict) -> str: ...


class RegistryLibrary:
    """The real library (core.mechanisms). Imported on construction, not at module scope: it imports torch."""

    def __init__(self) -> None:
        from core import mechanisms

        self._m = mechanisms

    def infos(self) -> list[MechanismInfo]:
        return [MechanismInfo.from_any(m) for m in self._m.list_mechanisms()]

    def render(self, composition: dict) -> str:
        return self._m.render(self._m.Composition.from_dict(composition))


def default_check() -> StaticCheck:
    from core.static_check import check_source

    return check_source


# ----------------------------------------------------------------------------------- implement


def implement(proposal: Any, parent_source: str, library: MechanismLibrary, check: StaticCheck) -> str | Rejection:
    """algorithm.py source for `proposal` (a propose.Proposal), or a Rejection saying exactly why not."""
    mode = proposal.mode
    change = proposal.change
    if mode == "compose":
        source = render_composition(library, change.get("composition") or {})
    elif mode == "edit":
        source = apply_edits(parent_source, change.get("edits") or [])
    elif mode == "rewrite":
        source = change.get("code") or Rejection("the proposal has no code", stage="implement")
    else:
        source = Rejection(f"unknown change mode {mode!r}; use compose, edit or rewrite", stage="implement")
    return source if isinstance(source, Rejection) else check_code(source, check)


def render_composition(library: MechanismLibrary, composition: dict) -> str | Rejection:
    if not composition:
        return Rejection("the composition names no mechanism", stage="implement")
    try:
        return library.render(composition)
    except (PoiseError, ValueError, TypeError, KeyError) as exc:  # model-chosen input: a bad choice is a rejection
        return Rejection(f"the mechanism library cannot render this composition: {exc}", stage="implement")


def check_code(source: str, check: StaticCheck) -> str | Rejection:
    """Parse, then the project's static check (import allow-list, forbidden names, required functions)."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        return Rejection(f"algorithm.py does not parse: {exc.msg} at line {exc.lineno}: {line!r}", stage="implement")
    problems = check(source)
    if problems:
        return Rejection("static check failed: " + "; ".join(problems), stage="implement")
    return source


# ----------------------------------------------------------------------------------- SEARCH/REPLACE

_BLOCK = re.compile(r"<<<<<<< SEARCH\n(.*?)\n?=======\n(.*?)\n?>>>>>>> REPLACE", re.DOTALL)


def parse_search_replace(text: str) -> list[dict[str, str]] | Rejection:
    """Blocks of the form '<<<<<<< SEARCH / ======= / >>>>>>> REPLACE' as [{'search','replace'}]."""
    blocks = [{"search": s, "replace": r} for s, r in _BLOCK.findall(text)]
    opened = text.count("<<<<<<< SEARCH")
    if opened != len(blocks) or text.count(">>>>>>> REPLACE") != len(blocks):
        return Rejection(f"{opened} SEARCH markers but {len(blocks)} complete SEARCH/=======/REPLACE blocks", stage="implement")
    if not blocks:
        return Rejection("no SEARCH/REPLACE block found", stage="implement")
    return blocks


def apply_edits(source: str, edits: list[dict[str, str]]) -> str | Rejection:
    """Apply blocks in order; each SEARCH must occur exactly once in the current text, or the whole edit is rejected."""
    if not edits:
        return Rejection("the edit has no SEARCH/REPLACE block", stage="implement")
    for i, block in enumerate(edits, 1):
        out = _apply_one(source, block.get("search", ""), block.get("replace", ""), f"block {i} of {len(edits)}")
        if isinstance(out, Rejection):
            return out
        source = out
    return source


def _apply_one(source: str, search: str, replace: str, where: str) -> str | Rejection:
    if not search.strip():
        return Rejection(f"{where}: empty SEARCH text; quote the exact lines to replace", stage="implement")
    hits = _occurrences(source, search)
    if not hits:
        return Rejection(f"{where}: SEARCH text not found in algorithm.py{_closest(source, search)}", stage="implement")
    if len(hits) > 1:
        lines = ", ".join(str(source.count("\n", 0, h) + 1) for h in hits)
        return Rejection(f"{where}: SEARCH text is ambiguous, it matches {len(hits)} places (lines {lines}); "
                         "include more surrounding lines", stage="implement")
    return source[: hits[0]] + replace + source[hits[0] + len(search):]


def _occurrences(text: str, sub: str) -> list[int]:
    hits, start = [], text.find(sub)
    while start != -1:
        hits.append(start)
        start = text.find(sub, start + 1)
    return hits


def _closest(source: str, search: str) -> str:
    """Name the first SEARCH line that is missing and the nearest real line, so a repair can fix it."""
    src_lines = source.splitlines()
    for line in search.splitlines():
        if line.strip() and line not in src_lines:
            near = difflib.get_close_matches(line, src_lines, n=1, cutoff=0.5)
            hint = f"; closest line in the file: {near[0].strip()!r}" if near else ""
            return f" (first missing line: {line.strip()!r}{hint})"
    return " (every line exists, but not consecutively in this order)"


# ----------------------------------------------------------------------------------- repair


def repair(
    llm: LLM,
    proposal: Any,
    source: str,
    error: str,
    *,
    library: MechanismLibrary,
    check: StaticCheck,
    cfg: LLMConfig,
    attempt: int = 0,
) -> tuple[str | Rejection, CallRecord]:
    """One repair attempt: the model sees the proposal, the failing source and the exact error."""
    from core.operators.propose import change_schema, priors_text, proposal_as_text  # avoid an import cycle

    record = CallRecord("repair")
    schema = change_schema(proposal.mode, library.infos())
    sections = [
        Section("Proposal", proposal_as_text(proposal), 100, required=True),
        Section("Verification error", error, 100, required=True),
        Section("Current algorithm.py", source, 95, required=True),
    ]
    if proposal.mode == "compose":
        sections.append(Section("Registered mechanisms", priors_text(library.infos()), 90))
    system = load_prompt("repair", mode=proposal.mode)
    messages, fit = fit_sections(system, sections, llm.count_tokens,
                                 prompt_window(llm, cfg, cfg.repair_max_tokens), cfg.repair_max_tokens)
    record.dropped_sections, record.trimmed_sections = fit.dropped, fit.trimmed
    data = call_json(llm, messages, schema, record, max_tokens=cfg.repair_max_tokens,
                     temperature=cfg.reflect_temperature, seed=cfg.seed + 1000 + attempt)
    if isinstance(data, Rejection):
        return data, record
    return _repaired_source(proposal.mode, data, source, library, check), record


def _repaired_source(mode: str, data: dict, source: str, library: MechanismLibrary, check: StaticCheck) -> str | Rejection:
    from core.operators.propose import change_from_reply

    change = change_from_reply(mode, data)
    if mode == "compose":
        new = render_composition(library, change["composition"])
    elif mode == "edit":
        new = apply_edits(source, change["edits"])
    else:
        new = change["code"]
    return new if isinstance(new, Rejection) else check_code(new, check)
