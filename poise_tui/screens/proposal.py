"""The Proposal & Reflection tab's Markdown, from a candidate record."""

from __future__ import annotations

from typing import Any

PROPOSAL_FIELDS = ("motivation", "mechanism", "hypothesis", "expected_signals", "change_mode")
REFLECTION_FIELDS = ("diagnosis", "evidence", "design_principle", "next_steps")


def _section(title: str, value: Any) -> str:
    if value in (None, "", [], {}):
        return ""
    if isinstance(value, list):
        body = "\n".join(f"- {v}" for v in value)
    elif isinstance(value, dict):
        body = "\n".join(f"- **{k}**: {v}" for k, v in value.items())
    else:
        body = str(value)
    return f"**{title.replace('_', ' ').capitalize()}**\n\n{body}\n"


def proposal_markdown(cand: Any) -> str:
    proposal = cand.proposal or {}
    parents = ", ".join(cand.parent_ids or []) or "—"
    lines = [f"## {cand.id}: {cand.title or proposal.get('title', '')}",
             f"status **{cand.status}**, parents {parents}, branch `{cand.branch or '—'}`", "", "### Proposal", ""]
    lines += [_section(k, proposal.get(k)) for k in PROPOSAL_FIELDS]
    lines += ["### Reflection", ""]
    reflection = cand.reflection or {}
    lines += [_section(k, reflection.get(k)) for k in REFLECTION_FIELDS] if reflection else ["_not reflected yet_"]
    history = cand.history or []
    if history:
        lines += ["", "### History", ""]
        lines += [f"- {h.get('status')} {h.get('reason', '') or ''}".rstrip() for h in history]
    return "\n".join(line for line in lines if line is not None)
