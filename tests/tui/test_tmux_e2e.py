"""End to end: `poise-tui <dir>` in a real terminal (tmux) over a run driven by a ScriptedEngine process.

Reads the screen with capture-pane: the tree grows, a fork typed at the keyboard is applied by the
engine and its outcome shows; killing the terminal leaves the engine running and writing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.inbox import command_outcomes
from core.runstate import engine_alive, read_state
from tests.tui.runbuilder import build_run
from tests.tui.tmuxterm import poll

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


@pytest.fixture
def engine_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    run_dir = build_run(tmp_path / "run", n=3, steps=10, state="stopped", seeds=[0, 1])
    proc = subprocess.Popen([sys.executable, "-m", "tests.tui.scripted_engine", str(run_dir), "--step-s", "0.15",
                             "--steps", "6"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    poll(lambda: engine_alive(run_dir), 30, "the scripted engine's lock")
    yield run_dir, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture
def tui_session(engine_process) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    run_dir, proc = engine_process
    name = f"poise-e2e-{os.getpid()}-{time.monotonic_ns()}"
    cmd = f"cd {ROOT} && exec {sys.executable} -m poise_tui {run_dir} --poll 0.1"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "30", cmd], check=True)
    yield name, run_dir, proc
    tmux("kill-session", "-t", name)


def screen(name: str) -> str:
    return tmux("capture-pane", "-p", "-t", name)


def ids_on(text: str) -> set[str]:
    return set(re.findall(r"\bc\d{3}\b", text))


def test_tree_grows_and_fork_is_applied(tui_session) -> None:
    name, run_dir, _ = tui_session
    first = poll(lambda: ids_on(screen(name)), 30, "candidates on screen")
    poll(lambda: ids_on(screen(name)) - first, 60, f"a new candidate beyond {sorted(first)}")
    tmux("send-keys", "-t", name, "f")
    poll(lambda: "optional directive" in screen(name), 20, "the fork dialog")
    tmux("send-keys", "-t", name, "-l", "shorter answers")
    tmux("send-keys", "-t", name, "Enter")
    outcome = poll(lambda: "next proposal forks seed" in screen(name), 30, "the fork outcome on screen")
    assert outcome
    assert any(o["name"] == "fork" and o["args"] == {"id": "seed", "directive": "shorter answers"}
               for o in command_outcomes(run_dir))


def test_engine_survives_the_tui_being_killed(tui_session) -> None:
    name, run_dir, proc = tui_session
    poll(lambda: ids_on(screen(name)), 30, "the TUI attached")
    tmux("kill-session", "-t", name)
    poll(lambda: name not in tmux("list-sessions"), 10, "the tmux session gone")
    before = read_state(run_dir).updated_at
    assert proc.poll() is None, "the engine died with the TUI"
    poll(lambda: read_state(run_dir).updated_at > before, 20, "the engine still writing engine.json")
    assert engine_alive(run_dir)
