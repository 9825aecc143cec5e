"""Config of recipe `math` (section [math] of run.toml): the paper's protocol as defaults."""

from __future__ import annotations

from dataclasses import dataclass

from core.configlib import opt


@dataclass
class MathConfig:
    model_path: str = opt("", "Local path of the policy model (HF directory); nothing is downloaded.")
    data_dir: str = opt("", "Directory with user-supplied aime24.jsonl, aime25.jsonl, amc.jsonl, olympiadbench.jsonl.")
    lr: float = opt(1e-6, "Learning rate (paper: 1e-6).")
    prompts_per_step: int = opt(256, "Prompts per batch (paper: 256).")
    group_size: int = opt(8, "Responses per prompt G (paper: 8).")
    epochs: int = opt(8, "Epochs over the 5,000 MATH level 3-5 problems (paper: 8, about 155 steps).")
    max_prompt_tokens: int = opt(1024, "Prompt length limit (paper: 1024).")
    max_response_tokens: int = opt(3000, "Response length limit (paper: 3000).")
    use_vllm: bool = opt(True, "Use vLLM (colocate) for rollouts and pass@k when the gpu extra is installed.")
