"""Standardized evaluation pipelines. `tiny` runs on CPU; `math` is the paper's protocol on GPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.jobspec import JobSpec


def planned_steps(spec: JobSpec) -> int:
    """How many RL steps the job will run, for progress ("step 40/155"): the rule its recipe runs by, read
    from the recipe's config module only (the engine stays free of torch)."""
    from core.configlib import from_dict

    if spec.recipe == "math":
        from core.recipes.math.config import MathConfig

        cfg = from_dict(MathConfig, dict(spec.recipe_config), "[math]")
        # an upper bound: training prompts longer than max_prompt_tokens are dropped when the job loads them
        return cfg.rl_steps(cfg.train_problems, spec.mode)
    from core.recipes.tiny.config import TinyConfig

    return from_dict(TinyConfig, dict(spec.recipe_config), "[tiny]").rl_steps(spec.mode)
