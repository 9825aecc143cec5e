"""A job's own network namespace: loopback only, so nothing the job sends leaves it.

Landlock (core/landlock.py) refuses TCP bind and connect, but not UDP, raw or netlink sockets, and the GPU
recipe keeps TCP because torch.distributed talks to itself over 127.0.0.1. A new network namespace has no
interface but its own loopback. TCP and UDP to 127.0.0.1 reach only the job itself, and abstract unix
sockets are per namespace too. So neither another host nor the user's local services (a database, a
notebook server, a DNS resolver) can be reached, whatever the code: C extensions and threads that pass the
audit hook included.

* As root: `unshare(CLONE_NEWNET)`.
* As any other user: `unshare(CLONE_NEWUSER | CLONE_NEWNET)`, with the user's own uid and gid mapped to
  themselves, so files keep their owner and permissions mean what they meant. The capabilities the new user
  namespace grants serve only to bring loopback up, and are dropped before the job's code runs.

Some kernels refuse user namespaces: a sysctl, AppArmor's restriction on Ubuntu >= 23.10 (the namespace is
made but its uid map cannot be written), or a container's seccomp profile. A forked probe tries the whole
sequence first, so a half-built namespace (one where files could no longer be created) never happens to the
job. Where it fails, `isolate` changes nothing and says why: the audit hook's socket ban still holds for
candidate code. Like core/landlock.py, standard library only, and it must run before the process has a
second thread (the kernel refuses CLONE_NEWUSER to a multi-threaded process).
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000  # <sched.h>
_CAP_VERSION_3 = 0x20080522  # <linux/capability.h>
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
ISOLATED = "network: own namespace, loopback only"


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def isolate(*, user_namespace: bool | None = None) -> str:
    """Move this process (and its future children) into a namespace of its own; a line saying what happened.

    `user_namespace` defaults to "not root"; tests pass True to take the unprivileged path as root.
    Never raises: a kernel that refuses leaves the process where it was.
    """
    if sys.platform != "linux":
        return "network: shared with the host (not Linux)"
    if user_namespace is None:
        user_namespace = os.geteuid() != 0
    try:
        if not user_namespace:
            problem = _enter_as_root()
        else:
            problem = _probe_user_namespace() or _enter_user_namespace()
    except Exception as exc:  # noqa: BLE001 - a job without a namespace still runs, under the guard
        problem = f"unexpected error: {exc!r}"
    return f"network: shared with the host ({problem})" if problem else ISOLATED


def _enter_as_root() -> str:
    problem = _unshare(CLONE_NEWNET)
    return problem or _loopback_up()


def _probe_user_namespace() -> str:
    """Run the whole sequence in a throwaway child: '' when it worked there, else why not."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, without Python's exit handlers, whatever happens
        try:
            os.close(read_fd)
            try:
                problem = _enter_user_namespace()
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which goes on
                problem = f"the probe failed: {exc!r}"
            os.write(write_fd, (problem or "").encode()[:512])
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        problem = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if not problem and not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        problem = f"the probe exited with status {status}"
    return problem


def _enter_user_namespace() -> str:
    uid, gid = os.geteuid(), os.getegid()
    problem = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if problem:
        return problem
    try:
        _write("/proc/self/setgroups", "deny")  # required before an unprivileged gid_map
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        return f"cannot map the user into the new namespace: {exc.strerror}"
    return _loopback_up() or _drop_capabilities()


def _unshare(flags: int) -> str:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(ctypes.c_int(flags)) != 0:
            return f"unshare refused: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as exc:
        return f"unshare unavailable: {exc}"
    return ""


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _loopback_up() -> str:
    """A new namespace starts with `lo` down; trusted code (torch.distributed on the GPU) needs 127.0.0.1."""
    import fcntl
    import socket
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sh22x", b"lo", 0)
            flags = struct.unpack("16sh22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))
    except OSError as exc:
        return f"loopback could not be brought up: {exc.strerror}"
    return ""


def _drop_capabilities() -> str:
    """Give back what the user namespace granted (CAP_NET_ADMIN and the rest): the job needs none of it."""
    libc = ctypes.CDLL(None, use_errno=True)
    empty = (_CapData * 2)()
    if libc.capset(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), empty) != 0:
        return f"capabilities could not be dropped: {os.strerror(ctypes.get_errno())}"
    return ""
