"""Where things live in a run directory, and the checks that a path really is one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import RunDirError


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "run.toml"

    @property
    def archive(self) -> Path:
        return self.root / "archive.json"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def engine_log(self) -> Path:
        return self.root / "engine.log"

    def job_dir(self, cand_id: str, seed: int | str) -> Path:
        return self.jobs / cand_id / str(seed)

    def verify_dir(self, cand_id: str, attempt: int) -> Path:
        return self.jobs / cand_id / f"verify-{attempt}"


def require_run(path: str | Path) -> RunPaths:
    """The run at `path`, or a RunDirError that says what is missing."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise RunDirError(f"{root}: no such directory; create a run with `poise init {path}`")
    if not root.is_dir():
        raise RunDirError(f"{root}: not a directory")
    paths = RunPaths(root)
    missing = [p.name for p in (paths.config, paths.archive, paths.repo) if not p.exists()]
    if missing:
        raise RunDirError(f"{root} is not a poise run (missing {', '.join(missing)}); create one with `poise init <dir>`")
    return paths


def runs_home() -> Path:
    """Where `poise-tui` looks for runs and creates the demo run (POISE_HOME overrides)."""
    env = os.environ.get("POISE_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "poise" / "runs"


def default_cache_dir() -> Path:
    """Warm-start models and other rebuildable artefacts (POISE_CACHE_DIR overrides)."""
    env = os.environ.get("POISE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "poise"
