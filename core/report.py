"""`poise report <dir>`: a Markdown report of a run, with PNG plots, in `<run>/report/`.

What it holds, in order:

  * a summary: candidates by status, the seed (GRPO) and the run's best on the held-out part: the best
    candidate *confirmed* on fresh seeds (core/elites.py), with the top one by selection when it differs,
    labelled "(unconfirmed)" while its score rests on the seeds that selected it;
  * the genealogy: a text tree (id, title, status, selection Overall with its interval) and a plot
    of the selection Overall by candidate order with the lineage edges (genealogy.png);
  * the best candidates, ranked on the *selection* part and reported on the *held-out* part, each
    with its paired difference to the seed over common seeds (core.stats.paired_difference). The search
    never saw the held-out problems, but it did see the seeds: a seed that trained well lifts both parts,
    so held-out scores on the selecting seeds still carry part of the winner's curse. Only a confirmation's
    fresh seeds are free of it; a confirmed candidate's paired difference on those alone is given too
    (the engine runs the seed on the same fresh seeds);
  * per best candidate: held-out splits, the reflection, and the diff of algorithm.py against the seed;
  * training curves (reward and accuracy, mean over seeds) of the best candidates and the seed
    (curves.png);
  * the design principles the reflections converged on: principles whose word sets overlap
    (Jaccard >= PRINCIPLE_JACCARD) are grouped, largest group first, so a principle that several
    reflections reached independently is at the top.

Reading only: the archive opens read-only, the workspace is only asked for diffs, so a report can be
written while the engine runs. matplotlib is imported inside the plotting functions (Agg canvas,
no pyplot state), keeping this module cheap to import.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.archive import SCORED, Archive, Candidate
from core.config import stats_interval
from core.elites import CONFIRMED_TAG, best_confirmed, is_confirmed
from core.errors import PoiseError
from core.jobspec import read_metrics
from core.stats import interval_text

REPORT_DIR = "report"
TOP_N = 3
PRINCIPLE_JACCARD = 0.5
CURVE_KEYS = ("reward_mean", "accuracy")
REFLECTION_KEYS = ("diagnosis", "evidence", "design_principle", "next_steps")
_STOPWORDS = frozenset(["a", "an", "the", "of", "to", "and", "or", "in", "on", "for", "with", "is", "are", "be", "by", "as", "at", "it", "its", "that", "this", "when", "than"])


@dataclass
class Principle:
    text: str  # the first wording of the group
    ids: list[str]  # candidates whose reflection states it, in archive order


def write_report(run_dir: str | Path, top_n: int = TOP_N) -> Path:
    """Write `<run>/report/report.md` (+ PNGs) and return its path."""
    run = Path(run_dir)
    cands = Archive.open(run, readonly=True, interval=stats_interval(run)).all()
    out = run / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    seed = find_seed(cands)
    best = best_candidates(cands, seed, top_n)
    confirmed = best_confirmed(cands)
    if confirmed is not None and confirmed.id not in {c.id for c in best}:
        best.append(confirmed)  # the run's best gets its section whatever its rank by selection
    sections = [
        _header(run, cands),
        _summary(cands, seed, best),
        _genealogy_section(cands, out),
        _best_section(run, cands, seed, best),
        _curves_section(run, out, seed, best),
        _principles_section(cands),
    ]
    path = out / "report.md"
    path.write_text("\n\n".join(s for s in sections if s).rstrip() + "\n")
    return path


# ---- choosing what to show -----------------------------------------------------------------------


def find_seed(cands: Sequence[Candidate]) -> Candidate | None:
    """The baseline: the candidate whose origin is "seed", else the first root."""
    for c in cands:
        if c.origin == "seed":
            return c
    return next((c for c in cands if not c.parent_ids), None)


def best_candidates(cands: Sequence[Candidate], seed: Candidate | None, n: int) -> list[Candidate]:
    """The top n non-seed candidates by *selection* Overall (ties: earlier first)."""
    pool = [c for c in cands if c.status in SCORED and c.score() is not None and (seed is None or c.id != seed.id)]
    return sorted(pool, key=lambda c: -(c.score() or 0.0))[:n]


# ---- formatting helpers --------------------------------------------------------------------------


def _metric(c: Candidate, part: str, split: str = "overall") -> dict[str, Any] | None:
    return (c.metrics.get(part) or {}).get(split)


def _fmt_ci(m: dict[str, Any] | None, signed: bool = False) -> str:
    """'0.512 [0.498, 0.530] (n=3)', or 'n/a'."""
    if not m:
        return "n/a"
    return interval_text(m, "+.3f" if signed else ".3f", n_suffix=" (n={n})")


def paired_vs(c: Candidate, base: Candidate | None, split: str = "overall", part: str = "heldout",
              only_seeds: Sequence[int] | None = None) -> str:
    """Paired difference c - base over common seeds (of only_seeds, when given), formatted; the reason when
    there is none."""
    from core.eval_noise import seeds_on_other_warm_starts
    from core.stats import paired_metrics

    a, b = _metric(c, part, split), _metric(base, part, split) if base else None
    if not a or not b:
        return "n/a (not evaluated on this part)"
    keep = None if only_seeds is None else {str(s) for s in only_seeds}
    pa, pb = ({**m, "per_seed": {k: v for k, v in (m.get("per_seed") or {}).items() if keep is None or k in keep}}
              for m in (a, b))
    unpaired = seeds_on_other_warm_starts(c.results or {}, base.results or {})
    note = f"; seeds {', '.join(map(str, unpaired))} left out: trained from other warm starts" if unpaired else ""
    try:
        return _fmt_ci(paired_metrics(pa, pb, exclude=unpaired), signed=True) + note
    except PoiseError as exc:
        return f"n/a ({exc}{note})"


def _title(c: Candidate) -> str:
    """One line of plain text: titles come from the LLM and may hold newlines or table pipes."""
    text = c.title or (c.proposal or {}).get("title", "") or "(untitled)"
    return " ".join(str(text).split()).replace("|", "/")


# ---- sections ------------------------------------------------------------------------------------


def _header(run: Path, cands: Sequence[Candidate]) -> str:
    name = run.name
    try:
        from core.config import load_config

        name = load_config(run / "run.toml").name
    except PoiseError:
        pass  # a run without a readable config still gets a report, named after its directory
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return f"# POISE run report: {name}\n\nRun directory `{run}`, {len(cands)} candidates, written {stamp}."


def _summary(cands: Sequence[Candidate], seed: Candidate | None, best: Sequence[Candidate]) -> str:
    counts: dict[str, int] = {}
    for c in cands:
        counts[c.status] = counts.get(c.status, 0) + 1
    lines = ["## Summary", "", "Candidates by status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "."]
    if seed:
        lines.append(f"Seed `{seed.id}` ({_title(seed)}): held-out Overall {_fmt_ci(_metric(seed, 'heldout'))}.")
    confirmed = best_confirmed(list(cands))
    if confirmed:
        lines.append(f"Run's best (confirmed on fresh seeds): {_best_line(confirmed, seed)}")
    if best and (confirmed is None or best[0].id != confirmed.id):
        lines.append(f"Best by selection: {_best_line(best[0], seed)}")
    if best and not confirmed:
        lines.append("No candidate has been confirmed on fresh seeds yet ([search] confirm_top_k in run.toml).")
    if not best:
        lines.append("No candidate besides the seed has been evaluated yet.")
    return "\n".join(lines)


def _best_line(c: Candidate, seed: Candidate | None) -> str:
    return (f"`{c.id}`{_unconfirmed(c)} ({_title(c)}): held-out Overall {_fmt_ci(_metric(c, 'heldout'))}, "
            f"paired difference to the seed {paired_vs(c, seed)}.")


def _unconfirmed(c: Candidate) -> str:
    """The label of a score that only the seeds that selected it support (the winner's curse)."""
    return "" if is_confirmed(c) else " (unconfirmed)"


def genealogy_lines(cands: Sequence[Candidate]) -> list[str]:
    """A text tree; a crossover child is drawn under its first parent and names the others."""
    ids = {c.id for c in cands}
    kids: dict[str, list[Candidate]] = {}
    roots = []
    for c in cands:
        parents = [p for p in c.parent_ids if p in ids]
        (kids.setdefault(parents[0], []) if parents else roots).append(c)
    lines: list[str] = []

    def walk(c: Candidate, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        lines.append(prefix + branch + _tree_label(c))
        below = prefix + ("" if top else ("    " if last else "│   "))
        children = kids.get(c.id, [])
        for i, k in enumerate(children):
            walk(k, below, i == len(children) - 1, False)

    for r in roots:
        walk(r, "", True, True)
    return lines


def _tree_label(c: Candidate) -> str:
    extra = f" (also child of {', '.join(c.parent_ids[1:])})" if len(c.parent_ids) > 1 else ""
    score = _fmt_ci(_metric(c, "selection")) if c.status in SCORED else ""
    mark = "  confirmed" if is_confirmed(c) else ""
    return f"{c.id}  {_title(c)}  [{c.status}]  {score}".rstrip() + mark + extra


def _genealogy_section(cands: Sequence[Candidate], out: Path) -> str:
    plot = plot_genealogy(cands, out / "genealogy.png")
    tree = "\n".join(genealogy_lines(cands)) or "(empty archive)"
    img = f"![Selection Overall by candidate, with lineage edges]({plot.name})\n\n" if plot else ""
    return f"## Genealogy\n\n{img}```text\n{tree}\n```"


def _best_section(run: Path, cands: Sequence[Candidate], seed: Candidate | None, best: Sequence[Candidate]) -> str:
    if not best:
        return "## Best candidates\n\nNone evaluated yet."
    rows = ["| rank | id | title | selection Overall | held-out Overall | held-out vs seed (paired) |",
            "|---|---|---|---|---|---|"]
    ranked = [c.id for c in best_candidates(cands, seed, len(cands))]
    for c in best:
        i = ranked.index(c.id) + 1
        rows.append(f"| {i} | `{c.id}` | {_title(c)}{_unconfirmed(c)} | {_fmt_ci(_metric(c, 'selection'))} | "
                    f"{_fmt_ci(_metric(c, 'heldout'))} | {paired_vs(c, seed)} |")
    intro = ("Ranked on the selection part, reported on the held-out part, whose problems the search never saw "
             "(its seeds it did see: only a confirmation's fresh seeds are free of the winner's curse). "
             "Differences are paired over the seeds both candidates ran (95% Student-t interval, core/stats.py). "
             "A confirmed candidate was re-evaluated on fresh seeds and its scores pool all its seeds; "
             "an unconfirmed one is scored only on the seeds that selected it.")
    diffs = seed_diffs(run, [c.id for c in best])
    run_seeds = _run_seeds(run)
    details = [_candidate_detail(c, seed, diffs[c.id], run_seeds) for c in best]
    return "\n\n".join(["## Best candidates", intro, "\n".join(rows), *details])


def _run_seeds(run: Path) -> list[int] | None:
    """The seeds every candidate is trained with (run.toml); None when the config cannot be read."""
    from core.config import load_config

    try:
        return list(load_config(run / "run.toml").seeds)
    except PoiseError:
        return None


def _fresh_line(c: Candidate, seed: Candidate | None, run_seeds: list[int] | None) -> str:
    """The confirmed candidate's held-out difference to the seed on its fresh seeds alone: the estimate that
    selection could not bias."""
    fresh = [s for s in c.seeds if run_seeds is not None and s not in run_seeds]
    if not fresh:
        return ""
    return (f" On the fresh seeds alone ({', '.join(map(str, fresh))}), which selection never saw: held-out "
            f"Overall paired difference to the seed {paired_vs(c, seed, only_seeds=fresh)}.")


def _problem_line(c: Candidate, seed: Candidate | None) -> str:
    """The held-out difference to the seed with the eval problems counted as a sample too: the interval a
    claim about the task (not about these problems) rests on."""
    from core.eval_noise import describe, paired_with_problems

    d = paired_with_problems(c.results, seed.results, "heldout") if seed is not None and seed is not c else None
    if d is None:
        return ""
    return (f" Held-out Overall paired difference to the seed, counting the held-out problems as a sample "
            f"as well as the seeds (core/eval_noise.py): {describe(d)}.")


def _candidate_detail(c: Candidate, seed: Candidate | None, diff: str, run_seeds: list[int] | None) -> str:
    head = f"### `{c.id}`: {_title(c)}{_unconfirmed(c)}\n\nParents: {', '.join(c.parent_ids) or 'none'}."
    mechanisms = [t for t in c.tags or [] if t != CONFIRMED_TAG]  # a status mark, not a mechanism
    if mechanisms:
        head += f" Mechanisms: {', '.join(mechanisms)}."
    if is_confirmed(c):
        head += f" Confirmed on fresh seeds; seeds run: {', '.join(map(str, c.seeds))}." + _fresh_line(c, seed, run_seeds)
    head += _problem_line(c, seed)
    mech = (c.proposal or {}).get("mechanism")
    if mech:
        head += f"\n\nMechanism: {mech}"
    return "\n\n".join([head, _split_table(c, seed), _reflection_text(c), _diff_text(diff)])


def _split_table(c: Candidate, seed: Candidate | None) -> str:
    splits = sorted(k for k in (c.metrics.get("heldout") or {}) if k != "overall")
    if not splits:
        return "No held-out scores yet."
    rows = ["| held-out split | candidate | seed | difference (paired) |", "|---|---|---|---|"]
    for s in [*splits, "overall"]:
        base = _metric(seed, "heldout", s) if seed else None
        rows.append(f"| {s} | {_fmt_ci(_metric(c, 'heldout', s))} | {_fmt_ci(base)} | {paired_vs(c, seed, s)} |")
    return "\n".join(rows)


def _reflection_text(c: Candidate) -> str:
    refl = c.reflection or {}
    if not refl:
        return "Reflection: none yet."
    keys = [k for k in REFLECTION_KEYS if k in refl] + sorted(k for k in refl if k not in REFLECTION_KEYS)
    lines = ["Reflection:", ""]
    for k in keys:
        v = refl[k]
        text = "; ".join(map(str, v)) if isinstance(v, list) else str(v)
        if text.strip():
            lines.append(f"- **{k.replace('_', ' ')}**: {text.strip()}")
    return "\n".join(lines)


def seed_diffs(run: Path, ids: Sequence[str]) -> dict[str, str]:
    """algorithm.py diff against the seed per candidate id; the reason in place of a diff that failed."""
    try:
        from core.workspace import Workspace

        ws = Workspace.open(run)
    except PoiseError as exc:
        return {cid: f"unavailable ({exc})" for cid in ids}
    out = {}
    with ws:
        for cid in ids:
            try:
                out[cid] = ws.diff(cid, against="seed").rstrip() or "(no change)"
            except PoiseError as exc:
                out[cid] = f"unavailable ({exc})"
    return out


def _diff_text(diff: str) -> str:
    if diff.startswith("unavailable ("):
        return f"Diff against the seed: {diff}."
    return f"Diff of algorithm.py against the seed:\n\n```diff\n{diff}\n```"


def _curves_section(run: Path, out: Path, seed: Candidate | None, best: Sequence[Candidate]) -> str:
    shown = [c for c in ([seed] if seed else []) + list(best)]
    curves = {c.id: mean_curves(run, c.id) for c in shown}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return "## Training curves\n\nNo metrics.jsonl recorded for these candidates."
    plot = plot_curves(curves, out / "curves.png")
    return f"## Training curves\n\nMean over seeds; the seed is `{seed.id if seed else '-'}`.\n\n![Training curves]({plot.name})"


def _principles_section(cands: Sequence[Candidate]) -> str:
    groups = converged_principles(cands)
    if not groups:
        return "## Principles the reflections converged on\n\nNo reflection states a design principle yet."
    lines = ["## Principles the reflections converged on", ""]
    for i, g in enumerate(groups, 1):
        who = ", ".join(f"`{x}`" for x in g.ids)
        lines.append(f"{i}. {g.text} ({len(g.ids)} reflection{'s' if len(g.ids) > 1 else ''}: {who})")
    return "\n".join(lines)


# ---- principles ----------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS)


def converged_principles(cands: Sequence[Candidate], threshold: float = PRINCIPLE_JACCARD) -> list[Principle]:
    """Group design principles by word overlap; largest group first, then first appearance.

    Greedy single pass in archive order (deterministic): a principle joins the first group whose
    first wording shares at least `threshold` of their word sets (Jaccard), else it starts a group.
    """
    groups: list[tuple[frozenset[str], Principle]] = []
    for c in cands:
        text = str((c.reflection or {}).get("design_principle") or "").strip()
        if not text:
            continue
        words = _words(text)
        for key, g in groups:
            if words and len(words & key) / len(words | key) >= threshold:
                g.ids.append(c.id)
                break
        else:
            groups.append((words, Principle(text, [c.id])))
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i][1].ids), i))
    return [groups[i][1] for i in order]


# ---- curves and plots ----------------------------------------------------------------------------


def mean_curves(run: Path, cand_id: str) -> dict[str, list[tuple[int, float]]]:
    """key -> [(step, mean over the seeds that logged that step)] from jobs/<id>/<seed>/metrics.jsonl."""
    acc: dict[str, dict[int, list[float]]] = {}
    for job in sorted((run / "jobs" / cand_id).glob("*/metrics.jsonl")):
        if not job.parent.name.lstrip("-").isdigit():
            continue  # verify-<n> smoke runs are not training curves
        for row in read_metrics(job):
            for key in CURVE_KEYS:
                if isinstance(row.get(key), (int, float)) and isinstance(row.get("step"), int):
                    acc.setdefault(key, {}).setdefault(row["step"], []).append(float(row[key]))
    return {k: [(s, sum(v) / len(v)) for s, v in sorted(steps.items())] for k, steps in acc.items()}


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # Agg without pyplot: no global state, safe from a TUI worker thread
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def plot_genealogy(cands: Sequence[Candidate], path: Path) -> Path | None:
    """Selection Overall (y) by creation order (x), an edge from each parent to each child.

    Candidates without a score (rejected, crashed, still running) are grey crosses on the bottom
    edge, so the plot also shows where the search spent candidates that led nowhere.
    """
    from matplotlib.ticker import MaxNLocator

    pos = {c.id: (i, c.score()) for i, c in enumerate(cands) if c.status in SCORED and c.score() is not None}
    if not pos:
        return None
    floor = min(y for _, y in pos.values())
    failed = {c.id: (i, floor) for i, c in enumerate(cands) if c.id not in pos}
    fig, (ax,) = _figure(max(6.0, 0.35 * len(cands)), 4.0)
    xy = {**pos, **failed}
    for c in cands:
        for p in c.parent_ids:
            if c.id in xy and p in xy:
                ax.plot([xy[p][0], xy[c.id][0]], [xy[p][1], xy[c.id][1]], color="0.75", lw=1, zorder=1)
    ax.scatter(*zip(*pos.values()), zorder=2, label="evaluated")
    if failed:
        ax.scatter(*zip(*failed.values()), marker="x", color="0.5", zorder=2, label="not evaluated")
        ax.legend(fontsize=7)
    for cid, (x, y) in xy.items():
        ax.annotate(cid, (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("candidate (creation order)")
    ax.set_ylabel("selection Overall")
    ax.set_title("Genealogy")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> Path:
    """One panel per CURVE_KEYS entry, one line per candidate."""
    fig, axes = _figure(10.0, 3.8, ncols=len(CURVE_KEYS))
    for ax, key in zip(axes, CURVE_KEYS):
        for cid, series in curves.items():
            if series.get(key):
                steps, values = zip(*series[key])
                ax.plot(steps, values, label=cid)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
