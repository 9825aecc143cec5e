"""Config of recipe `tiny` (section [tiny] of run.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configlib import opt


@dataclass
class TinyConfig:
    # --- RL protocol (the same for every candidate of a run) ---
    steps: int = opt(100, "RL steps (rollout rounds) per evaluation; the same for every candidate of a run.")
    prompts_per_step: int = opt(16, "Prompts sampled per step (the paper uses 256 on GPU).")
    group_size: int = opt(8, "Responses per prompt (G); group statistics are computed over these.")
    max_response_tokens: int = opt(32, "Generation limit; longer responses are truncated and flagged (never valid).")
    temperature: float = opt(1.0, "Sampling temperature for rollouts; log-probs use the same temperature.")
    ppo_epochs: int = opt(1, "Passes over each step's rollouts (1 = on-policy; >1 makes clipping matter).")
    minibatches: int = opt(4, "Optimizer steps per epoch; the rollouts are split into this many minibatches "
                           "(4 gave the seed GRPO at lr 1e-5 a clear gain in 80 steps; 2 about half of it).")
    default_max_grad_norm: float = opt(1.0, "Gradient clipping when the candidate's HPARAMS has no max_grad_norm.")
    weight_decay: float = opt(0.0, "AdamW weight decay (the candidate's HPARAMS weight_decay wins when present).")
    threads: int = opt(1, "Torch CPU threads of a tiny job (0 = keep POISE_THREADS). Its matrices are so small that a "
                       "second thread only adds synchronisation; on a loaded 2-core box 2 threads ran 10-15x slower.")
    # --- task ---
    task_seed: int = opt(1234, "Seed of the evaluation problems; fixed per run so every candidate sees the same sets.")
    eval_size: int = opt(64, "Problems per split in each part (selection and held-out).")
    pass_k: int = opt(4, "k of pass@k (sampled at T=1.0) on the pass@k splits.")
    greedy_splits: list[str] = opt(["add1", "add2", "sub"], "Splits scored by greedy acc@1 (like MATH-500, Minerva, Olympiad).")
    passk_splits: list[str] = opt(["mul", "mixed", "chain"], "Splits scored by pass@k at T=1.0 (like AIME24, AIME25, AMC).")
    weights: dict[str, float] = opt(
        {"mul": 0.2, "mixed": 0.2, "chain": 0.15, "add1": 0.15, "add2": 0.15, "sub": 0.15},
        "Weights of the Overall utility per split; the paper's structure: 0.2+0.2 on two pass@k sets, 0.15 on four others.",
    )
    # --- warm-start model (cached by a hash of these fields) ---
    arch: Literal["llama", "qwen2"] = opt("llama", "transformers model class of the tiny decoder.")
    hidden_size: int = opt(64, "Width of the tiny decoder.")
    layers: int = opt(2, "Decoder layers.")
    heads: int = opt(4, "Attention heads (head dim = hidden_size / heads).")
    intermediate_size: int = opt(192, "MLP width.")
    model_seed: int = opt(0, "Seed of the warm start (init + SFT data); all candidates share this model.")
    sft_steps: int = opt(700, "SFT optimizer steps of the warm start; few enough to leave room for RL.")
    sft_batch_size: int = opt(64, "SFT sequences per step.")
    sft_lr: float = opt(3e-3, "SFT learning rate (AdamW, cosine decay).")
    sft_format_noise: float = opt(0.5, "Fraction of SFT targets in a near-miss (invalid) format, so validity can be learned by RL.")
