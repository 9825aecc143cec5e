"""`poise` error paths (exit 2, one clear line, nothing modified) and a hand-written candidate through
`poise add` + `poise verify` (the real gauntlet: static check, sandboxed probes, smoke run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from engine_support import ROOT, check_consistent, copy_run, poise, session_cache
from engine_support import base_run as _base_run

from core.archive import Archive


@pytest.fixture
def cache(tmp_path_factory) -> Path:
    return session_cache(tmp_path_factory)


@pytest.fixture
def run(tmp_path_factory, tmp_path: Path) -> Path:
    return copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)


def fails(args: list, cache: Path, needle: str) -> str:
    out = poise(args, cache, timeout=120, check=False)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.startswith("poise: error: ") and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr


@pytest.mark.parametrize("cmd", ["status", "lineage", "run", "report"])
def test_missing_directory(cmd: str, cache: Path, tmp_path: Path) -> None:
    fails([cmd, tmp_path / "nope"], cache, "no such directory; create a run with `poise init")


@pytest.mark.parametrize("cmd", ["status", "run"])
def test_not_a_run(cmd: str, cache: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    fails([cmd, tmp_path], cache, "is not a poise run (missing run.toml, archive.json, repo)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_refuses_a_non_empty_directory(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    fails(["init", tmp_path], cache, "exists and is not empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("cmd", [["status"], ["lineage"], ["show", "seed"], ["run"]])
def test_corrupt_archive_is_reported_and_left_unchanged(cmd: list, run: Path, cache: Path) -> None:
    good = (run / "archive.json").read_bytes()
    torn = good[: len(good) // 2]
    (run / "archive.json").write_bytes(torn)
    fails([cmd[0], run, *cmd[1:]], cache, "archive.json: not valid JSON")
    assert (run / "archive.json").read_bytes() == torn
    assert not (run / "engine.lock").exists()


def test_unknown_candidate(run: Path, cache: Path) -> None:
    fails(["show", run, "c042"], cache, "no candidate 'c042'")
    fails(["diff", run, "c042"], cache, "no candidate 'c042'")


def test_dirty_repo_refuses_to_run(run: Path, cache: Path) -> None:
    algo = run / "repo" / "algorithm.py"
    algo.write_text(algo.read_text() + "\n# my experiment\n")
    before = (run / "archive.json").read_bytes()
    fails(["run", run], cache, "has uncommitted changes (algorithm.py)")
    assert (run / "archive.json").read_bytes() == before and algo.read_text().endswith("# my experiment\n")


def test_foreign_repo_is_not_touched(run: Path, cache: Path) -> None:
    shutil.rmtree(run / "repo")
    (run / "repo").mkdir()
    subprocess.run(["git", "init", "-q", str(run / "repo")], check=True)
    fails(["run", run], cache, "looks foreign")
    (run / "frozen.json").unlink()
    fails(["run", run], cache, "frozen.json is missing or unreadable")


def test_send_validates_the_command_name(run: Path, cache: Path) -> None:
    out = poise(["send", run, "explode"], cache, check=False)
    assert out.returncode == 2 and "invalid choice: 'explode'" in out.stderr


HAND_WRITTEN_FIX = ('"clip_eps": 0.2,', '"clip_eps": 0.3,')


def test_add_and_verify_a_hand_written_candidate(run: Path, cache: Path, tmp_path: Path) -> None:
    seed_src = (ROOT / "workspace" / "algorithm.py").read_text()
    assert HAND_WRITTEN_FIX[0] in seed_src
    good = tmp_path / "wider_clip.py"
    good.write_text(seed_src.replace(*HAND_WRITTEN_FIX))
    out = poise(["add", run, good, "--parent", "seed", "--title", "Wider clip"], cache)
    assert "added c001 as a child of seed" in out.stdout
    c = Archive.open(run, readonly=True).get("c001")
    assert c.origin == "human" and c.status == "implemented" and c.branch == "cand/c001"
    diff = poise(["diff", run, "c001"], cache).stdout
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert [ln.split("#")[0].strip() for ln in changed] == ['-    "clip_eps": 0.2,', '+    "clip_eps": 0.3,']
    verdict = poise(["verify", run, "c001"], cache, timeout=300)
    assert "c001: passed" in verdict.stdout
    c = Archive.open(run, readonly=True).get("c001")
    assert c.status == "verified" and c.verification["ok"] and c.verification["stage"] == "passed"

    bad = tmp_path / "sneaky.py"
    bad.write_text("import os\n" + seed_src)
    poise(["add", run, bad, "--parent", "c001", "--title", "Sneaky"], cache)
    out = poise(["verify", run, "c002"], cache, check=False)
    assert out.returncode == 1 and "c002: failed" in out.stdout and "os" in out.stdout
    c2 = Archive.open(run, readonly=True).get("c002")
    assert c2.status == "rejected" and c2.verification["stage"] == "static"
    check_consistent(run)


def test_add_that_cannot_commit_keeps_the_code_and_the_next_engine_implements_it(run: Path, cache: Path,
                                                                                 tmp_path: Path) -> None:
    """A stale ref lock (left by a killed git) makes the commit fail, like a full disk would. The code is
    already in the record, so recovery, which redoes a proposed candidate's branch, rebuilds it."""
    from core.engine import Engine

    source = (ROOT / "workspace" / "algorithm.py").read_text().replace(*HAND_WRITTEN_FIX)
    good = tmp_path / "wider_clip.py"
    good.write_text(source)
    lock = run / "repo" / ".git" / "refs" / "heads" / "cand" / "c001.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    out = poise(["add", run, good, "--parent", "seed", "--title", "Wider clip"], cache, check=False)
    assert out.returncode == 2 and "recorded with its code" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "cannot lock ref" in out.stderr
    c = Archive.open(run, readonly=True).get("c001")
    assert c.status == "proposed" and c.proposal["change"]["code"] == source
    lock.unlink()
    engine = Engine(run)
    engine.recover()
    engine.discovery.implement("c001")
    c = Archive.open(run, readonly=True).get("c001")
    assert c.status == "implemented" and engine.ws.read_algorithm("c001") == source
    check_consistent(run)


def test_an_edit_left_in_a_worktree_is_discarded_and_a_tampered_commit_changes_no_status(run: Path, cache: Path) -> None:
    """The worktree is a scratch checkout of the commit: an edit on disk is reset before the frozen-file
    check. A commit that changes a frozen file stops `poise eval` before the candidate is marked training."""
    from core.workspace import Workspace

    ws = Workspace.open(run)
    contract = ws.worktree("seed") / "CONTRACT.md"
    pristine = contract.read_text()
    contract.write_text(pristine + "edited by hand\n")
    before = Archive.open(run, readonly=True).get("seed")
    out = poise(["eval", run, "seed"], cache, timeout=300)  # its seeds are done: nothing trains, nothing is refused
    # the RL gain over the warm start, per part, over seeds and over seeds x problems (1 seed; 6 splits x 8)
    assert "RL gain over the warm start, held-out Overall: " in out.stdout, out.stdout
    assert "with problem sampling too: " in out.stdout and "over 1 seed x 48 problems" in out.stdout, out.stdout
    assert contract.read_text() == pristine
    assert Archive.open(run, readonly=True).get("seed").results == before.results

    wt = ws.worktree("seed")
    (wt / "CONTRACT.md").write_text(pristine + "relaxed\n")
    subprocess.run(["git", "-C", str(wt), "commit", "-qam", "tamper"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(wt), "branch", "-f", "cand/seed", "HEAD"], check=True, capture_output=True)
    status = Archive.open(run, readonly=True).get("seed").status
    fails(["eval", run, "seed"], cache, "changes frozen file CONTRACT.md")
    assert Archive.open(run, readonly=True).get("seed").status == status
