"""core.workspace with real git in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import DirtyWorkspaceError, FrozenFileError, RunDirError, WorkspaceError
from core.resources import ResourceNotFoundError
from core.workspace import GIT_ENV, Workspace, default_template_dir

# CLIP and KL lie far apart, so changing one in each parent merges without conflict.
SEED_SRC = "CLIP = 0.2\n\n\ndef advantages(r):\n    return r - r.mean()\n\n\nKL = 0.04\n"


def git(cwd: Path, *args: str) -> str:
    """Plain git for the test's own tampering, with the same fixed identity."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def template(tmp_path: Path) -> Path:
    tpl = tmp_path / "template"
    (tpl / "docs").mkdir(parents=True)
    (tpl / "algorithm.py").write_text(SEED_SRC)
    (tpl / "CONTRACT.md").write_text("the contract\n")
    (tpl / "docs" / "notes.txt").write_text("frozen too\n")
    (tpl / "__pycache__").mkdir()
    (tpl / "__pycache__" / "algorithm.cpython-311.pyc").write_bytes(b"\0junk")
    return tpl


@pytest.fixture
def ws(tmp_path: Path, template: Path) -> Iterator[Workspace]:
    with Workspace.init(tmp_path / "run", template) as workspace:
        yield workspace


def parents(ws: Workspace, sha: str) -> list[str]:
    return [p.hexsha for p in ws.repo.commit(sha).parents]


def test_init_layout_identity_and_frozen_hashes(ws: Workspace, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert git(run / "repo", "branch", "--show-current") == "main"
    assert ws.candidate_branches() == {"seed": git(run / "repo", "rev-parse", "main")}
    assert git(run / "repo", "log", "-1", "--format=%an <%ae>|%cn <%ce>") == "poise <poise@localhost>|poise <poise@localhost>"
    frozen = json.loads((run / "frozen.json").read_text())
    assert sorted(frozen["files"]) == ["CONTRACT.md", "docs/notes.txt"]  # not algorithm.py, not __pycache__
    assert len(frozen["files"]["CONTRACT.md"]) == 64
    assert ws.read_algorithm("seed") == SEED_SRC
    ws.ensure_clean()
    with pytest.raises(WorkspaceError, match="already exists"):
        Workspace.init(run, tmp_path / "template")


def test_init_ignores_user_git_config_and_hooks(tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, hooks, marker = tmp_path / "home", tmp_path / "hooks", tmp_path / "hook-ran"
    hooks.mkdir()
    home.mkdir()
    for name in ("pre-commit", "commit-msg", "post-commit"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        (hooks / name).chmod(0o755)
    (home / ".gitconfig").write_text(f"[user]\n\tname = Mallory\n\temail = m@evil\n[core]\n\thooksPath = {hooks}\n"
                                     "[commit]\n\tgpgsign = true\n[init]\n\tdefaultBranch = trunk\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    ws = Workspace.init(tmp_path / "run", template)
    ws.create_candidate("c001", "seed", SEED_SRC.replace("0.2", "0.3"), "Wider clip")
    assert not marker.exists()
    assert ws.repo.commit(ws.head("c001")).author.name == "poise"


def test_lineage_parentage_and_messages(ws: Workspace) -> None:
    seed = ws.head("seed")
    c1 = ws.create_candidate("c001", "seed", SEED_SRC.replace("CLIP = 0.2", "CLIP = 0.28"), "Clip higher")
    c2 = ws.create_candidate("c002", "c001", SEED_SRC.replace("KL = 0.04", "KL = 0.0"), "No KL")
    assert parents(ws, c1) == [seed] and parents(ws, c2) == [c1]
    msg = ws.repo.commit(c2).message
    assert msg.startswith("No KL\n") and "Poise-Candidate: c002" in msg and "Poise-Parent: c001" in msg
    assert ws.read_algorithm("c001", commit=c1).count("0.28") == 1
    assert ws.candidate_branches() == {"seed": seed, "c001": c1, "c002": c2}


def test_repair_attempts_stack_on_the_branch(ws: Workspace) -> None:
    c1 = ws.create_candidate("c001", "seed", SEED_SRC + "BROKEN(\n", "Entropy bonus")
    a1 = ws.commit_attempt("c001", SEED_SRC + "ENT = 0.01\n", "repair 1: syntax")
    assert parents(ws, a1) == [c1] and ws.head("c001") == a1
    assert ws.read_algorithm("c001").endswith("ENT = 0.01\n")
    assert ws.read_algorithm("c001", commit=c1).endswith("BROKEN(\n")
    assert ws.parent_commit("c001") == ws.head("seed")  # past its own attempts
    d = ws.diff("c001")
    assert "+ENT = 0.01" in d and "BROKEN" not in d


def test_diffs_against_parent_seed_and_other(ws: Workspace) -> None:
    ws.create_candidate("c001", "seed", SEED_SRC.replace("CLIP = 0.2", "CLIP = 0.28"), "Clip higher")
    ws.create_candidate("c002", "c001", SEED_SRC.replace("CLIP = 0.2", "CLIP = 0.28").replace("KL = 0.04", "KL = 0.0"), "No KL")
    d_parent = ws.diff("c002")
    assert d_parent.startswith("diff --git a/algorithm.py b/algorithm.py\n--- a/algorithm.py\n+++ b/algorithm.py\n@@")
    assert "-KL = 0.04\n+KL = 0.0\n" in d_parent and "CLIP" not in d_parent.replace(" CLIP = 0.28", "")
    d_seed = ws.diff("c002", against="seed")
    assert "-CLIP = 0.2\n+CLIP = 0.28\n" in d_seed and "-KL = 0.04\n+KL = 0.0\n" in d_seed
    d_other = ws.diff("c001", against="c002")
    assert "-KL = 0.0\n+KL = 0.04\n" in d_other
    assert ws.diff("seed") == ""


def test_create_candidate_refusals(ws: Workspace) -> None:
    ws.create_candidate("c001", "seed", SEED_SRC, "same")
    with pytest.raises(WorkspaceError, match="already exists"):
        ws.create_candidate("c001", "seed", SEED_SRC, "again")
    with pytest.raises(WorkspaceError, match="no branch cand/c404"):
        ws.create_candidate("c002", "c404", SEED_SRC, "orphan")
    with pytest.raises(WorkspaceError, match="branch name"):
        ws.create_candidate("../x", "seed", SEED_SRC, "bad id")


def test_frozen_file_tamper_in_a_commit_is_detected(ws: Workspace, tmp_path: Path) -> None:
    ws.create_candidate("c001", "seed", SEED_SRC, "honest")
    ws.verify_frozen("c001")
    wt = ws.worktree("c001")
    git(wt, "switch", "-c", "cand/c002")
    (wt / "CONTRACT.md").write_text("the contract, relaxed\n")
    git(wt, "commit", "-qam", "sneaky")
    with pytest.raises(FrozenFileError, match="c002: commit .* changes frozen file CONTRACT.md"):
        ws.verify_frozen("c002")
    git(wt, "switch", "-c", "cand/c003", "cand/c001")
    (wt / "helper.py").write_text("x = 1\n")
    git(wt, "add", "helper.py")
    git(wt, "commit", "-qm", "extra file")
    with pytest.raises(FrozenFileError, match="adds helper.py"):
        ws.verify_frozen("c003")
    git(wt, "switch", "-c", "cand/c004", "cand/c001")
    git(wt, "rm", "-q", "docs/notes.txt")
    git(wt, "commit", "-qm", "delete")
    with pytest.raises(FrozenFileError, match="lacks frozen file docs/notes.txt"):
        ws.verify_frozen("c004")


def test_frozen_file_tamper_in_the_worktree_is_detected_and_reset(ws: Workspace) -> None:
    ws.create_candidate("c001", "seed", SEED_SRC, "honest")
    wt = ws.worktree("c001")
    (wt / "docs" / "notes.txt").write_text("edited at run time\n")
    with pytest.raises(FrozenFileError, match=r"worktree .* changes frozen file docs/notes.txt"):
        ws.verify_frozen("c001")
    assert ws.worktree("c001") == wt  # reuse resets it
    ws.verify_frozen("c001")


def test_worktrees_follow_the_branch_head(ws: Workspace, tmp_path: Path) -> None:
    ws.create_candidate("c001", "seed", SEED_SRC + "V = 1\n", "v1")
    wt = ws.worktree("c001")
    assert wt == tmp_path / "run" / "worktrees" / "c001"
    assert (wt / "algorithm.py").read_text().endswith("V = 1\n")
    (wt / "scratch.log").write_text("left over")
    ws.commit_attempt("c001", SEED_SRC + "V = 2\n", "v2")
    assert ws.worktree("c001") == wt
    assert (wt / "algorithm.py").read_text().endswith("V = 2\n") and not (wt / "scratch.log").exists()
    ws.ensure_clean()  # worktrees live outside the main checkout
    ws.remove_worktree("c001")
    assert not wt.exists()
    wt.mkdir(parents=True)  # a half-created directory from a crash is replaced
    (wt / "junk").write_text("x")
    assert (ws.worktree("c001") / "algorithm.py").read_text().endswith("V = 2\n")
    assert not (wt / "junk").exists()


def test_crossover_without_conflict_merges_both(ws: Workspace) -> None:
    a = ws.create_candidate("c001", "seed", SEED_SRC.replace("CLIP = 0.2", "CLIP = 0.28"), "Clip higher")
    b = ws.create_candidate("c002", "seed", SEED_SRC.replace("KL = 0.04", "KL = 0.0"), "No KL")
    m = ws.crossover("c003", "c001", "c002", "Clip higher + no KL")
    assert parents(ws, m) == [a, b]
    src = ws.read_algorithm("c003")
    assert "CLIP = 0.28" in src and "KL = 0.0\n" in src
    assert "Conflict" not in ws.repo.commit(m).message
    assert "Poise-Parent: c001" in ws.repo.commit(m).message and "Poise-Parent: c002" in ws.repo.commit(m).message
    ws.verify_frozen("c003")
    assert "+KL = 0.0" in ws.diff("c003") and "CLIP" not in ws.diff("c003").replace(" CLIP = 0.28", "")


def test_crossover_with_conflict_takes_parent_a(ws: Workspace) -> None:
    a = ws.create_candidate("c001", "seed", SEED_SRC.replace("CLIP = 0.2", "CLIP = 0.28"), "Clip higher")
    b = ws.create_candidate("c002", "seed", SEED_SRC.replace("CLIP = 0.2", "CLIP = 0.1"), "Clip lower")
    m = ws.crossover("c003", "c001", "c002", "Both clips")
    assert parents(ws, m) == [a, b]
    assert ws.read_algorithm("c003") == ws.read_algorithm("c001")
    assert "Poise-Merge-Conflict: algorithm.py conflicted; took c001's version" in ws.repo.commit(m).message


def test_delete_candidate(ws: Workspace) -> None:
    ws.create_candidate("c001", "seed", SEED_SRC, "leftover")
    wt = ws.worktree("c001")
    ws.delete_candidate("c001")
    assert "c001" not in ws.candidate_branches() and not wt.exists()
    with pytest.raises(WorkspaceError, match="seed"):
        ws.delete_candidate("seed")


def test_dirty_repo(ws: Workspace, tmp_path: Path) -> None:
    repo = tmp_path / "run" / "repo"
    (repo / "notes.txt").write_text("untracked")
    with pytest.raises(DirtyWorkspaceError, match="notes.txt.*commit or discard"):
        Workspace.open(tmp_path / "run").ensure_clean()
    (repo / "notes.txt").unlink()
    (repo / "algorithm.py").write_text("edited by hand\n")
    with pytest.raises(DirtyWorkspaceError, match="algorithm.py"):
        ws.ensure_clean()


def test_missing_dirs(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such directory"):
        Workspace.open(tmp_path / "nope")
    with pytest.raises(RunDirError, match="no repo"):
        Workspace.open(tmp_path)


def test_foreign_repos_are_refused(ws: Workspace, tmp_path: Path, template: Path) -> None:
    run = tmp_path / "run"
    frozen = (run / "frozen.json").read_bytes()
    (run / "frozen.json").unlink()
    with pytest.raises(WorkspaceError, match="foreign"):
        Workspace.open(run)
    (run / "frozen.json").write_bytes(frozen)
    git(run / "repo", "branch", "-D", "cand/seed")
    with pytest.raises(WorkspaceError, match="foreign.*no branch cand/seed"):
        Workspace.open(run)

    other = tmp_path / "other"
    (other / "repo").mkdir(parents=True)
    git(other / "repo", "init", "-q", "-b", "main")
    (other / "repo" / "algorithm.py").write_text("x\n")
    git(other / "repo", "add", ".")
    git(other / "repo", "commit", "-qm", "someone else's")
    git(other / "repo", "branch", "cand/seed")
    (other / "frozen.json").write_bytes(frozen)
    with pytest.raises(WorkspaceError, match="foreign.*main does not start"):
        Workspace.open(other)

    plain = tmp_path / "plain"
    (plain / "repo").mkdir(parents=True)
    with pytest.raises(WorkspaceError, match="not a git repository"):
        Workspace.open(plain)


def test_default_template_dir() -> None:
    tpl = Path(__file__).resolve().parents[1] / "workspace"
    if (tpl / "algorithm.py").is_file():
        assert default_template_dir() == tpl
    else:  # the template is written by another part of the project; until then it must say so
        with pytest.raises(ResourceNotFoundError, match="seed template not found"):
            default_template_dir()


def test_template_without_algorithm_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "CONTRACT.md").write_text("x")
    with pytest.raises(WorkspaceError, match="no algorithm.py"):
        Workspace.init(tmp_path / "run", tmp_path / "tpl")


def test_set_aside_keeps_the_commits_under_lost(ws: Workspace) -> None:
    sha = ws.create_candidate("c001", "seed", SEED_SRC + "\n# c001\n", "unknown to the archive")
    wt = ws.worktree("c001")
    aside = ws.set_aside("c001")
    assert aside.startswith("lost/c001-") and "c001" not in ws.candidate_branches() and not wt.exists()
    assert ws.repo.heads[aside].commit.hexsha == sha
