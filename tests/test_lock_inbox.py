"""Engine lock: a live lock is never stolen, a stale one is detected and reported. Inbox round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from core.errors import EngineLockedError, PoiseError
from core.inbox import command_outcomes, mark_done, pending_commands, send_command
from core.lock import EngineLock
from core.runstate import EngineState, engine_alive, lock_path, read_state, write_state


def test_live_lock_is_not_stolen(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(tmp_path).write_text(json.dumps({"pid": holder.pid, "heartbeat": time.time()}))
        with pytest.raises(EngineLockedError, match=f"pid {holder.pid}"):
            EngineLock(tmp_path).acquire()
        assert json.loads(lock_path(tmp_path).read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_dead_pid_lock_is_taken_over_and_reported(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path).write_text(json.dumps({"pid": dead.pid, "heartbeat": time.time()}))
    lock = EngineLock(tmp_path).acquire()
    try:
        assert "stale lock" in lock.stale_note and "process is gone" in lock.stale_note
        assert engine_alive(tmp_path)
    finally:
        lock.release()
    assert not lock_path(tmp_path).exists()


def test_old_heartbeat_is_stale(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(tmp_path).write_text(json.dumps({"pid": holder.pid, "heartbeat": time.time() - 3600}))
        assert not engine_alive(tmp_path)
        lock = EngineLock(tmp_path).acquire()
        assert "heartbeat" in lock.stale_note
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_state_of_a_dead_engine_reads_dead(tmp_path):
    write_state(tmp_path, EngineState(state="running", pid=999999))
    assert read_state(tmp_path).state == "dead"


def test_inbox_round_trip_in_order(tmp_path):
    a = send_command(tmp_path, "pause")
    b = send_command(tmp_path, "fork", id="c001", directive="shorter")
    cmds = pending_commands(tmp_path)
    assert [c["id"] for c in cmds] == [a, b]
    assert cmds[1]["args"] == {"id": "c001", "directive": "shorter"}
    mark_done(tmp_path, cmds[0], "paused", ok=True)
    assert [c["id"] for c in pending_commands(tmp_path)] == [b]
    assert command_outcomes(tmp_path)[-1]["outcome"] == "paused"


def test_unknown_command_is_refused_at_the_sender(tmp_path):
    with pytest.raises(PoiseError, match="valid: pause"):
        send_command(tmp_path, "explode")


def test_guard_left_by_a_killed_engine_does_not_block_the_next(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path).with_suffix(".acquire").write_text(str(dead.pid))
    lock = EngineLock(tmp_path).acquire()
    lock.release()


def test_guard_of_a_live_starter_is_respected(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(tmp_path).with_suffix(".acquire").write_text(str(holder.pid))
        with pytest.raises(EngineLockedError, match="starting"):
            EngineLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(("content", "error"), [
    ("[]", "expected a JSON object, got list"), ('{"id": "x", "args": {}}', 'no "name" string'),
    ('{"name": "veto", "args": []}', '"args" is not an object'), ("{broken", "Expecting"),
])
def test_a_command_file_of_the_wrong_shape_is_reported_and_retired(tmp_path, content, error):
    """Valid JSON of the wrong shape used to crash the engine at every start, and a command whose id differed
    from its file name was applied again on every loop and never retired."""
    from core.inbox import inbox_dir

    good = send_command(tmp_path, "pause")
    bad = inbox_dir(tmp_path) / "0000000000000-bad.json"
    bad.write_text(content)
    cmds = pending_commands(tmp_path)
    assert [c["id"] for c in cmds] == ["0000000000000-bad", good]
    assert cmds[0]["name"] == "<malformed>" and error in cmds[0]["error"]
    mark_done(tmp_path, cmds[0], cmds[0]["error"], ok=False)
    assert not bad.exists() and [c["id"] for c in pending_commands(tmp_path)] == [good]


def test_a_command_is_retired_by_its_file_name_whatever_id_it_claims(tmp_path):
    from core.inbox import inbox_dir

    path = inbox_dir(tmp_path) / "0000000000001-abc.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"id": "someone-else", "name": "pause", "args": {}}))
    (cmd,) = pending_commands(tmp_path)
    mark_done(tmp_path, cmd, "paused", ok=True)
    assert not path.exists() and pending_commands(tmp_path) == []


@pytest.mark.parametrize("content", ["{broken", "{}", "5", '[{"no_kind": 1}]'])
def test_a_damaged_work_queue_is_refused_and_left_as_it_is(tmp_path, content):
    from core.errors import CorruptArchiveError
    from core.workqueue import WorkQueue

    (tmp_path / "queue.json").write_text(content)
    with pytest.raises(CorruptArchiveError, match="queue.json.*not changed"):
        WorkQueue(tmp_path)
    assert (tmp_path / "queue.json").read_text() == content
    (tmp_path / "queue.json").unlink()
    assert WorkQueue(tmp_path).items == []  # no file: an empty queue


def test_a_stopped_holder_keeps_its_lock_and_a_reused_pid_does_not(tmp_path):
    """A holder stopped with Ctrl-Z sends no heartbeat; taking over would make two writers once it continues.
    The lock records its process's start time, so only a pid that now names another process counts as stale."""
    from core.runstate import process_start

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start(holder.pid)
        assert start is not None
        old = time.time() - 3600
        lock_path(tmp_path).write_text(json.dumps({"pid": holder.pid, "started": start, "heartbeat": old}))
        assert engine_alive(tmp_path)
        with pytest.raises(EngineLockedError, match=rf"heartbeat is \d+s old: is it stopped.*kill -CONT {holder.pid}"):
            EngineLock(tmp_path).acquire()
        lock_path(tmp_path).write_text(json.dumps({"pid": holder.pid, "started": start + 1, "heartbeat": old}))
        assert not engine_alive(tmp_path)  # the same pid, another process: the holder is gone
        lock = EngineLock(tmp_path).acquire()
        assert "heartbeat" in lock.stale_note and json.loads(lock_path(tmp_path).read_text())["started"] == \
            process_start(os.getpid())
        lock.release()
    finally:
        holder.kill()
        holder.wait()
