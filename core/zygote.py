"""A warm parent for sandboxed jobs: one interpreter that has imported torch and transformers once,
and forks a child per job.

Why: a fresh `python -I` spends ~5.5 s of every job importing torch and transformers (bench/RESULTS.md,
"Job start-up"), against ~30 s of training; a candidate costs five such starts (three seeds, the probe
job, the smoke run). A forked child starts in ~0.1 s with those modules already in memory.

What the child gets is what `sandbox.spawn` gives a fresh interpreter, in the same order: its own
session (process group), the job dir as cwd with stdout.log/stderr.log, the job's scrubbed environment,
the kernel rlimits (set first, before any job code), then `sandbox._bootstrap_main` (network namespace,
guard, job module). The zygote itself only imports trusted modules and never runs candidate code, so
a child starts as clean as a fresh interpreter. Its exit code is the interpreter's: an exception ends
it with a traceback and 1, SystemExit with its code, a signal with -signum.

The engine talks to the zygote over its stdin/stdout, one JSON object a line:
    -> {"job": dir, "env": {...}, "cfg": {...}, "args": [...]}
    <- {"pid": n}                 the child runs
    <- {"exit": n, "code": rc}    the child ended (the zygote reaps it)
When the zygote is gone (killed, crashed), `spawn` falls back to a fresh interpreter and the children
it had are killed and reported as killed. POISE_WARM_JOBS=0 turns the zygote off.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ENV_SWITCH = "POISE_WARM_JOBS"
# Imported once in the zygote: what every tiny job, probe and smoke run imports (core.recipes.job pulls
# in the contract; the transformers model modules are the bulk of the 5.5 s).
WARM_MODULES = ("torch", "core.contract", "core.sandbox", "core.recipes.job", "core.probes", "core.recipes.tiny.run",
                "transformers", "transformers.models.auto.modeling_auto", "transformers.models.llama.modeling_llama",
                "transformers.models.qwen2.modeling_qwen2")
START_TIMEOUT_S = 120.0
HOME_PREFIX = "poise-zygote-"  # + the engine's pid: a later engine removes the homes of dead ones
POLL_S = 0.05

ZYGOTE_MAIN = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from core.zygote import serve\n"
    "serve(sys.argv[2:])\n"
)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


# --- engine side ---------------------------------------------------------------

class ForkedChild:
    """The part of subprocess.Popen that the sandbox uses, for a child of the zygote."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _end(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"job pid {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class Zygote:
    """The engine's handle on one zygote process (one per project root)."""

    def __init__(self, project_root: str, env: dict[str, str]) -> None:
        remove_stale_homes()
        self.home = tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-")
        env = {**env, "HOME": self.home, "TMPDIR": self.home}
        argv = [sys.executable, "-I", "-B", "-c", ZYGOTE_MAIN, project_root, *WARM_MODULES]
        self.proc = subprocess.Popen(argv, cwd=self.home, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        self._lock = threading.Lock()            # one fork request at a time
        self._children: dict[int, ForkedChild] = {}  # registered by the reader, before its exit can arrive
        self._started: list[ForkedChild] = []         # answers to fork requests, oldest first
        self._reply = threading.Condition()
        self.alive = True
        threading.Thread(target=self._read, name="poise-zygote-reader", daemon=True).start()

    def fork(self, job: Path, env: dict[str, str], cfg: dict[str, Any], args: list[str]) -> ForkedChild | None:
        """Start one job; None when the zygote is gone or does not answer (the caller starts it fresh)."""
        request = json.dumps({"job": str(job), "env": env, "cfg": cfg, "args": args}) + "\n"
        with self._lock:
            if not self.alive:
                return None
            try:
                self.proc.stdin.write(request.encode())
                self.proc.stdin.flush()
            except (OSError, ValueError):
                self._gone()
                return None
            child = self._await_start()
            if child is None:
                self.close()  # a zygote that does not answer must not start this job late, beside a fresh one
            return child

    def _await_start(self) -> ForkedChild | None:
        deadline = time.monotonic() + START_TIMEOUT_S  # the first request waits for the warm imports
        with self._reply:
            while not self._started and self.alive and time.monotonic() < deadline:
                self._reply.wait(0.5)
            return self._started.pop(0) if self._started else None

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._reply:
                if "exit" in msg:
                    child = self._children.pop(int(msg["exit"]), None)
                    if child is not None:
                        child._end(int(msg["code"]))
                elif "pid" in msg:
                    child = self._children[int(msg["pid"])] = ForkedChild(int(msg["pid"]))
                    self._started.append(child)
                    self._reply.notify_all()
        self._gone()

    def _gone(self) -> None:
        """The zygote died: its children cannot be reaped by us, so kill them and report them killed."""
        with self._reply:
            self.alive = False
            orphans, self._children = list(self._children.values()), {}
            self._reply.notify_all()
        for child in orphans:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + 5.0
            while not _dead(child.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            child._end(-signal.SIGKILL)

    def close(self) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.home, ignore_errors=True)


def remove_stale_homes() -> None:
    """Home dirs of zygotes whose engine is gone. close() removes its own, but an engine killed with
    kill -9 cannot: without this sweep every such kill left one in the temp dir (149 after a few test runs)."""
    for home in Path(tempfile.gettempdir()).glob(f"{HOME_PREFIX}*-*"):
        owner = home.name.removeprefix(HOME_PREFIX).split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and _dead(int(owner)):
            shutil.rmtree(home, ignore_errors=True)


def _dead(pid: int) -> bool:
    """No such process, or a zombie: an orphan waits for PID 1 to reap it, which a container's may never do."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


_ZYGOTES: dict[str, Zygote] = {}
_ZYGOTES_LOCK = threading.Lock()


def fork_job(project_root: str, base_env: dict[str, str], job: Path, env: dict[str, str], cfg: dict[str, Any],
             args: list[str]) -> ForkedChild | None:
    """Run one sandboxed job as a child of the warm zygote; None means: start it in a fresh interpreter."""
    if not enabled():
        return None
    with _ZYGOTES_LOCK:
        zyg = _ZYGOTES.get(project_root)
        if zyg is None or not zyg.alive:
            try:
                zyg = _ZYGOTES[project_root] = Zygote(project_root, base_env)
            except OSError:
                return None
    return zyg.fork(job, env, cfg, args)


def close_all() -> None:
    for zyg in list(_ZYGOTES.values()):
        zyg.close()
    _ZYGOTES.clear()


atexit.register(close_all)


# --- zygote side ---------------------------------------------------------------

def serve(warm: list[str]) -> None:
    """The zygote's loop: import `warm`, then fork a child per request and report how each one ended."""
    import importlib

    for name in warm:
        # An optional module that fails here (no transformers on a bare box) is the child's to import.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    out = sys.stdout
    lines = _LineReader(sys.stdin.fileno())
    while True:
        _reap(out)
        line = lines.next(POLL_S)
        if line is None:
            continue
        if not line:
            return  # the engine is gone; children live on in their own sessions, as fresh ones would
        request = json.loads(line)
        out.flush()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            _child(request, ready_w)  # never returns: ends with os._exit
        os.close(ready_w)
        os.read(ready_r, 1)  # EOF once the child has its own session: a kill of its group cannot miss it
        os.close(ready_r)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()


class _LineReader:
    """Lines from a pipe without Python's buffered reader, whose read-ahead select() cannot see."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf = fd, b""

    def next(self, timeout: float) -> bytes | None:
        """One line (b"" at end of input), or None when none came within `timeout`."""
        import select

        while b"\n" not in self.buf:
            if not select.select([self.fd], [], [], timeout)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return b""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"


def _reap(out: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        out.write(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


def _child(request: dict[str, Any], ready_fd: int) -> None:
    """Become the job, then leave as a fresh interpreter would, minus its ~1.5 s teardown of torch and
    transformers: stdio flushed, atexit handlers and non-daemon threads run, the traceback printed and
    exit code 1 on an exception, SystemExit's code. Files the job left open and unflushed are not
    flushed by a final garbage collection (job code closes its files)."""
    import atexit
    import threading
    import traceback

    code = 1
    try:
        os.setsid()
        os.close(ready_fd)
        _become_job(request)
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except BaseException:  # noqa: BLE001 - the job's own failure, reported like the interpreter does
        traceback.print_exc()
    finally:
        try:
            threading._shutdown()  # type: ignore[attr-defined] - joins non-daemon threads, as at exit
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _become_job(request: dict[str, Any]) -> None:
    from core.rlimits import apply_rlimits

    job = Path(request["job"])
    os.chdir(job)
    _redirect(0, os.open(os.devnull, os.O_RDONLY))
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    _redirect(1, os.open(job / "stdout.log", flags, 0o644))
    _redirect(2, os.open(job / "stderr.log", flags, 0o644))
    os.closerange(3, 1 << 16)  # the zygote's pipes and whatever else it held
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request["env"])
    # tempfile caches its directory at first use, and importing torch (dill) uses it in the zygote:
    # without this, every tempfile call of the job (Triton builds in one) points outside its sandbox.
    tempfile.tempdir = None
    cfg = request["cfg"]
    apply_rlimits(cfg["rlimits"])  # what sandbox.BOOTSTRAP does first in a fresh interpreter
    from core.sandbox import _bootstrap_main

    _bootstrap_main(cfg, request["args"])


def _redirect(target: int, fd: int) -> None:
    os.dup2(fd, target)
    os.close(fd)
