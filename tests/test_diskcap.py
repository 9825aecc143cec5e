"""core/diskcap.py: what counts as a job's disk use, and what is kept when a job is stopped for it."""

from __future__ import annotations

import os
from pathlib import Path

from core.diskcap import ENTRY_MIN_BYTES, KEEP_BYTES, LOG_TAIL_BYTES, MAX_KEPT_FILES, DiskWatch, disk_bytes, reclaim


def test_disk_use_counts_allocated_blocks_so_a_sparse_file_costs_nothing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "real.bin").write_bytes(os.urandom(1 << 20))
    with open(tmp_path / "sparse.bin", "wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB long, no block written
    os.symlink("/usr", tmp_path / "link")  # not followed
    used = disk_bytes(tmp_path)
    assert (1 << 20) <= used < (2 << 20), used


def test_the_watch_fires_over_the_cap_and_never_without_one(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(os.urandom(3 << 20))
    assert DiskWatch(tmp_path, 0).exceeded() == ""
    assert DiskWatch(tmp_path, 4).exceeded() == ""
    over = DiskWatch(tmp_path, 2)
    assert over.exceeded().startswith("wrote 3 MiB under its job dir, over [limits] disk_mb = 2")
    assert over.fired and over.exceeded() == over.fired  # stays fired


def test_reclaim_deletes_what_was_written_and_keeps_reports_and_the_logs_tails(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "stderr.log").write_bytes(b"x" * (200 << 10) + b"\nTraceback: the last words\n")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "junk.bin").write_bytes(b"\1" * (KEEP_BYTES + 1))
    (tmp_path / "junk.bin").write_bytes(b"\1" * (2 * KEEP_BYTES))
    reclaim(tmp_path)
    assert (tmp_path / "spec.json").read_text() == "{}" and (tmp_path / "metrics.jsonl").exists()
    log = (tmp_path / "stderr.log").read_bytes()
    assert log.endswith(b"Traceback: the last words\n") and len(log) < LOG_TAIL_BYTES + 100
    assert not (tmp_path / "junk.bin").exists() and not (tmp_path / "deep" / "er" / "junk.bin").exists()


def test_every_entry_costs_a_block_so_empty_files_cannot_exhaust_inodes_for_free(tmp_path: Path) -> None:
    for i in range(500):
        (tmp_path / f"e{i}").touch()
    (tmp_path / "d" / "e").mkdir(parents=True)
    assert disk_bytes(tmp_path) == 502 * ENTRY_MIN_BYTES  # 500 empty files and 2 directories (tmpfs or not)
    assert DiskWatch(tmp_path, 1).exceeded().startswith("wrote 1 MiB")  # 502 x 4 KiB > 1 MiB


def test_reclaim_removes_many_small_files_and_every_subdirectory_but_keeps_the_reports(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "stdout.log").write_text("started\n")
    (tmp_path / "tmp" / "nest").mkdir(parents=True)
    (tmp_path / "tmp" / "nest" / "small.txt").write_text("x")
    for i in range(MAX_KEPT_FILES + 1):
        (tmp_path / f"junk-{i}").touch()
    reclaim(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json", "stdout.log"]


def test_reclaim_keeps_a_few_small_files_beside_the_reports(tmp_path: Path) -> None:
    for i in range(MAX_KEPT_FILES):
        (tmp_path / f"note-{i}").write_text("small")
    reclaim(tmp_path)
    assert len(list(tmp_path.iterdir())) == MAX_KEPT_FILES


def test_a_worktree_counts_what_it_grew_by_and_loses_only_what_was_added(tmp_path: Path) -> None:
    worktree, job = tmp_path / "wt", tmp_path / "wt" / "job"  # a job dir inside the worktree counts once
    (worktree / "pkg").mkdir(parents=True)
    job.mkdir()
    (worktree / "algorithm.py").write_bytes(os.urandom(3 << 20))  # there before: not the job's
    (job / "spec.json").write_text("{}")
    watch = DiskWatch(job, 2, worktrees=[worktree])
    assert watch.exceeded() == ""
    (worktree / "pkg" / "new.bin").write_bytes(os.urandom(1 << 20))
    (worktree / "added" / "deep").mkdir(parents=True)
    (worktree / "added" / "deep" / "x.bin").write_bytes(os.urandom(1 << 20))
    (job / "out.bin").write_bytes(os.urandom(KEEP_BYTES + 1))
    watch._next = 0.0  # the next call measures at once instead of after DISK_POLL_S
    assert watch.exceeded().startswith("wrote 3 MiB under its job dir and its worktree")
    watch.reclaim()
    assert sorted(str(p.relative_to(worktree)) for p in worktree.rglob("*")) == [
        "algorithm.py", "job", "job/spec.json", "pkg"]
