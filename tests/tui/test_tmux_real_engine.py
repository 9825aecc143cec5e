"""End to end on the REAL engine: `poise-tui <dir>` in tmux (80x24) over a demo-style run.

`poise init` makes the demo run (recipe tiny, the embedded SmolLM2 through llama.cpp); the test only
shrinks its protocol for speed. `poise-tui` starts the real engine detached; the test reads the screen
with capture-pane until the seed is scored and a child appears, forks from the keyboard and waits for
the engine's outcome on screen, kills the terminal and checks the engine lives on (pid and heartbeat),
reattaches a second TUI that shows the same tree, and stops the engine through its inbox.
Nothing here is scripted or faked: the LLM call, verification, training and evaluation are real, so
the phase deadlines are generous (a proposal takes 10-70 s on a quiet 2-core box, minutes on a loaded one).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.archive import Archive
from core.config import load_config, save_config
from core.engine import reap_orphan_jobs
from core.inbox import command_outcomes
from core.runstate import engine_alive, pid_alive, read_lock, read_state
from tests.engine_support import TINY_PROTOCOL, session_cache
from tests.tui.tmuxterm import TmuxTerm, candidate_ids, poll

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")]

# A label of the tree with a score: "★ seed 41.2±3.0 GRPO (seed)" (icon, id, Overall mean±half-width in %).
SCORED_SEED = re.compile(r"\bseed -?\d+\.\d(±\d+\.\d)? ")  # narrow trees (80x24) drop the ±
CHILD = re.compile(r"\bc\d{3}\b")
DIRECTIVE = "shorter answers at equal accuracy"
# Phase deadlines (s). The LLM phase holds one proposal plus its screening call on a shared CPU.
START_S, SEED_S, CHILD_S, OUTCOME_S, STOP_S = 60, 240, 420, 240, 300


# ------------------------------------------------------------------------------------------ the run

def shrink(run: Path) -> None:
    """One seed, one proposal per round, one candidate, and the tests' tiny protocol on the default model.

    Its warm start is the bundled one (no SFT to run), which scores well above zero, so the Overall the
    tree shows cannot pass as a 0.0 that nothing filled in."""
    cfg = load_config(run / "run.toml")
    cfg.seeds = [0]
    cfg.budget.candidates = 1
    cfg.search.proposals_per_parent = 1
    cfg.search.selection.parents_per_round = 1
    for key, value in TINY_PROTOCOL.items():
        setattr(cfg.tiny, key, value)
    save_config(cfg, run / "run.toml")


@pytest.fixture
def demo_run(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh `poise init` run, shrunk, and the environment its TUI and engine run with."""
    env = {"POISE_CACHE_DIR": str(session_cache(tmp_path_factory)), "PYTHONPATH": str(ROOT)}
    run = tmp_path / "demo"
    subprocess.run([PY, "-m", "core.cli", "init", str(run)], cwd=ROOT, env={**os.environ, **env}, check=True,
                   capture_output=True, timeout=120)
    shrink(run)
    return run, env


@pytest.fixture
def term() -> Iterator[TmuxTerm]:
    t = TmuxTerm(f"poise-real-{os.getpid()}-{time.monotonic_ns()}")
    yield t
    t.close()


@pytest.fixture
def engines(demo_run: tuple[Path, dict[str, str]]) -> Iterator[set[int]]:
    """Engine pids the test saw; whatever still lives at the end is SIGKILLed with its jobs (no leaks)."""
    seen: set[int] = set()
    yield seen
    for pid in seen:
        kill_engine_group(pid)
    reap_orphan_jobs(demo_run[0] / "jobs")


def kill_engine_group(pid: int) -> None:
    """SIGKILL a detached engine's process group (its own session), never the test's own group."""
    if not pid_alive(pid):
        return
    try:
        group = os.getpgid(pid)
        if group == pid and group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------------------ helpers

def tui_argv(run: Path) -> list[str]:
    return [PY, "-m", "poise_tui", str(run), "--poll", "0.2"]


def engine_pid(run: Path) -> int:
    """The pid in engine.lock when that engine is alive (fresh heartbeat), else 0."""
    lock = read_lock(run) or {}
    return int(lock.get("pid", 0)) if engine_alive(run) else 0


def heartbeat(run: Path) -> float:
    return float((read_lock(run) or {}).get("heartbeat", 0.0))


def diagnostics(term: TmuxTerm, session: str, run: Path) -> Callable[[], str]:
    def show() -> str:
        log = run / "engine.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no engine.log)"
        state = (run / "engine.json").read_text() if (run / "engine.json").exists() else "(no engine.json)"
        return f"--- screen of {session}:\n{term.screen(session)}\n--- engine.json:\n{state}\n--- engine.log:\n{tail}"
    return show


def tree_of(term: TmuxTerm, session: str) -> str:
    """The archive tree's pane: rows under the status bar, left of the detail pane's rule (the status
    bar and the toasts name candidates too, so reading the whole screen would see nodes that are not there)."""
    rows = term.screen(session).splitlines()[1:]
    # The rule's column, read off the tab header row; tree guides deeper down also draw "│".
    header = next((row for row in rows if "│ Curves" in row), "")
    cut = header.index("│ Curves") if header else None
    return "\n".join(row[:cut] for row in rows)


def fork_target(text: str) -> str | None:
    """The node the fork dialog names ("Fork seed: optional directive ..."), once it is open."""
    m = re.search(r"Fork (seed|c\d{3}):", text)
    return m.group(1) if m else None


def showing(term: TmuxTerm, session: str, text: str) -> Callable[[], str]:
    """A poll predicate: the session's screen when it contains text, else ''."""
    def check() -> str:
        screen = term.screen(session)
        return screen if text in screen else ""
    return check


def keep(run: Path, label: str, text: str) -> None:
    """Save a screen next to the run (pytest's basetemp), for a human to look at after a run."""
    shots = run.parent / "screens"
    shots.mkdir(exist_ok=True)
    (shots / f"{len(list(shots.iterdir())):02d}-{label}.txt").write_text(text)


def archive_ids(run: Path) -> set[str]:
    return {c.id for c in Archive.open(run, readonly=True).all()}


# ------------------------------------------------------------------------------------------ the test

def test_real_engine_grows_the_tree_applies_a_fork_and_outlives_the_tui(
        demo_run: tuple[Path, dict[str, str]], term: TmuxTerm, engines: set[int]) -> None:
    run, env = demo_run
    t0 = time.monotonic()
    times: dict[str, float] = {}
    first = "tui-1"
    term.start(first, tui_argv(run), ROOT, env)
    show = diagnostics(term, first, run)
    tui_pid = term.pane_pid(first)

    # 2. poise-tui started the real engine, detached.
    pid = poll(lambda: engine_pid(run), START_S, "the engine that poise-tui starts", show)
    engines.add(pid)
    assert pid != tui_pid

    # 3. The tree grows: the seed gets its score, then the first LLM proposal becomes a node.
    poll(lambda: SCORED_SEED.search(tree_of(term, first)), SEED_S, "the seed's Overall in the tree", show)
    times["seed scored"] = time.monotonic() - t0
    # The number shown is the archive's selection Overall, in % (read from the file, not from the TUI's code).
    overall = Archive.open(run, readonly=True).get("seed").metrics["selection"]["overall"]["mean"]
    assert overall > 0.1, overall  # the bundled warm start's ~0.36, trained a little: a real score
    assert f"seed {overall * 100:.1f}" in tree_of(term, first), (overall, tree_of(term, first))
    poll(lambda: CHILD.search(tree_of(term, first)), CHILD_S, "a child node (c001...) in the tree", show)
    times["child shown"] = time.monotonic() - t0
    keep(run, "grown", term.screen(first))

    # 4. Fork from the keyboard with a directive; the engine's outcome comes back on screen.
    term.keys(first, "f")
    target = poll(lambda: fork_target(term.screen(first)), 30, "the fork dialog", show)
    keep(run, "fork-dialog", term.screen(first))
    term.type(first, DIRECTIVE)
    term.keys(first, "Enter")
    outcome = poll(showing(term, first, f"fork of {target} queued"), OUTCOME_S, "the fork outcome on screen", show)
    keep(run, "fork-outcome", outcome)
    times["fork outcome shown"] = time.monotonic() - t0
    applied = [o for o in command_outcomes(run) if o["name"] == "fork"]
    assert [o["args"] for o in applied] == [{"id": target, "directive": DIRECTIVE}] and applied[0]["ok"]
    tree_before = candidate_ids(tree_of(term, first))

    # 5. Kill the terminal: the TUI dies, the engine keeps its pid and its heartbeat.
    term.kill_session(first)
    poll(lambda: not pid_alive(tui_pid), 20, f"the TUI (pid {tui_pid}) to die with its terminal")
    beat = heartbeat(run)
    poll(lambda: heartbeat(run) > beat, 20, "the engine's heartbeat to advance after the TUI died", show)
    assert engine_pid(run) == pid, "the engine died with the TUI, or another one took its place"

    # A second TUI attaches to the same engine and shows the same tree (and whatever the engine added since).
    second = "tui-2"
    term.start(second, tui_argv(run), ROOT, env)
    show = diagnostics(term, second, run)
    poll(lambda: tree_before <= candidate_ids(tree_of(term, second)), 60, f"the tree {sorted(tree_before)} again", show)
    poll(lambda: candidate_ids(tree_of(term, second)) == archive_ids(run), 60, "the reattached tree = the archive", show)
    assert SCORED_SEED.search(tree_of(term, second)), "the reattached tree lost the seed's score"
    assert engine_pid(run) == pid, "reattaching started a second engine"
    times["reattached"] = time.monotonic() - t0
    keep(run, "reattached", term.screen(second))

    # Stop through the inbox, as an operator would; the TUI shows the engine stopped.
    subprocess.run([PY, "-m", "core.cli", "send", str(run), "stop"], cwd=ROOT, env={**os.environ, **env},
                   check=True, capture_output=True, timeout=60)
    poll(lambda: not pid_alive(pid), STOP_S, f"the engine (pid {pid}) to exit after `poise send stop`", show)
    assert read_state(run).state == "stopped"
    poll(lambda: " stopped " in term.screen(second), 20, "the stopped engine in the status bar", show)
    times["engine stopped"] = time.monotonic() - t0
    keep(run, "stopped", term.screen(second))
    print("phase times (s since poise-tui started):", {k: round(v, 1) for k, v in times.items()})
