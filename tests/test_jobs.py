"""core.jobs: metrics streaming, early kill, cancellation, outcome classification, probes in the sandbox.

Supervisor behaviour is driven by tests/adversarial/bandit_job.py, a real (tiny) training job that
calls the candidate like a trainer and finishes in well under a second after its imports; the
end-to-end test at the bottom runs the real `core.recipes.job` with recipe tiny.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from pathlib import Path

import pytest

from core.config import EarlyKillConfig, LimitsConfig
from core.jobs import EarlyKill, MetricsTail, classify_exit, run_probe, start_job, traceback_tail
from core.jobspec import METRIC_KEYS, JobResult, JobSpec, read_metrics
from core.probes import probe_file

ROOT = Path(__file__).resolve().parent.parent
ADV = ROOT / "tests" / "adversarial"
BANDIT = "tests.adversarial.bandit_job"
LIMITS = LimitsConfig(timeout_s=120, memory_mb=3072, cpu_s=300)


def bandit_spec(tmp_path: Path, candidate: str = "grpo.py", **config) -> JobSpec:
    worktree = tmp_path / "worktree"
    worktree.mkdir(exist_ok=True)
    shutil.copy(ADV / candidate, worktree / "algorithm.py")
    return JobSpec(recipe="tiny", algorithm_path=str(worktree / "algorithm.py"), job_dir=str(tmp_path / "job"),
                   seed=0, recipe_config={"steps": 20, "target": 2, **config})


# --- units -------------------------------------------------------------------------------

def test_metrics_tail_returns_complete_lines_once_and_skips_torn_ones(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    assert tail.read_new() == [{"step": 1}]
    with open(path, "a") as fh:
        fh.write('ss": 0.5}\n{torn\n{"step": 3}\n')
    assert tail.read_new() == [{"step": 2, "loss": 0.5}, {"step": 3}]
    assert tail.read_new() == []


@pytest.mark.parametrize("row,needle", [
    ({"step": 4, "loss": math.nan}, "non-finite loss"),
    ({"step": 4, "loss": math.inf}, "non-finite loss"),
    ({"step": 4, "kl": 9.0}, "KL to the reference 9 > max_kl 5.0"),
    ({"step": 4, "entropy": 1e-6}, "entropy collapsed"),
])
def test_early_kill_rules(row: dict, needle: str) -> None:
    assert needle in EarlyKill(EarlyKillConfig()).check(row)


def test_healthy_rows_pass_early_kill() -> None:
    rules = EarlyKill(EarlyKillConfig())
    assert rules.check({"step": 1, "loss": 0.1, "kl": 0.5, "entropy": 1.2, "reward_mean": 0.3}) == ""


def test_zero_reward_must_be_consecutive() -> None:
    rules = EarlyKill(EarlyKillConfig(zero_reward_steps=3))
    rewards = [0.0, 0.0, 0.5, 0.0, 0.0]
    assert all(rules.check({"step": i, "reward_mean": r}) == "" for i, r in enumerate(rewards))
    assert "reward flat at 0 for 3 consecutive steps" in rules.check({"step": 6, "reward_mean": 0.0})


def test_no_update_must_be_consecutive_and_needs_a_filter() -> None:
    rules = EarlyKill(EarlyKillConfig(no_update_steps=3))
    kept = [0.0, 0.0, 0.25, 0.0, 0.0]
    assert all(rules.check({"step": i, "kept_frac": k}) == "" for i, k in enumerate(kept))
    assert "kept no rollout for 3 consecutive steps" in rules.check({"step": 6, "kept_frac": 0.0})
    no_filter = EarlyKill(EarlyKillConfig(no_update_steps=1))  # rows without kept_frac: every step updated
    assert all(no_filter.check({"step": i, "reward_mean": 0.5}) == "" for i in range(5))


def write_job_dir(tmp_path: Path, stderr: str = "", result: JobResult | None = None) -> Path:
    (tmp_path / "stderr.log").write_text(stderr)
    if result is not None:
        result.save(tmp_path)
    return tmp_path


def test_classify_clean_exit_uses_the_recipe_result(tmp_path: Path) -> None:
    job = write_job_dir(tmp_path, result=JobResult("evaluated", overall={"heldout": 0.4}))
    assert classify_exit(job, 0, {}).overall == {"heldout": 0.4}


def test_classify_clean_exit_without_result_is_a_crash(tmp_path: Path) -> None:
    assert "without writing result.json" in classify_exit(write_job_dir(tmp_path), 0, {}).reason


def test_classify_traceback_keeps_the_last_line_and_the_tail(tmp_path: Path) -> None:
    trace = "Traceback (most recent call last):\n" + "".join(f'  File "x.py", line {i}\n' for i in range(30))
    job = write_job_dir(tmp_path, trace + "ValueError: bad shape\n")
    res = classify_exit(job, 1, {})
    assert (res.outcome, res.reason) == ("crashed", "ValueError: bad shape")
    assert len(res.extra["stderr_tail"].splitlines()) == 20


@pytest.mark.parametrize("signum,outcome,needle", [
    (signal.SIGKILL, "crashed", "killed by SIGKILL"),
    (signal.SIGSEGV, "crashed", "killed by SIGSEGV"),
    (signal.SIGXCPU, "timed_out", "CPU-time limit"),
])
def test_classify_signals(tmp_path: Path, signum: int, outcome: str, needle: str) -> None:
    res = classify_exit(write_job_dir(tmp_path), -signum, {})
    assert res.outcome == outcome and needle in res.reason


# --- through the sandbox ---------------------------------------------------------------

def test_job_streams_metrics_to_listeners_and_ends_evaluated(tmp_path: Path) -> None:
    handle = start_job(bandit_spec(tmp_path), LIMITS, EarlyKillConfig(), entry=BANDIT)
    heard: list[dict] = []
    handle.on_metrics(heard.append)
    result = handle.wait()
    assert result.outcome == "evaluated", result
    on_disk = read_metrics(tmp_path / "job" / "metrics.jsonl")
    assert [r["step"] for r in heard] == list(range(1, 21)) and heard == on_disk == handle.rows
    assert handle.poll() == on_disk and handle.poll() == []
    assert JobResult.load(tmp_path / "job").outcome == "evaluated" and result.steps_done == 20


def test_no_wall_clock_limit_means_none_not_an_instant_timeout(tmp_path: Path) -> None:
    """[limits] timeout_s <= 0 is documented as no limit; the monitor used to take it as a deadline in the past."""
    result = start_job(bandit_spec(tmp_path), LimitsConfig(timeout_s=0, memory_mb=3072, cpu_s=300), EarlyKillConfig(),
                       entry=BANDIT).wait()
    assert result.outcome == "evaluated" and result.steps_done == 20, result


def test_iter_metrics_yields_every_row_then_stops(tmp_path: Path) -> None:
    handle = start_job(bandit_spec(tmp_path, steps=5), LIMITS, EarlyKillConfig(), entry=BANDIT)
    assert [r["step"] for r in handle.iter_metrics()] == [1, 2, 3, 4, 5]
    assert handle.done()


def test_cancel_ends_a_running_job_as_cancelled(tmp_path: Path) -> None:
    handle = start_job(bandit_spec(tmp_path, steps=10**7), LIMITS, EarlyKillConfig(), entry=BANDIT)
    first = next(handle.iter_metrics())  # the job is really training
    handle.cancel()
    result = handle.wait(timeout=30)
    assert first["step"] == 1 and result is not None and result.outcome == "cancelled"
    assert result.steps_done < 10**7
    assert not Path(f"/proc/{handle.pid}").exists()  # killed and reaped


def test_reward_flat_at_zero_is_killed_early_as_diverged(tmp_path: Path) -> None:
    handle = start_job(bandit_spec(tmp_path, steps=10**7, target=-1), LIMITS, EarlyKillConfig(zero_reward_steps=5), entry=BANDIT)
    result = handle.wait(timeout=60)
    assert result is not None and result.outcome == "diverged"
    assert "reward flat at 0 for 5 consecutive steps" in result.reason
    assert result.steps_done < 10**7


def test_wait_with_a_short_timeout_returns_none_while_running(tmp_path: Path) -> None:
    handle = start_job(bandit_spec(tmp_path, steps=10**7), LIMITS, EarlyKillConfig(), entry=BANDIT)
    assert handle.wait(timeout=0.01) is None
    handle.cancel()
    assert handle.wait(timeout=30).outcome == "cancelled"


def test_run_probe_in_the_sandbox_matches_the_in_process_fingerprint(tmp_path: Path) -> None:
    spec = bandit_spec(tmp_path)
    report = run_probe(spec.algorithm_path, tmp_path / "probe", LIMITS)
    assert report.ok and report.outcome == "evaluated", report.problems
    assert report.fingerprint == probe_file(spec.algorithm_path)["fingerprint"]
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["ok"] is True


# --- end to end with the real recipe ------------------------------------------------------

TINY_SMOKE = {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_response_tokens": 12, "sft_steps": 5,
              "sft_batch_size": 8, "eval_size": 4, "hidden_size": 32, "intermediate_size": 64}


@pytest.mark.slow
def test_seed_algorithm_runs_end_to_end_through_the_tiny_recipe(tmp_path: Path) -> None:
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    shutil.copy(ROOT / "workspace" / "algorithm.py", worktree / "algorithm.py")
    spec = JobSpec(recipe="tiny", algorithm_path=str(worktree / "algorithm.py"), job_dir=str(tmp_path / "job"),
                   seed=0, recipe_config=TINY_SMOKE, mode="smoke", cache_dir=str(tmp_path / "cache"))
    started = time.monotonic()
    result = start_job(spec, LimitsConfig(timeout_s=300, memory_mb=4096), EarlyKillConfig(zero_reward_steps=0)).wait()
    assert result.outcome == "evaluated", (result.reason, result.extra.get("stderr_tail"))
    rows = read_metrics(tmp_path / "job" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and set(rows[0]) <= set(METRIC_KEYS)
    assert any((tmp_path / "cache").rglob("*")), "the trainer may fill the model cache"
    print(f"tiny smoke job: {time.monotonic() - started:.1f} s")


def test_traceback_tail_keeps_the_root_cause_of_a_chained_error() -> None:
    cause = "Traceback:\n" + "".join(f"  frame {i}\n" for i in range(30)) + "  File \"algorithm.py\", line 7\nRuntimeError: boom\n"
    final = "\nThe above exception was the direct cause of the following exception:\n\n" + \
        "Traceback:\n" + "".join(f"  outer {i}\n" for i in range(30)) + "ContractError: failed to import\n"
    tail = traceback_tail(cause + final)
    assert len(tail.splitlines()) <= 20
    assert 'File "algorithm.py", line 7' in tail and tail.endswith("ContractError: failed to import")
    assert traceback_tail("a\nb\nc", lines=2) == "b\nc"


def test_the_progress_bar_never_runs_backwards_from_training_into_scoring() -> None:
    from core.evaluate import TRAIN_SHARE, progress_line

    steps = [progress_line(step, 40, TRAIN_SHARE) for step in (0, 20, 40)]
    scoring = [progress_line((done, 96, "mul"), 40, TRAIN_SHARE) for done in (0, 48, 96)]
    fractions = [f for _, f in steps + scoring]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert steps[1][0] == "step 20/40" and scoring[1][0] == "scoring mul: 48/96"
    assert progress_line(40, 40, 1.0) == ("step 40/40", 1.0)  # a smoke job: no scoring phase to leave room for


@pytest.mark.parametrize("text", ['{"done": 5, "total": 4, "what": "x"}', '{"done": 1}', "not json",
                                  '{"done": 0, "total": 0, "what": "x"}', '[1, 2, 3]'])
def test_a_bad_scoring_count_is_not_shown(tmp_path: Path, text: str) -> None:
    from core.jobspec import EVAL_PROGRESS, read_eval_progress

    (tmp_path / EVAL_PROGRESS).write_text(text)
    assert read_eval_progress(tmp_path) is None
