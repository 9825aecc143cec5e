"""core.eval_noise: the seeds x problems interval, against hand-computed mean squares."""

from __future__ import annotations

import pytest
from scipy.stats import t as student_t

from core.eval_noise import INTERVAL, paired_with_problems
from core.stats import paired_difference


def result(per_split: dict[str, list[float]], weights: dict[str, float], part: str = "heldout") -> dict:
    return {"outcome": "evaluated", "per_problem": {part: per_split}, "weights": weights}


def test_two_seeds_three_problems_by_hand() -> None:
    # d[s, p] = a - b: seed 0 [1, 0, 0], seed 1 [1, 0, -1]
    a = {"0": result({"x": [1, 1, 0]}, {"x": 1.0}), "1": result({"x": [1, 0, 0]}, {"x": 1.0})}
    b = {"0": result({"x": [0, 1, 0]}, {"x": 1.0}), "1": result({"x": [0, 0, 1]}, {"x": 1.0})}
    d = paired_with_problems(a, b, "heldout")
    # Overall_s = [1/3, 0]: V_seed = var([1/3, 0]) / 2 = 1/36. Seed means per problem [1, 0, -1/2]:
    # V_prob = (25 + 1 + 16) / 36 / 2 / 3 = 7/36. Residuals +-[1/6, 1/6, -1/3]: MS = (1/3) / 2, V_res = 1/36.
    assert d["mean"] == pytest.approx(1 / 6)
    assert d["seed_se"] == pytest.approx((1 / 36) ** 0.5) and d["problem_se"] == pytest.approx((7 / 36) ** 0.5)
    # Satterthwaite: V^2 / sum(term^2 / df) with terms (1/36, 1 df), (7/36, 2), (1/36, (2-1)(3-1) = 2)
    df = (7 / 36) ** 2 / ((1 / 36) ** 2 + (7 / 36) ** 2 / 2 + (1 / 36) ** 2 / 2)
    assert d["df"] == pytest.approx(49 / 26) == pytest.approx(df)
    two_way = student_t.ppf(0.975, df) * (1 / 36 + 7 / 36 - 1 / 36) ** 0.5
    seed_only = student_t.ppf(0.975, 1) * (1 / 36) ** 0.5  # never narrower than this; here it is the wider
    assert seed_only > two_way
    assert (d["lo"], d["hi"]) == pytest.approx((1 / 6 - seed_only, 1 / 6 + seed_only))
    assert (d["n"], d["problems"], d["interval"]) == (2, 3, INTERVAL)


def test_splits_are_weighted_as_overall_is() -> None:
    """Two splits, weights 3:1 (normalised to 0.75, 0.25); one seed, so the problem part alone."""
    w = {"x": 3.0, "y": 1.0}
    a = {"0": result({"x": [1, 1], "y": [1, 0, 1]}, w)}
    b = {"0": result({"x": [0, 1], "y": [0, 0, 0]}, w)}
    d = paired_with_problems(a, b, "heldout")
    assert d["mean"] == pytest.approx(0.75 * 0.5 + 0.25 * 2 / 3)
    vx, vy = 0.75**2 * 0.5 / 2, 0.25**2 * (1 / 3) / 3  # var_p(d): x [1, 0] -> 0.5; y [1, 0, 1] -> 1/3
    assert d["problem_se"] == pytest.approx((vx + vy) ** 0.5) and d["seed_se"] == 0.0
    df = (vx + vy) ** 2 / (vx**2 / 1 + vy**2 / 2)  # n_p - 1 per split
    assert d["hi"] - d["mean"] == pytest.approx(student_t.ppf(0.975, df) * (vx + vy) ** 0.5)


def test_with_many_problems_the_two_way_interval_is_the_wider() -> None:
    """Seeds nearly agree, problems differ: the two-way half-width (Satterthwaite df) binds, not the seed one."""
    a = {s: result({"x": [1, 0] * 20 + [1 if s == "0" else 0]}, {"x": 1.0}) for s in "012"}
    b = {s: result({"x": [0, 0] * 20 + [0]}, {"x": 1.0}) for s in "012"}
    d = paired_with_problems(a, b, "heldout")
    seed_only = student_t.ppf(0.975, 2) * d["seed_se"]
    assert d["hi"] - d["mean"] > seed_only > 0 and d["df"] > 10


def test_no_spread_anywhere_gives_the_point() -> None:
    a = {s: result({"x": [1, 1, 0]}, {"x": 1.0}) for s in "012"}
    b = {s: result({"x": [0, 0, -1]}, {"x": 1.0}) for s in "012"}
    d = paired_with_problems(a, b, "heldout")
    assert d["lo"] == d["mean"] == d["hi"] == pytest.approx(1.0)


def test_problem_noise_widens_the_seed_interval() -> None:
    """Seeds agree exactly, problems do not: the seed-only interval would be a point, this one is not."""
    a = {s: result({"x": [1, 0, 1, 1]}, {"x": 1.0}) for s in "012"}
    b = {s: result({"x": [0, 0, 1, 0]}, {"x": 1.0}) for s in "012"}
    d = paired_with_problems(a, b, "heldout")
    assert d["seed_se"] == 0.0 and d["problem_se"] > 0 and d["lo"] < d["mean"] < d["hi"]


@pytest.mark.parametrize("b", [
    {"0": result({"x": [0, 1]}, {"x": 1.0})},  # another eval set (length differs)
    {"0": result({"y": [0, 1, 0]}, {"y": 1.0})},  # another split
    {"0": {"outcome": "evaluated", "eval": {"heldout": {"x": 0.3}}}},  # an older result: no per-problem scores
    {"0": result({"x": [0, "1", 0]}, {"x": 1.0})},  # a hand edit
    {"0": {"outcome": "crashed"}},
    {"1": result({"x": [0, 1, 0]}, {"x": 1.0})},  # no common seed
])
def test_what_cannot_be_paired_per_problem_gives_none(b) -> None:
    assert paired_with_problems({"0": result({"x": [1, 1, 0]}, {"x": 1.0})}, b, "heldout") is None


def test_the_gain_over_the_warm_start_pairs_every_seed_with_the_one_warm_start() -> None:
    from core.eval_noise import gain_over_warm_start

    warm = {"overall": {"heldout": 0.25}, **result({"x": [0, 1, 0, 0]}, {"x": 1.0})}
    runs = {s: {**result({"x": xs}, {"x": 1.0}), "overall": {"heldout": sum(xs) / 4}, "extra": {"warm_start": warm}}
            for s, xs in (("0", [1, 1, 0, 0]), ("1", [1, 1, 1, 0]), ("2", [0, 1, 1, 0]))}
    runs["3"] = {"outcome": "crashed", "extra": {"warm_start": warm}}  # no score: left out
    seeds_only, with_problems = gain_over_warm_start(runs, "heldout")
    assert seeds_only["n"] == with_problems["n"] == 3
    assert seeds_only["mean"] == pytest.approx(with_problems["mean"]) == pytest.approx((2 + 3 + 2) / 12 - 0.25)
    assert with_problems["hi"] - with_problems["lo"] > seeds_only["hi"] - seeds_only["lo"]
    assert gain_over_warm_start({"0": {"outcome": "evaluated", "overall": {"heldout": 0.5}}}, "heldout") is None
    boot, _ = gain_over_warm_start(runs, "heldout", method="bootstrap")  # the run's [stats] interval
    oracle = paired_difference({"0": 0.5, "1": 0.75, "2": 0.5}, {"0": 0.25, "1": 0.25, "2": 0.25}, method="bootstrap")
    assert boot["interval"] == "bootstrap" and (boot["lo"], boot["hi"]) == pytest.approx((oracle["lo"], oracle["hi"]))


def _tiny_runs(shas: list[str | None]) -> dict:
    """Three evaluated seeds of one candidate, each trained from the warm start named by its sha (None: unrecorded)."""
    warm = {"overall": {"heldout": 0.25}, **result({"x": [0, 1, 0, 0]}, {"x": 1.0})}
    runs = {}
    for s, (xs, sha) in enumerate(zip(([1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0]), shas)):
        extra = {"warm_start": warm} | ({"warm_start_sha256": sha} if sha else {})
        runs[str(s)] = {**result({"x": xs}, {"x": 1.0}), "overall": {"heldout": sum(xs) / 4}, "extra": extra}
    return runs


def test_seeds_trained_from_different_warm_starts_get_no_gain_line() -> None:
    from core.cli import gain_lines
    from core.eval_noise import warm_start_models

    mixed = _tiny_runs(["a" * 64, "a" * 64, "b" * 64])
    assert warm_start_models(mixed) == {"a" * 64, "b" * 64}
    (line,) = gain_lines(mixed)
    assert "2 different warm starts" in line and "a" * 12 in line and "b" * 12 in line and "+0." not in line


def test_one_warm_start_or_none_recorded_gives_the_gain() -> None:
    from core.cli import gain_lines

    for shas in (["a" * 64] * 3, [None] * 3, ["a" * 64, None, "a" * 64]):
        lines = gain_lines(_tiny_runs(shas))
        assert lines[0].startswith("RL gain over the warm start, held-out Overall: +0.333"), (shas, lines)
