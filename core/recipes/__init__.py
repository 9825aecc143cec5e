"""Standardized evaluation pipelines. `tiny` runs on CPU; `math` is the paper's protocol on GPU."""

from __future__ import annotations

from math import ceil  # not `import math`: the subpackage core.recipes.math would shadow it here
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.jobspec import JobSpec


def planned_steps(spec: JobSpec) -> int:
    """How many RL steps the job will run, for progress ("step 40/155"); read from the recipe's own config
    without importing the recipe (the engine stays free of torch)."""
    rc = spec.recipe_config
    if spec.recipe == "math":
        from core.recipes.math.config import MathConfig

        d = MathConfig()
        if spec.mode == "smoke":
            return int(rc.get("smoke_steps", d.smoke_steps))
        if int(rc.get("max_steps", d.max_steps)) > 0:
            return int(rc.get("max_steps", d.max_steps))
        # an upper bound: training prompts longer than max_prompt_tokens are dropped when the job loads them
        problems, per_step = int(rc.get("train_problems", d.train_problems)), int(rc.get("prompts_per_step", d.prompts_per_step))
        per_epoch = ceil(problems / per_step)
        return max(1, per_epoch * int(rc.get("epochs", d.epochs)))
    from core.recipes.tiny.config import SMOKE_STEPS, TinyConfig

    steps = int(rc.get("steps", TinyConfig().steps))
    return min(SMOKE_STEPS, steps) if spec.mode == "smoke" else steps
