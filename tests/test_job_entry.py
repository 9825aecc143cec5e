"""`python -m core.recipes.job spec.json` end to end, as the job supervisor runs it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from core.jobspec import METRIC_KEYS, JobResult, JobSpec, read_metrics
from core.recipes.tiny.config import TinyConfig

REPO = Path(__file__).resolve().parents[1]
GRPO = REPO / "core" / "recipes" / "tiny" / "grpo_fallback.py"
TINY = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "sft_steps": 8, "sft_batch_size": 16,
        "eval_size": 4, "steps": 2, "prompts_per_step": 2, "group_size": 4, "max_response_tokens": 16, "pass_k": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One warm-start cache for the module: the tests share the model build, as jobs of a run do."""
    return tmp_path_factory.mktemp("cache")


def _spec(tmp_path: Path, mode: str, cache: Path, algorithm: Path = GRPO, **over) -> JobSpec:
    job_dir = tmp_path / "job"
    spec = JobSpec(recipe="tiny", algorithm_path=str(algorithm), job_dir=str(job_dir), seed=1,
                   recipe_config={**TINY, **over}, mode=mode, cache_dir=str(cache))
    spec.save()
    return spec


def _run_job(spec: JobSpec, module: str = "core.recipes.job") -> subprocess.CompletedProcess:
    env = {**os.environ, "POISE_THREADS": "1", "PYTHONPATH": str(REPO)}
    path = Path(spec.job_dir) / "spec.json"
    return subprocess.run([sys.executable, "-m", module, str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_smoke_job_runs_three_steps_without_eval(tmp_path: Path, cache: Path):
    spec = _spec(tmp_path, "smoke", cache, steps=10)
    proc = _run_job(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = JobResult.load(spec.job_dir)
    assert result.outcome == "evaluated" and result.steps_done == 3
    assert result.eval == {} and result.overall == {}
    rows = read_metrics(Path(spec.job_dir) / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(set(METRIC_KEYS) <= set(r) for r in rows)


def test_full_job_reports_both_parts_and_the_warm_start(tmp_path: Path, cache: Path):
    """Training saves the policy without scoring it; the evaluation entry (no candidate code) scores it."""
    spec = _spec(tmp_path, "full", cache)
    proc = _run_job(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = JobResult.load(spec.job_dir)
    assert trained.outcome == "evaluated" and trained.steps_done == 2 and trained.overall == {}
    assert "warm_start" not in trained.extra and any((Path(spec.job_dir) / "policy").glob("shard-*.safetensors"))
    proc = _run_job(spec, "core.recipes.eval_job")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = JobResult.load(spec.job_dir)
    assert result.outcome == "evaluated"
    splits = {"add1", "add2", "sub", "mul", "mixed", "chain"}
    assert set(result.eval) == {"selection", "heldout"}
    assert all(set(result.eval[p]) == splits for p in result.eval)
    assert set(result.overall) == {"selection", "heldout"}
    assert all(0.0 <= v <= 1.0 for part in result.eval.values() for v in part.values())
    warm = result.extra["warm_start"]
    assert set(warm["overall"]) == {"selection", "heldout"}
    # each problem's score, in the eval set's order, averaging to the split's score; the warm start's too
    for res in (asdict(result), warm):
        for part, splits_scores in res["eval"].items():
            for split, score in splits_scores.items():
                solved = res["per_problem"][part][split]
                assert len(solved) == spec.recipe_config["eval_size"] and set(solved) <= {0, 1}
                assert sum(solved) / len(solved) == pytest.approx(score)
        assert res["weights"] == TinyConfig().weights  # every split is evaluated, so all of Overall's weights
    cached = list((cache / "tiny").glob("*/warm_eval_*.json"))
    assert len(cached) == 1  # computed once per model, next to it


def test_candidate_exception_is_a_traceback_and_nonzero_exit(tmp_path: Path, cache: Path):
    bad = tmp_path / "algorithm.py"
    bad.write_text(GRPO.read_text().replace('    r = batch.rewards  # [B]', '    raise RuntimeError("boom in candidate")'))
    proc = _run_job(_spec(tmp_path, "smoke", cache, algorithm=bad))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "boom in candidate" in proc.stderr
    assert not (tmp_path / "job" / "result.json").exists()


def test_unknown_config_key_names_the_key(tmp_path: Path, cache: Path):
    proc = _run_job(_spec(tmp_path, "smoke", cache, no_such_key=1))
    assert proc.returncode != 0 and "no_such_key" in proc.stderr


@pytest.mark.parametrize("value", ["two", "x"])
def test_bad_thread_count_is_a_clear_error(tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch):
    from core.errors import ConfigError
    from core.recipes.job import set_threads

    monkeypatch.setenv("POISE_THREADS", value)
    with pytest.raises(ConfigError, match="POISE_THREADS"):
        set_threads()
