"""Building LLM prompts from prioritised sections, and trimming them to fit the context window.

Every operator describes its prompt as `Section`s. `fit_sections` keeps the prompt within
`n_ctx - max_tokens` by shortening, then dropping, the lowest-priority sections first, so an
overflowing context never crashes a round: it just loses the least useful material
(outside-lineage references before the parent's own code).

Also here: `NodeView`, the read-only slice of an archive candidate that prompts show, and
`curve_stats`, the per-metric summary of a training curve used by proposals and reflections.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from core.errors import PoiseError
from core.llm.base import TEMPLATE_OVERHEAD_PER_MESSAGE, Message
from core.resources import prompts_dir
from core.stats import interval_text

TRIM_MARK = "\n[... {n} lines trimmed to fit the context window ...]"
# Priorities (higher survives longer). Required sections are never dropped, only shortened last.
P_REQUIRED, P_PARENT_CODE, P_PARENT_METRICS, P_REFLECTION = 100, 90, 85, 80
P_CURVES, P_PRIORS, P_PARETO, P_CONTRAST, P_OUTSIDE = 70, 60, 50, 40, 30


def load_prompt(name: str, **values: str) -> str:
    """assets/prompts/<name>.md with each {{key}} replaced (not str.format: prompts quote code with braces)."""
    path = prompts_dir() / f"{name}.md"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PoiseError(f"prompt template {path} is missing; reinstall poise-tui (assets/ ships with it)") from None
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text.strip()


@dataclass
class Section:
    """One titled block of a user prompt. `min_lines`: how far trimming may shorten it before dropping it."""

    title: str
    text: str
    priority: int
    required: bool = False
    min_lines: int = 3

    def render(self) -> str:
        return f"## {self.title}\n{self.text.rstrip()}\n" if self.title else self.text.rstrip() + "\n"


@dataclass
class FitReport:
    """What the preflight did, recorded with the call so a user can see why a proposal missed something."""

    prompt_tokens: int = 0
    budget: int = 0
    dropped: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)


def prompt_window(llm: Any, cfg: Any, max_tokens: int) -> int:
    """The context size to fit a prompt into: the model's n_ctx, capped at [llm] max_prompt_tokens + the reply.

    On CPU, reading the prompt dominates an LLM call (the embedded model reads ~30-100 tokens/s while
    training jobs share the cores), so the cap is what keeps the loop's overhead small."""
    cap = int(getattr(cfg, "max_prompt_tokens", 0) or 0)
    return min(llm.n_ctx, cap + max_tokens) if cap > 0 else llm.n_ctx


def user_budget(system: str, count: Callable[[str], int], n_ctx: int, max_tokens: int) -> int:
    """Tokens left for the user message of a [system, user] prompt that must leave max_tokens for the reply."""
    return n_ctx - max_tokens - 2 * TEMPLATE_OVERHEAD_PER_MESSAGE - count(system)


def fit_text(text: str, count: Callable[[str], int], room: int) -> str:
    """The longest head of `text` (whole lines, with a trim mark) within `room` tokens; '' if none fits.

    For static prompt parts (the mechanism list): fitted once to a room that depends only on the
    budget, they render identically in every call, so llama.cpp can reuse them as a cached prefix."""
    if count(text) <= room:
        return text
    head = _shorten(Section("", text, 0, min_lines=1), count, room, allow_below_min=False)
    return head.text if head is not None else ""


def fit_sections(
    system: str, sections: list[Section], count: Callable[[str], int], n_ctx: int, max_tokens: int
) -> tuple[list[Message], FitReport]:
    """Messages [system, user] whose token count fits in n_ctx - max_tokens, lowest priority cut first."""
    budget = user_budget(system, count, n_ctx, max_tokens)
    kept = sorted(sections, key=lambda s: -s.priority)  # stable: equal priorities keep caller order
    report = FitReport(budget=budget)
    # Bounded: each pass shortens or drops one section; required giants may need a few passes.
    for _ in range(3 * len(sections) + 3):
        if not kept or _size(kept, count) <= budget:
            break
        kept = _cut_one(kept, count, budget, report)
    user = "\n".join(s.render() for s in _in_order(sections, kept))
    report.prompt_tokens = count(system) + count(user) + 2 * TEMPLATE_OVERHEAD_PER_MESSAGE
    return [{"role": "system", "content": system}, {"role": "user", "content": user}], report


def _size(sections: list[Section], count: Callable[[str], int]) -> int:
    return count("\n".join(s.render() for s in sections))


def _in_order(original: list[Section], kept: list[Section]) -> list[Section]:
    """Kept sections in the caller's order (a trimmed one replaces its original by title)."""
    by_title = {s.title: s for s in kept}
    return [by_title[s.title] for s in original if s.title in by_title]


def _cut_one(kept: list[Section], count: Callable[[str], int], budget: int, report: FitReport) -> list[Section]:
    """Shorten the lowest-priority optional section, or drop it; required ones are shortened only when alone,
    lowest priority first while it has text to give (a parent's summary outlives a mechanism list)."""
    optional = [s for s in kept if not s.required]
    victim = optional[-1] if optional else _required_victim(kept, count)
    rest = [s for s in kept if s is not victim]
    room = budget - _size(rest, count)
    shorter = _shorten(victim, count, room, allow_below_min=victim.required)
    if shorter is None:
        report.dropped.append(victim.title)
        return rest
    report.trimmed.append(victim.title)
    return sorted(rest + [shorter], key=lambda s: -s.priority)


def _required_victim(kept: list[Section], count: Callable[[str], int]) -> Section:
    """Among required sections (sorted by priority, highest first): the lowest-priority one with text left."""
    giving = [s for s in kept if count(s.text) > MIN_GIVE_TOKENS]
    return giving[-1] if giving else max(kept, key=lambda s: len(s.text))


MIN_GIVE_TOKENS = 8  # a required section this small has nothing useful left to trim


def _shorten(sec: Section, count: Callable[[str], int], room: int, allow_below_min: bool) -> Section | None:
    """The longest head of `sec` (whole lines, binary search) that fits in `room` tokens; None if too short."""
    lines = sec.text.splitlines()
    lo, hi = 0, len(lines) - 1
    floor = 0 if allow_below_min else sec.min_lines
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = replace(sec, text="\n".join(lines[:mid]) + TRIM_MARK.format(n=len(lines) - mid))
        if count(cand.render()) <= room:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    if best is None or (len(best.text.splitlines()) - 1 < floor):
        return None if not allow_below_min else replace(sec, text=_hard_cut(sec.text, count, room))
    return best


def _hard_cut(text: str, count: Callable[[str], int], room: int) -> str:
    """Last resort for a required one-line giant: keep a character prefix that fits."""
    keep = max(0, room) * 2
    while keep > 0 and count(text[:keep]) > max(room - 4, 0):
        keep //= 2
    return text[:keep]


# ----------------------------------------------------------------------------------------- node views


@dataclass
class NodeView:
    """What a prompt may say about one archive node. Built by the caller (engine) from archive.Candidate."""

    id: str
    title: str = ""
    source: str = ""                                   # algorithm.py
    metrics: dict[str, Any] = field(default_factory=dict)   # {"selection": {split|"overall": {mean, lo, hi, n}}}
    curves: dict[str, dict[str, float]] = field(default_factory=dict)  # curve_stats(rows)
    reflection: dict[str, Any] = field(default_factory=dict)
    proposal: dict[str, Any] = field(default_factory=dict)
    composition: dict[str, Any] | None = None

    @classmethod
    def from_candidate(cls, cand: Any, source: str = "", rows: list[dict] | None = None) -> NodeView:
        """Duck-typed over archive.Candidate (id, title, proposal, metrics, reflection)."""
        proposal = dict(getattr(cand, "proposal", None) or {})
        return cls(
            id=str(getattr(cand, "id", "")),
            title=str(getattr(cand, "title", "") or proposal.get("title", "")),
            source=source,
            metrics=dict(getattr(cand, "metrics", None) or {}),
            curves=curve_stats(rows or []),
            reflection=dict(getattr(cand, "reflection", None) or {}),
            proposal=proposal,
            composition=(proposal.get("change") or {}).get("composition"),
        )


def format_metric(m: dict[str, Any] | None) -> str:
    if not m or "mean" not in m:
        return "n/a"
    return interval_text(m, n_suffix=" n={n}")


def format_metrics(metrics: dict[str, Any], part: str = "selection", skip: Iterable[str] = ()) -> str:
    """One line per split, 'overall' first: mean [lo, hi] n. `skip`: splits shown elsewhere."""
    splits = {k: v for k, v in (metrics.get(part) or {}).items() if k not in set(skip)}
    order = sorted(splits, key=lambda k: (k != "overall", k))
    return "\n".join(f"{k}: {format_metric(splits[k])}" for k in order) or "not evaluated yet"


def format_curves(stats: dict[str, dict[str, float]]) -> str:
    lines = []
    for key, s in stats.items():
        lines.append(
            f"{key}: start {s['start']:.4g} end {s['end']:.4g} min {s['min']:.4g} max {s['max']:.4g} "
            f"trend {s['trend']:+.3g}/step"
        )
    return "\n".join(lines) or "no training curve"


REFLECTION_KEYS = ("diagnosis", "evidence", "design_principle", "next_steps")


def format_reflection(refl: dict[str, Any], keys: Iterable[str] = REFLECTION_KEYS) -> str:
    return "\n".join(f"{k}: {refl[k]}" for k in keys if refl.get(k)) or "no reflection yet"


# The curves a one-line summary names, most telling first.
SUMMARY_CURVES = ("reward_mean", "valid_rate", "entropy", "kl", "response_length")


def curve_line(stats: dict[str, dict[str, float]], keys: Iterable[str] = SUMMARY_CURVES) -> str:
    """'reward_mean 0.21->0.35, entropy 0.92->0.71, ...': start -> end of the main curves, in one line."""
    parts = [f"{k} {stats[k]['start']:.3g}->{stats[k]['end']:.3g}" for k in keys if k in stats]
    return ", ".join(parts) or "no training curve"


SUMMARY_TEXT_CHARS = 200  # per free-text line of a summary: the summary must stay small enough to always fit


def format_node_summary(node: NodeView, with_principle: bool = True) -> str:
    """The few lines about a parent that every prompt keeps, however tight the budget: what it is
    (mechanisms), how it scored (selection Overall with CI), how it trained (one curve line) and
    what was learned (the reflection's principle). Code and long parts live in other sections; the id
    and title are the section's header (`summary_title`)."""
    overall = format_metric((node.metrics.get("selection") or {}).get("overall"))
    comp = composition_text(node.composition)
    lines = [f"mechanisms: {comp}" if comp else "mechanisms: hand-written algorithm.py (no composition)"]
    lines += [f"selection overall: {overall}", f"curves: {curve_line(node.curves)}"]
    principle = str(node.reflection.get("design_principle") or "").strip() if with_principle else ""
    if principle:
        lines.append(f"principle learned: {principle[:SUMMARY_TEXT_CHARS]}")
    return "\n".join(lines)


def summary_title(node: NodeView) -> str:
    return f"Parent {node.id}: {node.title or 'untitled'}"


def composition_text(comp: dict[str, Any] | None) -> str:
    """'advantage=av(sigma_min=0.1), policy_loss=ppo_clip, kl=k3, kl_coef=0.04': names with their params."""
    parts = []
    for key, value in (comp or {}).items():
        items = value if isinstance(value, list) else [value]
        shown = ",".join(_step_text(v) for v in items if v not in ("", None))
        if shown:
            parts.append(f"{key}={shown}")
    return ", ".join(parts)


def _step_text(step: Any) -> str:
    if not isinstance(step, dict):
        return str(step)
    params = ", ".join(f"{k}={v}" for k, v in step.items() if k != "name")
    return f"{step.get('name', '?')}({params})" if params else str(step.get("name", "?"))


def format_node_brief(node: NodeView) -> str:
    """A reference node in a few lines: title, idea, overall score, principle learned."""
    overall = format_metric((node.metrics.get("selection") or {}).get("overall"))
    idea = node.proposal.get("mechanism") or node.proposal.get("motivation") or ""
    comp = _composition_names(node.composition)
    parts = [f"- {node.id} {node.title!r}: overall {overall}"]
    if comp:
        parts.append(f"  mechanisms: {comp}")
    if idea:
        parts.append(f"  idea: {str(idea)[:200]}")
    if node.reflection.get("design_principle"):
        parts.append(f"  principle: {str(node.reflection['design_principle'])[:200]}")
    return "\n".join(parts)


def _composition_names(comp: dict[str, Any] | None) -> str:
    """'advantage=av, policy_loss=ppo_clip, filters=dynamic_sampling' from a composition dict."""
    parts = []
    for key, value in (comp or {}).items():
        if isinstance(value, dict):
            value = value.get("name", "")
        elif isinstance(value, list):
            value = ",".join(str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value)
        if value not in ("", None, []):
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def nodes_section(title: str, nodes: Iterable[NodeView], priority: int) -> Section | None:
    text = "\n".join(format_node_brief(n) for n in nodes)
    return Section(title, text, priority, min_lines=1) if text else None


# ----------------------------------------------------------------------------------------- curves

CURVE_KEYS = ("reward_mean", "accuracy", "valid_rate", "entropy", "kl", "response_length", "grad_norm")


def curve_stats(rows: list[dict[str, Any]], keys: Iterable[str] = CURVE_KEYS) -> dict[str, dict[str, float]]:
    """Per metric: start and end (mean of the first/last tenth, so one noisy step does not decide),
    min, max, and trend (least-squares slope per step). Non-finite values are ignored."""
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        pts = _points(rows, key)
        if pts:
            out[key] = _summary(pts)
    return out


def _points(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    pts = []
    for i, row in enumerate(rows):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            pts.append((float(row.get("step", i + 1)), float(v)))
    return pts


def _summary(pts: list[tuple[float, float]]) -> dict[str, float]:
    ys = [y for _, y in pts]
    k = max(1, len(ys) // 10)
    return {
        "start": sum(ys[:k]) / k,
        "end": sum(ys[-k:]) / k,
        "min": min(ys),
        "max": max(ys),
        "trend": _slope(pts),
        "n": float(len(ys)),
    }


def _slope(pts: list[tuple[float, float]]) -> float:
    n = len(pts)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    var = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / var if var > 0 else 0.0
