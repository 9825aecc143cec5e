"""A full tiny job is scored by a second sandboxed process that never imports candidate code
(core.recipes.eval_job), so the scores a candidate is judged by cannot come from the candidate.
Real sandbox, real training on a tiny model, real safetensors files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from core.config import EarlyKillConfig, LimitsConfig
from core.jobs import EVAL_ENTRY, TRAIN_RESULT, start_job
from core.jobspec import POLICY_DIR, JobResult, JobSpec, read_eval_progress
from core.recipes.tiny.run import eval_job, run_job

ROOT = Path(__file__).resolve().parent.parent
ADV = ROOT / "tests" / "adversarial"
TINY = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "sft_steps": 8, "sft_batch_size": 16,
        "eval_size": 4, "steps": 2, "prompts_per_step": 2, "group_size": 4, "max_response_tokens": 16, "pass_k": 2}
LIMITS = LimitsConfig(timeout_s=300, memory_mb=4096, cpu_s=600)
# Rows one evaluation generates: 3 greedy splits x 2 parts x eval_size, and pass_k rows per problem of the 3 others.
ROWS = 3 * 2 * TINY["eval_size"] * (1 + TINY["pass_k"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _spec(tmp_path: Path, cache: Path, algorithm: Path) -> JobSpec:
    return JobSpec(recipe="tiny", algorithm_path=str(algorithm), job_dir=str(tmp_path / "job"), seed=0,
                   recipe_config=dict(TINY), mode="full", cache_dir=str(cache))


def test_a_candidate_that_forges_its_scores_gets_the_real_ones(tmp_path: Path, cache: Path) -> None:
    """The forger patches the evaluator, edits spec.json's protocol and overwrites result.json at exit:
    the scores kept are the evaluation process's, over the supervisor's protocol (4 problems a split)."""
    result = start_job(_spec(tmp_path, cache, ADV / "forge_scores.py"), LIMITS, EarlyKillConfig()).wait()
    job = tmp_path / "job"
    assert json.loads((job / TRAIN_RESULT).read_text())["overall"] == {"selection": 1.0, "heldout": 1.0}, \
        "precondition: the forgery happened in the training process"
    assert result.outcome == "evaluated", result.reason
    assert result.extra["scored_by"] == EVAL_ENTRY and result.steps_done == 2
    assert result.overall != {"selection": 1.0, "heldout": 1.0}
    assert all(len(v) == TINY["eval_size"] for part in result.per_problem.values() for v in part.values())
    for part, splits in result.eval.items():  # each score is its problems' mean: computed, not reported
        assert all(s == pytest.approx(sum(result.per_problem[part][k]) / TINY["eval_size"]) for k, s in splits.items())
    assert result.extra["warm_start_sha256"] != "0" * 64
    assert JobResult.load(job).overall == result.overall  # result.json holds the trusted verdict
    assert read_eval_progress(job) == (ROWS, ROWS, "policy"), "the scoring process's own count, not a forged one"


def test_scoring_progress_counts_the_rows_it_generates(trained: JobSpec) -> None:
    """The warm start's evaluation (not cached yet in this cache) and the policy's, each 0 -> all rows."""
    for cached in (Path(trained.cache_dir).glob("**/warm_eval_*.json")):
        cached.unlink()
    ticks: list[tuple[int, int, str]] = []
    before = torch.get_num_threads()
    try:
        assert eval_job(trained, tick=lambda *t: ticks.append(t)).outcome == "evaluated"
    finally:
        torch.set_num_threads(before)
    for what in ("warm start", "policy"):
        done = [d for d, total, w in ticks if w == what and total == ROWS]
        assert done[0] == 0 and done[-1] == ROWS and done == sorted(done), ticks
    assert {w for _, _, w in ticks} == {"warm start", "policy"}


def test_an_honest_candidate_scores_as_in_one_process(tmp_path: Path, cache: Path) -> None:
    """Oracle: the same training and evaluation in this process (seeded, so the same weights and samples)."""
    result = start_job(_spec(tmp_path, cache, ADV / "grpo.py"), LIMITS, EarlyKillConfig()).wait()
    assert result.outcome == "evaluated", result.reason
    from core.contract import load_algorithm
    from core.recipes.tiny.run import train_and_evaluate

    before = torch.get_num_threads()
    spec = _spec(tmp_path / "here", cache, ADV / "grpo.py")
    try:
        here = train_and_evaluate(spec, lambda row: None, load_algorithm(spec.algorithm_path))
    finally:
        torch.set_num_threads(before)
    assert result.per_problem == here.per_problem and result.overall == pytest.approx(here.overall)
    assert result.extra["train_s"] > 0 and "generate_tok_per_s" in result.extra  # training's timings are kept


@pytest.fixture
def trained(tmp_path: Path, cache: Path) -> JobSpec:
    """A policy trained in this process (the grpo candidate), ready for eval_job."""
    from core.contract import load_algorithm

    spec = _spec(tmp_path, cache, ADV / "grpo.py")
    Path(spec.job_dir).mkdir(parents=True)
    before = torch.get_num_threads()
    try:
        assert run_job(spec, lambda row: None, load_algorithm(spec.algorithm_path)).outcome == "evaluated"
    finally:
        torch.set_num_threads(before)
    return spec


def _shard(spec: JobSpec) -> Path:
    """The one shard a tiny policy fits in."""
    (path,) = (Path(spec.job_dir) / POLICY_DIR).iterdir()
    return path


def _eval(spec: JobSpec) -> JobResult:
    before = torch.get_num_threads()
    try:
        return eval_job(spec)
    finally:
        torch.set_num_threads(before)


def test_no_policy_file_is_a_crash_that_says_so(trained: JobSpec) -> None:
    shutil.rmtree(Path(trained.job_dir) / POLICY_DIR)
    res = _eval(trained)
    assert res.outcome == "crashed" and res.reason == f"training wrote no {POLICY_DIR}/: nothing to evaluate"


def test_a_policy_of_another_shape_is_a_crash_not_a_score(trained: JobSpec) -> None:
    from safetensors.torch import save_file

    save_file({"lm_head.weight": torch.zeros(3, 3)}, str(_shard(trained)))
    res = _eval(trained)
    assert res.outcome == "crashed" and res.reason.startswith(f"{POLICY_DIR}/ is not the recipe's model")
    _shard(trained).write_bytes(b"\x00garbage")
    assert _eval(trained).outcome == "crashed"


def test_a_policy_with_nan_weights_is_diverged(trained: JobSpec) -> None:
    from safetensors.torch import load_file, save_file

    path = _shard(trained)
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone().fill_(math.nan)
    save_file(tensors, str(path))
    res = _eval(trained)
    assert res.outcome == "diverged" and "NaN" in res.reason
