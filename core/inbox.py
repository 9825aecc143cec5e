"""The command inbox: how a TUI or the CLI talks to the engine, through files only.

A sender writes one JSON file per command into `<run>/inbox/` with an atomic
rename; the engine, the single writer of the run, applies each in name order and
moves it to `<run>/inbox/done/` with its outcome. Several TUIs can send at once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from core.errors import PoiseError
from core.jobspec import write_json_atomic

COMMANDS = {
    "pause": "stop starting new work after the current stage",
    "resume": "continue after pause",
    "stop": "end the training job or LLM call in flight (redone on resume), then exit the engine",
    "rerun": "evaluate a candidate again on new seeds: {id, seeds?}",
    "fork": "propose children of a candidate next: {id, directive?}",
    "veto": "reject a proposed/queued candidate before it is trained: {id}",
    "set_directive": "change the run's directive for later proposals: {directive}",
}

# The arguments each command takes (True: required). Senders check them before writing the command: a
# mistake found only by the engine is recorded in inbox/done/, where a CLI user never sees it.
COMMAND_ARGS: dict[str, dict[str, bool]] = {
    "pause": {},
    "resume": {},
    "stop": {},
    "rerun": {"id": True, "seeds": False},
    "fork": {"id": True, "directive": False},
    "veto": {"id": True},
    "set_directive": {"directive": True},
}


def inbox_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "inbox"


def send_command(run_dir: Path, name: str, **args: Any) -> str:
    """Queue a command for the engine; returns its id. Unknown names fail here, not in the engine."""
    if name not in COMMANDS:
        raise PoiseError(f"unknown command {name!r}; valid: {', '.join(COMMANDS)}")
    cmd_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
    write_json_atomic(inbox_dir(run_dir) / f"{cmd_id}.json", {"id": cmd_id, "name": name, "args": args, "sent_at": time.time()})
    return cmd_id


def pending_commands(run_dir: Path) -> list[dict[str, Any]]:
    """Commands not yet applied, oldest first. A malformed file is returned as an error record."""
    out = []
    for path in sorted(inbox_dir(run_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            problem = _shape_problem(data)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            problem = str(exc)
        if problem:
            out.append({"id": path.stem, "name": "<malformed>", "args": {}, "error": problem})
        else:  # the file's name is the id that retires it, whatever the content says
            out.append({**data, "id": path.stem})
    return out


def _shape_problem(data: Any) -> str:
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    if not isinstance(data.get("name"), str):
        return "the command has no \"name\" string"
    if not isinstance(data.get("args", {}), dict):
        return "\"args\" is not an object"
    return ""


def mark_done(run_dir: Path, cmd: dict[str, Any], outcome: str, ok: bool) -> None:
    """Record the outcome and retire the command (engine only)."""
    done = inbox_dir(run_dir) / "done"
    write_json_atomic(done / f"{cmd['id']}.json", {**cmd, "outcome": outcome, "ok": ok, "done_at": time.time()})
    try:
        os.unlink(inbox_dir(run_dir) / f"{cmd['id']}.json")
    except FileNotFoundError:
        pass


def command_outcomes(run_dir: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent applied commands with their outcomes, newest last."""
    done = sorted((inbox_dir(run_dir) / "done").glob("*.json"))[-limit:]
    out = []
    for path in done:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out
