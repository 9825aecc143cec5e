"""Training/evaluation jobs: start in the sandbox, stream metrics, kill early, always end in an outcome.

    handle = start_job(spec, cfg.limits, cfg.early_kill, project_root)
    handle.on_metrics(lambda row: ...)      # every metrics.jsonl row, from the monitor thread
    result = handle.wait()                  # JobResult; never raises for a failing job

A monitor thread per job tails `metrics.jsonl`, applies the early-kill rules
(non-finite loss, entropy collapse, KL blow-up, reward flat at zero; thresholds
from EarlyKillConfig), enforces the wall-clock limit and carries out `cancel()`.
Whatever happens, the job ends as exactly one of evaluated / diverged(reason) /
crashed(traceback tail) / timed_out / cancelled, and the verdict is written to
`result.json` in the job dir (the supervisor's verdict replaces the recipe's
when they disagree, e.g. the recipe never got to write one).

A full job of a recipe in core.recipes.eval_job.RECIPES runs in two processes. The training process
(candidate code) saves the policy. Once it has exited cleanly, a second sandboxed process that never imports
candidate code scores it, from a spec.json written again from memory. Its scores are the only ones kept,
so a candidate cannot patch the evaluator or forge result.json. The training process's own result stays in
train_result.json. The wall-clock limit and cancel() cover both processes. Unless the recipe keeps
policies (`keep_policy`), the policy is deleted when the job ends, however it ends.

A job dir is one attempt: starting a job clears the previous attempt's
result.json, metrics.jsonl and logs there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from core import sandbox
from core.diskcap import DiskWatch
from core.errors import SandboxError
from core.jobspec import CHECKPOINT_DIR, EVAL_PROGRESS, POLICY_DIR, JobResult, JobSpec, read_eval_progress
from core.recipes.policy import policy_kept, remove_policy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
JOB_ENTRY = "core.recipes.job"
EVAL_ENTRY = "core.recipes.eval_job"
TRAIN_RESULT = "train_result.json"  # the training process's own result, kept beside the trusted one
PROBE_ENTRY = "core.probes"
POLL_S = 0.1
TAIL_LINES = 20
ATTEMPT_FILES = ("result.json", TRAIN_RESULT, "metrics.jsonl", "stdout.log", "stderr.log",
                 sandbox.VIOLATIONS_FILE, EVAL_PROGRESS)
Listener = Callable[[dict[str, Any]], None]


# --- metrics tail and early kill ------------------------------------------------------

class MetricsTail:
    """Reads the complete lines appended to metrics.jsonl since the last call; torn lines are skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []  # only a partial line so far: the writer is mid-line
        self.offset += end + 1
        return [row for line in data[: end + 1].splitlines() if (row := _parse_row(line)) is not None]


def _parse_row(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a torn line from a killed writer
    return row if isinstance(row, dict) else None


class EarlyKill:
    """The divergence rules over the stream of metric rows; `check(row)` gives a reason or ''."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.zero_run = 0
        self.no_update_run = 0

    def check(self, row: dict[str, Any]) -> str:
        step = row.get("step", "?")
        for key in ("loss", "grad_norm", "kl", "entropy", "reward_mean"):
            value = row.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                return f"non-finite {key} ({value}) at step {step}"
        return self._thresholds(row, step)

    def _thresholds(self, row: dict[str, Any], step: Any) -> str:
        kl, entropy, reward = row.get("kl"), row.get("entropy"), row.get("reward_mean")
        if isinstance(kl, (int, float)) and self.cfg.max_kl > 0 and kl > self.cfg.max_kl:
            return f"KL to the reference {kl:.4g} > max_kl {self.cfg.max_kl} at step {step}"
        if isinstance(entropy, (int, float)) and entropy < self.cfg.min_entropy:
            return f"entropy collapsed to {entropy:.3g} < min_entropy {self.cfg.min_entropy} at step {step}"
        if isinstance(reward, (int, float)):
            self.zero_run = self.zero_run + 1 if abs(reward) < 1e-12 else 0
            limit = self.cfg.zero_reward_steps
            if limit > 0 and self.zero_run >= limit:
                return f"reward flat at 0 for {self.zero_run} consecutive steps (up to step {step})"
        return self._no_update(row.get("kept_frac"), step)

    def _no_update(self, kept: Any, step: Any) -> str:
        """A filter that drops every group leaves nothing to learn from: the scores would be the warm start's."""
        if not isinstance(kept, (int, float)):
            return ""  # no filter_groups: every step updates
        self.no_update_run = self.no_update_run + 1 if kept <= 0 else 0
        limit = int(getattr(self.cfg, "no_update_steps", 0) or 0)
        if limit > 0 and self.no_update_run >= limit:
            return (f"filter_groups kept no rollout for {self.no_update_run} consecutive steps (up to step {step}): "
                    "the policy is not being trained")
        return ""


# --- the handle ---------------------------------------------------------------------

@dataclass
class _Stop:
    outcome: str
    reason: str


class JobHandle:
    """A running (or finished) job. Thread-safe: the monitor thread writes, any thread reads."""

    def __init__(self, spec: JobSpec, proc: sandbox.SandboxProcess, limits: Any, early_kill: Any,
                 eval_phase: Callable[[], sandbox.SandboxProcess] | None = None,
                 disk: DiskWatch | None = None, scratch: Path | None = None) -> None:
        self.spec = spec
        self.job_dir = Path(spec.job_dir)
        self._proc = proc
        self._started = proc.started
        self._eval_phase = eval_phase  # starts the trusted scoring process once training ended cleanly
        self._scoring = False
        self._timeout_s = float(limits.timeout_s)
        self._disk = disk or DiskWatch(self.job_dir, sandbox.Limits.of(limits).disk_mb)
        self._scratch = scratch  # a dir outside the job dir that only this job uses, deleted when it ends
        self._tail = MetricsTail(self.job_dir / "metrics.jsonl")
        self._rules = EarlyKill(early_kill)
        self._rows: list[dict[str, Any]] = []
        self._polled = 0
        self._listeners: list[Listener] = []
        self._stop: _Stop | None = None
        self._result: JobResult | None = None
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._monitor, name=f"job-{proc.pid}", daemon=True)
        self._thread.start()

    # public API -------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def rows(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._rows)

    def poll(self) -> list[dict[str, Any]]:
        """Metric rows that arrived since the previous poll() (by any caller)."""
        with self._cond:
            new = self._rows[self._polled:]
            self._polled = len(self._rows)
            return new

    def on_metrics(self, listener: Listener) -> None:
        """Call `listener(row)` for every row, past ones first; it runs on the monitor thread, keep it quick."""
        with self._cond:
            past = list(self._rows)
            self._listeners.append(listener)
        for row in past:
            _call(listener, row)

    def iter_metrics(self) -> Iterator[dict[str, Any]]:
        """Every row, blocking for new ones until the job has ended."""
        seen = 0
        while True:
            with self._cond:
                self._cond.wait_for(partial(self._has_news, seen), timeout=1.0)
                new, finished = self._rows[seen:], self._result is not None
            yield from new
            seen += len(new)
            if finished and not new:
                return

    def _has_news(self, seen: int) -> bool:
        return len(self._rows) > seen or self._result is not None

    def cancel(self) -> None:
        """Stop the job; its outcome becomes cancelled (unless it had already ended)."""
        self._request_stop("cancelled", "cancelled by the user")

    def done(self) -> bool:
        return self._result is not None

    def eval_progress(self) -> tuple[int, int, str] | None:
        """(done, total, what) of the scoring process, once it runs; None before (training has metric rows)."""
        return read_eval_progress(self.job_dir) if self._scoring else None

    def wait(self, timeout: float | None = None) -> JobResult | None:
        """The outcome once the job has ended; None only when `timeout` passes first (the job keeps running)."""
        self._thread.join(timeout)
        return self._result

    # the monitor thread -----------------------------------------------------------
    def _monitor(self) -> None:
        result = self._supervise()
        if self._eval_phase is not None and result.outcome == "evaluated":
            result = self._trusted_eval(result)
        self._finish(result)

    def _supervise(self) -> JobResult:
        """Watch the current process to its end (the wall-clock limit counts from the job's start)."""
        deadline = self._started + self._timeout_s if self._timeout_s > 0 else float("inf")  # <= 0: no limit
        while self._proc.poll() is None:
            self._drain()
            if time.monotonic() > deadline:
                self._request_stop("timed_out", f"wall-clock limit of {self._timeout_s:g} s exceeded")
            if self._disk.exceeded():
                self._request_stop("crashed", self._disk.fired)
            if self._stop is not None:
                self._proc.kill_group()
                break
            self._wake.wait(POLL_S)
        self._proc.close()
        if self._disk.fired:
            self._disk.reclaim()
        self._drain()
        return self._verdict(self._proc.popen.returncode)

    def _trusted_eval(self, trained: JobResult) -> JobResult:
        """Score the trained policy in a process without candidate code; its scores are the only ones kept.
        The training group is dead by now (close() killed it), so nothing rewrites the files read next."""
        trained.save(self.job_dir)
        (self.job_dir / "result.json").replace(self.job_dir / TRAIN_RESULT)
        (self.job_dir / EVAL_PROGRESS).unlink(missing_ok=True)  # only the scoring process's own counts
        self._scoring = True
        try:
            self._proc = self._eval_phase()
        except SandboxError as exc:
            return JobResult("crashed", f"cannot start the evaluation process: {exc}", steps_done=trained.steps_done)
        scored = self._supervise().after_training(trained)
        scored.extra["scored_by"] = EVAL_ENTRY
        scored.wall_s = 0.0  # the whole job's, set by _finish
        return scored

    def _drain(self) -> None:
        for row in self._tail.read_new():
            reason = self._rules.check(row)
            with self._cond:
                self._rows.append(row)
                listeners = list(self._listeners)
                self._cond.notify_all()
            for listener in listeners:
                _call(listener, row)
            if reason:
                self._request_stop("diverged", reason)

    def _request_stop(self, outcome: str, reason: str) -> None:
        with self._cond:
            if self._stop is None and self._result is None:
                self._stop = _Stop(outcome, reason)  # the first cause wins
        self._wake.set()

    def _finish(self, result: JobResult) -> None:
        result.wall_s = result.wall_s or time.monotonic() - self._started
        result.steps_done = result.steps_done or _steps(self._rows)
        if not policy_kept(self.spec.recipe_config):
            # The scoring process deletes it when it ends by itself; one that timed out, was cancelled or
            # was killed cannot, and neither can training that died after saving (gigabytes per job).
            remove_policy(self.job_dir)
        if result.outcome != "cancelled":  # only a job stopped before its end resumes from its checkpoint
            shutil.rmtree(self.job_dir / CHECKPOINT_DIR, ignore_errors=True)
        remove_scratch(self._scratch)
        result.save(self.job_dir)
        with self._cond:
            self._result = result
            self._cond.notify_all()

    def _verdict(self, returncode: int) -> JobResult:
        if self._stop is not None:
            return JobResult(self._stop.outcome, self._stop.reason, extra=self._diagnostics(returncode))
        return classify_exit(self.job_dir, returncode, self._diagnostics(returncode))

    def _diagnostics(self, returncode: int) -> dict[str, Any]:
        extra: dict[str, Any] = {"returncode": returncode}
        violations = sandbox.tail_lines(self.job_dir / sandbox.VIOLATIONS_FILE, 5)
        if violations:
            extra["sandbox_violations"] = violations.splitlines()
        return extra


def classify_exit(job_dir: Path, returncode: int, extra: dict[str, Any]) -> JobResult:
    """The outcome of a job that ended by itself (no kill by the supervisor)."""
    recipe = _load_result(job_dir)
    tail = traceback_tail(sandbox.tail_lines(job_dir / "stderr.log", 10 * TAIL_LINES))
    if returncode == 0:
        if recipe is not None:
            recipe.extra = {**extra, **recipe.extra}
            return recipe
        return JobResult("crashed", "exited with status 0 without writing result.json", extra=extra)
    extra["stderr_tail"] = tail
    if returncode < 0:
        return _killed_by_signal(-returncode, extra)
    if recipe is not None and recipe.outcome != "evaluated":
        return recipe  # the recipe explained its own failure
    return JobResult("crashed", _last_line(tail) or f"exited with status {returncode}", extra=extra)


CHAIN_MARKERS = ("The above exception was the direct cause of the following exception:",
                 "During handling of the above exception, another exception occurred:")


def traceback_tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines; for a chained traceback, the root cause's end plus the final error's end.

    The loader wraps a candidate's exception (ContractError from ...), so the plain tail would show
    only our frames; the root cause holds the candidate's own file and line.
    """
    marker = next((m for m in CHAIN_MARKERS if m in text), "")
    if not marker:
        return "\n".join(text.splitlines()[-lines:])
    cause, _, final = text.partition(marker)
    head = cause.strip("\n").splitlines()[-(lines * 2 // 3):]
    rest = final.strip("\n").splitlines()[-(lines - len(head) - 1):]
    return "\n".join([*head, marker, *rest])


def _killed_by_signal(signum: int, extra: dict[str, Any]) -> JobResult:
    name = _signal_name(signum)
    if signum == signal.SIGXCPU:
        return JobResult("timed_out", "CPU-time limit (RLIMIT_CPU) exceeded", extra=extra)
    hint = " (by itself, the kernel OOM killer, or another process)" if signum == signal.SIGKILL else ""
    return JobResult("crashed", f"killed by {name}{hint}", extra=extra)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _load_result(job_dir: Path) -> JobResult | None:
    try:
        return JobResult.load(job_dir)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def _steps(rows: list[dict[str, Any]]) -> int:
    steps = [r["step"] for r in rows if isinstance(r.get("step"), int)]
    return max(steps) if steps else len(rows)


def _call(listener: Listener, row: dict[str, Any]) -> None:
    try:
        listener(row)
    except Exception:  # noqa: BLE001, S110  (a broken listener, e.g. the UI, must not stop the supervisor)
        pass


# --- starting jobs ----------------------------------------------------------------------

def start_job(spec: JobSpec, limits: Any, early_kill: Any, project_root: str | Path = PROJECT_ROOT, *,
              entry: str = JOB_ENTRY, extra_env: dict[str, str] | None = None) -> JobHandle:
    """Write spec.json and start `python -m <entry> spec.json` in the sandbox. SandboxError if it cannot start."""
    job_dir = Path(spec.job_dir).resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    clear_attempt(job_dir)
    if not spec.early_kill:
        spec.early_kill = asdict(early_kill)  # the recipe can stop itself cleanly with the same thresholds
    spec_path = spec.save()
    sockets = socket_dir(spec.recipe)
    env = {**recipe_env(spec.recipe, sockets), **(extra_env or {})}
    disk = DiskWatch(job_dir, sandbox.Limits.of(limits).disk_mb, worktrees=[_worktree(spec)])  # before it writes
    start = partial(sandbox.spawn, args=[str(spec_path)], job_dir=job_dir, project_root=project_root, limits=limits,
                    allowed_write_dirs=[str(sockets)] if sockets else [], trusted_write_dirs=_trainer_dirs(spec),
                    extra_env=env)
    try:
        proc = start(entry, allow_tcp=spec.recipe == "math")  # torch.distributed of TRL + colocated vLLM
    except SandboxError:
        remove_scratch(sockets)
        raise
    return JobHandle(spec, proc, limits, early_kill, _eval_phase(spec, entry, start), disk, scratch=sockets)


def remove_scratch(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


# vLLM's engine talks to its core process over ZMQ unix sockets named <VLLM_RPC_BASE_PATH>/[<what>-]<uuid4>, by
# default in TMPDIR (the job's tmp/). The kernel takes at most 107 bytes for such a path, so a run dir of more
# than ~40 characters (/home/alice/runs/qwen-math/jobs/c012/0/tmp/ already) could stop every scoring process
# at its start. So a math job gets a short socket dir of its own, made private by mkdtemp, writable by the job
# (vLLM deletes its socket files in Python when it shuts down), and deleted when the job ends.
SOCKET_ROOT = "/tmp"


def socket_dir(recipe: str) -> Path | None:
    if recipe != "math" or not os.path.isdir(SOCKET_ROOT):
        return None
    return Path(tempfile.mkdtemp(prefix="poise-ipc-", dir=SOCKET_ROOT))


def recipe_env(recipe: str, sockets: Path | None = None) -> dict[str, str]:
    """What a recipe's job needs in its environment besides the sandbox's own (recipe math: its device module)."""
    if recipe != "math":
        return {}
    from core.recipes.math.device import job_env

    return job_env(sockets)


def clear_attempt(job_dir: Path) -> None:
    """What the previous attempt in this job dir left: its results, logs and trained policy."""
    for name in ATTEMPT_FILES:
        (job_dir / name).unlink(missing_ok=True)
    shutil.rmtree(job_dir / POLICY_DIR, ignore_errors=True)


def _eval_phase(spec: JobSpec, entry: str, start: Callable[..., sandbox.SandboxProcess]
                ) -> Callable[[], sandbox.SandboxProcess] | None:
    """How to start the trusted scoring process after training, for a full job of a recipe that has one."""
    from core.recipes.eval_job import RECIPES

    if entry != JOB_ENTRY or spec.mode != "full" or spec.recipe not in RECIPES:
        return None

    def begin() -> sandbox.SandboxProcess:
        spec.save()  # again, from memory: the candidate's process could write the job dir's spec.json
        return start(EVAL_ENTRY, allow_tcp=spec.recipe == "math")  # vLLM's engine

    return begin


def _worktree(spec: JobSpec) -> str:
    return str(Path(spec.algorithm_path).resolve().parent)


def _trainer_dirs(spec: JobSpec) -> list[str]:
    """Writable by the trainer but not by candidate code: the worktree, and the warm-start cache."""
    return [_worktree(spec)] + ([spec.cache_dir] if spec.cache_dir else [])


@dataclass
class ProbeReport:
    """core.probes' report plus how the probe process ended (evaluated = it wrote a report)."""

    ok: bool
    problems: list[str]
    fingerprint: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    outcome: str = "evaluated"


def run_probe(algorithm_path: str | Path, job_dir: str | Path, limits: Any,
              project_root: str | Path = PROJECT_ROOT) -> ProbeReport:
    """Run the contract probes on a candidate in the sandbox (blocking); failures are a not-ok report."""
    job = Path(job_dir).resolve()
    job.mkdir(parents=True, exist_ok=True)
    out = job / "probe.json"
    clear_attempt(job)
    out.unlink(missing_ok=True)
    # the tighter of the probe limit and the job limit (<= 0 is no limit)
    set_limits = [x for x in (sandbox.Limits.of(limits).timeout_s, getattr(limits, "probe_timeout_s", 0)) if x > 0]
    limit = min(set_limits) if set_limits else None
    res = sandbox.run(PROBE_ENTRY, [str(Path(algorithm_path).resolve()), str(out)], job_dir=job,
                      project_root=project_root, limits=limits, timeout_s=limit,
                      trusted_write_dirs=[str(Path(algorithm_path).resolve().parent)])
    if res.timed_out:
        return ProbeReport(False, [f"probes timed out after {limit or 0:g} s (an endless loop in the candidate?)"],
                           outcome="timed_out")
    if res.over_disk:
        return ProbeReport(False, [f"probe process {res.over_disk}"], outcome="crashed")
    report = _read_report(out)
    if res.returncode != 0 or report is None:
        verdict = classify_exit(job, res.returncode, {})
        return ProbeReport(False, [f"probe process {verdict.outcome}: {verdict.reason}"], outcome=verdict.outcome)
    return ProbeReport(bool(report.get("ok")), list(report.get("problems", [])), str(report.get("fingerprint", "")),
                       dict(report.get("outputs", {})))


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
