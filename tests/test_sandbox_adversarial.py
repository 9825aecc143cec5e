"""Adversarial candidates, one property each, through the real sandbox and the real job/probe paths.

Candidates that misbehave while being imported go through `core.recipes.job` (recipe tiny loads
the candidate before anything else). Candidates that misbehave inside compute_advantages go
through tests/adversarial/bandit_job.py, a real training job that reaches the candidate within
a second of its imports, so a timeout measures the candidate, not the warm-start build.
Every test also checks that nothing outside the job directory changed, and the test process
itself is the proof that the engine survives.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from core import landlock, netns, zygote
from core.config import EarlyKillConfig, LimitsConfig
from core.jobs import JobHandle, run_probe, start_job
from core.jobspec import JobResult, JobSpec
from core.sandbox import CONFINEMENT_FILE, KILL_GRACE_S, LANDLOCK_SWITCH, NETNS_SWITCH, VIOLATIONS_FILE

ROOT = Path(__file__).resolve().parent.parent
ADV = ROOT / "tests" / "adversarial"
BANDIT = "tests.adversarial.bandit_job"
LIMITS = LimitsConfig(timeout_s=120, memory_mb=3072, cpu_s=300)


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under root except the job dir: path -> (size, mtime)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and skip not in p.parents}


class Arena:
    """A worktree holding one adversarial candidate, a job dir beside it, and a fence to watch."""

    def __init__(self, tmp_path: Path, candidate: str) -> None:
        self.root = tmp_path
        self.job = tmp_path / "job"
        (tmp_path / "worktree").mkdir()
        (tmp_path / "outside").mkdir()
        (tmp_path / "outside" / "precious.txt").write_text("keep me")
        self.algorithm = tmp_path / "worktree" / "algorithm.py"
        shutil.copy(ADV / candidate, self.algorithm)
        self.before = snapshot(tmp_path, self.job)

    def spec(self, recipe_config: dict | None = None) -> JobSpec:
        return JobSpec(recipe="tiny", algorithm_path=str(self.algorithm), job_dir=str(self.job), seed=0,
                       recipe_config=recipe_config if recipe_config is not None else {},
                       cache_dir=str(self.root / "cache"))

    def run_recipe_job(self, limits: LimitsConfig = LIMITS, **env: str) -> JobResult:
        return start_job(self.spec(), limits, EarlyKillConfig(), extra_env=env).wait()

    def start_bandit(self, limits: LimitsConfig = LIMITS, **config) -> JobHandle:
        spec = self.spec({"steps": 20, "target": 2, **config})
        return start_job(spec, limits, EarlyKillConfig(), entry=BANDIT)

    def violations(self) -> str:
        path = self.job / VIOLATIONS_FILE
        return path.read_text() if path.exists() else ""

    def assert_nothing_outside_changed(self) -> None:
        assert snapshot(self.root, self.job) == self.before


def test_endless_loop_times_out_quickly(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "loop_forever.py")
    handle = arena.start_bandit(LimitsConfig(timeout_s=20, memory_mb=3072))
    result = handle.wait()
    assert result.outcome == "timed_out" and "20 s" in result.reason
    assert "entered the endless loop" in (arena.job / "stdout.log").read_text()  # it was the loop, not startup
    assert result.wall_s < 20 + KILL_GRACE_S + 5
    arena.assert_nothing_outside_changed()


def test_unbounded_allocation_crashes_with_memory_error(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "allocate_forever.py")
    result = arena.start_bandit(LimitsConfig(timeout_s=120, memory_mb=1536)).wait()
    assert result.outcome == "crashed" and "MemoryError" in result.reason
    assert "bytearray(64 * 1024 * 1024)" in result.extra["stderr_tail"]  # failed in the candidate's allocation
    arena.assert_nothing_outside_changed()


def test_fork_is_denied(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "fork.py")
    result = arena.run_recipe_job()
    assert result.outcome == "crashed" and "os.fork denied" in result.reason
    assert "os.fork denied" in arena.violations()
    arena.assert_nothing_outside_changed()


def test_subprocess_is_denied_and_its_command_never_runs(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "spawn_subprocess.py")
    result = arena.run_recipe_job()
    assert result.outcome == "crashed" and "subprocess.Popen denied" in result.reason
    assert not list(tmp_path.rglob("spawned_marker"))
    arena.assert_nothing_outside_changed()


def test_write_outside_the_job_dir_is_denied(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "write_outside.py")
    target = tmp_path / "outside" / "escaped.txt"
    result = arena.run_recipe_job(POISE_TEST_TARGET=str(target))
    assert result.outcome == "crashed" and "open denied" in result.reason
    assert not target.exists()
    arena.assert_nothing_outside_changed()


def test_write_into_the_worktree_is_denied_to_candidate_code(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "write_outside.py")
    target = tmp_path / "worktree" / "injected.py"
    result = arena.run_recipe_job(POISE_TEST_TARGET=str(target))
    assert result.outcome == "crashed" and "may only be written by the trainer" in result.reason
    assert not target.exists()
    arena.assert_nothing_outside_changed()


def test_socket_is_denied(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "open_socket.py")
    result = arena.run_recipe_job()
    assert result.outcome == "crashed" and "socket.__new__ denied" in result.reason
    arena.assert_nothing_outside_changed()


def test_nan_loss_is_killed_as_diverged(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "nan_loss.py")
    result = arena.start_bandit(steps=10**7).wait()
    assert result.outcome == "diverged" and "non-finite loss" in result.reason
    assert result.steps_done < 10**7
    arena.assert_nothing_outside_changed()


def test_nan_loss_fails_the_probes(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "nan_loss.py")
    report = run_probe(arena.algorithm, arena.job, LIMITS)
    assert not report.ok and any("loss is nan" in p for p in report.problems)
    arena.assert_nothing_outside_changed()


def test_exception_at_import_is_a_crash_with_the_traceback_tail(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "raise_at_import.py")
    result = arena.run_recipe_job()
    assert result.outcome == "crashed" and "candidate exploded at import" in result.reason
    assert "_broken_helper" in result.extra["stderr_tail"]  # the candidate's own frames are in the tail
    arena.assert_nothing_outside_changed()


def test_sigkill_to_itself_is_a_crash(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "sigkill_self.py")
    result = arena.run_recipe_job()
    assert result.outcome == "crashed" and "killed by SIGKILL" in result.reason
    assert result.extra["returncode"] == -9
    arena.assert_nothing_outside_changed()


def test_probe_of_an_endless_loop_times_out(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "loop_forever.py")
    started = time.monotonic()
    report = run_probe(arena.algorithm, arena.job, LimitsConfig(timeout_s=15))
    assert report.outcome == "timed_out" and not report.ok
    assert "entered the endless loop" in (arena.job / "stdout.log").read_text()
    assert time.monotonic() - started < 15 + KILL_GRACE_S + 5
    arena.assert_nothing_outside_changed()


def test_probes_have_their_own_short_limit_whatever_a_training_job_may_take(tmp_path: Path) -> None:
    """A GPU run's jobs may take two days ([limits] timeout_s); a looping candidate must not hold
    verification that long: probes stop at probe_timeout_s, and no wall-clock limit at all (<= 0) is honoured."""
    arena = Arena(tmp_path, "loop_forever.py")
    report = run_probe(arena.algorithm, arena.job, LimitsConfig(timeout_s=0, probe_timeout_s=8))
    assert report.outcome == "timed_out" and report.problems == [
        "probes timed out after 8 s (an endless loop in the candidate?)"]
    assert "entered the endless loop" in (arena.job / "stdout.log").read_text()
    arena.assert_nothing_outside_changed()


def test_a_swallowed_denial_is_still_recorded(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "swallow_denial.py")
    result = arena.start_bandit(steps=3).wait()
    assert result.outcome == "evaluated"
    assert any(v.startswith("poise sandbox: socket.") for v in result.extra["sandbox_violations"])
    arena.assert_nothing_outside_changed()


def test_cpu_time_limit_is_enforced_by_the_kernel(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "loop_forever.py")
    result = arena.start_bandit(LimitsConfig(timeout_s=120, memory_mb=3072, cpu_s=6)).wait()
    assert result.outcome == "timed_out" and "CPU-time limit" in result.reason
    assert result.extra["returncode"] == -24  # SIGXCPU, from the kernel, not our wall clock
    arena.assert_nothing_outside_changed()


# --- routes around the audit hook: only the kernel (Landlock) stops them --------------------------------

needs_landlock = pytest.mark.skipif(landlock.abi_version() < 6, reason="needs Landlock ABI >= 6 (Linux >= 6.12)")


@pytest.fixture
def victim():
    """A process outside the job that the candidate tries to kill."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def run_bypass(tmp_path: Path, victim: subprocess.Popen) -> JobResult:
    arena = Arena(tmp_path, "thread_bypass.py")
    result = arena.run_recipe_job(POISE_TEST_VICTIM=str(victim.pid))
    arena.assert_nothing_outside_changed()
    return result


@needs_landlock
def test_a_bind_and_a_kill_from_threads_that_pass_the_hook_are_refused_by_the_kernel(tmp_path, victim) -> None:
    result = run_bypass(tmp_path, victim)
    assert result.outcome == "crashed" and "refused: ['bind: PermissionError', 'kill: PermissionError']" in result.reason
    assert victim.poll() is None


@needs_landlock
def test_without_landlock_the_same_threads_get_through_so_the_attack_is_real(tmp_path, victim, monkeypatch) -> None:
    monkeypatch.setenv(LANDLOCK_SWITCH, "0")
    result = run_bypass(tmp_path, victim)
    assert result.outcome == "crashed" and "refused: []" in result.reason
    assert victim.wait(10) == -signal.SIGKILL


def run_torch_save(tmp_path: Path) -> tuple[Arena, Path, JobResult]:
    arena = Arena(tmp_path, "torch_save_outside.py")
    target = tmp_path / "outside" / "poison.pt"
    return arena, target, arena.run_recipe_job(POISE_TEST_TARGET=str(target))


@needs_landlock
@pytest.mark.parametrize("warm", [True, False], ids=["forked-from-zygote", "fresh-interpreter"])
def test_torch_save_outside_the_worktree_is_refused_by_the_kernel(tmp_path: Path, monkeypatch, warm: bool) -> None:
    monkeypatch.setenv(zygote.ENV_SWITCH, "1" if warm else "0")  # both ways of starting a job confine it
    arena, target, result = run_torch_save(tmp_path)
    assert result.outcome == "crashed" and "torch.save outside: refused" in result.reason
    assert not target.exists()
    assert (arena.job / CONFINEMENT_FILE).read_text().startswith("Landlock ABI")  # the job says what confined it
    arena.assert_nothing_outside_changed()


@needs_landlock
def test_without_landlock_torch_save_writes_outside_so_the_attack_is_real(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(LANDLOCK_SWITCH, "0")
    _, target, result = run_torch_save(tmp_path)
    assert result.outcome == "crashed" and "torch.save outside: written" in result.reason
    assert target.exists()


# --- UDP from a thread that passes the hook: Landlock allows it, only the network namespace stops it ----------

def run_udp_exfiltration(tmp_path: Path) -> tuple[Arena, JobResult, bool]:
    """The job's result, and whether the test's UDP listener on the host's 127.0.0.1 got the datagram."""
    arena = Arena(tmp_path, "udp_exfiltrate.py")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        result = arena.run_recipe_job(POISE_TEST_UDP_PORT=str(listener.getsockname()[1]))
        listener.settimeout(0.5)
        try:
            heard = bool(listener.recv(65536))
        except TimeoutError:
            heard = False
    arena.assert_nothing_outside_changed()
    return arena, result, heard


def test_a_datagram_from_a_thread_that_passes_the_hook_never_leaves_the_job(tmp_path: Path) -> None:
    arena, result, heard = run_udp_exfiltration(tmp_path)
    confinement = (arena.job / CONFINEMENT_FILE).read_text()
    if netns.ISOLATED not in confinement:
        pytest.skip(f"this kernel refuses network isolation: {confinement}")
    assert result.outcome == "crashed" and "datagram sent" in result.reason and "socket made: True" in result.reason
    assert not heard


def test_without_the_namespace_the_same_datagram_gets_out_so_the_attack_is_real(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(NETNS_SWITCH, "0")
    arena, result, heard = run_udp_exfiltration(tmp_path)
    assert result.outcome == "crashed" and "socket made: True" in result.reason
    assert heard
    assert "network: shared with the host (turned off)" in (arena.job / CONFINEMENT_FILE).read_text()


def stopped_for_disk(arena: Arena, disk_mb: int, started: str) -> JobResult:
    """Run the arena's candidate under `disk_mb`; it must be stopped for it, after it printed `started`."""
    result = arena.start_bandit(LimitsConfig(timeout_s=120, memory_mb=3072, cpu_s=300, disk_mb=disk_mb)).wait()
    assert result.outcome == "crashed" and f"over [limits] disk_mb = {disk_mb}" in result.reason, result
    assert started in (arena.job / "stdout.log").read_text()  # it was the candidate
    return result


def test_filling_the_disk_is_stopped_as_a_crash_and_what_it_wrote_is_deleted(tmp_path: Path) -> None:
    """Each file is under file_mb, so only [limits] disk_mb (the supervisor's measure of the job dir) stops it."""
    from core.diskcap import disk_bytes

    arena = Arena(tmp_path, "fill_disk.py")
    stopped_for_disk(arena, 32, "started filling the disk")
    assert not list(arena.job.glob("junk-*")), "what it wrote is deleted"
    assert disk_bytes(arena.job) < 8 << 20
    arena.assert_nothing_outside_changed()


def test_empty_files_without_end_are_stopped_too_and_removed(tmp_path: Path) -> None:
    """Each empty file or directory counts one 4 KiB block: 8 MiB allows ~2,000 of them, not millions."""
    arena = Arena(tmp_path, "fill_inodes.py")
    stopped_for_disk(arena, 8, "started making empty files")
    left = [p.name for p in arena.job.rglob("*")]
    assert not any(name.startswith("empty-") for name in left) and "nest" not in left, "its entries are deleted"
    assert len(left) < 20 and {"spec.json", "stdout.log", "stderr.log"} <= set(left)
    arena.assert_nothing_outside_changed()


def test_filling_the_worktree_through_torch_save_is_stopped_too_and_removed(tmp_path: Path) -> None:
    arena = Arena(tmp_path, "fill_worktree.py")
    result = stopped_for_disk(arena, 32, "started filling the worktree")
    assert "its worktree, over" in result.reason
    worktree = arena.algorithm.parent
    assert sorted(p.name for p in worktree.iterdir()) == ["algorithm.py"], "what it added is deleted"
    arena.assert_nothing_outside_changed()


def test_a_probe_that_fills_the_disk_is_stopped_too(tmp_path: Path) -> None:
    from core.diskcap import disk_bytes

    arena = Arena(tmp_path, "fill_disk.py")
    report = run_probe(arena.algorithm, arena.job, LimitsConfig(timeout_s=60, disk_mb=32))
    assert report.outcome == "crashed" and not report.ok
    assert "over [limits] disk_mb = 32" in report.problems[0]
    assert disk_bytes(arena.job) < 8 << 20
    arena.assert_nothing_outside_changed()
