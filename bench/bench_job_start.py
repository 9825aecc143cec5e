"""Sandboxed job start-up: a job forked from the warm zygote against one in a fresh interpreter.

Two jobs, each run --repeats times, warm and fresh interleaved in one process:
- `smoke`: the real verification smoke run of recipe tiny (3 RL steps of the seed GRPO; warm start cached);
- `probe`: the real contract-probe job of verification.
The first warm job also pays the zygote's own start; it is reported apart and not in the medians.

    .venv/bin/python bench/bench_job_start.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import zygote
from core.config import EarlyKillConfig, LimitsConfig
from core.jobs import run_probe, start_job
from core.jobspec import JobSpec
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import load_or_build
from core.rundir import default_cache_dir

LIMITS = LimitsConfig(timeout_s=600)


def algorithm() -> Path:
    seed = REPO / "workspace" / "algorithm.py"
    return seed if seed.exists() else REPO / "core" / "recipes" / "tiny" / "grpo_fallback.py"


def smoke(warm: bool) -> float:
    os.environ[zygote.ENV_SWITCH] = "1" if warm else "0"
    job = Path(tempfile.mkdtemp(prefix="poise_bench_start_"))
    spec = JobSpec(recipe="tiny", algorithm_path=str(algorithm()), job_dir=str(job), seed=0,
                   recipe_config=asdict(TinyConfig()), mode="smoke", cache_dir=str(default_cache_dir()))
    t0 = time.perf_counter()
    result = start_job(spec, LIMITS, EarlyKillConfig()).wait()
    assert result.outcome == "evaluated", result.reason
    return time.perf_counter() - t0


def probe(warm: bool) -> float:
    os.environ[zygote.ENV_SWITCH] = "1" if warm else "0"
    job = Path(tempfile.mkdtemp(prefix="poise_bench_probe_"))
    t0 = time.perf_counter()
    report = run_probe(algorithm(), job, LIMITS)
    assert report.ok, report.problems
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    load_or_build(TinyConfig(), str(default_cache_dir()))  # the warm start is cached before anything is timed
    print(f"first warm smoke job, which also starts the zygote: {smoke(True):.2f} s", flush=True)
    for name, job in (("smoke", smoke), ("probe", probe)):
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(a.repeats):
            for warm in (True, False):
                times[warm].append(job(warm))
        w, f = statistics.median(times[True]), statistics.median(times[False])
        print(f"{name}: warm {w:.2f} s, fresh {f:.2f} s (median of {a.repeats}); "
              f"warm start saves {f - w:.2f} s per job ({f / w:.2f}x)", flush=True)
    zygote.close_all()


if __name__ == "__main__":
    main()
