"""Recipe `tiny` for one (candidate, seed), in two processes: `run_job` trains with the candidate's code and
saves the policy; `eval_job` scores it in a process that never imports candidate code (core.jobs starts it
after training), so a candidate cannot patch the evaluator or forge the scores it is judged by."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from core.configlib import from_dict
from core.jobspec import EvalTick, JobResult, JobSpec
from core.recipes.policy import save_policy, unusable_policy
from core.recipes.tiny.bundle import WEIGHTS, sha256_of
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.evaluate import check_eval_config, evaluate, warm_start_scores
from core.recipes.tiny.model import Progress, load_or_build, model_hash
from core.recipes.tiny.task import make_eval_sets
from core.recipes.tiny.trainer import train

Emit = Callable[[dict[str, Any]], None]


def tiny_config(spec: JobSpec) -> TinyConfig:
    return from_dict(TinyConfig, spec.recipe_config, "tiny (job spec recipe_config)")


def run_job(spec: JobSpec, emit: Emit, algo: ModuleType, progress: Progress | None = None) -> JobResult:
    """Train `algo` with the recipe's protocol. In full mode, save the policy for eval_job; no scores here."""
    t0 = time.perf_counter()
    cfg, model, tok, _, sets = _warm_start(spec, progress)
    steps = cfg.rl_steps(spec.mode)
    t_train = time.perf_counter()
    res = train(model, tok, algo, cfg, spec.seed, steps, sets.all_prompts(), emit, spec.early_kill)
    extra = _throughput(res, time.perf_counter() - t_train)
    if res.diverged:
        return JobResult("diverged", res.diverged, wall_s=time.perf_counter() - t0, steps_done=res.steps_done,
                         extra=extra)
    if spec.mode == "full":
        save_policy(model, spec.job_dir)
    return JobResult("evaluated", wall_s=time.perf_counter() - t0, steps_done=res.steps_done, extra=extra)


def eval_job(spec: JobSpec, progress: Progress | None = None, tick: EvalTick | None = None) -> JobResult:
    """Score the policy run_job saved: the warm start from the cache, the trained weights loaded into it
    (strict: the same tensors, nothing else), then the final evaluation and the warm start's (its own
    evaluation is cached). tick(done, total, what) follows both evaluations."""
    t0 = time.perf_counter()
    cfg, model, tok, path, sets = _warm_start(spec, progress)
    # Which weights RL started from: the hash names a config, and one config built on two CPUs gives two models.
    extra: dict[str, Any] = {"model_hash": model_hash(cfg), "warm_start_sha256": sha256_of(path / WEIGHTS),
                             "warm_start": warm_start_scores(model, tok, cfg, sets, path, tick)}
    refused = unusable_policy(model, spec.job_dir, extra)
    if refused:
        return refused
    scores, overall, per_problem = evaluate(model, tok, cfg, sets, tick)
    extra["eval_s"] = time.perf_counter() - t0
    return JobResult("evaluated", eval=scores, overall=overall, per_problem=per_problem,
                     weights=dict(cfg.weights), extra=extra)


def train_and_evaluate(spec: JobSpec, emit: Emit, algo: ModuleType, progress: Progress | None = None) -> JobResult:
    """Both phases in this process, for benchmarks and tests of the recipe itself (not of its isolation)."""
    trained = run_job(spec, emit, algo, progress)
    if trained.outcome != "evaluated" or spec.mode != "full":
        return trained
    return eval_job(spec, progress).after_training(trained)


def _warm_start(spec: JobSpec, progress: Progress | None) -> tuple[TinyConfig, Any, Any, Path, Any]:
    """Both phases start alike: the checked config, the cached warm start (model, tokenizer, dir), the eval sets."""
    cfg = tiny_config(spec)
    check_eval_config(cfg)
    _set_threads(cfg.threads)
    model, tok, path = load_or_build(cfg, spec.cache_dir, progress)
    return cfg, model, tok, path, make_eval_sets(cfg.task_seed, cfg.eval_size)


def _set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def _throughput(res: Any, train_s: float) -> dict[str, Any]:
    t = res.timings
    return {"train_s": train_s, "timings": dict(t),
            "generate_tok_per_s": res.generated_tokens / t["generate_s"] if t["generate_s"] else 0.0,
            "train_tok_per_s": res.trained_tokens / t["update_s"] if t["update_s"] else 0.0}

