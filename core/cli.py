"""`poise`: the headless command line. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from core.errors import PoiseError
from core.stats import DEFAULT_INTERVAL

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
    if recipe == "math":
        _gpu_job_limits(cfg)
    save_config(cfg, paths.config)
    ws = Workspace.init(root, default_template_dir())
    archive = Archive.open(root, create=True, interval=cfg.stats.interval)
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


def _gpu_job_limits(cfg) -> None:
    """Limits a paper-scale GPU job survives: CUDA cannot start under an address-space limit; the CPU time
    of its many threads adds up to the default's 2 hours long before it ends; it runs for many hours;
    and vLLM, Triton and tokenizer pools start many threads, which RLIMIT_NPROC counts. Its policy and
    checkpoints take ~28 bytes a parameter on disk: 64 GiB fits a 1.5B model (preflight sizes it)."""
    cfg.limits.memory_mb = 0
    cfg.limits.cpu_s = 0
    cfg.limits.timeout_s = 48 * 3600.0
    cfg.limits.nproc = 4096
    cfg.limits.disk_mb = 64 << 10


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
    from core.config import stats_interval
    from core.rundir import require_run

    paths = require_run(run_dir)
    return paths, Archive.open(paths.root, readonly=True, interval=stats_interval(paths.root))


def _overall(c, part: str = "selection") -> str:
    m = (c.metrics or {}).get(part, {}).get("overall")
    if not m:
        return "-"
    from core.stats import interval_text

    return interval_text(m)


def cmd_status(a: argparse.Namespace) -> int:
    from collections import Counter

    from core.config import load_config
    from core.runstate import read_state

    paths, archive = _open(a.dir)
    cfg = load_config(paths.config)
    cands = archive.all()
    st = read_state(paths.root)
    counts = Counter(c.status for c in cands)
    print(f"run {cfg.name} ({paths.root}), recipe {cfg.recipe}, seeds {cfg.seeds}")
    print(engine_line(st))
    directive = directive_in_force(paths.root, cfg, st)
    if directive:
        print(f"directive: {directive}")
    print(f"candidates: {len(cands)}  " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for line in best_lines(cands):
        print(line)
    return 0


LIVE_STATES = ("starting", "running", "paused", "stopping")


def engine_line(st) -> str:
    """`engine: STATE, what it does`. The engine's message already names the stage and the candidate
    ("training c004 seed 1: step 12/60"), so stage and candidate are printed only when there is no message."""
    if st.state not in LIVE_STATES:
        return f"engine: {st.state}"  # a stopped or dead engine's last message is history, not what it does
    doing = st.message or " ".join(part for part in (st.stage, st.candidate) if part and part != "idle")
    return f"engine: {st.state}" + (f", {doing}" if doing and doing != st.state else "")


def directive_in_force(root: Path, cfg, st) -> str:
    """The directive that steers proposals: the running engine's own, else the one the next engine will
    take (a directive set while an engine ran outlives it and wins over run.toml's, as in Engine)."""
    from core.runstate import saved_directive

    if st.state in LIVE_STATES:
        return st.directive
    saved = saved_directive(root)
    return cfg.directive if saved is None else saved


def best_lines(cands) -> list[str]:
    """The run's best (confirmed on fresh seeds), a higher-scoring unconfirmed candidate labelled as such,
    and, in words, when the baseline still scores above them: a "best" below the seed is no improvement,
    and two bare "best" lines left the reader to work that out from the numbers."""
    from core.elites import best_confirmed
    from core.report import find_seed

    seed, ranked = find_seed(cands), _by_selection(cands)
    confirmed = best_confirmed(cands)
    leader = next((c for c in ranked if seed is None or c.id != seed.id), None)
    lines = []
    if confirmed is not None:
        lines.append(f"best (confirmed): {confirmed.id} {confirmed.title}  {_scores(confirmed)}")
    if leader is not None and (confirmed is None or leader.id != confirmed.id):
        # its score rests only on the seeds that selected it (the winner's curse), hence the label
        lines.append(f"best (selection): {leader.id} (unconfirmed) {leader.title}  {_scores(leader)}")
    if seed is None or seed.id not in {c.id for c in ranked}:  # not scored yet, or a rerun of it is in flight
        return lines
    contender = confirmed or leader
    if contender is None:
        lines.append(f"baseline: {seed.id} {seed.title}  {_scores(seed)}; no other candidate is evaluated yet")
    elif seed.score() >= contender.score():
        which = "candidate" if seed.score() >= leader.score() else "confirmed candidate"
        lines.append(f"no {which} beats the baseline yet: {seed.id} overall {_overall(seed)} >= "
                     f"{contender.id} overall {_overall(contender)}")
    return lines


def _by_selection(cands) -> list:
    """Scored candidates, best selection Overall first (ties: earlier id), as core.elites ranks them."""
    from core.elites import SCORED, selection_overall

    scored = [c for c in cands if c.status in SCORED and selection_overall(c) is not None]
    return sorted(scored, key=lambda c: (-selection_overall(c), c.id))


def _scores(c) -> str:
    return f"overall {_overall(c)}  held-out {_overall(c, 'heldout')}"


def cmd_show(a: argparse.Namespace) -> int:
    import json

    _, archive = _open(a.dir)
    c = archive.get(a.id)
    print(f"{c.id}  {c.title}  [{c.status}]  parents: {', '.join(c.parent_ids) or '-'}  origin: {c.origin}")
    print(f"branch {c.branch} @ {c.commit[:10]}  seeds {c.seeds}")
    print(f"overall selection {_overall(c)}  held-out {_overall(c, 'heldout')}")
    for line in gain_lines(c.results, archive.interval):
        print(line)
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
    cand = archive.get(a.id)  # a clear error for an unknown id before git is asked
    with Workspace.open(paths.root) as ws:
        if a.against == "parent" and not cand.parent_ids:
            # A root (the seed) has no parent, and an empty diff read as "no change". `git show` of a root
            # commit shows every line added, so do the same: the diff a new file would have.
            print(all_added_diff(ws.read_algorithm(cand.id)), end="")
        else:
            print(ws.diff(cand.id, against=a.against), end="")
    return 0


def all_added_diff(source: str, name: str = "algorithm.py") -> str:
    """`source` as `git diff` prints a newly added file."""
    import difflib

    *complete, last = source.split("\n")  # not splitlines(): git splits on "\n" only, not on form feeds
    lines = [line + "\n" for line in complete]
    if last:
        lines.append(last + "\n\\ No newline at end of file\n")
    hunks = difflib.unified_diff([], lines, "/dev/null", f"b/{name}")
    return f"diff --git a/{name} b/{name}\nnew file mode 100644\n" + "".join(hunks)


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


def _read_source(path: str) -> str:
    """The text of a user's file, or a PoiseError naming it (missing, a directory, unreadable, not text)."""
    file = Path(path).expanduser()
    try:
        return file.read_text()
    except OSError as exc:
        raise PoiseError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PoiseError(f"cannot read {file}: not a text file (expected a Python algorithm.py)") from None


def cmd_add(a: argparse.Namespace) -> int:
    from core.engine import add_human_candidate

    src = _read_source(a.file)
    _check_syntax(src, a.file)
    cid = add_human_candidate(Path(a.dir), src, a.parent, a.title)
    print(f"added {cid} as a child of {a.parent} (branch cand/{cid}); verify it with: poise verify {a.dir} {cid}")
    return 0


def _check_syntax(source: str, path: str) -> None:
    """Refuse a file Python cannot parse before anything is recorded: otherwise it became an `implemented`
    candidate that only `poise verify` rejected later. compile() parses without running a line of it;
    dont_inherit keeps this module's `from __future__` flags out of the check."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""  # null bytes have no line
        raise PoiseError(f"{path} is not valid Python ({where}{exc.msg}); nothing was added") from None
    except ValueError as exc:  # null bytes, on Python versions that do not call them a SyntaxError
        raise PoiseError(f"{path} is not valid Python ({exc}); nothing was added") from None


def cmd_verify(a: argparse.Namespace) -> int:
    from core.engine import Engine

    verdict = Engine(Path(a.dir)).verify_candidate(a.id, repair=False)
    print(f"{a.id}: {'passed' if verdict.ok else 'failed'}  {verdict.reason}")
    return 0 if verdict.ok else 1


def cmd_eval(a: argparse.Namespace) -> int:
    from core.engine import Engine

    engine = Engine(Path(a.dir))
    c = engine.evaluate_candidate(a.id, seeds=a.seeds, echo=True)
    print(f"{c.id}: {c.status}  overall selection {_overall(c)}  held-out {_overall(c, 'heldout')}")
    for line in gain_lines(c.results, engine.cfg.stats.interval):
        print(line)
    ran = [str(s) for s in (a.seeds or c.seeds)]
    # a reflected candidate stays reflected after more seeds: success is every seed asked for evaluated
    return 0 if all((c.results.get(s) or {}).get("outcome") == "evaluated" for s in ran) else 1


def gain_lines(results: dict, method: str = DEFAULT_INTERVAL) -> list[str]:
    """The RL gain over the warm start per part: the interval over seeds (on this eval set), and the wider
    one that also counts the eval problems as a sample (core/eval_noise.py), which is what a claim about
    the task rests on. Nothing for a recipe without a warm start score."""
    from core.eval_noise import describe, gain_over_warm_start, warm_start_models

    models = warm_start_models(results)
    if len(models) > 1:
        which = ", ".join(sorted(m[:12] for m in models))
        line = (f"RL gain over the warm start: not shown; the seeds were trained from {len(models)} different warm "
                f"starts ({which}), so they share no baseline. Re-evaluate them on one install "
                "(`poise eval <dir> <id> --seeds ...`)")
        return [line]
    lines = []
    for part, name in (("heldout", "held-out"), ("selection", "selection")):
        gain = gain_over_warm_start(results, part, method)
        if gain is None:
            continue
        seeds_only, with_problems = gain
        lines.append(f"RL gain over the warm start, {name} Overall: {describe(seeds_only)}")
        if with_problems:
            lines.append(f"  with problem sampling too: {describe(with_problems)}")
    return lines


def cmd_run(a: argparse.Namespace) -> int:
    from core.engine import run_engine, spawn_detached
    from core.rundir import require_run

    _note_queued_commands(require_run(a.dir).root)
    if a.detach:
        pid = spawn_detached(Path(a.dir), a.budget)
        print(f"engine started in the background (pid {pid}); log: {Path(a.dir) / 'engine.log'}")
        return 0
    return run_engine(Path(a.dir), budget=a.budget)


def _note_queued_commands(root: Path) -> None:
    """Commands sent while no engine ran are applied as soon as this one starts. Say so: a stale `pause`
    would otherwise leave the new engine idle without a word."""
    from core.inbox import pending_commands
    from core.runstate import engine_alive

    if engine_alive(root):
        return  # they belong to the engine that is running; this one will refuse to start
    queued = [str(cmd.get("name")) for cmd in pending_commands(root)]
    if queued:
        print(f"poise: note: {len(queued)} command(s) sent while no engine ran will be applied when it starts: "
              f"{', '.join(queued)}", file=sys.stderr)


# pause and stop act on the engine running now. Queued, they would act on the next engine instead: a pause
# sent to a stopped run made the next `poise run` sit paused, silently. Other commands queue meaningfully.
NEEDS_A_RUNNING_ENGINE = {"pause": "there is no engine to pause", "stop": "there is nothing to stop"}
MISSING_ARG_HINT = {"id": "--id ID, the candidate it applies to",
                    "directive": '--directive TEXT (--directive "" clears the directive)'}


def _send_args(a: argparse.Namespace, archive) -> dict:
    """The command's arguments, checked before anything is queued: the engine's own checks report only into
    inbox/done/, which a CLI user never sees. Unknown ids fail with the list of known ones, as `show` does."""
    from core.inbox import COMMAND_ARGS

    given = {key: value for key, value in (("id", a.id), ("directive", a.directive), ("seeds", a.seeds))
             if value is not None}
    takes = COMMAND_ARGS[a.command]
    for key in given:
        if key not in takes:
            allowed = f"; it takes {', '.join('--' + k for k in takes)}" if takes else ""
            raise PoiseError(f"{a.command} takes no --{key}{allowed}")
    for key, required in takes.items():
        if required and key not in given:
            raise PoiseError(f"{a.command} needs {MISSING_ARG_HINT[key]}")
    if "id" in given:
        archive.get(given["id"])
    return given


def cmd_send(a: argparse.Namespace) -> int:
    from core.inbox import send_command
    from core.runstate import engine_alive

    paths, archive = _open(a.dir)
    args = _send_args(a, archive)
    running = engine_alive(paths.root)
    if not running and a.command in NEEDS_A_RUNNING_ENGINE:
        raise PoiseError(f"no engine is running on {paths.root}: {NEEDS_A_RUNNING_ENGINE[a.command]}")
    cmd_id = send_command(paths.root, a.command, **args)
    if not running:
        print(f"poise: warning: no engine is running on {paths.root}; {a.command} is queued and will be applied "
              f"when an engine starts on this run (poise run {a.dir})", file=sys.stderr)
    print(cmd_id)
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


def seed_list(text: str) -> list[int]:
    """argparse type of --seeds: "0,1,2" -> [0, 1, 2]; anything else is a usage error, not a traceback."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):  # results are kept per seed: a repeated one would count once
        raise argparse.ArgumentTypeError(f"each seed once, got {text!r}")
    return seeds


def candidate_budget(text: str) -> int:
    """argparse type of --budget: a number of candidates, 0 = no limit (as [budget] candidates in run.toml)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of candidates, got {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = no limit), got {count}")
    return count


RUN_DIR_HELP = "the run directory (made by `poise init`)"
CANDIDATE_HELP = "candidate id, e.g. seed or c001 (`poise lineage DIR` lists them)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poise", description="POISE: discover RL algorithms for LLMs, offline.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, fn: Handler, help: str, *positionals: tuple[str, str]) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        for arg, arg_help in positionals:
            sp.add_argument(arg, help=arg_help)
        return sp

    run_dir, candidate = ("dir", RUN_DIR_HELP), ("id", CANDIDATE_HELP)
    sp = add("init", cmd_init, "create a run directory with the GRPO seed", ("dir", "the run directory to create"))
    sp.add_argument("--recipe", choices=["tiny", "math"], default="tiny", help="tiny (CPU, default) or math (GPU)")
    sp.add_argument("--name", default="", help="a label for the run (default: the directory's name)")
    add("status", cmd_status, "summary of a run", run_dir)
    add("check", cmd_check, "is this machine ready for the run? (recipe model and data, LLM, workspace)", run_dir)
    add("show", cmd_show, "one candidate, in full", run_dir, candidate)
    add("verify", cmd_verify, "run the verification gauntlet on a candidate", run_dir, candidate)
    sp = add("diff", cmd_diff, "unified diff of a candidate's algorithm.py", run_dir, candidate)
    sp.add_argument("--against", default="parent", help="parent (default), seed, or another candidate id")
    add("lineage", cmd_lineage, "the genealogy as a text tree", run_dir)
    add("mechanisms", cmd_mechanisms, "the registry of known mechanisms")
    sp = add("add", cmd_add, "add a hand-written algorithm.py as a candidate", run_dir,
             ("file", "a complete algorithm.py (start from `git -C DIR/repo show cand/seed:algorithm.py`)"))
    sp.add_argument("--parent", required=True, help="id of the candidate it derives from")
    sp.add_argument("--title", required=True, help="a short title, shown in the tree and the report")
    sp = add("eval", cmd_eval, "train and evaluate a candidate on the run's recipe", run_dir, candidate)
    sp.add_argument("--seeds", type=seed_list, default=None,
                    help="comma-separated integers, e.g. 0,1,2; default: the run's seeds")
    sp = add("run", cmd_run, "run the discovery loop (the engine)", run_dir)
    sp.add_argument("--budget", type=candidate_budget, default=None,
                    help="number of new candidates, 0 = no limit (overrides [budget] candidates in run.toml)")
    sp.add_argument("--detach", action="store_true", help="run in the background; survives the terminal")
    sp = add("send", cmd_send, "send a command to the running engine", run_dir)
    sp.add_argument("command", choices=["pause", "resume", "stop", "rerun", "fork", "veto", "set_directive"],
                    help="pause and stop need a running engine; the others wait in the queue until one starts")
    sp.add_argument("--id", default=None, help="the candidate to rerun, fork or veto")
    sp.add_argument("--directive", default=None, metavar="TEXT",
                    help='fork: a goal for its children; set_directive: the run\'s new directive ("" clears it)')
    sp.add_argument("--seeds", type=seed_list, default=None,
                    help="rerun: comma-separated integers, e.g. 3,4; default: fresh seeds")
    add("report", cmd_report, "write a Markdown report with plots", run_dir)
    return p


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has exited. A BrokenPipeError from anything else (a job's pipe, a
    socket) is a real failure and must not be hidden as one."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # stdout closed or replaced by an object without a descriptor
        return False


def _quiet_exit_on_closed_stdout() -> int:
    """The reader of our stdout went away (`poise show RUN c001 | head`): exit quietly, as other Unix tools do.
    Python's docs (signal module, "Note on SIGPIPE"): point stdout at devnull so the flush at interpreter
    exit does not raise again, and exit 1. SIGPIPE stays ignored, so `poise run` is never killed by it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.fn(args))
        sys.stdout.flush()  # a closed pipe shows up here, where it can be handled, not at interpreter exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        return _quiet_exit_on_closed_stdout()
    except PoiseError as exc:
        print(f"poise: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
