"""Training process of recipe `math`: `run_job(spec, candidate_module, emit) -> JobResult`.

core/recipes/job.py calls it inside the sandboxed job process when spec.recipe == "math". It trains the
local model with TRL's GRPOTrainer through the contract adapter (vLLM colocate rollouts when usable) and
streams one metrics line per optimizer step through `emit`. In full mode it then saves the policy and
reports no scores: core.recipes.math.score evaluates it in a process without candidate code. Evaluation sets
are loaded BEFORE training, so a missing user file fails in seconds, not after hours of training.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from core.configlib import from_dict
from core.contract import check_module
from core.errors import ConfigError, ModelNotFoundError
from core.jobspec import JobResult, JobSpec
from core.recipes.math.checkpoint import checkpoint_root, every_n_steps, latest_checkpoint, logged_steps
from core.recipes.math.config import MathConfig
from core.recipes.math.data import Problem, load_benchmark, load_math_train, split_parts

Emit = Callable[[dict[str, Any]], None]

# TRL / adapter log key -> METRIC_KEYS name (core/jobspec.py).
LOG_TO_METRIC = {
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "poise/accuracy": "accuracy",
    "poise/valid_rate": "valid_rate",
    "poise/truncation_rate": "truncation_rate",
    "poise/entropy": "entropy",
    "poise/kl": "kl",
    "completions/mean_length": "response_length",
    "algo/clip_frac": "clip_frac",
    "grad_norm": "grad_norm",
    "poise/zero_var_frac": "zero_var_frac",
    "poise/kept_frac": "kept_frac",  # what early kill (no_update_steps) and verification's smoke check read
    "poise/loss": "loss",
    "step_time": "step_time_s",
}


def metrics_line(logs: dict[str, Any], step: int) -> dict[str, Any] | None:
    """One METRIC_KEYS line from a TRL training log; None for logs that are not a training step."""
    if "train_runtime" in logs or "poise/loss" not in logs:
        return None
    line: dict[str, Any] = {"step": step}
    for src, dst in LOG_TO_METRIC.items():
        value = logs.get(src)
        if isinstance(value, (int, float)):
            line[dst] = float(value)
    line.setdefault("kl", 0.0)  # no reference model: KL is 0 by definition (METRIC_KEYS)
    return line


def metrics_callback(emit: Emit):  # -> transformers.TrainerCallback
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """Maps each optimizer step's TRL log onto one metrics.jsonl line."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            line = metrics_line(logs or {}, state.global_step)
            if line is not None:
                emit(line)

    return MetricsCallback()


def resolve_model(path: str) -> Path:
    if not path:
        raise ModelNotFoundError("[math].model_path is empty; set it to a local HF model directory (nothing is downloaded)")
    model_dir = Path(path).expanduser()
    if not (model_dir / "config.json").is_file():
        raise ModelNotFoundError(f"model directory {model_dir} not found or has no config.json; set [math].model_path")
    return model_dir


def load_eval_sets(cfg: MathConfig) -> dict[str, dict[str, list[Problem]]]:
    """sets[name][part]; a missing user file raises MathDataError naming the path."""
    sets = {}
    for name in cfg.benchmarks:
        parts = split_parts(name, load_benchmark(name, cfg.data_dir))
        if cfg.eval_max_problems > 0:
            parts = {k: v[: cfg.eval_max_problems] for k, v in parts.items()}
        sets[name] = parts
    return sets


def train_dataset(cfg: MathConfig, tokenizer: Any):  # -> datasets.Dataset
    """MATH training prompts (conversational) with their answers; prompts over max_prompt_tokens are dropped."""
    from datasets import Dataset

    from core.recipes.math.rewards import format_prompt

    problems = load_math_train(cfg.train_levels, cfg.train_problems)
    prompts = [format_prompt(p.problem) for p in problems]
    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows = [{"prompt": m, "answer": p.answer} for m, p, n in zip(prompts, problems, lengths)
            if n <= cfg.max_prompt_tokens]
    if not rows:
        raise ConfigError(f"[math]: no training problem fits max_prompt_tokens={cfg.max_prompt_tokens}")
    return Dataset.from_list(rows)


def grpo_args(cfg: MathConfig, spec: JobSpec, hp: dict[str, Any], n_train: int, use_vllm: bool,
              device: str):  # -> GRPOConfig
    from core.recipes.math.adapter import hparams_to_grpo, make_grpo_config

    samples = cfg.prompts_per_step * cfg.group_size
    if samples % cfg.micro_batch_size:
        raise ConfigError(f"[math]: prompts_per_step*group_size={samples} is not a multiple of micro_batch_size")
    cuda = device == "cuda"
    lr = cfg.lr if cfg.lr_source == "config" else hp["lr"]
    saves = cfg.checkpoint_steps > 0 and spec.mode == "full"  # a smoke job is two steps
    return make_grpo_config(
        output_dir=str(checkpoint_root(spec.job_dir)), seed=spec.seed, data_seed=spec.seed,
        save_strategy="steps" if saves else "no", save_steps=cfg.checkpoint_steps or 1,
        per_device_train_batch_size=cfg.micro_batch_size, gradient_accumulation_steps=samples // cfg.micro_batch_size,
        num_generations=cfg.group_size, max_completion_length=cfg.max_response_tokens, temperature=cfg.temperature,
        max_steps=cfg.rl_steps(n_train, spec.mode), reward_weights=[1.0, cfg.format_weight],
        use_vllm=use_vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        vllm_max_model_length=cfg.max_prompt_tokens + cfg.max_response_tokens,  # scoring has its own engine
        bf16=cfg.bf16 and cuda, use_cpu=not cuda, gradient_checkpointing=cfg.gradient_checkpointing and cuda,
        **hparams_to_grpo(hp, lr),
    )


def load_base(model_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from the local directory, for training and, in the scoring process, to load the
    trained weights into. float32 weights and optimizer state; bf16 is autocast only (GRPOConfig.bf16). In
    pure bfloat16 an AdamW step at lr 1e-6 rounds away for ~98% of the weights, and every candidate would
    score like the base model. The reference model is built like the policy, and TRL runs it under the same
    autocast."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tok


def build_trainer(cfg: MathConfig, spec: JobSpec, candidate: ModuleType, emit: Emit, model_dir: Path, device: str):
    from accelerate.utils import set_seed

    from core.recipes.math.adapter import ContractGRPOTrainer
    from core.recipes.math.evaluate import vllm_usable
    from core.recipes.math.rewards import REWARD_FUNCS

    model, tok = load_base(model_dir)
    data = train_dataset(cfg, tok)
    use_vllm = cfg.use_vllm and vllm_usable()
    args = grpo_args(cfg, spec, candidate.HPARAMS, len(data), use_vllm, device)
    callbacks = [metrics_callback(emit)] + ([every_n_steps(cfg.checkpoint_steps)] if args.save_strategy != "no" else [])
    trainer = ContractGRPOTrainer(
        model=model, reward_funcs=list(REWARD_FUNCS), args=args, train_dataset=data, processing_class=tok,
        candidate=candidate, callbacks=callbacks,
    )
    # TRL seeds Python, NumPy and torch with the job's seed, then starts the colocated vLLM, whose worker seeds
    # them all again with the engine's seed (TRL passes 0). vLLM samples from torch's global generator, so
    # without this every seed of a run would draw the same sampling noise. Same call as TRL's, so the HF path
    # (where nothing reseeded) is unchanged.
    set_seed(spec.seed, device_specific=True)
    return trainer


def resume_point(spec: JobSpec, emit: Emit) -> Path | None:
    """The checkpoint an interrupted attempt of this job left, if any; the metrics of the steps it covers
    are written again first, so metrics.jsonl and the live curves show the whole run."""
    checkpoint = latest_checkpoint(spec.job_dir)
    if checkpoint is None:
        return None
    for logs in logged_steps(checkpoint):
        line = metrics_line(logs, int(logs.get("step", 0)))
        if line is not None:
            emit(line)
    print(f"poise: resuming from {checkpoint.name} of an interrupted attempt", file=sys.stderr, flush=True)
    return checkpoint


def run_job(spec: JobSpec, candidate_module: ModuleType, emit: Emit) -> JobResult:
    """Train with the candidate's algorithm; in full mode save the policy for the scoring process."""
    from transformers import set_seed

    from core.recipes.math.device import training_device
    from core.recipes.policy import save_policy

    t0 = time.monotonic()
    cfg = from_dict(MathConfig, dict(spec.recipe_config), "[math]")
    check_module(candidate_module)
    model_dir = resolve_model(cfg.model_path)
    if spec.mode == "full":
        load_eval_sets(cfg)  # only to fail now on a missing file; the scoring process loads its own
    device = training_device()
    set_seed(spec.seed)
    trainer = build_trainer(cfg, spec, candidate_module, emit, model_dir, device)
    resume = resume_point(spec, emit) if trainer.args.save_strategy != "no" else None
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    extra: dict[str, Any] = {"train_s": time.monotonic() - t0, "use_vllm": bool(trainer.use_vllm),
                             "model_path": str(model_dir), "device": device}
    if resume:
        extra["resumed_from_step"] = int(resume.name.rsplit("-", 1)[1])
    if spec.mode == "full":
        save_policy(trainer.accelerator.unwrap_model(trainer.model), spec.job_dir)
    return JobResult("evaluated", wall_s=time.monotonic() - t0, steps_done=trainer.state.global_step, extra=extra)
