"""Builds real run directories for the TUI tests and the benchmark, through core's own writers.

Candidates go through core.archive (add / set_status / record_result, so metrics are the
real aggregated ones); curves are real metrics.jsonl files; engine state goes through
core.runstate. `bulk=True` writes every record in one go through the archive's own
storage class, because 1,000 candidates one fsynced write at a time would take minutes.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.archive import TABLE, Archive, AtomicJSONStorage, Candidate
from core.config import RunConfig, save_config
from core.jobspec import JobResult
from core.runstate import EngineState, write_state
from core.stats import aggregate_results

SPLITS = ("add", "mul", "mixed")
MECHANISMS = ("analytic-variance", "validity-mask", "clip-higher", "token-mean", "kl-k3", "entropy-bonus")


def job_result(rng: random.Random, quality: float) -> JobResult:
    """A plausible evaluated JobResult around `quality` (0..1)."""
    def score() -> float:
        return min(1.0, max(0.0, quality + rng.gauss(0, 0.02)))

    ev = {part: {s: score() for s in SPLITS} for part in ("selection", "heldout")}
    overall = {part: sum(v.values()) / len(v) for part, v in ev.items()}
    return JobResult(outcome="evaluated", eval=ev, overall=overall, wall_s=12.0, steps_done=60)


def write_curve(job_dir: Path, rng: random.Random, steps: int, quality: float, upto: int | None = None) -> None:
    """metrics.jsonl with every METRIC_KEYS curve, plus stdout/stderr logs."""
    job_dir.mkdir(parents=True, exist_ok=True)
    lines, log = [], []
    for step in range(1, (upto or steps) + 1):
        frac = step / steps
        acc = quality * (1 - math.exp(-4 * frac)) + rng.gauss(0, 0.01)
        row = {"step": step, "reward_mean": acc, "reward_std": 0.3, "accuracy": acc,
               "valid_rate": min(1.0, 0.6 + 0.4 * frac), "truncation_rate": 0.05, "entropy": 1.5 - frac,
               "kl": 0.02 * frac, "response_length": 40 - 10 * frac, "clip_frac": 0.1, "grad_norm": 1 + rng.random(),
               "zero_var_frac": 0.2, "loss": -acc, "step_time_s": 0.2}
        lines.append(_json(row))
        log.append(f"step {step} reward {acc:.3f}")
    (job_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (job_dir / "stdout.log").write_text("\n".join(log) + "\n")
    (job_dir / "stderr.log").write_text("")


def _json(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row)


def proposal(i: int, rng: random.Random) -> dict[str, Any]:
    mech = MECHANISMS[i % len(MECHANISMS)]
    return {"title": f"{mech} v{i}", "motivation": f"Try {mech} on the parent.", "mechanism": mech,
            "hypothesis": "accuracy up, length flat", "expected_signals": ["lower KL"], "change_mode": "compose"}


def new_run(run_dir: Path, seeds: list[int]) -> Archive:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(RunConfig(name=run_dir.name, seeds=seeds), run_dir / "run.toml")
    return Archive.open(run_dir, create=True)


def evaluated(cand: Candidate, rng: random.Random, quality: float) -> Candidate:
    """The candidate as it is after training, evaluation and reflection (in memory)."""
    results = {str(s): vars(job_result(rng, quality)) for s in cand.seeds}
    reflection = {"diagnosis": f"{cand.title}: KL stayed flat", "evidence": "curves", "design_principle":
                  "floor the std", "next_steps": ["try a lower floor"]}
    now = time.time()
    history = [{"status": s, "at": now, "reason": ""} for s in
               ("proposed", "implemented", "verified", "training", "evaluated", "reflected")]
    return replace(cand, results=results, metrics=aggregate_results(results), status="reflected",
                   history=history, reflection=reflection)


def synthetic_candidates(n: int, seeds: list[int], rng: random.Random) -> list[tuple[Candidate, float]]:
    """seed + n children in a random genealogy, each with its quality; most reflected, a few of each other status."""
    base = Candidate(id="seed", title="GRPO (seed)", origin="seed", seeds=seeds, branch="cand/seed",
                     proposal={"title": "GRPO", "mechanism": "group-normalised advantage"}, tags=["grpo"],
                     created_at=1.0)
    out = [(evaluated(base, rng, 0.45), 0.45)]
    for i in range(1, n + 1):
        parent, pq = out[rng.randrange(len(out))] if i > 1 else out[0]
        while parent.status != "reflected":
            parent, pq = out[rng.randrange(len(out))]
        quality = min(0.95, max(0.05, pq + rng.gauss(0.005, 0.03)))
        prop = proposal(i, rng)
        cand = Candidate(id=f"c{i:03d}", title=prop["title"], parent_ids=[parent.id], proposal=prop, seeds=seeds,
                         branch=f"cand/c{i:03d}", tags=[prop["mechanism"]], created_at=1.0 + i)
        if i % 11 == 5:
            cand = replace(cand, status="rejected", history=[{"status": "rejected", "at": 0, "reason": "crash"}])
        elif i % 13 == 7:
            cand = replace(cand, status="verified")
        else:
            cand = evaluated(cand, rng, quality)
        out.append((cand, quality))
    return out


def add_branches(run_dir: Path, cands: list[Candidate]) -> None:
    """The run repo (core.workspace) with a branch per candidate whose algorithm.py differs from its parent's."""
    from core.workspace import Workspace

    ws = Workspace.init(run_dir)
    for cand in cands[1:]:
        write_branch(ws, cand)


def write_branch(ws: Any, cand: Candidate) -> None:
    source = ws.read_algorithm(cand.parent_ids[0])
    mech = cand.proposal.get("mechanism", "change")
    source += f"\n\n# {cand.id}: {mech}\nHPARAMS_{cand.id.upper()} = {{\"{mech}\": True}}\n"
    ws.create_candidate(cand.id, cand.parent_ids[0], source, cand.title)


def build_run(run_dir: Path, n: int = 12, steps: int = 60, seeds: list[int] | None = None,
              state: str = "finished", bulk: bool = False, rng_seed: int = 0, repo: bool = True) -> Path:
    """A recorded run: run.toml, archive, repo with a branch per candidate, per-seed curves and logs, engine.json."""
    seeds = seeds or [0, 1, 2]
    rng = random.Random(rng_seed)
    archive = new_run(run_dir, seeds)
    cands = synthetic_candidates(n, seeds, rng)
    if bulk:
        records = {str(i + 1): c.to_dict() for i, (c, _) in enumerate(cands)}
        AtomicJSONStorage(run_dir / "archive.json").write({TABLE: records})
    else:
        for cand, _ in cands:
            archive.add(cand, reason="recorded")
    if repo:
        add_branches(run_dir, [c for c, _ in cands])
    for cand, quality in cands:
        if cand.status == "reflected":
            for s in seeds:
                write_curve(run_dir / "jobs" / cand.id / str(s), random.Random(f"{cand.id}{s}"), steps, quality)
    done = sum(1 for c, _ in cands if c.status == "reflected") - 1
    write_state(run_dir, EngineState(state=state, stage="idle", candidates_done=done, candidates_budget=n))  # type: ignore[arg-type]
    return run_dir
