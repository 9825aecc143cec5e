"""core.zygote: a job forked from the warm zygote behaves as one started in a fresh interpreter
(sandbox, exit codes, exit handlers), and losing the zygote loses no job silently."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from core import sandbox, zygote
from core.config import LimitsConfig

ROOT = Path(__file__).resolve().parent.parent
LIMITS = LimitsConfig(timeout_s=60, memory_mb=3072, cpu_s=120, file_mb=16, nproc=256)
FRESH = {"stdout.log", "stderr.log"}


def run(job: Path, *args: str, warm: bool, monkeypatch: pytest.MonkeyPatch, module: str = "tests.adversarial.exit_job",
        timeout_s: float | None = None) -> sandbox.SandboxResult:
    monkeypatch.setenv(zygote.ENV_SWITCH, "1" if warm else "0")
    return sandbox.run(module, list(args), job_dir=job, project_root=ROOT, limits=LIMITS, timeout_s=timeout_s)


def report(tmp_path: Path, warm: bool, monkeypatch: pytest.MonkeyPatch) -> dict:
    job = tmp_path / ("warm" if warm else "fresh") / "job"
    res = run(job, str(job / "report.json"), warm=warm, monkeypatch=monkeypatch,
              module="tests.adversarial.report_job")
    assert res.returncode == 0, res.stderr_tail()
    return json.loads((job / "report.json").read_text())


def test_a_forked_job_is_sandboxed_like_a_fresh_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    warm, fresh = report(tmp_path, True, monkeypatch), report(tmp_path, False, monkeypatch)
    assert warm.pop("torch_preloaded") and fresh.pop("torch_preloaded")
    for r in (warm, fresh):  # paths differ by the job dir only
        r["cwd"] = Path(r["cwd"]).name
        # tempfile caches its directory at first use: the zygote's own TMPDIR must not leak into a job
        assert r["tempdir"] == str(Path(r["env"]["TMPDIR"])) and r.pop("tempdir_error") == ""
        r["tempdir"] = Path(r["tempdir"]).name
        r["env"] = {k: v.replace(str(tmp_path / "warm"), "X").replace(str(tmp_path / "fresh"), "X")
                    for k, v in r["env"].items() if k not in ("LC_CTYPE", zygote.ENV_SWITCH)}
    assert "SECRET_TOKEN" not in warm["env"]
    assert warm == fresh


def test_the_forked_child_is_a_session_leader_not_a_child_of_the_engine(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    proc = sandbox.spawn("tests.adversarial.exit_job", ["sleep"], job_dir=tmp_path / "job", project_root=ROOT,
                         limits=LIMITS)
    try:
        assert isinstance(proc.popen, zygote.ForkedChild)
        assert os.getsid(proc.pid) == proc.pid
        with pytest.raises(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)  # the zygote reaps it, never us
    finally:
        proc.kill_group(grace_s=1)
        proc.close()
    assert proc.popen.returncode == -signal.SIGTERM


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "fresh"])
@pytest.mark.parametrize(("mode", "code", "in_stderr"), [
    ("ok", 0, ""), ("raise", 1, "RuntimeError: the job failed on purpose"), ("exit3", 3, ""),
    ("exit_message", 1, "a message instead of a code")])
def test_exit_codes_and_tracebacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm: bool, mode: str,
                                   code: int, in_stderr: str):
    res = run(tmp_path / "job", mode, warm=warm, monkeypatch=monkeypatch)
    assert res.returncode == code, res.stderr_tail()
    assert in_stderr in res.stderr_tail()
    if mode == "raise":
        assert "Traceback (most recent call last)" in res.stderr_tail()
    if code == 0:
        assert (tmp_path / "job" / "stdout.log").read_text().strip() == f"done {mode}"


@pytest.mark.parametrize("mode", ["thread", "atexit"])
def test_exit_waits_for_threads_and_runs_exit_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str):
    res = run(tmp_path / "job", mode, warm=True, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr_tail()
    assert (tmp_path / "job" / f"{mode}.txt").read_text() == "written"


def test_a_hung_forked_job_times_out_and_its_group_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    res = run(tmp_path / "job", "sleep", warm=True, monkeypatch=monkeypatch, timeout_s=3)
    assert res.timed_out and res.returncode in (-signal.SIGTERM, -signal.SIGKILL)


def test_losing_the_zygote_kills_its_jobs_and_the_next_job_still_runs(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    proc = sandbox.spawn("tests.adversarial.exit_job", ["sleep"], job_dir=tmp_path / "a", project_root=ROOT,
                         limits=LIMITS)
    assert isinstance(proc.popen, zygote.ForkedChild)
    deadline = time.monotonic() + 30
    while "sleeping" not in (tmp_path / "a" / "stdout.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    zyg = zygote._ZYGOTES[str(ROOT)]
    os.kill(zyg.proc.pid, signal.SIGKILL)
    assert proc.popen.wait(timeout=30) == -signal.SIGKILL  # reported, not hung
    assert zygote._dead(proc.pid)  # and really dead
    proc.close()
    res = run(tmp_path / "b", "ok", warm=True, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr_tail()


def test_jobs_started_from_many_threads_at_once_all_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    codes: dict[int, int] = {}

    def one(i: int) -> None:
        codes[i] = sandbox.run("tests.adversarial.exit_job", ["ok"], job_dir=tmp_path / str(i), project_root=ROOT,
                               limits=LIMITS).returncode

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == dict.fromkeys(range(6), 0)
    assert all((tmp_path / str(i) / "stdout.log").read_text().strip() == "done ok" for i in range(6))


def test_switched_off_means_a_fresh_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(zygote.ENV_SWITCH, "0")
    proc = sandbox.spawn("tests.adversarial.exit_job", ["ok"], job_dir=tmp_path / "job", project_root=ROOT,
                         limits=LIMITS)
    assert not isinstance(proc.popen, zygote.ForkedChild)
    assert proc.popen.wait(60) == 0
    proc.close()


def test_homes_of_dead_engines_are_removed_and_live_ones_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An engine killed with kill -9 cannot remove its zygote's home; the next zygote's start does."""
    import subprocess
    import tempfile

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that has just died
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{zygote.HOME_PREFIX}{gone.pid}-abc123"
    live = tmp_path / f"{zygote.HOME_PREFIX}{os.getppid()}-def456"  # the process that started pytest
    legacy = tmp_path / f"{zygote.HOME_PREFIX}ghi789"  # no pid in the name: not ours to judge
    for home in (dead, live, legacy):
        (home / "torchinductor_root").mkdir(parents=True)
    zygote.remove_stale_homes()
    assert not dead.exists() and live.exists() and legacy.exists()


def test_a_preimported_job_module_runs_without_runpy_noise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The zygote imports core.recipes.job on purpose; runpy used to warn about it in every job's stderr.log."""
    res = run(tmp_path / "job", "--no-such-flag", warm=True, monkeypatch=monkeypatch, module="core.recipes.job")
    stderr = (tmp_path / "job" / "stderr.log").read_text()
    assert res.returncode != 0 and stderr.strip(), stderr  # it ran, and failed on the bogus flag
    assert "found in sys.modules" not in stderr, stderr
