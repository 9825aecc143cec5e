"""Kernel-enforced confinement of a job with Landlock (Linux >= 5.13), no root needed.

The sandbox's audit hook is Python: a C extension, ctypes or a callback run by trusted code can go
around it. Landlock is enforced by the kernel for the process and every child it starts, and cannot be
lifted once applied. A job gets, as far as the running kernel's Landlock ABI allows:

* ABI >= 1: files and directories may be created, written, truncated (ABI 3), renamed into place
  (ABI 2) or removed only beneath the job's writable dirs (the job dir, the worktree, the model
  cache), plus writes to existing files under /dev (/dev/null, a GPU's /dev/nvidia*) and anything
  under /dev/shm (CUDA and NCCL). Reads are not restricted.
* ABI >= 4, when `deny_tcp`: no TCP bind or connect at all. The GPU recipe keeps TCP, because
  torch.distributed (TRL with colocated vLLM) talks to itself over 127.0.0.1.
* ABI >= 6: no signals to processes outside the job (the engine, the zygote, other jobs), and no
  connection to abstract unix sockets created outside it.

Where Landlock is missing (old kernel, not in the kernel's LSM list, a seccomp filter that refuses
the calls), `restrict` returns an empty description and changes nothing: the audit hook still holds.
It must run before the process starts threads: Landlock applies to the calling thread and to what it
creates afterwards, not to threads that already exist. Standard library only, like core/rlimits.py.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable

# Syscall numbers: the same on every Linux architecture (allocated after the tables were unified).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, by the ABI that introduced them. EXECUTE, READ_FILE and READ_DIR are not handled
# (reads stay free), nor IOCTL_DEV (ABI 5): CUDA drives the GPU by ioctl on /dev/nvidia*.
WRITE_FILE, TRUNCATE = 1 << 1, 1 << 14
_FS_RIGHTS_BY_ABI = (
    (1, (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11)
     | (1 << 12)),  # write file, remove dir/file, make char/dir/reg/sock/fifo/block/sym
    (2, 1 << 13),   # refer: link or rename a file into another directory
    (3, 1 << 14),   # truncate
)
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
DEV_WRITE_FILES = "/dev"   # existing device files: written, never created
DEV_SHM = "/dev/shm"       # shared memory files: created and removed by CUDA, NCCL, torch


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in the kernel's uapi header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI, 0 where there is none."""
    if sys.platform != "linux":
        return 0
    try:
        libc = _libc()
        version = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def restrict(write_dirs: Iterable[str], *, deny_tcp: bool = True) -> str:
    """Confine this process and its future children; a description of what was applied, '' if nothing.

    Raises OSError only when the ruleset was built but could not be applied (then nothing is applied
    either); a missing Landlock is not an error.
    """
    abi = abi_version()
    if abi < 1:
        return ""
    libc = _libc()
    fs = _handled_fs(abi)
    attr = _RulesetAttr(fs, (_NET_BIND_TCP | _NET_CONNECT_TCP) if deny_tcp and abi >= 4 else 0,
                        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)  # the struct grew with the ABI; older kernels refuse more
    ruleset = _check(libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
                     "landlock_create_ruleset")
    try:
        allowed = [d for d in write_dirs if _allow(libc, ruleset, d, fs)]
        _allow(libc, ruleset, DEV_WRITE_FILES, fs & (WRITE_FILE | TRUNCATE))
        _allow(libc, ruleset, DEV_SHM, fs)
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    parts = [f"Landlock ABI {abi}: writes only beneath {', '.join(allowed) or 'nothing'}"]
    if attr.handled_access_net:
        parts.append("no TCP")
    if attr.scoped:
        parts.append("no signals or abstract sockets outside the job")
    return "; ".join(parts)


def _handled_fs(abi: int) -> int:
    rights = 0
    for since, bits in _FS_RIGHTS_BY_ABI:
        if abi >= since:
            rights |= bits
    return rights


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> bool:
    """Grant `rights` beneath `path`; False (nothing granted) when the path cannot be opened."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not os.path.isdir(path):
            rights &= WRITE_FILE | TRUNCATE  # the only handled rights a file itself can carry
        rule = _PathBeneathAttr(rights, fd)
        _check(libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)),
               f"landlock_add_rule({path})")
    finally:
        os.close(fd)
    return True


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc
