"""Trusted evaluation entry point: `python -m core.recipes.eval_job <job_dir>/spec.json`.

core.jobs starts it in the sandbox after a full training job exited cleanly, with spec.json written again
from the supervisor's memory. It never imports candidate code: it loads the trained weights the training
process saved (safetensors, no pickle) into the recipe's model and writes the scores to result.json.
"""

from __future__ import annotations

import sys

from core.errors import ConfigError
from core.jobspec import JobResult, JobSpec, eval_progress_writer
from core.recipes.job import main as job_main

RECIPES = ("tiny", "math")  # every recipe: no score comes from a process that ran candidate code


def evaluate(spec: JobSpec) -> JobResult:
    tick = eval_progress_writer(spec.job_dir)  # the supervisor shows it: scoring has no metric rows
    if spec.recipe == "tiny":
        from core.recipes.tiny.run import eval_job

        return eval_job(spec, tick=tick)
    if spec.recipe == "math":
        from core.recipes.math.score import eval_job as eval_math

        return eval_math(spec, tick)
    raise ConfigError(f"spec.json: recipe {spec.recipe!r} has no trusted evaluation; valid: {', '.join(RECIPES)}")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, evaluate, "core.recipes.eval_job")


if __name__ == "__main__":
    sys.exit(main())
