"""core/netns.py against the real kernel. Each check runs in a child interpreter that isolates itself (a
namespace cannot be left, so never in the test process) and tries to reach the test's UDP and TCP listeners
on the host's 127.0.0.1; the listeners say what got through."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import netns

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux's")

CHILD = r'''
import json, os, socket, subprocess, sys, threading, time
sys.path.insert(0, sys.argv[1])
from tests.kernel_child import recorder
from core import netns
udp_port, tcp_port, mode, scratch = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if mode == "threaded":  # a second thread: the kernel refuses CLONE_NEWUSER
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
report = {"uid_before": os.geteuid()}
if mode != "none":
    report["isolate"] = netns.isolate(user_namespace=mode in ("user", "threaded"))
attempt = recorder(report)

attempt("udp_send", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"secret", ("127.0.0.1", udp_port)))
attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", tcp_port), timeout=3).close())

def loopback_echo():  # what torch.distributed needs: a server and a client of the job's own
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=3) as client:
            peer, _ = server.accept()
            client.sendall(b"ping")
            assert peer.recv(4) == b"ping"
            peer.close()

attempt("loopback", loopback_echo)
path = os.path.join(scratch, "made-inside")
open(path, "w").write("x")
report["file_uid"] = os.stat(path).st_uid
report["uid_after"] = os.geteuid()
report["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
report["child_rc"] = subprocess.run(["sh", "-c", "exit 7"]).returncode
import torch
report["torch"] = float(torch.ones(3).sum())
print(json.dumps(report))
'''


def run_child(tmp_path: Path, mode: str) -> tuple[dict, bool, bool]:
    """CHILD's report, and whether the host's UDP and TCP listeners heard from it."""
    scratch = tmp_path / mode
    scratch.mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.create_server(("127.0.0.1", 0)) as tcp:
        udp.bind(("127.0.0.1", 0))
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(udp.getsockname()[1]),
                              str(tcp.getsockname()[1]), mode, str(scratch)],
                             check=False, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout), heard(udp), heard(tcp)


def heard(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        if sock.type == socket.SOCK_DGRAM:
            sock.recv(64)
        else:
            sock.accept()[0].close()
        return True
    except TimeoutError:
        return False


def test_without_isolation_udp_and_tcp_reach_the_host_so_the_attack_is_real(tmp_path: Path) -> None:
    report, udp_heard, tcp_heard = run_child(tmp_path, "none")
    assert report["udp_send"] == report["tcp_connect"] == "ok"
    assert udp_heard and tcp_heard


@pytest.mark.skipif(os.geteuid() != 0, reason="the plain network namespace needs root")
def test_as_root_the_job_gets_loopback_only(tmp_path: Path) -> None:
    report, udp_heard, tcp_heard = run_child(tmp_path, "root")
    assert report["isolate"] == netns.ISOLATED
    assert not udp_heard and not tcp_heard
    assert report["tcp_connect"] == "ConnectionRefusedError"  # nobody listens on this namespace's loopback
    assert report["loopback"] == "ok"


def test_through_a_user_namespace_the_job_gets_loopback_only_and_keeps_its_identity(tmp_path: Path) -> None:
    report, udp_heard, tcp_heard = run_child(tmp_path, "user")
    if report["isolate"] != netns.ISOLATED:
        pytest.skip(f"this kernel refuses unprivileged network isolation: {report['isolate']}")
    assert not udp_heard and not tcp_heard
    assert report["loopback"] == "ok"
    assert report["uid_after"] == report["uid_before"] == report["file_uid"] == os.geteuid()
    assert int(report["cap_eff"], 16) == 0  # the namespace's capabilities were given back
    assert report["child_rc"] == 7 and report["torch"] == 3.0  # children and torch work as before


def test_a_kernel_refusal_changes_nothing_and_says_why(tmp_path: Path) -> None:
    """Real refusal: unshare(CLONE_NEWUSER) is refused to a multi-threaded process (the probe, a fork, has one)."""
    report, udp_heard, _ = run_child(tmp_path, "threaded")
    assert report["isolate"] == "network: shared with the host (unshare refused: Invalid argument)"
    assert report["udp_send"] == "ok" and udp_heard


def test_a_failed_probe_keeps_the_process_out_of_a_half_built_namespace(monkeypatch) -> None:
    """The probe runs the sequence in a fork; here a named fake makes that fork fail (as AppArmor's refusal
    to write the uid map would), and the process itself must then never unshare."""
    def fake_refusing_kernel() -> str:
        return "FAKE: cannot map the user into the new namespace"

    monkeypatch.setattr(netns, "_enter_user_namespace", fake_refusing_kernel)
    before = os.stat("/proc/self/ns/net").st_ino
    assert netns.isolate(user_namespace=True) == ("network: shared with the host "
                                                  "(FAKE: cannot map the user into the new namespace)")
    assert os.stat("/proc/self/ns/net").st_ino == before


def test_a_probe_that_raises_reports_it_and_the_caller_goes_on(monkeypatch) -> None:
    """A bug in the sequence must not let the forked probe run on as a copy of its parent: it reports and exits."""
    def fake_kernel_call_that_raises() -> str:
        raise AttributeError("FAKE: libc has no capset")

    monkeypatch.setattr(netns, "_enter_user_namespace", fake_kernel_call_that_raises)
    before = os.stat("/proc/self/ns/net").st_ino
    assert netns.isolate(user_namespace=True) == ("network: shared with the host (the probe failed: "
                                                  "AttributeError('FAKE: libc has no capset'))")
    assert os.stat("/proc/self/ns/net").st_ino == before
