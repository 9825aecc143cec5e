"""The CLI commands that write a run outside the engine (`poise eval`, `verify`, `add`) take the run's lock:
beside a live engine they refuse and change nothing, and an engine does not start while one of them writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_support import ROOT, copy_run, poise, session_cache
from engine_support import base_run as _base_run

from core.runstate import engine_alive, lock_path


@pytest.fixture
def run(tmp_path_factory, tmp_path: Path) -> Path:
    return copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)


@pytest.fixture
def holder():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def hold_lock(run: Path, pid: int, task: str = "") -> None:
    """The lock file as a live holder leaves it (its heartbeat is fresh)."""
    lock_path(run).write_text(json.dumps({"pid": pid, "heartbeat": time.time(), "task": task}))


def snapshot(run: Path) -> tuple[bytes, str]:
    heads = subprocess.run(["git", "-C", str(run / "repo"), "show-ref"], check=True, capture_output=True, text=True).stdout
    return (run / "archive.json").read_bytes(), heads


@pytest.mark.parametrize("cmd", [["eval", "seed", "--seeds", "5"], ["verify", "seed"], ["add", "SRC", "--parent", "seed",
                                                                                      "--title", "mine"]])
def test_cli_writers_refuse_beside_a_live_engine(cmd: list, run: Path, holder, tmp_path_factory, tmp_path: Path):
    src = tmp_path / "mine.py"
    src.write_text((ROOT / "workspace" / "algorithm.py").read_text().replace('"clip_eps": 0.2,', '"clip_eps": 0.3,'))
    hold_lock(run, holder.pid)
    before = snapshot(run)
    out = poise([cmd[0], run, *[str(src) if c == "SRC" else c for c in cmd[1:]]], session_cache(tmp_path_factory),
                check=False)
    assert out.returncode != 0 and f"an engine (pid {holder.pid}) is running" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and snapshot(run) == before


def test_no_engine_starts_while_a_cli_command_writes(run: Path, holder, tmp_path_factory):
    hold_lock(run, holder.pid, task="poise eval c001")
    assert not engine_alive(run)  # a CLI holder is not an engine: `poise send` must not report one
    out = poise(["run", run, "--budget", "1"], session_cache(tmp_path_factory), check=False)
    assert out.returncode != 0 and f"`poise eval c001` (pid {holder.pid}) is writing" in out.stderr, out.stderr


def test_the_lock_is_released_after_the_command(run: Path, tmp_path_factory, tmp_path: Path):
    src = tmp_path / "mine.py"
    src.write_text((ROOT / "workspace" / "algorithm.py").read_text().replace('"clip_eps": 0.2,', '"clip_eps": 0.3,'))
    out = poise(["add", run, src, "--parent", "seed", "--title", "mine"], session_cache(tmp_path_factory))
    assert "added c001" in out.stdout and not lock_path(run).exists()


def test_eval_of_a_reflected_candidate_keeps_it_reflected(run: Path, tmp_path_factory):
    """Like a queued rerun: more seeds for a finished node must not send it back for a second reflection."""
    from core.archive import Archive

    arch = Archive.open(run)
    if arch.get("seed").status == "evaluated":
        arch.set_status("seed", "reflected", "no reflection (seed or ablation)")
    poise(["eval", run, "seed", "--seeds", "5"], session_cache(tmp_path_factory), timeout=600)
    seed = Archive.open(run, readonly=True).get("seed")
    assert "5" in seed.results and seed.status == "reflected"
    assert seed.history[-1]["reason"] == "re-evaluated on seeds [5] (poise eval)"
