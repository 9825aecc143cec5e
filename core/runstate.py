"""What the engine publishes about itself: `engine.json` (state) and `engine.lock` (pid + heartbeat),
and `directive.json`: a directive set while the engine ran (TUI `d`, `poise send set_directive`), which
outlives the engine and wins over run.toml's.

The engine writes both atomically; TUIs and the CLI only read them. A lock whose
pid is dead or whose heartbeat is older than STALE_AFTER_S is stale: it is
reported, and a new engine may take over only after checking exactly this.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.jobspec import write_json_atomic

STALE_AFTER_S = 30.0
EngineStateName = Literal["starting", "running", "paused", "stopping", "stopped", "finished", "dead"]


@dataclass
class EngineState:
    state: EngineStateName = "stopped"
    stage: str = "idle"                 # select | propose | screen | implement | verify | train | reflect | idle
    candidate: str = ""                 # id the stage works on
    progress: float = 0.0               # 0..1 within the stage (training: step / steps)
    message: str = ""                   # one human line: "training c004 seed 1, step 12/60"
    candidates_done: int = 0
    candidates_budget: int = 0          # 0 = no limit
    llm_tokens: int = 0
    llm_tokens_per_s: float = 0.0
    wall_s: float = 0.0
    queue: list[str] = field(default_factory=list)
    directive: str = ""                 # the directive proposals are steered by now
    pid: int = 0
    updated_at: float = 0.0


def state_path(run_dir: Path) -> Path:
    return Path(run_dir) / "engine.json"


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / "engine.lock"


def directive_path(run_dir: Path) -> Path:
    return Path(run_dir) / "directive.json"


def save_directive(run_dir: Path, text: str) -> None:
    write_json_atomic(directive_path(run_dir), {"directive": text, "set_at": time.time()})


def saved_directive(run_dir: Path) -> str | None:
    """The directive last set while an engine ran; None when none was (run.toml's then holds)."""
    try:
        data = json.loads(directive_path(run_dir).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("directive") if isinstance(data, dict) and isinstance(data.get("directive"), str) else None


def write_state(run_dir: Path, st: EngineState) -> None:
    st.updated_at = time.time()
    write_json_atomic(state_path(run_dir), asdict(st))


def read_state(run_dir: Path) -> EngineState:
    """The engine's last published state; `dead` when it claims to run but its lock is stale."""
    try:
        data: dict[str, Any] = json.loads(state_path(run_dir).read_text())
    except (OSError, json.JSONDecodeError):
        return EngineState()
    st = EngineState(**{k: v for k, v in data.items() if k in EngineState.__dataclass_fields__})
    if st.state in ("starting", "running", "paused", "stopping") and not engine_alive(run_dir):
        st.state = "dead"
    return st


def read_lock(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(lock_path(run_dir).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def process_start(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where /proc does not tell: with the
    pid it names one process for good, so a reused pid is not mistaken for the lock's holder."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def holder_is_alive(lock: dict[str, Any]) -> bool:
    """The process that wrote the lock still exists, even if stopped (Ctrl-Z) and so silent: its heartbeat
    may be old, but taking the lock over would leave two writers once it continues."""
    pid = int(lock.get("pid", 0) or 0)
    if not pid_alive(pid):
        return False
    started = lock.get("started")
    if started is not None and lock.get("host") in (None, os.uname().nodename):
        return process_start(pid) == started
    return time.time() - float(lock.get("heartbeat", 0)) < STALE_AFTER_S  # no start time: judged by heartbeat


def engine_alive(run_dir: Path) -> bool:
    lock = read_lock(run_dir)
    if not lock:
        return False
    if lock.get("task"):
        return False  # held by a CLI command (`poise eval`, ...), not by an engine
    return holder_is_alive(lock)
