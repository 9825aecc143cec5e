"""Running untrusted candidate code: a fresh interpreter, limits, a timeout, a guard.

Every job that imports a candidate's `algorithm.py` (training, probes) is started
with `spawn()` (or the blocking `run()`), which builds this process:

    python -I -B -c <BOOTSTRAP> <config-json> <module> <args...>

or, by default, the same process forked from a warm zygote (core/zygote.py) that ran
this interpreter once, imported only trusted modules (torch, transformers, core) and
never runs candidate code; the child then takes every step below itself, in the
same order. It saves ~5.5 s of imports per job. POISE_WARM_JOBS=0 turns it off.

What is isolated, and by what:

* **Interpreter**: `-I` ignores PYTHON* variables, the user site and the current
  directory; `-B` writes no .pyc files. The bootstrap puts only the project
  root on `sys.path`.
* **Environment**: scrubbed to an allow-list (PATH, LANG, LC_ALL, POISE_*,
  thread counts, CUDA_VISIBLE_DEVICES); HOME and TMPDIR point into the job dir.
* **Working directory**: the job dir. stdout/stderr go to `stdout.log` and
  `stderr.log` there.
* **Process group**: its own session (`start_new_session`), so a timeout or a
  cancel kills the job and every child it left (SIGTERM, then SIGKILL).
* **Kernel limits** (enforced by the kernel, cannot be bypassed by Python
  code): RLIMIT_AS (memory), RLIMIT_DATA (optional), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NPROC and
  RLIMIT_CORE=0. They are set by the bootstrap as its very first action
  (core/rlimits.py, standard library only), before torch or candidate code is
  imported, rather than in a `preexec_fn`:
  the engine and the TUI are multi-threaded, and `preexec_fn` can deadlock in a
  forked child of a threaded parent. RLIMIT_NPROC is not enforced for root.
* **Disk** (core/diskcap.py): not a kernel limit. The supervisor measures the job
  dir twice a second and stops a job that wrote more than `disk_mb` in all.
* **Network namespace** (core/netns.py): the bootstrap moves the job into a
  network namespace of its own with only a loopback, as root directly and as any
  other user through a user namespace that maps the user to itself (its
  capabilities are dropped at once). Nothing the job sends, UDP and C-level
  sockets included, reaches another host or a service on the host's 127.0.0.1;
  torch.distributed still talks to itself. Where the kernel refuses user
  namespaces, the job shares the host's network and the guard's socket ban holds
  alone; sandbox.txt says which. POISE_NETNS=0 turns it off.
* **Landlock** (core/landlock.py, Linux >= 5.13, no root needed): applied by the
  bootstrap before the pre-imports, for the job and every child it starts,
  enforced by the kernel whatever the code (C extensions and ctypes included):
  files are created, written, renamed or removed only beneath the job dir, its
  tmp/ and the trusted dirs (existing /dev files and /dev/shm aside); no TCP bind
  or connect unless the job needs it (`allow_tcp`, the GPU recipe); no signals to
  processes outside the job. The trusted-only rule for the worktree and the
  cache stays the hook's: the kernel cannot see which code is on the stack.
  The job dir's sandbox.txt says what was applied; where the kernel has no
  Landlock, it says so and the hook alone guards. POISE_LANDLOCK=0 turns it off.
* **In-process guard** (`install_guard`): a `sys.addaudithook` hook, installed
  by the bootstrap after trusted heavy modules (torch, core.contract) are
  imported and before the job module runs. (1) For everyone: no file is opened
  for writing, renamed, removed, linked or chmod-ed outside the job dir and its
  tmp/; the worktree and the model cache are writable only while no candidate
  code is on the stack (the trainer fills the cache, a candidate cannot poison
  it). (2) While candidate code is on the stack (any frame from a file outside
  the stdlib, site-packages and core/): no sockets, no process creation (fork,
  exec*, spawn*, posix_spawn, system, subprocess, pty), no signals to other
  processes, no ctypes, no raising of resource limits. Trusted library code
  keeps these (transformers loads libc with ctypes on lazy imports; vLLM starts
  workers). Each refusal raises SandboxViolation (a PermissionError) and is
  logged to `sandbox_violations.log` in the job dir, even when the candidate
  swallows the exception. Job entries may call `install_guard()` themselves
  (idempotent), so they are guarded even when run by hand.

What is NOT isolated: the guard is in-process Python. A C extension, a bug in
CPython, or code that reaches the hook's state through interpreter internals can
bypass it (for writes outside the allowed dirs, TCP and signals, Landlock then
still refuses); so can a candidate that hands a builtin (say, a bound method of an
object it found) to trusted code as a callback, because no candidate frame is on
the stack when that runs. The static check refuses the obvious routes to such
objects, not all routes. Reads are not restricted: a candidate can read any file
the user can (but, in the namespace, not send them anywhere). A non-root
RLIMIT_NPROC counts all of the user's processes. For hostile code use a
container or VM; this sandbox is for LLM-written code that is buggy or careless,
not for a targeted attacker.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import netns
from core.errors import SandboxError

# Modules imported before the guard: trusted, heavy, and some of them use ctypes at import.
DEFAULT_PREIMPORT = ("torch", "core.contract")
# What a GPU job needs from the user's setup: where the CUDA driver and toolkit are (Triton looks for
# libcuda on LD_LIBRARY_PATH when ldconfig does not list it), the compiler Triton builds with, the
# allocator and NCCL settings, and offline switches. No tokens or keys: HF_TOKEN and the like stay out.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "CC", "CXX",
             "PYTORCH_CUDA_ALLOC_CONF", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
ENV_PREFIX_ALLOW = ("POISE_", "CUDA_VISIBLE_", "NVIDIA_VISIBLE_", "NVIDIA_DRIVER_", "NCCL_")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
KILL_GRACE_S = 3.0
CONFINEMENT_FILE = "sandbox.txt"  # in the job dir: what Landlock and the network namespace enforce for this job
LANDLOCK_SWITCH = "POISE_LANDLOCK"  # "0": no kernel confinement (the audit hook still guards)
NETNS_SWITCH = "POISE_NETNS"  # "0": the job shares the host's network (the audit hook still bans sockets)

# The -c program: limits first (core/rlimits.py is standard library only), then the real bootstrap.
BOOTSTRAP = (
    "import sys, json\n"
    "cfg = json.loads(sys.argv[1])\n"
    "sys.path.insert(0, cfg['project_root'])\n"
    "from core.rlimits import apply_rlimits\n"
    "apply_rlimits(cfg['rlimits'])\n"
    "from core.sandbox import _bootstrap_main\n"
    "_bootstrap_main(cfg, sys.argv[2:])\n"
)


@dataclass(frozen=True)
class Limits:
    """Kernel limits of one sandboxed process (see core.config.LimitsConfig for the user-facing ones)."""

    timeout_s: float = 1800.0
    memory_mb: int = 8192
    data_mb: int = 0
    cpu_s: int = 7200
    file_mb: int = 512
    nproc: int = 512
    disk_mb: int = 4096  # not a kernel limit: the supervisor measures the job dir (core/diskcap.py)

    @classmethod
    def of(cls, limits: Any) -> Limits:
        """Accept a LimitsConfig (or anything with the same fields; a missing one keeps its default)."""
        fields = cls.__dataclass_fields__
        return cls(**{k: getattr(limits, k) for k in fields if hasattr(limits, k)})

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """(soft, hard) per limit; a value <= 0 means no limit (CUDA reserves far more address space than
        it uses, so GPU jobs need memory_mb = 0). The CPU hard limit is 5 s above the soft one so the job
        gets SIGXCPU (classified timed_out) before SIGKILL."""
        mib = 1024 * 1024
        wanted = {"RLIMIT_AS": int(self.memory_mb) * mib, "RLIMIT_DATA": int(self.data_mb) * mib,
                  "RLIMIT_FSIZE": int(self.file_mb) * mib, "RLIMIT_NPROC": int(self.nproc)}
        limits = {name: (v, v) for name, v in wanted.items() if v > 0}
        if self.cpu_s > 0:
            limits["RLIMIT_CPU"] = (int(self.cpu_s), int(self.cpu_s) + 5)
        return {**limits, "RLIMIT_CORE": (0, 0)}


@dataclass
class SandboxResult:
    """How a blocking `run()` ended. returncode < 0 means killed by that signal."""

    returncode: int
    timed_out: bool
    wall_s: float
    stdout_path: Path
    stderr_path: Path
    over_disk: str = ""  # why it was stopped for what it wrote under its job dir ([limits] disk_mb)

    def stderr_tail(self, lines: int = 20) -> str:
        return tail_lines(self.stderr_path, lines)


@dataclass
class SandboxProcess:
    """A started sandboxed process; the only handle that can signal its group."""

    popen: Any                 # subprocess.Popen, or zygote.ForkedChild (the same poll/wait/returncode/pid)
    job_dir: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def kill_group(self, grace_s: float = KILL_GRACE_S) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after `grace_s`."""
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(self.pid, signal.SIGKILL)  # also reaps stragglers that ignored SIGTERM
        self.popen.wait()

    def close(self) -> None:
        """After the leader exited: children it left in its group die too, and the atexit registry forgets it."""
        _signal_group(self.pid, signal.SIGKILL)
        _LIVE.pop(self.pid, None)


def spawn(
    module: str,
    args: Iterable[str],
    *,
    job_dir: str | Path,
    project_root: str | Path,
    limits: Any,
    allowed_write_dirs: Iterable[str | Path] = (),
    trusted_write_dirs: Iterable[str | Path] = (),
    extra_env: dict[str, str] | None = None,
    preimport: Iterable[str] = DEFAULT_PREIMPORT,
    guard: bool = True,
    allow_tcp: bool = False,
) -> SandboxProcess:
    """Start `python -m module args...` in the sandbox; returns at once. Raises SandboxError if it cannot start.

    Files may be written in the job dir (and its tmp/) and `allowed_write_dirs` by any code, and in
    `trusted_write_dirs` (the worktree, the model cache) only while no candidate code is on the stack.
    With the guard on, Landlock also confines writes to those dirs in the kernel, and refuses TCP unless
    `allow_tcp` (the GPU recipe's torch.distributed needs 127.0.0.1).
    """
    job = Path(job_dir).resolve()
    tmp = job / "tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"cannot create the job directory {job}: {exc}; choose a writable run directory") from exc
    writable = [str(job), str(tmp), *(str(Path(d).resolve()) for d in allowed_write_dirs)]
    trusted_only = [str(Path(d).resolve()) for d in trusted_write_dirs]
    _make_dirs(trusted_only)
    cfg = {
        "project_root": str(Path(project_root).resolve()),
        "rlimits": Limits.of(limits).rlimits(),
        "allowed_write_dirs": writable,
        "trusted_write_dirs": trusted_only,
        "preimport": list(preimport),
        "guard": guard,
        "landlock": {"deny_tcp": not allow_tcp} if guard and landlock_enabled() else None,
        "netns": guard and network_isolation_enabled(),
        "module": module,
    }
    argv = [sys.executable, "-I", "-B", "-c", BOOTSTRAP, json.dumps(cfg), *map(str, args)]
    dirs_env = {WRITE_DIRS_ENV: os.pathsep.join(writable), TRUSTED_DIRS_ENV: os.pathsep.join(trusted_only)}
    env = scrubbed_env(job, {**dirs_env, **(extra_env or {})})
    child = _fork_warm(job, env, cfg, [str(a) for a in args])
    return _register(SandboxProcess(child, job)) if child is not None else _popen(argv, job, env)


def landlock_enabled() -> bool:
    return os.environ.get(LANDLOCK_SWITCH, "1") != "0"


def network_isolation_enabled() -> bool:
    return os.environ.get(NETNS_SWITCH, "1") != "0"


def _make_dirs(dirs: list[str]) -> None:
    """A writable dir must exist before the job starts: Landlock grants rights on an open directory, and the
    job could not create it (say, the model cache on first use) once confined. A failure is the job's to report."""
    for d in dirs:
        try:
            Path(d).mkdir(parents=True, exist_ok=True)
        except OSError:
            pass


def _fork_warm(job: Path, env: dict[str, str], cfg: dict[str, Any], args: list[str]) -> Any:
    """The job as a child of the warm zygote (core/zygote.py), or None to start a fresh interpreter."""
    from core import zygote

    for name in ("stdout.log", "stderr.log"):  # the same precondition as _popen: the logs can be opened
        try:
            with open(job / name, "ab"):
                pass
        except OSError:
            return None
    base = {k: v for k, v in env.items() if k not in ("HOME", "TMPDIR", WRITE_DIRS_ENV, TRUSTED_DIRS_ENV)}
    return zygote.fork_job(cfg["project_root"], base, job, env, cfg, args)


def _popen(argv: list[str], job: Path, env: dict[str, str]) -> SandboxProcess:
    try:
        with open(job / "stdout.log", "ab") as out, open(job / "stderr.log", "ab") as err:
            popen = subprocess.Popen(argv, cwd=job, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     start_new_session=True, close_fds=True)
    except OSError as exc:
        raise SandboxError(f"cannot start a sandboxed job in {job}: {exc}; check that the directory is writable "
                           f"and that {sys.executable} exists") from exc
    return _register(SandboxProcess(popen, job))


def _register(proc: SandboxProcess) -> SandboxProcess:
    _LIVE[proc.pid] = proc
    return proc


def run(module: str, args: Iterable[str], *, timeout_s: float | None = None, **kwargs: Any) -> SandboxResult:
    """Blocking `spawn`: waits, kills the group on timeout (limits.timeout_s unless `timeout_s` is given)."""
    from core.diskcap import DISK_POLL_S, DiskWatch

    limits = Limits.of(kwargs["limits"])
    # The trusted dirs (a probe's: its worktree) count as the job's too; measured before it starts.
    disk = DiskWatch(Path(kwargs["job_dir"]), limits.disk_mb, worktrees=list(kwargs.get("trusted_write_dirs", ())))
    proc = spawn(module, args, **kwargs)
    limit = timeout_s if timeout_s is not None else limits.timeout_s
    deadline = proc.started + limit if limit and limit > 0 else float("inf")  # <= 0: no wall-clock limit
    timed_out = False
    while True:
        try:
            proc.popen.wait(timeout=max(0.0, min(deadline - time.monotonic(), DISK_POLL_S)))
            break
        except subprocess.TimeoutExpired:
            timed_out = time.monotonic() >= deadline
            if timed_out or disk.exceeded():
                proc.kill_group()
                break
    proc.close()
    if disk.fired:
        disk.reclaim()
    job = proc.job_dir
    return SandboxResult(proc.popen.returncode, timed_out, time.monotonic() - proc.started,
                         job / "stdout.log", job / "stderr.log", disk.fired)


def scrubbed_env(job_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The job's whole environment: an allow-list of ours plus HOME/TMPDIR inside the job dir."""
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW or k.startswith(ENV_PREFIX_ALLOW)}
    env.setdefault("PATH", "/usr/bin:/bin")
    for var in THREAD_VARS:
        env[var] = os.environ.get(var, "1")
    # glibc reserves 64 MiB of address space per thread arena; under RLIMIT_AS that wastes the budget.
    env["MALLOC_ARENA_MAX"] = "2"
    env["HOME"] = str(job_dir)
    env["TMPDIR"] = str(job_dir / "tmp")
    env[JOB_MARKER_ENV] = "1"  # how a resumed engine tells an orphaned job from a user's shell in a job dir
    # Nothing can be downloaded from a job: say so, so a library fails at once instead of retrying a hub.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra or {})
    return env


def tail_lines(path: Path, lines: int = 20, max_bytes: int = 65536) -> str:
    """The last `lines` lines of a (possibly huge) log file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.rstrip("\n").splitlines()[-lines:])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


# Live groups are killed when the engine exits, so no job outlives its supervisor.
_LIVE: dict[int, SandboxProcess] = {}


def _kill_live_groups() -> None:
    for proc in list(_LIVE.values()):
        _signal_group(proc.pid, signal.SIGKILL)


atexit.register(_kill_live_groups)


# --- inside the sandboxed process ----------------------------------------------

def _bootstrap_main(cfg: dict[str, Any], argv: list[str]) -> None:
    """Runs in the child after the rlimits: network namespace and Landlock (both need a single thread), pre-imports,
    guard, then the job module."""
    import importlib
    import runpy
    import warnings

    network = netns.isolate() if cfg.get("netns") else "network: shared with the host (turned off)"
    if cfg["guard"]:
        _confine(cfg["allowed_write_dirs"] + cfg["trusted_write_dirs"], network, cfg.get("landlock"))
    for name in cfg["preimport"]:
        importlib.import_module(name)
    if cfg["guard"]:
        install_guard(cfg["allowed_write_dirs"], cfg["trusted_write_dirs"])
    sys.argv = [cfg["module"], *argv]
    with warnings.catch_warnings():
        # The zygote (or `preimport`) imported the job module already, on purpose; runpy then warns in every
        # job's stderr.log that it runs a second copy as __main__, which is what we want.
        warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package",
                                category=RuntimeWarning)
        runpy.run_module(cfg["module"], run_name="__main__", alter_sys=True)


def _confine(write_dirs: list[str], network: str, landlock: dict[str, Any] | None) -> None:
    """Landlock before any import that could start a thread (it binds only this thread and its future ones).
    The job dir's sandbox.txt says what the kernel enforces for this job, or why it enforces nothing (not
    stderr.log: its last line is a crash's reason)."""
    from core import landlock as kernel

    if landlock is None:
        applied = "Landlock turned off; the audit hook still guards"
    else:
        try:
            applied = kernel.restrict(write_dirs, **landlock) or "no Landlock in this kernel; the audit hook still guards"
        except OSError as exc:
            applied = f"Landlock not applied ({exc}); the audit hook still guards"
    try:
        with open(os.path.join(write_dirs[0], CONFINEMENT_FILE), "w") as fh:
            fh.write(f"{applied}\n{network}\n")
    except OSError:
        pass  # a report only


# --- the in-process guard ------------------------------------------------------

JOB_MARKER_ENV = "POISE_JOB"  # in the first environment of every job process (and the zygote's)
WRITE_DIRS_ENV = "POISE_SANDBOX_WRITE_DIRS"
TRUSTED_DIRS_ENV = "POISE_SANDBOX_TRUSTED_WRITE_DIRS"
VIOLATIONS_FILE = "sandbox_violations.log"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# Denied whenever untrusted (candidate) code is on the call stack. Trusted library code may still do
# them: transformers imports load libc through ctypes, and vLLM (GPU recipe) starts worker processes.
_DENY_FROM_UNTRUSTED = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function",
    "ctypes.cdata", "ctypes.cdata/buffer", "ctypes.string_at", "ctypes.wstring_at", "ctypes.get_errno",
    "ctypes.set_errno", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto",
    "socket.sendmsg", "resource.setrlimit", "resource.prlimit", "os.kill", "os.killpg",
})
# Denied for everyone when the path is outside the writable dirs: event -> (path index, dir_fd index).
_PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.truncate": ((0, None),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),), "shutil.rmtree": ((0, 1),),
}
_GUARD: dict[str, Any] = {}


class SandboxViolation(SandboxError, PermissionError):
    """The guard refused an operation. A PermissionError, so careless code sees an ordinary OSError."""


def install_guard(allowed_write_dirs: Iterable[str | Path] | None = None,
                  trusted_write_dirs: Iterable[str | Path] | None = None) -> bool:
    """Install the audit hook in this process; False (and nothing changes) if one is already installed.

    The dirs default to $POISE_SANDBOX_WRITE_DIRS and $POISE_SANDBOX_TRUSTED_WRITE_DIRS (set by
    `spawn`); the first allowed dir receives the violations log. Call it before
    `core.contract.load_algorithm`. It cannot be uninstalled or widened: that is the point.
    """
    if _GUARD:
        return False
    roots = _real_dirs(allowed_write_dirs, WRITE_DIRS_ENV)  # first = the job dir
    trusted_roots = _real_dirs(trusted_write_dirs, TRUSTED_DIRS_ENV)
    trusted = _trusted_prefixes()
    log_path = os.path.join(roots[0], VIOLATIONS_FILE) if roots else ""
    _GUARD.update(roots=roots, trusted_roots=trusted_roots, trusted=trusted)
    sys.addaudithook(_make_hook(_WritePolicy(roots, trusted_roots, trusted), os.getpid(), os.getpgrp(), log_path))
    _wrap_raw_fork_exec(trusted)
    return True


def guard_installed() -> bool:
    return bool(_GUARD)


def _real_dirs(dirs: Iterable[str | Path] | None, env_var: str) -> tuple[str, ...]:
    if dirs is None:
        dirs = [d for d in os.environ.get(env_var, "").split(os.pathsep) if d]
    return tuple(dict.fromkeys(os.path.realpath(d) for d in dirs))


@dataclass(frozen=True)
class _WritePolicy:
    roots: tuple[str, ...]          # anyone may write here
    trusted_roots: tuple[str, ...]  # only while no candidate frame is on the stack
    trusted: tuple[str, ...]        # file prefixes of trusted code

    def refusal(self, path: Any, dir_fd: Any) -> str:
        """Why writing `path` is refused, or '' when it is allowed."""
        if isinstance(path, int):
            return ""  # an already-open descriptor: it was checked when it was opened
        real = _resolve(path, dir_fd)
        if _inside(real, self.roots):
            return ""
        if _inside(real, self.trusted_roots):
            culprit = _untrusted_frame(self.trusted, depth=3)
            return f"{real} may only be written by the trainer, not by {culprit}" if culprit else ""
        return f"{real} is outside the job's writable directories"


def _inside(real: str, roots: tuple[str, ...]) -> bool:
    return any(real == r or real.startswith(r + os.sep) for r in roots)


def _make_hook(policy: _WritePolicy, pid: int, pgid: int, log_path: str) -> Any:
    """The hook closes over immutable values only. It runs on every audited call, so the common case is one lookup."""

    def deny(event: str, detail: str) -> None:
        msg = f"poise sandbox: {event} denied ({detail}); a candidate may only compute with torch"
        _log_violation(log_path, msg)
        raise SandboxViolation(msg)

    def hook(event: str, args: tuple) -> None:
        if event == "open":  # reads are the hot path: flags first, path resolution only for writes
            writing = len(args) > 2 and isinstance(args[2], int) and bool(args[2] & _WRITE_FLAGS)
            if writing and (why := policy.refusal(args[0], None)):
                deny(event, why)
        elif event in _PATH_EVENTS:
            for path_i, fd_i in _PATH_EVENTS[event]:
                if why := policy.refusal(args[path_i], args[fd_i] if fd_i is not None else None):
                    deny(event, why)
        elif event in _DENY_FROM_UNTRUSTED and not _own_signal(event, args, pid, pgid):
            culprit = _untrusted_frame(policy.trusted)
            if culprit:
                deny(event, f"called from untrusted code {culprit}")

    return hook


def _own_signal(event: str, args: tuple, pid: int, pgid: int) -> bool:
    """A job may signal itself or its own group (e.g. to die); never the engine or anyone else."""
    if event == "os.kill":
        return args[0] in (pid, 0, -pgid)
    return event == "os.killpg" and args[0] == pgid


def _untrusted_frame(trusted: tuple[str, ...], depth: int = 2) -> str:
    """'file:line' of the innermost frame that is not stdlib / site-packages / core, or '' when all are trusted.

    `depth` skips the guard's own frames (this function, the hook, and any helper in between).
    """
    frame = sys._getframe(depth)
    while frame is not None:
        name = frame.f_code.co_filename
        module_file = frame.f_globals.get("__file__") or ""
        bottom = frame.f_back is None  # the -c bootstrap
        if not (bottom or name.startswith(trusted) or name.startswith("<frozen") or
                (name.startswith("<") and module_file.startswith(trusted))):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


def _trusted_prefixes() -> tuple[str, ...]:
    import sysconfig

    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.add(os.path.dirname(os.__file__))
    dirs.add(os.path.dirname(os.path.abspath(__file__)))  # core/ of this project
    forms = {form for d in dirs for form in (os.path.abspath(d), os.path.realpath(d))}
    return tuple(sorted(f.rstrip(os.sep) + os.sep for f in forms))


def _resolve(path: Any, dir_fd: Any) -> str:
    text = os.fsdecode(path)
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(text):  # -1 means "no dir_fd"
        # rmtree and friends work relative to directory descriptors; /proc tells us where they point
        text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
    return os.path.realpath(text)


def _log_violation(log_path: str, msg: str) -> None:
    """Append to the job's violations log (the open is itself audited: it is inside the job dir, so allowed)."""
    if not log_path:
        return
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, (msg + "\n").encode("utf-8", "replace"))
        os.close(fd)
    except OSError:
        pass  # e.g. out of descriptors: the exception still reaches the candidate and stderr


def _wrap_raw_fork_exec(trusted: tuple[str, ...]) -> None:
    """subprocess's C helper raises no audit event of its own in 3.11, so it gets the same frame check."""
    try:
        import _posixsubprocess
    except ImportError:
        return
    original = _posixsubprocess.fork_exec

    def checked(*args: Any, **kwargs: Any) -> Any:
        culprit = _untrusted_frame(trusted)
        if culprit:
            raise SandboxViolation(f"poise sandbox: fork_exec denied (called from untrusted code {culprit})")
        return original(*args, **kwargs)

    _posixsubprocess.fork_exec = checked  # type: ignore[attr-defined]
