"""Recipe `tiny` end to end for one (candidate, seed): warm start -> RL -> final evaluation -> JobResult."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from core.configlib import from_dict
from core.jobspec import JobResult, JobSpec
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
    """Train `algo` with the recipe's protocol, then evaluate (full mode) and return the JobResult."""
    t0 = time.perf_counter()
    cfg = tiny_config(spec)
    check_eval_config(cfg)
    _set_threads(cfg.threads)
    model, tok, path = load_or_build(cfg, spec.cache_dir, progress)
    sets = make_eval_sets(cfg.task_seed, cfg.eval_size)
    # Which weights RL started from: the hash names a config, and one config built on two CPUs gives two models.
    extra: dict[str, Any] = {"model_hash": model_hash(cfg), "warm_start_sha256": sha256_of(path / WEIGHTS)}
    if spec.mode == "full":
        extra["warm_start"] = warm_start_scores(model, tok, cfg, sets, path)
    steps = cfg.rl_steps(spec.mode)
    t_train = time.perf_counter()
    res = train(model, tok, algo, cfg, spec.seed, steps, sets.all_prompts(), emit, spec.early_kill)
    extra |= _throughput(res, time.perf_counter() - t_train)
    if res.diverged:
        return JobResult("diverged", res.diverged, wall_s=time.perf_counter() - t0, steps_done=res.steps_done,
                         extra=extra)
    if not _finite_weights(model):
        return JobResult("diverged", "weights contain NaN/inf after training", wall_s=time.perf_counter() - t0,
                         steps_done=res.steps_done, extra=extra)
    scores, overall, per_problem = ({}, {}, {})
    if spec.mode == "full":
        t_eval = time.perf_counter()
        scores, overall, per_problem = evaluate(model, tok, cfg, sets)
        extra["eval_s"] = time.perf_counter() - t_eval
    return JobResult("evaluated", eval=scores, overall=overall, per_problem=per_problem,
                     weights=dict(cfg.weights) if per_problem else {}, wall_s=time.perf_counter() - t0,
                     steps_done=res.steps_done, extra=extra)


def _set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def _throughput(res: Any, train_s: float) -> dict[str, Any]:
    t = res.timings
    return {"train_s": train_s, "timings": dict(t),
            "generate_tok_per_s": res.generated_tokens / t["generate_s"] if t["generate_s"] else 0.0,
            "train_tok_per_s": res.trained_tokens / t["update_s"] if t["update_s"] else 0.0}


def _finite_weights(model: Any) -> bool:
    return all(math.isfinite(float(p.detach().abs().sum())) for p in model.parameters())
