"""core.stats against hand-computed cases and properties."""

from __future__ import annotations

import math
import random

import pytest

from core.jobspec import JobResult
from core.stats import StatsError, aggregate_results, paired_difference, summarize


def test_summarize_two_seeds_bootstrap_hand_computed() -> None:
    # Resamples of {0.2, 0.6}: means 0.2 (p=1/4), 0.4 (p=1/2), 0.6 (p=1/4);
    # the 2.5% and 97.5% quantiles are therefore the two extremes.
    s = summarize({0: 0.2, 1: 0.6}, method="bootstrap")
    assert s["mean"] == pytest.approx(0.4)
    assert s["lo"] == pytest.approx(0.2)
    assert s["hi"] == pytest.approx(0.6)
    assert s["n"] == 2 and s["interval"] == "bootstrap"
    assert s["per_seed"] == {"0": 0.2, "1": 0.6}


@pytest.mark.parametrize(("data", "half"), [
    # {0.2, 0.6}: s = 0.2 * sqrt(2), s / sqrt(2) = 0.2; t(1 df, 0.975) = 12.7062 (printed tables).
    ({0: 0.2, 1: 0.6}, 12.7062 * 0.2),
    # {0.4, 0.5, 0.6}: s = 0.1, s / sqrt(3) = 0.057735; t(2 df, 0.975) = 4.3027.
    ({0: 0.4, 1: 0.5, 2: 0.6}, 4.3027 * 0.1 / math.sqrt(3)),
])
def test_summarize_t_interval_hand_computed(data: dict, half: float) -> None:
    s = summarize(data)  # "t" is the default
    mean = sum(data.values()) / len(data)
    assert s["interval"] == "t" and s["mean"] == pytest.approx(mean)
    assert s["lo"] == pytest.approx(mean - half, abs=1e-4) and s["hi"] == pytest.approx(mean + half, abs=1e-4)


@pytest.mark.parametrize(("method", "low", "high"), [("t", 0.93, 0.97), ("bootstrap", 0.70, 0.80)])
def test_coverage_of_the_mean_at_three_seeds(method: str, low: float, high: float) -> None:
    """800 runs of 3 normal seeds (fixed RNG): the t interval holds the true mean ~95% of the time; the
    percentile bootstrap, which cannot leave [min, max], ~75% (1 - 2 * (1/2)^3). Binomial s.e. ~0.008 / 0.015."""
    rng = random.Random(7)
    hits = sum(
        (s := summarize({i: rng.gauss(0.5, 0.02) for i in range(3)}, method=method, n_boot=400))["lo"] <= 0.5 <= s["hi"]
        for _ in range(800)
    )
    assert low <= hits / 800 <= high


def test_summarize_rejects_an_unknown_interval_method() -> None:
    with pytest.raises(StatsError, match="unknown interval method 'bca'"):
        summarize({0: 0.1, 1: 0.2}, method="bca")


def test_summarize_one_seed_collapses_to_the_point() -> None:
    s = summarize({3: 0.7})
    assert (s["mean"], s["lo"], s["hi"], s["n"]) == (0.7, 0.7, 0.7, 1)


def test_summarize_sorts_seeds_numerically_and_is_deterministic() -> None:
    data = {10: 0.1, 2: 0.5, "1": 0.3, 0: 0.9}
    s = summarize(data)
    assert list(s["per_seed"]) == ["0", "1", "2", "10"]
    assert summarize(data) == s
    assert summarize(data, rng_seed=1)["mean"] == s["mean"]


def test_summarize_interval_narrows_with_more_seeds() -> None:
    rng = random.Random(0)
    few = {i: rng.gauss(0.5, 0.1) for i in range(4)}
    many = {i: rng.gauss(0.5, 0.1) for i in range(64)}
    width = lambda s: s["hi"] - s["lo"]
    assert width(summarize(many)) < width(summarize(few))


def test_summarize_rejects_no_seeds() -> None:
    with pytest.raises(StatsError, match="zero seeds"):
        summarize({})


@pytest.mark.parametrize("trial", range(25))
def test_property_interval_contains_mean(trial: int) -> None:
    rng = random.Random(trial)
    n = rng.randint(1, 9)
    data = {s: rng.choice([rng.random(), 0.0, 1.0]) for s in range(n)}
    s = summarize(data, n_boot=300, rng_seed=trial)
    assert s["lo"] <= s["mean"] <= s["hi"]
    assert s["mean"] == pytest.approx(sum(data.values()) / n)


def test_paired_difference_uses_common_seeds_only() -> None:
    a = {0: 0.5, 1: 0.7, 2: 0.9}
    b = {1: 0.6, 2: 0.6, 5: 0.0}
    d = paired_difference(a, b)
    assert d["seeds"] == ["1", "2"]
    assert d["n"] == 2
    assert d["mean"] == pytest.approx((0.1 + 0.3) / 2)
    # differences {0.1, 0.3}: s / sqrt(2) = 0.1, t(1 df, 0.975) = 12.7062
    assert d["lo"] == pytest.approx(0.2 - 1.27062, abs=1e-4) and d["hi"] == pytest.approx(0.2 + 1.27062, abs=1e-4)
    boot = paired_difference(a, b, method="bootstrap")
    assert (boot["lo"], boot["hi"], boot["interval"]) == (pytest.approx(0.1), pytest.approx(0.3), "bootstrap")


@pytest.mark.parametrize("trial", range(10))
def test_property_identical_inputs_give_exact_zero(trial: int) -> None:
    rng = random.Random(100 + trial)
    a = {s: rng.random() for s in range(rng.randint(1, 8))}
    d = paired_difference(a, dict(a))
    assert (d["mean"], d["lo"], d["hi"]) == (0.0, 0.0, 0.0)


def test_paired_difference_without_common_seeds_is_an_error() -> None:
    with pytest.raises(StatsError, match="no common seeds"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_aggregate_results_skips_failed_seeds_and_accepts_objects() -> None:
    results = {
        "0": {"outcome": "evaluated", "eval": {"selection": {"easy": 0.5, "hard": 0.1}}, "overall": {"selection": 0.3}},
        1: JobResult(outcome="evaluated", eval={"selection": {"easy": 0.7, "hard": 0.3}, "heldout": {"easy": 0.6}},
                     overall={"selection": 0.5, "heldout": 0.6}),
        "2": {"outcome": "diverged", "reason": "kl", "eval": {"selection": {"easy": 0.0}}},
    }
    m = aggregate_results(results)
    assert set(m) == {"selection", "heldout"}
    assert m["selection"]["easy"]["mean"] == pytest.approx(0.6)
    assert m["selection"]["easy"]["per_seed"] == {"0": 0.5, "1": 0.7}
    assert m["selection"]["overall"]["mean"] == pytest.approx(0.4)
    assert m["heldout"]["easy"] == {"mean": 0.6, "lo": 0.6, "hi": 0.6, "n": 1, "per_seed": {"1": 0.6}, "interval": "t"}
    assert math.isclose(m["selection"]["hard"]["mean"], 0.2)


def test_aggregate_results_of_only_failures_is_empty() -> None:
    assert aggregate_results({0: {"outcome": "crashed", "reason": "boom"}}) == {}


def test_one_seed_has_no_interval_in_text() -> None:
    """One seed: lo = hi is the point, not a certainty; the text says n=1 instead of a zero-width bracket."""
    from core.stats import interval_text

    one = summarize({0: 0.25})
    assert (one["lo"], one["hi"]) == (0.25, 0.25)
    assert interval_text(one) == "0.250 (n=1)"
    three = summarize({0: 0.2, 1: 0.3, 2: 0.4})
    assert interval_text(three) == f"0.300 [{three['lo']:.3f}, {three['hi']:.3f}]" and three["lo"] < 0.3
    assert interval_text(three, "+.1f", 100) == f"+30.0 [{three['lo'] * 100:+.1f}, {three['hi'] * 100:+.1f}]"
