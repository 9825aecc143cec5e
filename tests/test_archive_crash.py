"""A process killed inside the archive's write path leaves every committed record readable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.archive import Archive

ROOT = Path(__file__).resolve().parents[1]

# The child commits `n` records, then dies half-way through writing the temp file of
# record n+1: with os._exit (no cleanup handlers) or with SIGKILL (nothing runs at all).
CHILD = textwrap.dedent("""
    import os, signal, sys
    from core.archive import Archive, AtomicJSONStorage, Candidate

    run_dir, n, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    arch = Archive.open(run_dir, create=True)
    arch.add(Candidate(id="seed", origin="seed", status="implemented"))
    for i in range(1, n + 1):
        arch.add(Candidate(id=arch.next_id(), parent_ids=["seed"], proposal={"motivation": "x" * 2000}))
    print("committed", flush=True)

    def die_half_way(self, fh, payload):
        fh.write(payload[: len(payload) // 2])
        fh.flush()
        os.fsync(fh.fileno())
        if how == "exit":
            os._exit(17)
        os.kill(os.getpid(), signal.SIGKILL)

    AtomicJSONStorage._write_payload = die_half_way
    arch.add(Candidate(id=arch.next_id(), parent_ids=["seed"]))
    print("unreachable", flush=True)
""")


@pytest.mark.parametrize("how, rc", [("exit", 17), ("kill", -9)])
def test_kill_mid_write_keeps_committed_records(tmp_path: Path, how: str, rc: int) -> None:
    n = 12
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(n), how],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == rc, proc.stderr
    assert proc.stdout.split() == ["committed"]

    temps = list(tmp_path.glob(".archive.json.*.tmp"))
    assert len(temps) == 1, "the child should have died with a half-written temp file"
    with pytest.raises(json.JSONDecodeError):
        json.loads(temps[0].read_bytes())

    json.loads((tmp_path / "archive.json").read_bytes())  # parses
    reader = Archive.open(tmp_path, readonly=True)
    assert [c.id for c in reader.all()] == ["seed"] + [f"c{i:03d}" for i in range(1, n + 1)]
    assert temps[0].exists(), "a reader must not touch the directory"

    writer = Archive.open(tmp_path)  # the writer clears the dead writer's temp file and carries on
    assert not temps[0].exists()
    writer.set_status("c001", "implemented")
    assert Archive.open(tmp_path).get("c001").status == "implemented"


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    from core.jobspec import write_json_atomic

    target = tmp_path / "engine.json"
    write_json_atomic(target, {"state": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"state": object()})  # fails halfway through writing the temp file
    assert json.loads(target.read_text()) == {"state": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.json"]
