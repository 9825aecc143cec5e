"""Config of recipe `tiny` (section [tiny] of run.toml)."""

from __future__ import annotations

from dataclasses import dataclass

from core.configlib import opt


@dataclass
class TinyConfig:
    steps: int = opt(60, "RL optimizer steps per evaluation; the same for every candidate of a run.")
    prompts_per_step: int = opt(16, "Prompts sampled per step (the paper uses 256 on GPU).")
    group_size: int = opt(8, "Responses per prompt (G); group statistics are computed over these.")
    max_response_tokens: int = opt(24, "Generation limit; longer responses are truncated and flagged.")
    temperature: float = opt(1.0, "Sampling temperature for rollouts.")
