"""Progress shows "step N/total" with the total the job will really run, for both recipes and both modes."""

from __future__ import annotations

import pytest

from core.jobspec import JobSpec
from core.recipes import planned_steps


@pytest.mark.parametrize(("recipe", "config", "mode", "steps"), [
    ("math", {}, "full", 160),  # the paper's protocol: ceil(5000 / 256) = 20 steps an epoch, 8 epochs
    ("math", {"train_problems": 100, "prompts_per_step": 32, "epochs": 2}, "full", 8),
    ("math", {"max_steps": 7, "epochs": 99}, "full", 7),
    ("math", {}, "smoke", 2),
    ("math", {"smoke_steps": 5}, "smoke", 5),
    ("tiny", {"steps": 100}, "full", 100),
    ("tiny", {"steps": 100}, "smoke", 3),
    ("tiny", {"steps": 2}, "smoke", 2),
])
def test_planned_steps(recipe: str, config: dict, mode: str, steps: int) -> None:
    spec = JobSpec(recipe=recipe, algorithm_path="", job_dir="", seed=0, recipe_config=config, mode=mode)
    assert planned_steps(spec) == steps
