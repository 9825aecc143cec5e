"""The evaluation operator O(z): train + evaluate one candidate on every seed, record it in the archive.

Each (candidate, seed) is one sandboxed job (core.jobs). Seeds that already have a result
are skipped, so an evaluation interrupted by a crash resumes where it stopped; the job
directory of an unfinished seed is wiped and the seed is run again, from scratch, or for
recipe math from the checkpoint that same job left (core/recipes/math/checkpoint.py).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.engine import fault_point
from core.jobspec import CHECKPOINT_DIR, JobResult, JobSpec, remove_path
from core.rundir import RunPaths, default_cache_dir

# Worst outcome first: a candidate's status is the worst outcome over its seeds.
OUTCOME_ORDER = ("crashed", "diverged", "timed_out", "cancelled", "evaluated")
Progress = Callable[[str, float], None]


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def recipe_config(cfg: RunConfig) -> dict:
    """The run's section for its recipe ([tiny] or [math]), as a job spec carries it."""
    return asdict(cfg.tiny if cfg.recipe == "tiny" else cfg.math)


def job_spec(paths: RunPaths, cfg: RunConfig, cand_id: str, algorithm_path: Path, seed: int | str,
             mode: str = "full", job_dir: Path | None = None) -> JobSpec:
    recipe_cfg = recipe_config(cfg)
    return JobSpec(
        recipe=cfg.recipe,
        algorithm_path=str(algorithm_path),
        job_dir=str(job_dir or paths.job_dir(cand_id, seed)),
        seed=int(seed) if str(seed).isdigit() else 0,
        recipe_config=recipe_cfg,
        mode=mode,  # type: ignore[arg-type]
        cache_dir=str(default_cache_dir()),
        early_kill=asdict(cfg.early_kill),
    )


CANCEL_POLL_S = 0.25  # how soon a stop reaches a running job (one small inbox read each time)


def run_job(spec: JobSpec, cfg: RunConfig, on_progress: Progress | None = None,
            should_cancel: Callable[[], bool] | None = None) -> JobResult:
    """Run one sandboxed job to its outcome, reporting progress as (message, fraction)."""
    from core.jobs import start_job
    from core.recipes import planned_steps

    fresh_job_dir(spec)
    handle = start_job(spec, cfg.limits, cfg.early_kill, project_root())
    total = max(planned_steps(spec), 1)
    share = TRAIN_SHARE if spec.mode == "full" else 1.0  # a smoke job has no scoring process
    shown: Any = -1
    while True:
        # The stop check comes first: a stop that arrived while the job was starting cancels it
        # before it can finish (a warm job start takes ~0.1 s, a short job only a second or two).
        if should_cancel and should_cancel():
            handle.cancel()
        result = handle.wait(timeout=CANCEL_POLL_S)
        if result is not None:
            return result
        rows = handle.poll()
        scoring = handle.eval_progress()
        now = scoring or (int(rows[-1].get("step", 0)) if rows else shown)
        if on_progress and now != shown:  # published once per step (or scoring tick), not once per poll
            shown = now
            on_progress(*progress_line(now, total, share))


def fresh_job_dir(spec: JobSpec) -> None:
    """Start clean: an unfinished earlier attempt's files never mix with this one's. Except its checkpoints
    (recipe math) when it was the same job, by its spec: the recipe resumes from them instead of step 0."""
    job_dir = Path(spec.job_dir)
    keep = CHECKPOINT_DIR if same_job(job_dir, spec) else None
    if job_dir.is_dir() and not job_dir.is_symlink():
        for entry in job_dir.iterdir():
            if entry.name != keep:
                remove_path(entry)
    elif job_dir.exists() or job_dir.is_symlink():
        job_dir.unlink()
    job_dir.mkdir(parents=True, exist_ok=True)


def same_job(job_dir: Path, spec: JobSpec) -> bool:
    """Whether the attempt that left job_dir ran this very spec (config, seed, mode, candidate file)."""
    try:
        return asdict(JobSpec.load(job_dir / "spec.json")) == asdict(spec)
    except Exception:  # noqa: BLE001 - missing, torn or foreign: not the same job
        return False


def sweep_checkpoints(jobs_dir: Path, resumable: set[tuple[str, str]]) -> int:
    """Delete checkpoints/ under jobs/<candidate>/<seed>/ unless that job can still resume (its candidate is
    training and the seed has no result); call it only while no job runs. Returns how many were deleted."""
    swept = 0
    for folder in Path(jobs_dir).glob(f"*/*/{CHECKPOINT_DIR}"):
        if (folder.parent.parent.name, folder.parent.name) not in resumable:
            shutil.rmtree(folder, ignore_errors=True)
            swept += 1
    return swept


# The share of a job's bar that training fills; scoring fills the rest. Only so that the bar never runs
# backwards: the real split varies (tiny ~80/20, math on GPU hours of training to minutes of scoring).
TRAIN_SHARE = 0.85


def progress_line(now: int | tuple[int, int, str], total_steps: int, train_share: float) -> tuple[str, float]:
    """What the progress bar says: the training step, or once training is over, how far scoring is."""
    if isinstance(now, tuple):
        done, total, what = now
        return f"scoring {what}: {done}/{total}", train_share + (1 - train_share) * done / total
    return f"step {now}/{total_steps}", train_share * min(now / total_steps, 1.0)


def evaluate(archive, ws, paths: RunPaths, cfg: RunConfig, cand_id: str, seeds: list[int] | None = None,
             on_progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
             cost_stage: str = "train"):
    """Train and evaluate `cand_id` on `seeds` (default: its recorded seeds or the run's); returns the Candidate.
    The jobs' wall time is charged to `cost_stage` (confirm and rerun keep theirs apart from the first training).
    A recipe that is not ready on this machine raises ConfigError first, and nothing is recorded."""
    from core.recipes import preflight

    preflight.check(cfg)
    cand = archive.get(cand_id)
    # Until a candidate has a result, the run's seeds win over those recorded at its creation: a user
    # who edits [seeds] in run.toml between `poise init` and `poise run` gets them for the seed too.
    recorded = list(cand.seeds) if cand.results else []
    seeds = list(seeds or recorded or cfg.seeds)
    # A fresh checkout of the commit first (an edit left on disk in the worktree is discarded, not fatal),
    # then the frozen-file check of commit and checkout, both before anything is recorded: a commit that
    # breaks the protocol stops here with the candidate as it was.
    worktree = ws.worktree(cand_id)
    ws.verify_frozen(cand_id)
    if cand.status != "training":
        archive.set_status(cand_id, "training")
    archive.update(cand_id, seeds=sorted(set(recorded) | set(seeds)))
    t0 = time.time()
    for i, seed in enumerate(seeds):
        if str(seed) in (archive.get(cand_id).results or {}):
            continue  # done before a crash or an earlier run
        spec = job_spec(paths, cfg, cand_id, worktree / "algorithm.py", seed)

        def report(msg: str, frac: float, i: int = i, seed: int = seed) -> None:
            if on_progress:
                on_progress(f"training {cand_id} seed {seed}: {msg}", (i + frac) / len(seeds))

        result = run_job(spec, cfg, report, should_cancel)
        if result.outcome == "cancelled":
            # Stopped by the user: the candidate stays `training` and this seed reruns on resume.
            archive.add_cost(cand_id, cost_stage, wall_s=time.time() - t0)
            return archive.get(cand_id)
        archive.record_result(cand_id, seed, result)
        fault_point("train:result")
    archive.add_cost(cand_id, cost_stage, wall_s=time.time() - t0)
    outcomes = [r.get("outcome", "crashed") for r in archive.get(cand_id).results.values()]
    final = min(outcomes, key=OUTCOME_ORDER.index) if outcomes else "crashed"
    reason = _first_reason(archive.get(cand_id).results, final)
    archive.set_status(cand_id, final, reason)
    return archive.get(cand_id)


def _first_reason(results: dict, outcome: str) -> str:
    for seed, r in sorted(results.items()):
        if r.get("outcome") == outcome and r.get("reason"):
            return f"seed {seed}: {r['reason']}"[:500]
    return ""
