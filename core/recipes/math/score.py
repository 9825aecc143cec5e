"""Scoring process of recipe `math`: `eval_job(spec) -> JobResult`, started by core.recipes.eval_job.

It never imports candidate code. The base model comes from [math].model_path (trusted: the run's config)
and the trained weights from the policy file the training process saved, loaded strictly into it. Then the
final evaluation on the selection and held-out halves of every configured benchmark: vLLM when usable (a
fresh engine on the base model, then the checked weights pushed into it as TRL's colocated training does),
HF generate otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.configlib import from_dict
from core.jobspec import EvalTick, JobResult, JobSpec
from core.recipes.math.config import MathConfig
from core.recipes.math.data import PAPER_WEIGHTS
from core.recipes.math.run import load_base, load_eval_sets, resolve_model
from core.recipes.policy import remove_policy, unusable_policy


def eval_job(spec: JobSpec, tick: EvalTick | None = None) -> JobResult:
    """Score the policy the training process saved; unless keep_policy, delete it afterwards (a checkpoint
    per candidate and seed would fill the disk)."""
    cfg = from_dict(MathConfig, dict(spec.recipe_config), "[math]")
    try:
        return _score(cfg, spec, tick)
    finally:
        if not cfg.keep_policy:
            remove_policy(spec.job_dir)


def _score(cfg: MathConfig, spec: JobSpec, tick: EvalTick | None) -> JobResult:
    from transformers import set_seed

    from core.recipes.math.device import training_device
    from core.recipes.math.evaluate import evaluate

    t0 = time.monotonic()
    model_dir = resolve_model(cfg.model_path)
    sets = load_eval_sets(cfg)
    device = training_device()
    model, tok = load_base(model_dir)
    refused = unusable_policy(model, spec.job_dir)
    if refused:
        return refused
    set_seed(spec.seed)  # HF sampling draws from torch's global generator
    sampler, name = _sampler(cfg, spec, model_dir, model, tok, device)
    scores, totals, note, per_problem = evaluate(sampler, sets, cfg.pass_k, cfg.eval_temperature, cfg.eval_max_tokens,
                                                   tick)
    extra = {"eval_s": time.monotonic() - t0, "overall_weights": note, "eval_sampler": name}
    return JobResult("evaluated", eval=scores, overall=totals, per_problem=per_problem,
                     weights={name: PAPER_WEIGHTS[name] for name in sets}, extra=extra)


def _sampler(cfg: MathConfig, spec: JobSpec, model_dir: Path, model: Any, tok: Any, device: str) -> tuple[Any, str]:
    from core.recipes.math.evaluate import HFSampler, vllm_usable

    if cfg.use_vllm and vllm_usable():
        return _vllm_sampler(cfg, spec, model_dir, model, tok), "vllm"
    return HFSampler(model.to(device), tok), "hf"


def _vllm_sampler(cfg: MathConfig, spec: JobSpec, model_dir: Path, model: Any, tok: Any) -> Any:
    """An engine on the base model with the checked weights pushed in: no file of the training process reaches
    vLLM. Started like TRL's colocated engine (in this process, external launcher), which is what both the
    training rollouts and, before this process existed, the scoring used."""
    import os

    from trl.trainer.utils import ensure_master_addr_port
    from vllm import LLM

    from core.recipes.math.evaluate import VLLMSampler

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    ensure_master_addr_port()  # what TRL's colocated engine calls before the same start
    llm = LLM(model=str(model_dir), seed=spec.seed, gpu_memory_utilization=cfg.eval_vllm_gpu_memory_utilization,
              max_model_len=cfg.max_prompt_tokens + cfg.eval_max_tokens, distributed_executor_backend="external_launcher",
              max_num_batched_tokens=4096)
    runner = llm.llm_engine.model_executor.driver_worker.model_runner.model
    for name, param in model.named_parameters():
        runner.load_weights([(name, param.detach())])
    llm.reset_prefix_cache()
    return VLLMSampler(llm, tok, seed=spec.seed)

