"""`poise`: the headless command line. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from core.errors import PoiseError

Handler = Callable[[argparse.Namespace], int]


def init_run(run_dir: str | Path, recipe: str = "tiny", name: str = "") -> Path:
    """Create a run: run.toml with documented defaults, the git repo seeded from workspace/, and the archive
    with the seed candidate (GRPO) recorded. Refuses to touch an existing non-empty directory."""
    import time

    from core.archive import Archive, Candidate
    from core.config import RunConfig, save_config
    from core.rundir import RunPaths
    from core.workspace import Workspace, default_template_dir

    root = Path(run_dir).expanduser().resolve()
    if root.exists() and any(root.iterdir()):
        raise PoiseError(f"{root} exists and is not empty; choose a new directory")
    root.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(root)
    cfg = RunConfig(name=name or root.name, recipe=recipe)  # type: ignore[arg-type]
    if recipe == "tiny":
        # The CPU demo: one parent and two proposals per round keep the embedded 135M model's
        # share of a candidate's wall time small (each call reads a ~3k-token prompt on CPU).
        cfg.search.selection.parents_per_round = 1
        cfg.search.proposals_per_parent = 2
    save_config(cfg, paths.config)
    ws = Workspace.init(root, default_template_dir())
    archive = Archive.open(root, create=True)
    seed = Candidate(
        id="seed",
        title="GRPO (seed)",
        parent_ids=[],
        origin="seed",
        proposal={"title": "GRPO", "mechanism": "Group-normalised advantage, PPO clip, k3 KL (DeepSeekMath).",
                  "motivation": "The baseline every candidate is compared with."},
        branch="cand/seed",
        commit=ws.head("seed"),
        status="implemented",
        seeds=list(cfg.seeds),
        tags=["grpo"],
        created_at=time.time(),
    )
    archive.add(seed)
    return root


def cmd_init(a: argparse.Namespace) -> int:
    from core.config import load_config
    from core.recipes import preflight

    root = init_run(a.dir, a.recipe, a.name)
    config = root / "run.toml"
    print(f"created run {root} (recipe {a.recipe})")
    missing = preflight.problems(load_config(config))
    if missing:  # recipe math starts without a model and user benchmarks: say so now, not at the first job
        print(f"before it can run, edit {config}:")
        print("\n".join(f"  - {m}" for m in missing))
        print(f"then check with: poise check {a.dir}")
    else:
        print(f"start it with: poise run {a.dir}   or watch it: poise-tui {a.dir}")
    return 0


def _open(run_dir: str):  # -> tuple[RunPaths, Archive]
    from core.archive import Archive
    from core.rundir import require_run

    paths = require_run(run_dir)
    return paths, Archive.open(paths.root, readonly=True)


def _overall(c, part: str = "selection") -> str:
    m = (c.metrics or {}).get(part, {}).get("overall")
    if not m:
        return "-"
    return f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def cmd_status(a: argparse.Namespace) -> int:
    from collections import Counter

    from core.config import load_config
    from core.elites import best_confirmed, is_confirmed
    from core.runstate import read_state

    paths, archive = _open(a.dir)
    cfg = load_config(paths.config)
    cands = archive.all()
    st = read_state(paths.root)
    counts = Counter(c.status for c in cands)
    print(f"run {cfg.name} ({paths.root}), recipe {cfg.recipe}, seeds {cfg.seeds}")
    print(f"engine: {st.state}" + (f", {st.stage} {st.candidate} {st.message}" if st.state == "running" else ""))
    print(f"candidates: {len(cands)}  " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    # The run's best is the best candidate confirmed on fresh seeds; the top by selection is shown too
    # when it differs, labelled, since its score rests only on the seeds that selected it.
    confirmed, best = best_confirmed(cands), archive.best("selection")
    if confirmed is not None:
        print(f"best (confirmed): {confirmed.id} {confirmed.title}  {_scores(confirmed)}")
    if best is not None and (confirmed is None or best.id != confirmed.id):
        mark = "" if is_confirmed(best) else " (unconfirmed)"
        print(f"best (selection): {best.id}{mark} {best.title}  {_scores(best)}")
    return 0


def _scores(c) -> str:
    return f"overall {_overall(c)}  held-out {_overall(c, 'heldout')}"


def cmd_show(a: argparse.Namespace) -> int:
    import json

    _, archive = _open(a.dir)
    c = archive.get(a.id)
    print(f"{c.id}  {c.title}  [{c.status}]  parents: {', '.join(c.parent_ids) or '-'}  origin: {c.origin}")
    print(f"branch {c.branch} @ {c.commit[:10]}  seeds {c.seeds}")
    print(f"overall selection {_overall(c)}  held-out {_overall(c, 'heldout')}")
    for h in c.history:
        print(f"  {h['status']:<12} {h.get('reason', '')}")
    for key in ("proposal", "verification", "reflection", "costs"):
        value = getattr(c, key)
        if value:
            print(f"{key}:\n{json.dumps(value, indent=2, default=str)}")
    return 0


def cmd_diff(a: argparse.Namespace) -> int:
    from core.workspace import Workspace

    paths, archive = _open(a.dir)
    archive.get(a.id)  # a clear error for an unknown id before git is asked
    print(Workspace.open(paths.root).diff(a.id, against=a.against), end="")
    return 0


def lineage_lines(archive) -> list[str]:
    """The genealogy as an indented text tree (children under their first parent)."""
    lines: list[str] = []

    def walk(cid: str, depth: int) -> None:
        c = archive.get(cid)
        lines.append(f"{'  ' * depth}{c.id} {c.title} [{c.status}] {_overall(c)}")
        for child in sorted(archive.children(cid), key=lambda x: x.id):
            if child.parent_ids and child.parent_ids[0] == cid:
                walk(child.id, depth + 1)

    for root in archive.roots():
        walk(root.id, 0)
    return lines


def cmd_lineage(a: argparse.Namespace) -> int:
    _, archive = _open(a.dir)
    print("\n".join(lineage_lines(archive)))
    return 0


def cmd_mechanisms(a: argparse.Namespace) -> int:
    from core.mechanisms import list_mechanisms

    for m in list_mechanisms():
        print(f"{m.kind:<12} {m.name:<22} {m.idea}  [{m.citation}]")
    return 0


def cmd_add(a: argparse.Namespace) -> int:
    from core.engine import add_human_candidate

    src = Path(a.file).read_text()
    cid = add_human_candidate(Path(a.dir), src, a.parent, a.title)
    print(f"added {cid} as a child of {a.parent} (branch cand/{cid}); verify it with: poise verify {a.dir} {cid}")
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from core.engine import Engine

    verdict = Engine(Path(a.dir)).verify_candidate(a.id, repair=False)
    print(f"{a.id}: {'passed' if verdict.ok else 'failed'}  {verdict.reason}")
    return 0 if verdict.ok else 1


def cmd_eval(a: argparse.Namespace) -> int:
    from core.engine import Engine

    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
    c = Engine(Path(a.dir)).evaluate_candidate(a.id, seeds=seeds, echo=True)
    print(f"{c.id}: {c.status}  overall selection {_overall(c)}  held-out {_overall(c, 'heldout')}")
    return 0 if c.status == "evaluated" else 1


def cmd_run(a: argparse.Namespace) -> int:
    from core.engine import run_engine, spawn_detached

    if a.detach:
        pid = spawn_detached(Path(a.dir), a.budget)
        print(f"engine started in the background (pid {pid}); log: {Path(a.dir) / 'engine.log'}")
        return 0
    return run_engine(Path(a.dir), budget=a.budget)


def cmd_send(a: argparse.Namespace) -> int:
    from core.inbox import send_command
    from core.rundir import require_run

    paths = require_run(a.dir)
    args = {}
    if a.id:
        args["id"] = a.id
    if a.directive is not None:
        args["directive"] = a.directive
    if a.seeds:
        args["seeds"] = [int(s) for s in a.seeds.split(",")]
    print(send_command(paths.root, a.command, **args))
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from core.config import load_config
    from core.recipes import preflight
    from core.rundir import require_run
    from core.workspace import Workspace

    paths = require_run(a.dir)
    cfg = load_config(paths.config)
    sections = {f"recipe {cfg.recipe}": preflight.problems(cfg), f"llm ({cfg.llm.backend})": preflight.llm_problems(cfg),
                "workspace": preflight.collect([lambda: Workspace.open(paths.root).ensure_clean()])}
    for name, found in sections.items():
        print(f"{name}: {'ready' if not found else 'NOT READY'}")
        for problem in found:
            print(f"  - {problem}")
    return 1 if any(sections.values()) else 0


def cmd_report(a: argparse.Namespace) -> int:
    from core.report import write_report
    from core.rundir import require_run

    print(write_report(require_run(a.dir).root))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poise", description="POISE: discover RL algorithms for LLMs, offline.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, fn: Handler, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("init", cmd_init, "create a run directory with the GRPO seed")
    sp.add_argument("dir")
    sp.add_argument("--recipe", choices=["tiny", "math"], default="tiny")
    sp.add_argument("--name", default="")
    add("status", cmd_status, "summary of a run").add_argument("dir")
    add("check", cmd_check, "is this machine ready for the run? (recipe model and data, LLM, workspace)").add_argument("dir")
    for name, fn, help in (("show", cmd_show, "one candidate, in full"), ("verify", cmd_verify, "run the verification gauntlet on a candidate")):
        sp = add(name, fn, help)
        sp.add_argument("dir")
        sp.add_argument("id")
    sp = add("diff", cmd_diff, "unified diff of a candidate's algorithm.py")
    sp.add_argument("dir")
    sp.add_argument("id")
    sp.add_argument("--against", default="parent", help="parent (default), seed, or another candidate id")
    add("lineage", cmd_lineage, "the genealogy as a text tree").add_argument("dir")
    add("mechanisms", cmd_mechanisms, "the registry of known mechanisms")
    sp = add("add", cmd_add, "add a hand-written algorithm.py as a candidate")
    sp.add_argument("dir")
    sp.add_argument("file")
    sp.add_argument("--parent", required=True)
    sp.add_argument("--title", required=True)
    sp = add("eval", cmd_eval, "train and evaluate a candidate on the run's recipe")
    sp.add_argument("dir")
    sp.add_argument("id")
    sp.add_argument("--seeds", default="", help="comma-separated; default: the run's seeds")
    sp = add("run", cmd_run, "run the discovery loop (the engine)")
    sp.add_argument("dir")
    sp.add_argument("--budget", type=int, default=None, help="number of new candidates (overrides run.toml)")
    sp.add_argument("--detach", action="store_true", help="run in the background; survives the terminal")
    sp = add("send", cmd_send, "send a command to the running engine")
    sp.add_argument("dir")
    sp.add_argument("command", choices=["pause", "resume", "stop", "rerun", "fork", "veto", "set_directive"])
    sp.add_argument("--id", default="")
    sp.add_argument("--directive", default=None)
    sp.add_argument("--seeds", default="")
    add("report", cmd_report, "write a Markdown report with plots").add_argument("dir")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except PoiseError as exc:
        print(f"poise: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
