"""The run report: a recorded run in tmp_path (real archive, real metrics files) -> report.md + PNGs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.archive import Archive, Candidate
from core.jobspec import JobResult
from core.report import converged_principles, genealogy_lines, write_report
from core.workspace import Workspace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)

# id, parents, selection Overall per seed, held-out Overall per seed, principle
RUN: list[tuple[str, list[str], list[float], list[float], str]] = [
    ("seed", [], [0.40, 0.42, 0.44], [0.40, 0.50, 0.60], "Group-normalised advantages are a sound baseline."),
    ("c001", ["seed"], [0.45, 0.47, 0.49], [0.50, 0.60, 0.70], "Mask invalid samples out of the group statistics."),
    ("c002", ["seed"], [0.38, 0.40, 0.42], [0.35, 0.45, 0.55], "Clip ratios higher for positive advantages."),
    ("c003", ["c001"], [0.55, 0.57, 0.59], [0.55, 0.62, 0.75], "Invalid samples should be masked out of group statistics."),
]


def _result(sel: float, held: float) -> JobResult:
    scores = {"selection": {"easy": sel + 0.1, "hard": sel - 0.1}, "heldout": {"easy": held + 0.1, "hard": held - 0.1}}
    return JobResult("evaluated", eval=scores, overall={"selection": sel, "heldout": held},
                     per_problem={part: {split: _solved(v) for split, v in splits.items()} for part, splits in scores.items()},
                     weights={"easy": 0.5, "hard": 0.5})


def _solved(score: float, problems: int = 100) -> list[int]:
    """Per-problem scores with this mean: the first round(score * 100) problems solved."""
    ones = round(score * problems)
    return [1] * ones + [0] * (problems - ones)


def _write_curve(run: Path, cid: str, seed: int, slope: float) -> None:
    job = run / "jobs" / cid / str(seed)
    job.mkdir(parents=True)
    rows = [{"step": s, "reward_mean": 0.2 + slope * s, "accuracy": 0.1 + slope * s} for s in range(1, 11)]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def record_run(run: Path) -> None:
    """Four evaluated, reflected candidates on three paired seeds, with curves and commits; c004 was rejected."""
    arch = Archive.open(run, create=True)
    ws = Workspace.init(run)
    for i, (cid, parents, sel, held, principle) in enumerate(RUN):
        if parents:
            source = ws.read_algorithm(parents[0]) + f"\nCHANGE_{cid.upper()} = {i}\n"
            ws.create_candidate(cid, parents[0], source, f"variant {cid}")
        arch.add(Candidate(id=cid, title=f"variant {cid}" if parents else "GRPO", parent_ids=parents,
                           origin="llm" if parents else "seed", tags=["grpo"] if not parents else ["validity_mask"],
                           proposal={"mechanism": f"mechanism of {cid}"}))
        for st in ("implemented", "verified", "training"):
            arch.set_status(cid, st)
        for seed, s, h in zip(SEEDS, sel, held):
            arch.record_result(cid, seed, _result(s, h))
            _write_curve(run, cid, seed, 0.01 * (i + 1))
        arch.set_status(cid, "evaluated")
        arch.update(cid, reflection={"diagnosis": f"diagnosis of {cid}", "evidence": ["reward rose", "kl flat"],
                                     "design_principle": principle, "next_steps": "try more"})
        arch.set_status(cid, "reflected")
    arch.add(Candidate(id="c004", title="imports os", parent_ids=["c003"]))
    arch.set_status("c004", "rejected", "imports os")
    ws.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("run")
    record_run(run)
    path = write_report(run)
    return path, path.read_text()


def test_report_exists_and_names_the_best_candidate(report: tuple[Path, str]) -> None:
    path, text = report
    assert path == path.parent.parent / "report" / "report.md"
    assert "Best by selection: `c003`" in text
    best_table = text.split("## Best candidates")[1].split("###")[0]
    ranks = [line.split("|")[2].strip() for line in best_table.splitlines() if line.startswith(("| 1", "| 2", "| 3"))]
    assert ranks == ["`c003`", "`c001`", "`c002`"]  # selection order; the seed is the baseline, not a rank


def test_paired_difference_to_the_seed_is_reported(report: tuple[Path, str]) -> None:
    _, text = report
    # c001 - seed on held-out Overall: 0.1 on every seed, so the interval collapses to the point.
    assert "| 1 | `c003`" in text
    c001_row = next(line for line in text.splitlines() if line.startswith("| 2 | `c001`"))
    assert "+0.100 [+0.100, +0.100] (n=3)" in c001_row
    c003_row = next(line for line in text.splitlines() if line.startswith("| 1 | `c003`"))
    # c003 - seed = (0.15, 0.12, 0.15): mean 0.14, s = 0.01732, s / sqrt(3) = 0.01; t(2 df, 0.975) = 4.3027.
    assert "+0.140 [+0.097, +0.183] (n=3)" in c003_row.split("|")[6]


def test_the_difference_counting_problem_sampling_is_wider_than_over_seeds_alone(report: tuple[Path, str]) -> None:
    _, text = report
    c001 = text.split("### `c001`")[1].split("###")[0]
    line = next(x for x in c001.split(". ") if "counting the held-out problems as a sample" in x)
    assert "over 3 seeds x 200 problems" in line, line
    mean, lo, hi = (float(x) for x in re.findall(r"[+-]\d\.\d{3}", line)[:3])
    assert mean == pytest.approx(0.1) and lo < 0.1 < hi  # over seeds alone it is the point [+0.100, +0.100]


def test_reflections_principles_and_genealogy_are_in_the_report(report: tuple[Path, str]) -> None:
    _, text = report
    assert "**diagnosis**: diagnosis of c003" in text and "reward rose; kl flat" in text
    principles = text.split("## Principles the reflections converged on")[1]
    first = principles.strip().splitlines()[0]
    assert first.startswith("1. Mask invalid samples") and "2 reflections: `c001`, `c003`" in first
    assert "c004  imports os  [rejected]" in text
    assert "held-out split" in text and "| easy |" in text


def test_diffs_against_the_seed_are_in_the_report(report: tuple[Path, str]) -> None:
    _, text = report
    c003 = text.split("### `c003`")[1].split("### ")[0]
    diff = c003.split("```diff")[1].split("```")[0]
    # c003 descends from c001: against the seed it carries both changes, and nothing of c002's.
    assert "+CHANGE_C001 = 1" in diff and "+CHANGE_C003 = 3" in diff and "CHANGE_C002" not in diff
    assert "--- a/algorithm.py" in diff


def test_plots_are_valid_pngs(report: tuple[Path, str]) -> None:
    path, text = report
    for name in ("genealogy.png", "curves.png"):
        png = path.parent / name
        assert f"]({name})" in text
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 400 and height >= 300


def test_genealogy_tree_shape() -> None:
    cands = [Candidate(id="s"), Candidate(id="a", parent_ids=["s"]), Candidate(id="b", parent_ids=["s"]),
             Candidate(id="c", parent_ids=["a"]), Candidate(id="x", parent_ids=["b", "a"])]
    lines = [line[: line.index(c) + len(c)] for line, c in zip(genealogy_lines(cands), "sacbx")]
    assert lines == ["s", "├── a", "│   └── c", "└── b", "    └── x"]
    assert "(also child of a)" in genealogy_lines(cands)[-1]


def test_principles_group_by_word_overlap_largest_first() -> None:
    def refl(cid: str, text: str) -> Candidate:
        return Candidate(id=cid, reflection={"design_principle": text})

    cands = [refl("a", "Lower the entropy bonus."), refl("b", "Mask invalid samples from statistics."),
             refl("c", "Invalid samples: mask them from the statistics!"), refl("d", ""), Candidate(id="e")]
    groups = converged_principles(cands)
    assert [(g.text, g.ids) for g in groups] == [("Mask invalid samples from statistics.", ["b", "c"]),
                                                 ("Lower the entropy bonus.", ["a"])]


def test_report_of_a_run_with_only_the_seed(tmp_path: Path) -> None:
    arch = Archive.open(tmp_path, create=True)
    arch.add(Candidate(id="seed", title="GRPO", origin="seed"))
    text = write_report(tmp_path).read_text()
    assert "No candidate besides the seed has been evaluated yet." in text
    assert "No metrics.jsonl recorded" in text and not (tmp_path / "report" / "genealogy.png").exists()


def test_report_without_a_repo_says_why_diffs_are_missing(tmp_path: Path) -> None:
    arch = Archive.open(tmp_path, create=True)
    for cid, parents in (("seed", []), ("c001", ["seed"])):
        arch.add(Candidate(id=cid, parent_ids=parents, origin="llm" if parents else "seed"))
        for st in ("implemented", "verified", "training"):
            arch.set_status(cid, st)
        arch.record_result(cid, 0, _result(0.5, 0.5))
        arch.set_status(cid, "evaluated")
    text = write_report(tmp_path).read_text()
    assert "Diff against the seed: unavailable (" in text and "no repo/" in text


def test_importing_report_does_not_load_matplotlib() -> None:
    code = "import sys, core.report; print(any(m.startswith('matplotlib') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"

