"""Finding runs, creating the demo run, and starting an engine that outlives the TUI.

Engines are started as `python -m core.cli run <dir> --detach` in a new session
with output to <run>/engine.log, so closing the terminal (SIGHUP to the TUI's
process group) never reaches them, and nothing they print reaches the screen.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from core.errors import RunDirError
from core.rundir import runs_home
from core.runstate import engine_alive, read_state

__all__ = ["archive_problem", "check_run_dir", "engine_command", "init_demo_run", "most_recent_run", "needs_engine",
           "resume_budget", "runs_home", "start_engine", "started_note"]


def _activity(run_dir: Path) -> float:
    """When the run last changed: the newest of engine.json and archive.json."""
    stamps = [(run_dir / n).stat().st_mtime for n in ("engine.json", "archive.json") if (run_dir / n).exists()]
    return max(stamps, default=0.0)


def most_recent_run(home: Path) -> Path | None:
    """The run under `home` with the newest activity; None when there is none."""
    if not home.is_dir():
        return None
    runs = [p for p in home.iterdir() if (p / "run.toml").is_file()]
    return max(runs, key=_activity, default=None)


def check_run_dir(run_dir: Path) -> Path:
    """The run directory the user meant: `run_dir`, or the run holding it when it is a file of one
    (`poise-tui run1/run.toml`, tab completion's favourite)."""
    run_dir = Path(run_dir).expanduser().resolve()
    if run_dir.is_file():
        return _run_holding(run_dir)
    if not (run_dir / "run.toml").is_file():
        raise RunDirError(f"{run_dir} is not a poise run (no run.toml); create one with `poise init {run_dir}`")
    return run_dir


def _run_holding(path: Path) -> Path:
    """The nearest directory above the file `path` that is a run; a file outside any run is an error, and the
    advice to `poise init` it would be wrong (init makes a directory)."""
    for parent in path.parents:
        if (parent / "run.toml").is_file():
            return parent
    raise RunDirError(f"{path} is a file, not a run directory; did you mean poise-tui {path.parent}? "
                      "(a run directory holds run.toml; create one with `poise init DIR`)")


def archive_problem(run_dir: Path) -> str | None:
    """Why the run's archive.json cannot be read, or None when it can (or does not exist yet).

    An engine started on an unreadable archive dies at once, so attaching must not start one."""
    from core.archive import ARCHIVE_FILE, Archive  # lazy, like RunReader: keeps the TUI's import path light
    from core.errors import ArchiveError

    if not (Path(run_dir) / ARCHIVE_FILE).exists():
        return None
    try:
        Archive.open(run_dir, readonly=True)
    except ArchiveError as exc:
        return str(exc)
    return None


def needs_engine(run_dir: Path) -> bool:
    """True when no engine is alive, the run is not finished and its archive is readable (so attaching should
    start one)."""
    return (not engine_alive(run_dir) and read_state(run_dir).state != "finished"
            and archive_problem(run_dir) is None)


def resume_budget(run_dir: Path) -> int | None:
    """The candidate budget the run's last engine ran with (engine.json), None when there is none to keep.

    `poise run RUN --budget 4` overrides run.toml only for that engine; resuming without it would quietly
    switch the run back to run.toml's budget."""
    return read_state(run_dir).candidates_budget or None


def engine_command(run_dir: Path, budget: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "core.cli", "run", str(run_dir), "--detach"]
    if budget is not None:
        command += ["--budget", str(budget)]
    return command


def started_note(pid: int, budget: int | None) -> str:
    """The toast after attaching started an engine: a resumed run says which budget it keeps."""
    if budget is not None:
        return f"resumed the engine (budget {budget} candidates); it keeps running after you quit"
    return f"started the engine (pid {pid}); it keeps running after you quit"


def start_engine(run_dir: Path, command: list[str] | None = None) -> int:
    """Start a detached engine; returns its pid. Its output goes to <run>/engine.log, never to our terminal."""
    with open(Path(run_dir) / "engine.log", "ab") as log:
        proc = subprocess.Popen(command or engine_command(run_dir), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, cwd=_project_root())
    return proc.pid


def init_demo_run(home: Path) -> Path:
    """Create the embedded demo run (recipe tiny) under `home` through `poise init`; returns its directory."""
    run_dir = home / time.strftime("demo-%Y%m%d-%H%M%S")
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "core.cli", "init", str(run_dir)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, cwd=_project_root(), timeout=120, check=False)
    if done.returncode != 0 or not (run_dir / "run.toml").exists():
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunDirError(f"`poise init {run_dir}` failed: {detail[0]}; run it by hand to see the full error")
    return run_dir


def _project_root() -> str:
    """The directory that holds the `core` package, so `-m core.cli` resolves from any cwd."""
    return str(Path(__file__).resolve().parent.parent)
