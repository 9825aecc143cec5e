"""The file contract between the engine, a job process and the TUI.

A job is one (candidate, seed) training + evaluation. `core.jobs` starts
`python -m core.recipes.job <job_dir>/spec.json` inside the sandbox; the recipe
appends one JSON object per optimizer step to `metrics.jsonl` (keys below) and
finally writes `result.json`. Everyone else (engine, TUI, reports) only reads
these files, so the layout here is the whole interface.

    <run>/jobs/<cand_id>/<seed>/spec.json      JobSpec
    <run>/jobs/<cand_id>/<seed>/metrics.jsonl  one line per step (METRIC_KEYS)
    <run>/jobs/<cand_id>/<seed>/result.json    JobResult
    <run>/jobs/<cand_id>/<seed>/stdout.log, stderr.log
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# Per-step metric keys every recipe writes (missing ones are simply absent from a line).
METRIC_KEYS = (
    "step",            # int, 1-based optimizer step
    "reward_mean",     # mean reward of the step's rollouts
    "reward_std",
    "accuracy",        # fraction of correct answers
    "valid_rate",      # fraction of format-valid answers
    "truncation_rate", # fraction of responses that hit the length limit
    "entropy",         # mean token entropy of the policy on its samples
    "kl",              # mean KL to the reference (k3), 0 when there is none
    "response_length", # mean response length in tokens
    "clip_frac",       # fraction of tokens whose ratio was clipped
    "grad_norm",       # gradient norm before clipping
    "zero_var_frac",   # fraction of groups whose rewards are all equal
    "loss",
    "step_time_s",
)
# Written only by some steps or candidates.
OPTIONAL_METRIC_KEYS = (
    "kept_frac",       # fraction of rollouts the candidate's filter_groups kept (only with one); 0: no update
)

Outcome = Literal["evaluated", "diverged", "crashed", "timed_out", "cancelled"]


@dataclass
class JobSpec:
    recipe: Literal["tiny", "math"]
    algorithm_path: str            # the candidate's algorithm.py
    job_dir: str                   # where metrics.jsonl and result.json go
    seed: int
    recipe_config: dict[str, Any]  # the recipe's config section, as a dict
    mode: Literal["full", "smoke"] = "full"  # smoke: a few steps, no final eval (verification)
    cache_dir: str = ""            # warm-start models, cached by config hash
    early_kill: dict[str, Any] = field(default_factory=dict)

    def save(self) -> Path:
        path = Path(self.job_dir) / "spec.json"
        write_json_atomic(path, asdict(self))
        return path

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class JobResult:
    outcome: Outcome
    reason: str = ""                                           # diverged/crashed: why, short
    # eval[part][split] = score in [0, 1]; part is "selection" or "heldout"
    eval: dict[str, dict[str, float]] = field(default_factory=dict)
    overall: dict[str, float] = field(default_factory=dict)   # part -> weighted Overall
    # per_problem[part][split] = each eval problem's score, in the eval set's fixed order (the same for every
    # candidate and seed of a run): what core.eval_noise pairs per problem. weights: Overall's split weights.
    per_problem: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    steps_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)       # recipe-specific (timings, warm-start scores)

    def save(self, job_dir: str | Path) -> None:
        write_json_atomic(Path(job_dir) / "result.json", asdict(self))

    @classmethod
    def load(cls, job_dir: str | Path) -> JobResult:
        data = json.loads((Path(job_dir) / "result.json").read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def after_training(self, trained: JobResult) -> JobResult:
        """This scoring result (core.recipes.eval_job) with the training result's steps and timings. Only
        the scoring process speaks for the scores and the warm start: training ran candidate code."""
        kept = {k: v for k, v in trained.extra.items() if k not in SCORE_KEYS}
        self.steps_done, self.extra = trained.steps_done, {**kept, **self.extra}
        return self


# In the job dir: how far the scoring process is, {"done", "total", "what"}, rewritten whole at each step
# (a scoring pass is minutes on recipe math, with no metric rows to show for it).
EVAL_PROGRESS = "eval_progress.json"
EvalTick = Callable[[int, int, str], None]  # (done, total, what is being scored)


def eval_progress_writer(job_dir: str | Path) -> EvalTick:
    def tick(done: int, total: int, what: str) -> None:
        write_json_atomic(Path(job_dir) / EVAL_PROGRESS, {"done": int(done), "total": int(total), "what": str(what)})
    return tick


def read_eval_progress(job_dir: str | Path) -> tuple[int, int, str] | None:
    """(done, total, what) from EVAL_PROGRESS, or None when there is none or it is not one."""
    try:
        data = json.loads((Path(job_dir) / EVAL_PROGRESS).read_text())
        done, total, what = int(data["done"]), int(data["total"]), str(data["what"])[:80]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (done, total, what) if 0 <= done <= total and total > 0 else None


CHECKPOINT_DIR = "checkpoints"  # in the job dir: what an interrupted job resumes from (recipe math)
POLICY_DIR = "policy"  # in the job dir: the trained weights (core.recipes.policy), saved by training, read by scoring

# What only the scoring process may report (it never imports candidate code).
SCORE_KEYS = ("warm_start", "warm_start_sha256", "model_hash", "eval_s", "overall_weights", "eval_sampler")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a reader (or a crash) never sees a half-written file: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an unserialisable value: no stray temp file, the old file stays
        raise


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a metrics.jsonl; a torn last line (job still writing, or killed) is skipped."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path) as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


def remove_path(path: Path) -> None:
    """Delete a file, a link or a whole directory (a link to a directory is removed, never followed)."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
