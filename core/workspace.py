"""The run's git repository, `<run>/repo`: the only module that uses GitPython.

A candidate is a branch `cand/<id>` whose first commit has the parent candidate's
commit as its parent; repair attempts are further commits on the same branch; a
crossover is a merge commit with two parents. `main` holds the seed template.

Candidate commits are built with plumbing (a throw-away index, write-tree,
commit-tree, update-ref), so the main checkout is never touched and no hook can
run. Every git call runs with a fixed identity ("poise <poise@localhost>"), with the
user's global and system config ignored and hooks disabled, so it behaves the same
on any machine.

Frozen files (every tracked file but algorithm.py) are hashed at init into
`<run>/frozen.json`, outside the repo, and checked before each evaluation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Self

import git
from gitdb import IStream

from core.errors import DirtyWorkspaceError, FrozenFileError, RunDirError, WorkspaceError
from core.jobspec import write_json_atomic
from core.resources import workspace_dir

ALGORITHM = "algorithm.py"
FROZEN_FILE = "frozen.json"
MAIN = "main"
SEED = "seed"
IDENTITY = ("poise", "poise@localhost")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SKIP = {"__pycache__", ".git", ".DS_Store"}

GIT_ENV = {
    "GIT_AUTHOR_NAME": IDENTITY[0], "GIT_AUTHOR_EMAIL": IDENTITY[1],
    "GIT_COMMITTER_NAME": IDENTITY[0], "GIT_COMMITTER_EMAIL": IDENTITY[1],
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,  # the user's config must not change results
    "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0",
}
# Per-invocation config: no hooks, no signing prompts, no locale-dependent paths.
GIT_OPTS = ["core.hooksPath=" + os.devnull, "commit.gpgSign=false", "core.quotePath=false"]


def default_template_dir() -> Path:
    """The seed template shipped with the project (installed package or checkout; see core.resources)."""
    return workspace_dir()


def _configure(g: git.Git) -> git.Git:
    g.update_environment(**GIT_ENV)
    g.set_persistent_git_options(c=GIT_OPTS)
    return g


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _branch(cand_id: str) -> str:
    return f"cand/{cand_id}"


def _check_id(cand_id: str) -> None:
    if not _ID_RE.match(cand_id):
        raise WorkspaceError(f"candidate id {cand_id!r} is not usable as a branch name; use letters, digits, - and _")


def _template_files(template_dir: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(template_dir.rglob("*")):
        rel = path.relative_to(template_dir)
        if path.is_file() and not (set(rel.parts) & _SKIP) and path.suffix != ".pyc":
            files[rel.as_posix()] = path.read_bytes()
    if ALGORITHM not in files:
        raise WorkspaceError(f"template {template_dir} has no {ALGORITHM}; point init at the workspace/ template")
    return files


def _message(title: str, cand_id: str, kind: str, parents: list[str], note: str = "") -> str:
    """Commit message: the proposal title, then trailers that tools (and we) can parse."""
    body = f"{title.strip() or cand_id}\n\n"
    if note:
        body += note.strip() + "\n\n"
    body += f"Poise-Candidate: {cand_id}\nPoise-Kind: {kind}\n"
    body += "".join(f"Poise-Parent: {p}\n" for p in parents)
    return body


def _trailer(message: str, key: str) -> list[str]:
    prefix = f"{key}: "
    return [line[len(prefix):].strip() for line in message.splitlines() if line.startswith(prefix)]


class Workspace:
    """The git side of a run. Create with `Workspace.init`, reopen with `Workspace.open`."""

    def __init__(self, run_dir: Path, repo: git.Repo, frozen: dict) -> None:
        self.run_dir = run_dir
        self.repo = repo
        self.git = _configure(repo.git)
        self.frozen: dict[str, str] = frozen["files"]

    @property
    def repo_dir(self) -> Path:
        return self.run_dir / "repo"

    def close(self) -> None:
        """Stop GitPython's persistent `git cat-file` helpers (long-lived callers, tests)."""
        self.repo.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- creation and opening -------------------------------------------------------------

    @classmethod
    def init(cls, run_dir: str | Path, template_dir: str | Path | None = None) -> Workspace:
        """Create `<run>/repo` from the template: main = template, cand/seed = main, frozen hashes recorded."""
        run_dir = Path(run_dir)
        repo_dir = run_dir / "repo"
        if repo_dir.exists():
            raise WorkspaceError(f"{repo_dir} already exists; open it with Workspace.open or choose a new run dir")
        files = _template_files(Path(template_dir) if template_dir else default_template_dir())
        repo_dir.mkdir(parents=True)
        for rel, data in files.items():
            (repo_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo_dir / rel).write_bytes(data)
        g = _configure(git.Git(repo_dir))
        g.init("--initial-branch", MAIN, "--quiet")
        g.add("--all")
        g.commit("--quiet", "--no-verify", "-m", _message("Seed template", SEED, "template", []))
        root = g.rev_parse("HEAD")
        g.branch(_branch(SEED), root)
        frozen = {"files": {rel: _sha256(data) for rel, data in files.items() if rel != ALGORITHM}, "root_commit": root}
        write_json_atomic(run_dir / FROZEN_FILE, frozen)
        return cls.open(run_dir)

    @classmethod
    def open(cls, run_dir: str | Path) -> Workspace:
        """Open an existing run repo; refuse one that poise did not create."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: no such directory; create a run with `poise init {run_dir}`")
        repo_dir = run_dir / "repo"
        if not repo_dir.is_dir():
            raise RunDirError(f"{run_dir} is not a poise run (no repo/); create one with `poise init <dir>`")
        try:
            repo = git.Repo(repo_dir)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise WorkspaceError(f"{repo_dir} is not a git repository; poise will not touch it") from None
        frozen = cls._read_frozen(run_dir)
        cls._check_ours(repo, repo_dir, frozen)
        return cls(run_dir, repo, frozen)

    @staticmethod
    def _read_frozen(run_dir: Path) -> dict:
        path = run_dir / FROZEN_FILE
        try:
            frozen = json.loads(path.read_text())
            if isinstance(frozen["files"], dict) and isinstance(frozen["root_commit"], str):
                return frozen
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise WorkspaceError(f"{path} is missing or unreadable, so {run_dir / 'repo'} looks foreign "
                             "(not created by `poise init`); poise will not touch it")

    @staticmethod
    def _check_ours(repo: git.Repo, repo_dir: Path, frozen: dict) -> None:
        heads = {h.name for h in repo.heads}
        missing = [b for b in (MAIN, _branch(SEED)) if b not in heads]
        foreign = f"{repo_dir} looks foreign (not created by `poise init`)"
        if missing:
            raise WorkspaceError(f"{foreign}: no branch {missing[0]}; poise will not touch it")
        roots = _configure(repo.git).rev_list("--max-parents=0", MAIN).split()
        if frozen["root_commit"] not in roots:
            raise WorkspaceError(f"{foreign}: main does not start at the commit recorded in {FROZEN_FILE}; "
                                 "poise will not touch it")

    def ensure_clean(self) -> None:
        """Refuse to go on when someone left uncommitted changes in the main checkout."""
        changed = self.git.status("--porcelain", "--untracked-files=all").splitlines()
        if changed:
            listing = ", ".join(line[3:] for line in changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise DirtyWorkspaceError(f"{self.repo_dir} has uncommitted changes ({listing}); commit or discard "
                                      f"them (git -C {self.repo_dir} status), poise never overwrites them")

    # -- reading ----------------------------------------------------------------------------

    def has(self, cand_id: str) -> bool:
        return _branch(cand_id) in {h.name for h in self.repo.heads}

    def head(self, cand_id: str) -> str:
        """The sha of the newest commit on cand/<id>."""
        if not self.has(cand_id):
            raise WorkspaceError(f"no branch {_branch(cand_id)} in {self.repo_dir}; known: "
                                 f"{', '.join(sorted(self.candidate_branches())) or 'none'}")
        return self.repo.heads[_branch(cand_id)].commit.hexsha

    def candidate_branches(self) -> dict[str, str]:
        """{candidate id: head sha} of every cand/* branch (to check against the archive on resume)."""
        prefix = "cand/"
        return {h.name[len(prefix):]: h.commit.hexsha for h in self.repo.heads if h.name.startswith(prefix)}

    def read_algorithm(self, cand_id: str, commit: str | None = None) -> str:
        """algorithm.py of a candidate at its head (or at a given commit)."""
        return self._algorithm_bytes(commit or self.head(cand_id)).decode()

    def _algorithm_bytes(self, sha: str) -> bytes:
        try:
            blob = self.repo.commit(sha).tree / ALGORITHM
        except (KeyError, ValueError, git.BadName) as exc:
            raise WorkspaceError(f"commit {sha} has no {ALGORITHM} ({exc}); is it a poise candidate commit?") from None
        return blob.data_stream.read()

    def parent_commit(self, cand_id: str) -> str:
        """The commit the candidate branched from: first-parent history back past its own attempts."""
        commit = self.repo.commit(self.head(cand_id))
        while _trailer(commit.message, "Poise-Candidate") == [cand_id] and commit.parents:
            commit = commit.parents[0]
        return commit.hexsha

    def diff(self, cand_id: str, against: str = "parent") -> str:
        """Unified diff (a/ = against, b/ = the candidate) against its parent, the seed, or another candidate."""
        if against == "parent":
            base = self.parent_commit(cand_id)
        else:
            base = self.head(SEED if against == "seed" else against)
        a, b = self.repo.commit(base), self.repo.commit(self.head(cand_id))
        return "".join(_patch_text(d) for d in a.diff(b, create_patch=True))

    # -- writing ----------------------------------------------------------------------------

    def create_candidate(self, cand_id: str, parent_id: str, source: str, message: str) -> str:
        """New branch cand/<id>: one commit whose parent is the parent candidate's head. Returns its sha."""
        _check_id(cand_id)
        if self.has(cand_id):
            raise WorkspaceError(f"branch {_branch(cand_id)} already exists; delete_candidate({cand_id!r}) first "
                                 "if it is a leftover of a crash")
        parent_sha = self.head(parent_id)
        tree = self._tree_with(parent_sha, {ALGORITHM: source.encode()})
        sha = self._commit_tree(tree, [parent_sha], _message(message, cand_id, "create", [parent_id]))
        self.git.update_ref(f"refs/heads/{_branch(cand_id)}", sha, "")  # "" = must not exist yet
        return sha

    def commit_attempt(self, cand_id: str, source: str, message: str) -> str:
        """A repair attempt: a new commit with the new algorithm.py on top of cand/<id>. Returns its sha."""
        old = self.head(cand_id)
        tree = self._tree_with(old, {ALGORITHM: source.encode()})
        sha = self._commit_tree(tree, [old], _message(message, cand_id, "attempt", []))
        self.git.update_ref(f"refs/heads/{_branch(cand_id)}", sha, old)  # fails if the branch moved meanwhile
        return sha

    def crossover(self, cand_id: str, parent_a: str, parent_b: str, message: str) -> str:
        """Merge commit of two candidates. algorithm.py is merged 3-way; on conflict parent_a's version is
        taken and the message says so (the implementer then rewrites it). Returns the merge's sha."""
        _check_id(cand_id)
        if self.has(cand_id):
            raise WorkspaceError(f"branch {_branch(cand_id)} already exists; pick a new id")
        self.verify_frozen(parent_a)
        self.verify_frozen(parent_b)
        sha_a, sha_b = self.head(parent_a), self.head(parent_b)
        merged, clean = self._merge_algorithm(sha_a, sha_b)
        note = "" if clean else (f"Poise-Merge-Conflict: {ALGORITHM} conflicted; took {parent_a}'s version "
                                 f"unchanged, to be rewritten to combine both parents")
        tree = self._tree_with(sha_a, {ALGORITHM: merged})
        sha = self._commit_tree(tree, [sha_a, sha_b], _message(message, cand_id, "crossover", [parent_a, parent_b], note))
        self.git.update_ref(f"refs/heads/{_branch(cand_id)}", sha, "")
        return sha

    def delete_candidate(self, cand_id: str) -> None:
        """Remove cand/<id> and its worktree (a leftover of a crash that the archive does not know)."""
        if cand_id == SEED:
            raise WorkspaceError("refusing to delete cand/seed: every run needs its seed")
        old = self.head(cand_id)
        self.remove_worktree(cand_id)
        self.git.update_ref("-d", f"refs/heads/{_branch(cand_id)}", old)

    def set_aside(self, cand_id: str) -> str:
        """Rename cand/<id> to lost/<id>-<UTC time> and drop its worktree; returns the new branch name.
        For a branch the archive does not know: its commits stay in the repo for the user to inspect."""
        old = self.head(cand_id)
        aside = f"lost/{cand_id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        self.remove_worktree(cand_id)
        self.git.update_ref(f"refs/heads/{aside}", old, "")
        self.git.update_ref("-d", f"refs/heads/{_branch(cand_id)}", old)
        return aside

    # -- plumbing helpers ---------------------------------------------------------------------

    def _tree_with(self, base_sha: str, files: dict[str, bytes]) -> str:
        """A tree: base_sha's tree with `files` replaced, built in a private index (no checkout touched)."""
        with tempfile.TemporaryDirectory(prefix="poise-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git.read_tree(base_sha, env=env)
            for rel, data in files.items():
                blob = self.repo.odb.store(IStream("blob", len(data), io.BytesIO(data))).hexsha.decode()
                self.git.update_index("--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
            return self.git.write_tree(env=env)

    def _commit_tree(self, tree: str, parents: list[str], message: str) -> str:
        args = [tree, *[x for p in parents for x in ("-p", p)], "-m", message]
        return self.git.commit_tree(*args)

    def _merge_algorithm(self, sha_a: str, sha_b: str) -> tuple[bytes, bool]:
        """3-way merge of algorithm.py with git merge-file; (text, clean)."""
        bases = self.git.merge_base(sha_a, sha_b).split()
        texts = [self._algorithm_bytes(sha) for sha in (sha_a, bases[0], sha_b)]
        with tempfile.TemporaryDirectory(prefix="poise-merge-") as tmp:
            paths = [Path(tmp) / n for n in ("a", "base", "b")]
            for path, text in zip(paths, texts):
                path.write_bytes(text)
            status, out, _ = self.git.merge_file("-p", *map(str, paths), with_extended_output=True,
                                                 with_exceptions=False, strip_newline_in_stdout=False)
        if status == 0:
            return out.encode(), True
        if status < 0 or status > 127:
            raise WorkspaceError(f"git merge-file failed ({status}) merging {sha_a[:8]} and {sha_b[:8]}")
        return texts[0], False

    # -- worktrees and frozen files -----------------------------------------------------------

    def worktree_path(self, cand_id: str) -> Path:
        return self.run_dir / "worktrees" / cand_id

    def worktree(self, cand_id: str) -> Path:
        """A checkout of cand/<id> at `<run>/worktrees/<id>` (detached), created or reset to the head."""
        sha, path = self.head(cand_id), self.worktree_path(cand_id)
        if path.exists() and not self._is_worktree(path):
            shutil.rmtree(path)  # a half-created one from a crash: git does not know it
        if not path.exists():
            self.git.worktree("prune")
            self.git.worktree("add", "--detach", "--force", str(path), sha)
            return path
        wt = _configure(git.Git(path))
        wt.checkout("--detach", "--force", "--quiet", sha)
        wt.reset("--hard", "--quiet", sha)
        wt.clean("-fdxq")  # artefacts of the previous evaluation must not leak into the next
        return path

    def _is_worktree(self, path: Path) -> bool:
        listing = self.git.worktree("list", "--porcelain").splitlines()
        return f"worktree {path.resolve()}" in listing

    def remove_worktree(self, cand_id: str) -> None:
        path = self.worktree_path(cand_id)
        if path.exists() and self._is_worktree(path):
            self.git.worktree("remove", "--force", str(path))
        elif path.exists():
            shutil.rmtree(path)
        self.git.worktree("prune")

    def verify_frozen(self, cand_id: str) -> None:
        """Raise FrozenFileError if cand/<id> (or its worktree on disk) changed, added or lost a frozen file."""
        tree = self.repo.commit(self.head(cand_id)).tree
        committed = {b.path: b.data_stream.read() for b in tree.traverse() if b.type == "blob"}
        self._compare(cand_id, committed, f"commit {tree.hexsha[:8]} of {_branch(cand_id)}")
        path = self.worktree_path(cand_id)
        if path.exists():
            on_disk = {rel: (path / rel).read_bytes() for rel in committed if (path / rel).is_file()}
            self._compare(cand_id, on_disk, f"worktree {path}")

    def _compare(self, cand_id: str, files: dict[str, bytes], where: str) -> None:
        redo = "; only algorithm.py may change: recreate the candidate from its parent"
        for rel, data in files.items():
            if rel == ALGORITHM:
                continue
            if rel not in self.frozen:
                raise FrozenFileError(f"{cand_id}: {where} adds {rel}{redo}")
            if _sha256(data) != self.frozen[rel]:
                raise FrozenFileError(f"{cand_id}: {where} changes frozen file {rel}{redo}")
        for rel in sorted(set(self.frozen) - set(files)):
            raise FrozenFileError(f"{cand_id}: {where} lacks frozen file {rel}{redo}")


def _patch_text(d: git.Diff) -> str:
    """Headers + hunks of one GitPython Diff, as `git diff` would print them."""
    a = f"a/{d.a_path}" if d.a_blob is not None else "/dev/null"
    b = f"b/{d.b_path}" if d.b_blob is not None else "/dev/null"
    body = d.diff.decode(errors="replace") if isinstance(d.diff, bytes) else str(d.diff)
    if body and not body.endswith("\n"):
        body += "\n"
    return f"diff --git a/{d.a_path or d.b_path} b/{d.b_path or d.a_path}\n--- {a}\n+++ {b}\n{body}"
