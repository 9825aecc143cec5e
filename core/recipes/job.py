"""Job entry point: `python -m core.recipes.job <job_dir>/spec.json`.

Runs inside the sandbox (core.jobs starts it). It loads the JobSpec and the
candidate, dispatches on spec.recipe, appends one JSON line per step to
`metrics.jsonl` (flushed at once, so listeners see it live; the same line goes
to stdout) and writes `result.json`. For recipe tiny in full mode that result
carries no scores: the policy is saved, and core.recipes.eval_job (started next
by core.jobs) scores it without candidate code. An exception from candidate code is NOT
caught: it ends the process with a traceback on stderr and a non-zero exit,
which the job supervisor classifies as crashed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.contract import load_algorithm
from core.errors import ConfigError
from core.jobspec import JobResult, JobSpec

Emit = Callable[[dict[str, Any]], None]


def set_threads() -> None:
    """Torch CPU threads from POISE_THREADS (default 2): jobs share the machine with the engine and the TUI."""
    import torch

    raw = os.environ.get("POISE_THREADS", "2")
    try:
        n = max(1, int(raw))
    except ValueError:
        raise ConfigError(f"POISE_THREADS={raw!r} is not an integer; set it to the number of CPU threads") from None
    torch.set_num_threads(n)


def metrics_writer(job_dir: Path) -> Emit:
    """An emit() that appends one flushed line per call to metrics.jsonl and echoes it to stdout."""
    job_dir.mkdir(parents=True, exist_ok=True)
    fh = open(job_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - open for the whole job

    def emit(line: dict[str, Any]) -> None:
        text = json.dumps(line, allow_nan=True)
        fh.write(text + "\n")
        fh.flush()
        print(text, flush=True)

    return emit


def run(spec: JobSpec) -> JobResult:
    emit = metrics_writer(Path(spec.job_dir))
    if spec.recipe == "tiny":
        from core.recipes.tiny.run import run_job as run_tiny

        return run_tiny(spec, emit, load_algorithm(spec.algorithm_path))
    if spec.recipe == "math":
        from core.recipes.math.run import run_job as run_math  # written separately; heavy imports stay lazy

        return run_math(spec, load_algorithm(spec.algorithm_path), emit)
    raise ConfigError(f"spec.json: unknown recipe {spec.recipe!r}; valid recipes: 'tiny', 'math'")


def main(argv: list[str] | None = None, job: Callable[[JobSpec], JobResult] = run,
         module: str = "core.recipes.job") -> int:
    """`python -m <module> <job_dir>/spec.json`: run `job` on the spec and save its result.json."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {module} <job_dir>/spec.json", file=sys.stderr)
        return 2
    spec = JobSpec.load(Path(args[0]))
    set_threads()
    result = job(spec)
    result.save(spec.job_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
