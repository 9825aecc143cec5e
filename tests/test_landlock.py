"""core/landlock.py against the real kernel: each check runs in a child interpreter that confines itself
(Landlock cannot be lifted, so never in the test process) and reports what the kernel allowed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import landlock

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(landlock.abi_version() < 1, reason="this kernel has no Landlock")

CHILD = r'''
import json, os, socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
from tests.kernel_child import recorder
from core.landlock import restrict
allowed, outside, port, deny_tcp = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
report = {"applied": restrict([allowed], deny_tcp=deny_tcp)}
attempt = recorder(report)

attempt("write_inside", lambda: open(os.path.join(allowed, "a.txt"), "w").write("x"))
attempt("write_outside", lambda: open(os.path.join(outside, "b.txt"), "w").write("x"))
attempt("mkdir_outside", lambda: os.mkdir(os.path.join(outside, "d")))
attempt("rename_out", lambda: os.rename(os.path.join(allowed, "a.txt"), os.path.join(outside, "a.txt")))
attempt("remove_outside", lambda: os.remove(os.path.join(outside, "keep.txt")))
attempt("dev_null", lambda: open(os.devnull, "w").write("x"))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close())
child = subprocess.run(["sh", "-c", f"echo x > {outside}/c.txt"], capture_output=True)
report["child_write_outside"] = "ok" if child.returncode == 0 else "refused"
print(json.dumps(report))
'''


def confined(tmp_path: Path, deny_tcp: bool = True) -> tuple[dict, Path, bool]:
    """Run CHILD; returns its report, the outside dir, and whether the test's TCP server saw a connection."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.txt").write_text("keep me")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(allowed), str(outside), str(port),
                              "1" if deny_tcp else "0"], check=False, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        server.settimeout(0.5)
        try:
            server.accept()[0].close()
            connected = True
        except TimeoutError:
            connected = False
    return json.loads(out.stdout), outside, connected


def test_writes_are_confined_to_the_allowed_dirs_for_the_process_and_its_children(tmp_path: Path) -> None:
    report, outside, _ = confined(tmp_path)
    assert report["applied"].startswith("Landlock ABI")
    assert report["write_inside"] == "ok" and report["dev_null"] == "ok"
    for name in ("write_outside", "mkdir_outside", "remove_outside", "child_write_outside"):
        assert report[name] in ("PermissionError", "refused"), name
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]  # nothing created, nothing removed


@pytest.mark.skipif(landlock.abi_version() < 2, reason="renames across dirs are handled from ABI 2 on")
def test_a_file_cannot_be_renamed_out_of_the_allowed_dirs(tmp_path: Path) -> None:
    report, outside, _ = confined(tmp_path)
    assert report["rename_out"] == "PermissionError" and not (outside / "a.txt").exists()


@pytest.mark.skipif(landlock.abi_version() < 4, reason="TCP rules need ABI 4 (Linux 6.7)")
def test_tcp_connect_is_refused_unless_the_job_needs_it(tmp_path: Path) -> None:
    denied, _, connected = confined(tmp_path / "deny")
    assert denied["connect"] == "PermissionError" and not connected and "no TCP" in denied["applied"]
    allowed, _, connected = confined(tmp_path / "allow", deny_tcp=False)
    assert allowed["connect"] == "ok" and connected and "no TCP" not in allowed["applied"]


def test_without_landlock_restrict_changes_nothing_and_says_so(monkeypatch) -> None:
    monkeypatch.setattr(landlock, "abi_version", lambda: 0)  # a fake kernel without Landlock
    assert landlock.restrict(["/nonexistent"]) == ""
