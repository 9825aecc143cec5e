"""Config of recipe `math` (section [math] of run.toml): the paper's protocol as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Literal

from core.configlib import opt

# TRL 1.16 starts its colocated vLLM with max_num_batched_tokens = 4096 and max_num_seqs = one generation
# batch, and vLLM refuses to start unless max_num_batched_tokens >= max_num_seqs.
VLLM_MAX_SEQS = 4096
ALL_BENCHMARKS = ["aime24", "aime25", "amc", "math500", "minerva", "olympiadbench"]
MATH_LEVELS = [1, 2, 3, 4, 5]  # the MATH dataset's difficulty levels


@dataclass
class MathConfig:
    model_path: str = opt("", "Local path of the policy model (HF directory; relative to the run directory); nothing is downloaded.")
    data_dir: str = opt("", "Directory with user-supplied aime24.jsonl, aime25.jsonl, amc.jsonl, olympiadbench.jsonl "
                        "(relative to the run directory).")
    lr: float = opt(1e-6, "Learning rate (paper: 1e-6); used when lr_source = 'config'.", above=0)
    lr_source: Literal["config", "candidate"] = opt(
        "config",
        "config: every candidate trains with [math].lr (the paper's fixed protocol; a candidate's HPARAMS lr is "
        "tuned for the tiny recipe and would be wrong for a 1.5B model); candidate: use HPARAMS['lr'].",
    )
    prompts_per_step: int = opt(256, "Prompts per batch (paper: 256).", at_least=1)
    group_size: int = opt(8, "Responses per prompt G (paper: 8).", at_least=2,
                          because="GRPO compares the responses to one prompt with each other")
    micro_batch_size: int = opt(
        16,
        "Responses per forward/backward pass; prompts_per_step*group_size must be a multiple. Gradients of the "
        "micro-batches are accumulated into one optimizer step per generation batch, exactly the gradient of the "
        "candidate's loss on the whole batch, so the result does not depend on it (only memory and speed do).",
        at_least=1,
    )
    epochs: int = opt(8, "Epochs over the training problems (paper: 8, about 155 steps).", at_least=1)
    max_steps: int = opt(0, "Optimizer steps; 0 = derived from epochs, train_problems and prompts_per_step.",
                         at_least=0)
    smoke_steps: int = opt(2, "Optimizer steps of a smoke job (verification): enough to exercise the whole path.",
                           at_least=1)
    train_levels: list[int] = opt(
        [3, 4, 5], "MATH difficulty levels used for training (paper: 3-5).")
    train_problems: int = opt(5000, "Training problems, a deterministic subset of the chosen levels (paper: 5,000).",
                              at_least=1)
    max_prompt_tokens: int = opt(1024, "Prompt length limit (paper: 1024); longer training prompts are dropped.",
                                 at_least=1)
    max_response_tokens: int = opt(3000, "Response length limit (paper: 3000).", at_least=1)
    temperature: float = opt(1.0, "Rollout sampling temperature during training.", above=0)
    format_weight: float = opt(
        0.0,
        "Weight of the format part in the scalar reward (reward = correct + format_weight*format). 0 keeps the "
        "paper's binary correctness reward; validity still reaches the candidate as batch.valid.",
    )
    benchmarks: list[str] = opt(
        list(ALL_BENCHMARKS),
        "Benchmarks to evaluate. Listing fewer than the six renormalises Overall's weights, and the result says so.",
    )
    pass_k: int = opt(32, "k of pass@k on AIME24, AIME25 and AMC (paper: 32), sampled at eval_temperature.", at_least=1)
    eval_temperature: float = opt(1.0, "Sampling temperature of pass@k (paper: 1.0; 0 = greedy). acc@1 is always "
                                  "greedy.", at_least=0)
    eval_max_tokens: int = opt(3000, "Response length limit at evaluation.", at_least=1)
    eval_max_problems: int = opt(0, "Use at most this many problems per benchmark part (0 = all); for quick checks.",
                                 at_least=0)
    use_vllm: bool = opt(True, "Use vLLM (colocate) for rollouts and pass@k when the gpu extra is installed.")
    vllm_gpu_memory_utilization: float = opt(0.35, "Share of GPU memory vLLM may take while colocated with training.",
                                             above=0, at_most=1)
    eval_vllm_gpu_memory_utilization: float = opt(
        0.8, "Share of GPU memory the scoring process's vLLM may take (no training beside it).", above=0, at_most=1)
    keep_policy: bool = opt(
        False, "Keep the trained weights (<job>/policy/, float32: 4 bytes a parameter) after scoring; "
        "by default the scoring process deletes them, since every candidate x seed would leave a full checkpoint.")
    checkpoint_steps: int = opt(
        20, "Save a resumable checkpoint every this many optimizer steps (0 = never): a job interrupted without an "
        "outcome (engine killed, reboot, a stop) resumes from its latest one instead of step 0. Only the latest is "
        "kept, ~12 bytes a parameter (weights and AdamW's two moments, float32), deleted when the job ends.",
        at_least=0)
    bf16: bool = opt(True, "Compute in bfloat16 autocast on GPU; weights and optimizer state stay float32 (pure "
                     "bfloat16 weights would round away most updates at lr 1e-6). Ignored on CPU.")
    gradient_checkpointing: bool = opt(True, "Trade compute for memory on GPU (3000-token responses need it).")

    def rl_steps(self, n_train: int, mode: str) -> int:
        """Optimizer steps of a job: smoke_steps, else max_steps, else epochs over the n_train problems."""
        if mode == "smoke":
            return self.smoke_steps
        if self.max_steps > 0:
            return self.max_steps
        return max(1, ceil(n_train / self.prompts_per_step) * self.epochs)

    def config_problems(self) -> list[tuple[str, str]]:
        """Checks across fields (see core/configlib.py): (key, what is wrong)."""
        samples = self.prompts_per_step * self.group_size
        if samples % self.micro_batch_size:  # gradient accumulation splits a generation batch into equal micro-batches
            product = f"prompts_per_step * group_size = {self.prompts_per_step} * {self.group_size} = {samples}"
            return [("micro_batch_size", f"{self.micro_batch_size} does not divide {product}")]
        if self.use_vllm and samples > VLLM_MAX_SEQS:
            product = f"prompts_per_step * group_size = {self.prompts_per_step} * {self.group_size} = {samples}"
            why = (f"{product} sequences per generation batch; TRL's colocated vLLM starts with at most "
                   f"{VLLM_MAX_SEQS} (its max_num_batched_tokens): lower it, or set use_vllm = false")
            return [("prompts_per_step", why)]
        unknown = [b for b in self.benchmarks if b not in ALL_BENCHMARKS]
        if unknown:
            return [("benchmarks", f"unknown benchmark(s) {unknown}; valid: {', '.join(ALL_BENCHMARKS)}")]
        if not self.benchmarks:
            return [("benchmarks", "expected at least one benchmark; Overall is computed over them")]
        levels = [lv for lv in self.train_levels if lv not in MATH_LEVELS]
        if levels or not self.train_levels:
            return [("train_levels", f"expected MATH levels among {MATH_LEVELS}, got {self.train_levels}")]
        return []
