"""A job's trained policy (a full checkpoint on recipe math) is deleted when the job ends, however it ends,
unless the recipe keeps it; and a recovering engine deletes those a killed supervisor left behind.

The supervisor tests drive a real JobHandle over real sandboxed processes. The "training" and "scoring"
processes are tests.adversarial.exit_job, which stand in for the recipe's two processes (fakes of the
recipe, named so): the training one ends with a result.json the test wrote, the scoring one sleeps until it
is cancelled, which is the case the scoring process itself cannot clean up after."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from engine_support import base_run, copy_run

from core import sandbox
from core.config import EarlyKillConfig, LimitsConfig
from core.jobs import JobHandle
from core.jobspec import POLICY_DIR, JobResult, JobSpec
from core.recipes.policy import sweep_policies

ROOT = Path(__file__).resolve().parent.parent
FAKE_RECIPE_PROCESS = "tests.adversarial.exit_job"
LIMITS = LimitsConfig(timeout_s=120, memory_mb=2048, cpu_s=120)


def math_like_spec(tmp_path: Path, keep: bool) -> JobSpec:
    job = tmp_path / "job"
    (job / POLICY_DIR).mkdir(parents=True)
    (job / POLICY_DIR / "shard-00000.safetensors").write_bytes(b"weights saved by training")
    return JobSpec(recipe="math", algorithm_path=str(tmp_path / "algorithm.py"), job_dir=str(job), seed=0,
                   recipe_config={"keep_policy": keep}, mode="full")


def spawn_fake(spec: JobSpec, mode: str) -> sandbox.SandboxProcess:
    return sandbox.spawn(FAKE_RECIPE_PROCESS, [mode], job_dir=spec.job_dir, project_root=ROOT, limits=LIMITS)


def cancelled_while_scoring(spec: JobSpec) -> JobResult:
    """Training ends cleanly ("evaluated"), the scoring process starts and hangs, the user cancels."""
    JobResult("evaluated", steps_done=3).save(spec.job_dir)  # what the training process reports
    scoring = threading.Event()

    def start_scoring() -> sandbox.SandboxProcess:
        proc = spawn_fake(spec, "sleep")
        scoring.set()
        return proc

    handle = JobHandle(spec, spawn_fake(spec, "ok"), LIMITS, EarlyKillConfig(), eval_phase=start_scoring)
    assert scoring.wait(60), "the scoring phase never started"
    handle.cancel()
    result = handle.wait(60)
    assert result is not None and result.outcome == "cancelled", result
    return result


def test_a_policy_is_deleted_when_scoring_is_cancelled(tmp_path: Path) -> None:
    spec = math_like_spec(tmp_path, keep=False)
    cancelled_while_scoring(spec)
    assert not (Path(spec.job_dir) / POLICY_DIR).exists()
    assert JobResult.load(spec.job_dir).outcome == "cancelled"


def test_keep_policy_keeps_it_however_the_job_ends(tmp_path: Path) -> None:
    spec = math_like_spec(tmp_path, keep=True)
    cancelled_while_scoring(spec)
    assert (Path(spec.job_dir) / POLICY_DIR / "shard-00000.safetensors").read_bytes() == b"weights saved by training"


def test_a_policy_is_deleted_when_training_crashes_after_saving_it(tmp_path: Path) -> None:
    spec = math_like_spec(tmp_path, keep=False)
    handle = JobHandle(spec, spawn_fake(spec, "raise"), LIMITS, EarlyKillConfig(),
                       eval_phase=lambda: pytest.fail("a crashed training must not be scored"))
    result = handle.wait(60)
    assert result is not None and result.outcome == "crashed" and "failed on purpose" in result.reason
    assert not (Path(spec.job_dir) / POLICY_DIR).exists()


def test_recovery_sweeps_the_policies_a_killed_engine_left_unless_they_are_kept(tmp_path_factory, tmp_path) -> None:
    from core.engine import Engine

    run = copy_run(base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    left = [run / "jobs" / cid / "0" / POLICY_DIR for cid in ("seed", "c001")]
    for folder in left:
        folder.mkdir(parents=True, exist_ok=True)  # the base run scored its seed: its policy is there
        (folder / "shard-00000.safetensors").write_bytes(b"x")
    (run / "jobs" / "c001" / "0" / "result.json").write_text("{}")  # the rest of a job dir stays

    Engine(run).recover()  # recipe tiny keeps its (0.4 MB) policies
    assert all(folder.is_dir() for folder in left)

    engine = Engine(run)
    engine.cfg.recipe, engine.cfg.math.keep_policy = "math", False
    engine.recover()
    assert not any(folder.exists() for folder in left)
    assert (run / "jobs" / "c001" / "0" / "result.json").exists()


def test_sweep_counts_what_it_deleted_and_ignores_files_named_policy(tmp_path: Path) -> None:
    (tmp_path / "a" / "s0" / POLICY_DIR).mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / POLICY_DIR).write_text("a file, not a policy folder")
    assert sweep_policies(tmp_path) == 1
    assert not (tmp_path / "a" / "s0" / POLICY_DIR).exists() and (tmp_path / "b" / POLICY_DIR).is_file()
    assert sweep_policies(tmp_path / "missing") == 0


def test_recovery_keeps_only_the_checkpoints_a_job_can_resume_from(tmp_path_factory, tmp_path) -> None:
    """A training candidate's seed without a result resumes from its checkpoint (recipe math); a seed with a
    result, or a candidate the archive does not train, never will: recovery deletes those."""
    from core.archive import Archive
    from core.engine import Engine
    from core.jobspec import CHECKPOINT_DIR

    run = copy_run(base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    archive = Archive.open(run)
    assert set(archive.get("seed").results) == {"0"}
    archive.update("seed", seeds=[0, 1])
    archive.set_status("seed", "training")  # as a kill -9 during its seed 1 leaves it
    resumable, done, stray = (run / "jobs" / cid / seed / CHECKPOINT_DIR
                              for cid, seed in (("seed", "1"), ("seed", "0"), ("c009", "0")))
    for folder in (resumable, done, stray):
        (folder / "checkpoint-2").mkdir(parents=True)
    Engine(run).recover()
    assert (resumable / "checkpoint-2").is_dir()
    assert not done.exists() and not stray.exists()

    archive = Archive.open(run)
    archive.set_status("seed", "evaluated")  # no longer training: nothing of it resumes
    Engine(run).recover()
    assert not resumable.exists()
