"""Verification with bounded repair: static checks, sandboxed contract probes, no-op and duplicate
detection, and a few-step smoke run on the run's recipe. The same gauntlet runs on every node,
LLM-made or hand-added (`poise verify`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.config import RunConfig
from core.engine import fault_point
from core.rundir import RunPaths

Cancel = Callable[[], bool]
Repair = Callable[[str, str], "str | None"]  # (source, exact error) -> new source or None


@dataclass
class Verdict:
    ok: bool
    reason: str = ""
    stage: str = ""                 # static | probes | noop | duplicate | smoke | passed
    fingerprint: str = ""
    attempts: list[dict] = field(default_factory=list)


def known_fingerprints(archive, exclude: str) -> dict[str, str]:
    """fingerprint -> candidate id, over every verified candidate except `exclude`."""
    out: dict[str, str] = {}
    for c in archive.all():
        fp = (c.verification or {}).get("fingerprint")
        if fp and c.id != exclude and (c.verification or {}).get("ok"):
            out.setdefault(fp, c.id)
    return out


def check_once(src: str, paths: RunPaths, cfg: RunConfig, ws, cand_id: str, attempt: int,
               parent_fp: str, known: dict[str, str], should_cancel: Cancel | None = None) -> Verdict:
    """One pass of the gauntlet on the candidate's current commit."""
    from core.evaluate import job_spec, run_job
    from core.jobs import run_probe
    from core.static_check import check_source

    problems = check_source(src)
    if problems:
        return Verdict(False, "; ".join(problems)[:2000], "static")
    algo = ws.worktree(cand_id) / "algorithm.py"
    report = run_probe(algo, paths.verify_dir(cand_id, attempt), cfg.limits)
    if not report.ok:
        return Verdict(False, "; ".join(report.problems or ["probe job failed"])[:2000], "probes")
    fp = report.fingerprint
    if parent_fp and fp == parent_fp:
        return Verdict(False, "no-op: behaves identically to its parent on every probe batch", "noop", fp)
    if fp in known:
        return Verdict(False, f"duplicate: behaves identically to {known[fp]} on every probe batch", "duplicate", fp)
    spec = job_spec(paths, cfg, cand_id, algo, 0, mode="smoke", job_dir=paths.verify_dir(cand_id, attempt) / "smoke")
    result = run_job(spec, cfg, should_cancel=should_cancel)
    if result.outcome == "cancelled":
        return Verdict(False, "cancelled by a stop request", "cancelled", fp)
    if result.outcome != "evaluated":
        return Verdict(False, f"smoke run {result.outcome}: {result.reason}"[:2000], "smoke", fp)
    never_updated = _never_updated(Path(spec.job_dir) / "metrics.jsonl")
    if never_updated:
        return Verdict(False, never_updated, "smoke", fp)
    return Verdict(True, "passed static checks, contract probes and a smoke run", "passed", fp)


def _never_updated(metrics: Path) -> str:
    """Why the smoke run trained nothing (filter_groups kept no rollout at any step), or ''. Such a candidate's
    scores are the warm start's, and across seeds they look like a real, perfectly stable result."""
    from core.jobspec import read_metrics

    kept = [row.get("kept_frac") for row in read_metrics(metrics)]
    if kept and all(isinstance(k, (int, float)) and k <= 0 for k in kept):
        return (f"smoke run: filter_groups kept no rollout in any of its {len(kept)} steps, so the policy was never "
                "updated; the filter must keep groups whose rewards differ (e.g. some right and some wrong)")
    return ""


def verify(archive, ws, paths: RunPaths, cfg: RunConfig, cand_id: str, repair: Repair | None = None,
           max_repairs: int = 0, should_cancel: Cancel | None = None) -> Verdict:
    """Verify `cand_id`, repairing up to `max_repairs` times; records the verdict and sets the status.
    A recipe that is not ready on this machine raises ConfigError first, and nothing is recorded."""
    from core.recipes import preflight

    preflight.check(cfg)
    t0 = time.time()
    cand = archive.get(cand_id)
    parent_fp = ""
    if cand.parent_ids:
        parent_fp = (archive.get(cand.parent_ids[0]).verification or {}).get("fingerprint", "")
    known = known_fingerprints(archive, cand_id)
    attempts: list[dict] = []
    verdict = Verdict(False, "not run")
    for attempt in range(max_repairs + 1):
        src = ws.read_algorithm(cand_id)
        verdict = check_once(src, paths, cfg, ws, cand_id, attempt, parent_fp, known, should_cancel)
        if verdict.stage == "cancelled":
            return verdict  # nothing recorded: the candidate stays `implemented` and is verified again on resume
        attempts.append({"attempt": attempt, "commit": ws.head(cand_id), "stage": verdict.stage, "reason": verdict.reason})
        if verdict.ok or repair is None or attempt == max_repairs or verdict.stage in ("noop", "duplicate"):
            break
        fixed = repair(src, verdict.reason)
        if not fixed:
            break
        ws.commit_attempt(cand_id, fixed, f"repair attempt {attempt + 1} of {cand_id}: {verdict.stage} failure")
    verdict.attempts = attempts
    record = {**asdict(verdict), "seconds": round(time.time() - t0, 2)}
    archive.update(cand_id, verification=record, commit=ws.head(cand_id))
    fault_point("verify:recorded")
    archive.add_cost(cand_id, "verify", wall_s=record["seconds"])
    if archive.get(cand_id).status == "implemented":  # re-verifying a trained node records, never demotes
        archive.set_status(cand_id, "verified" if verdict.ok else "rejected", verdict.reason[:500])
    return verdict
