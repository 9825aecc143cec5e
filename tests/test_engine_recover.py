"""What a run keeps across engines: Engine.recover on an archive that lost records deletes nothing in the repo,
and a directive set while an engine ran is still in force in the next."""

from __future__ import annotations

import json
from pathlib import Path

from engine_support import base_run as _base_run
from engine_support import copy_run, poise, read_engine_json, session_cache

from core.workspace import Workspace


def branches(run: Path) -> dict[str, str]:
    with Workspace.open(run) as ws:
        return {h.name: h.commit.hexsha for h in ws.repo.heads}


def test_a_branch_the_archive_does_not_know_is_set_aside(tmp_path_factory, tmp_path: Path) -> None:
    from core.engine import Engine

    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    with Workspace.open(run) as ws:
        sha = ws.create_candidate("c007", "seed", ws.read_algorithm("seed") + "\n# lost record\n", "no record")
    Engine(run).recover()
    after = branches(run)
    lost = [name for name in after if name.startswith("lost/c007-")]
    assert "cand/c007" not in after and len(lost) == 1 and after[lost[0]] == sha
    assert "cand/seed" in after


def test_an_archive_without_the_seed_stops_the_engine_and_changes_nothing(tmp_path_factory, tmp_path: Path) -> None:
    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    (run / "archive.json").write_text(json.dumps({"candidates": {}}))  # valid, but not this run's archive
    before = branches(run)
    proc = poise(["run", run, "--budget", "1"], session_cache(tmp_path_factory), check=False)
    assert proc.returncode != 0 and "no record of the seed" in proc.stderr
    assert branches(run) == before
    state = read_engine_json(run)
    assert state["state"] == "stopped" and "no record of the seed" in state["message"]


def test_a_directive_set_while_running_outlives_the_engine(tmp_path_factory, tmp_path: Path) -> None:
    from core.engine import Engine

    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    toml = (run / "run.toml").read_bytes()
    outcome = Engine(run).apply_command({"id": "x1", "name": "set_directive", "args": {"directive": "shorter answers"}})
    assert "shorter answers" in outcome and read_engine_json(run)["directive"] == "shorter answers"
    assert Engine(run).cfg.directive == "shorter answers"  # the next engine steers by it too
    assert (run / "run.toml").read_bytes() == toml  # the user's file (and its comments) is left alone


def test_recovery_stores_intervals_of_another_method_once(tmp_path_factory, tmp_path: Path) -> None:
    """A run whose [stats] interval was changed: the engine stores the recomputed intervals at start, so the
    TUI and CLI read them as they are instead of recomputing every candidate at every reload."""
    from core.config import load_config, save_config
    from core.engine import Engine

    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    cfg = load_config(run / "run.toml")
    cfg.stats.interval = "bootstrap"
    save_config(cfg, run / "run.toml")
    stored = lambda: json.loads((run / "archive.json").read_text())["candidates"]
    methods = lambda: {m["interval"] for rec in stored().values() for part in rec["metrics"].values()
                       for m in part.values()}
    assert methods() == {"t"}, "precondition: the base run was scored under t"
    Engine(run).recover()
    assert methods() == {"bootstrap"}
