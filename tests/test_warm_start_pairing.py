"""A paired comparison pairs a seed of two candidates only when both trained from the same warm start
(result.extra.warm_start_sha256): the same seed from two initial models mixes the models' gap into the
candidates'. Every reader (report, TUI metrics table, reflection verdict) leaves such seeds out and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.archive import Archive, Candidate
from core.config import RunConfig
from core.eval_noise import seeds_on_other_warm_starts
from core.jobspec import JobResult
from core.stats import paired_difference, paired_metrics, summarize

A, B = "a" * 64, "b" * 64
# Per seed, the candidate beats its parent by exactly 0.05 on seeds 0 and 1; seed 2 is 0.5 apart, the gap a
# different initial model can make.
CAND = (0.55, 0.65, 0.90)
BASE = (0.50, 0.60, 0.40)


def _result(v: float, sha: str | None) -> JobResult:
    return JobResult(outcome="evaluated", eval={"selection": {"easy": v}, "heldout": {"easy": v}},
                     overall={"selection": v, "heldout": v}, extra={"warm_start_sha256": sha} if sha else {})


def _record(arch: Archive, cid: str, values: tuple[float, ...], shas: tuple[str | None, ...],
            parents: list[str] | None = None) -> None:
    arch.add(Candidate(id=cid, title=cid, parent_ids=parents or [], origin="llm" if parents else "seed",
                       status="training"))
    for seed, (v, sha) in enumerate(zip(values, shas)):
        arch.record_result(cid, seed, _result(v, sha))
    arch.set_status(cid, "evaluated")


@pytest.fixture
def mixed(tmp_path: Path) -> Archive:
    """The seed trained all 3 seeds from warm start A; c001's seed 2 came from B (another machine)."""
    arch = Archive.open(tmp_path, create=True)
    _record(arch, "seed", BASE, (A, A, A))
    _record(arch, "c001", CAND, (A, A, B), ["seed"])
    return arch


def _evaluated(sha: str | None) -> dict:
    return {"outcome": "evaluated", "extra": {"warm_start_sha256": sha} if sha else {}}


def test_only_seeds_with_two_recorded_different_shas_are_unpaired() -> None:
    a = {"0": _evaluated(A), "1": _evaluated(A), "2": _evaluated(B), "3": _evaluated(None), "4": _evaluated(A),
         "5": {"outcome": "crashed", "extra": {"warm_start_sha256": B}}}
    b = {"0": _evaluated(A), "1": _evaluated(B), "2": _evaluated(A), "3": _evaluated(B), "5": _evaluated(A)}
    # 3: not recorded on one side (an older result): not judged; 4: b never ran it; 5: a's seed has no score
    assert seeds_on_other_warm_starts(a, b) == ["1", "2"]
    assert seeds_on_other_warm_starts(a, a) == []


def test_paired_metrics_leaves_the_excluded_seeds_out_of_both_sides() -> None:
    a, b = summarize(dict(enumerate(CAND))), summarize(dict(enumerate(BASE)))
    d = paired_metrics(a, b, exclude=["2"])
    assert (d["n"], d["mean"], d["lo"], d["hi"]) == pytest.approx((2, 0.05, 0.05, 0.05))
    assert paired_metrics(a, b, exclude=[2]) == d  # seed keys are compared as text, whatever their type
    assert paired_metrics(a, b)["mean"] == pytest.approx((0.05 + 0.05 + 0.5) / 3)


def test_the_report_pairs_over_the_seeds_of_one_warm_start_and_says_which_are_left_out(mixed: Archive) -> None:
    from core.report import paired_vs

    text = paired_vs(mixed.get("c001"), mixed.get("seed"))
    assert text == "+0.050 [+0.050, +0.050] (n=2); seeds 2 left out: trained from other warm starts"


def test_the_report_says_why_when_no_seed_is_left_to_pair(tmp_path: Path) -> None:
    from core.report import paired_vs

    arch = Archive.open(tmp_path, create=True)
    _record(arch, "seed", BASE, (A, A, A))
    _record(arch, "c001", CAND, (B, B, B), ["seed"])
    text = paired_vs(arch.get("c001"), arch.get("seed"))
    assert text.startswith("n/a (") and "seeds 0, 1, 2 left out: trained from other warm starts" in text


def test_the_tui_delta_leaves_the_other_warm_start_out_and_shows_n(mixed: Archive, tmp_path: Path) -> None:
    from poise_tui.widgets.metrics_table import metric_rows

    rows = metric_rows(mixed.get("c001"), {"vs seed": mixed.get("seed")})
    overall = next(r for r in rows if r[:2] == ("heldout", "overall"))
    assert overall[-1] == "+5.0 [+5.0, +5.0] n=2"
    (tmp_path / "same").mkdir()
    same = Archive.open(tmp_path / "same", create=True)
    _record(same, "seed", BASE, (A, A, A))
    _record(same, "c001", CAND, (A, A, A), ["seed"])
    d = paired_difference(dict(enumerate(CAND)), dict(enumerate(BASE)))
    overall = next(r for r in metric_rows(same.get("c001"), {"vs seed": same.get("seed")})
                   if r[:2] == ("heldout", "overall"))
    assert overall[-1] == f"{d['mean'] * 100:+.1f} [{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}]"


def test_the_tui_delta_says_other_warm_start_when_nothing_pairs(tmp_path: Path) -> None:
    from poise_tui.widgets.metrics_table import metric_rows

    arch = Archive.open(tmp_path, create=True)
    _record(arch, "seed", BASE, (A, A, A))
    _record(arch, "c001", CAND, (B, B, B), ["seed"])
    assert {r[-1] for r in metric_rows(arch.get("c001"), {"vs seed": arch.get("seed")})} == {"other warm start"}


def test_the_reflection_verdict_pairs_only_the_seeds_of_one_warm_start() -> None:
    from core.operators.reflect import ReflectionInput, metrics_table

    cand, parent = summarize(dict(enumerate(CAND))), summarize(dict(enumerate(BASE)))
    inp = ReflectionInput("c001", {"title": "t"}, "", metrics={"selection": {"overall": cand}},
                          parent_metrics={"selection": {"overall": parent}})
    assert "paired over 3 seeds" in metrics_table(inp)  # precondition: without the record, all 3 pair
    inp.unpaired_seeds = ["2"]
    assert "(better, paired over 2 seeds: +0.050 [+0.050, +0.050] vs parent)" in metrics_table(inp)


class FakeWorkspace:
    """Only what Discovery.reflect reads from the workspace: the diff against the parent."""

    def diff(self, cid: str, against: str) -> str:
        return ""


def test_discovery_passes_the_unpaired_seeds_to_the_reflection(mixed: Archive, tmp_path: Path) -> None:
    """Through Discovery.reflect with the LLM skipped (reflect_giveup_after reached): the stored numeric
    reflection carries the verdict, paired over the 2 seeds that share the parent's warm start."""
    from core.discovery import Discovery
    from core.rundir import RunPaths

    cfg = RunConfig()
    cfg.search.reflect_giveup_after = 1
    disc = Discovery(mixed, FakeWorkspace(), cfg, RunPaths(tmp_path))
    disc._unusable_reflections = 1
    disc.reflect("c001")
    refl = mixed.get("c001").reflection
    assert refl["fallback"] and "paired over 2 seeds: +0.050 [+0.050, +0.050]" in str(refl)
