"""Seed statistics: confidence intervals and paired differences over seeds.

Every candidate is trained with S seeds that are paired with its parent's and the
baseline's seeds (same seed = same data order and init), so the honest comparison is
the per-seed difference, not two independent means.

Two interval methods (`method=`; a run picks one with `[stats] interval` in run.toml):

* "t" (the default): mean +- t(n-1) * s / sqrt(n), Student's interval.
* "bootstrap": the percentile bootstrap of the mean.

The default is "t" because runs have 3 to 6 seeds. A percentile bootstrap interval cannot leave
the range of the data: at n = 3 its 95% interval is [min, max], which holds the true mean about
75% of the time. Measured by bench/stats_coverage.py (bench/RESULTS.md), normal seeds: 75% at
n = 3, 85% at n = 6 and 91% at n = 12, against 94-95% for the t interval. The engine's "better / worse" verdicts
rest on these intervals, and a 25% miss rate would make "better" a coin toss for small gains.
Under heavy skew (lognormal seeds) neither is exact, and t stays the closer: 82-85% against 64-82%.

With n=1 there is no spread and the interval collapses to the point (the TUI shows n next to it,
so this is not hidden).

numpy (and scipy.special for the t quantile) are imported when first needed: this module is on the
TUI's import path, and they cost ~0.1-0.3 s of start-up that a TUI which only shows stored
metrics never needs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from core.errors import PoiseError

if TYPE_CHECKING:
    import numpy as np

Seed = int | str
PARTS = ("selection", "heldout")


class StatsError(PoiseError):
    """Statistics asked of data that cannot support them (no seeds, no common seeds)."""


def _seed_key(seed: Seed) -> str:
    return str(seed)


def _seed_order(key: str) -> tuple[int, int | str]:
    # Numeric seeds sort numerically ("2" before "10"); anything else after them, by name.
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def _normalise(per_seed: Mapping[Seed, float]) -> dict[str, float]:
    """Seeds as strings (JSON keys), in seed order, values as plain floats."""
    keyed = {_seed_key(k): float(v) for k, v in per_seed.items()}
    return {k: keyed[k] for k in sorted(keyed, key=_seed_order)}


INTERVALS = ("t", "bootstrap")
DEFAULT_INTERVAL = "t"  # the default of run.toml's [stats] interval


def summarize(
    per_seed: Mapping[Seed, float], n_boot: int = 2000, alpha: float = 0.05, rng_seed: int = 0,
    method: str = DEFAULT_INTERVAL,
) -> dict[str, Any]:
    """Mean and (1 - alpha) interval over seeds, by `method` (module docstring).

    Returns {mean, lo, hi, n, per_seed, interval}; per_seed has string keys in seed order.
    Deterministic (the bootstrap for a given rng_seed), so re-reading an archive shows the same numbers.
    """
    if method not in INTERVALS:
        raise StatsError(f"unknown interval method {method!r}; use one of {', '.join(INTERVALS)}")
    values = _normalise(per_seed)
    if not values:
        raise StatsError("cannot summarize zero seeds; record at least one evaluated seed first")
    import numpy as np

    arr = np.fromiter(values.values(), dtype=np.float64)  # [n]
    mean = float(arr.mean())
    if arr.size == 1 or np.all(arr == arr[0]):
        lo, hi = mean, mean  # no spread: return the point exactly (no float noise)
    elif method == "t":
        lo, hi = _t_interval(arr, mean, alpha)
    else:
        lo, hi = _bootstrap_interval(arr, mean, n_boot, alpha, rng_seed)
    return {"mean": mean, "lo": lo, "hi": hi, "n": int(arr.size), "per_seed": values, "interval": method}


def interval_text(m: Mapping[str, Any], fmt: str = ".3f", scale: float = 1.0, n_suffix: str = "") -> str:
    """'0.512 [0.498, 0.530]' plus n_suffix formatted with n (e.g. ' (n={n})'). One seed has no interval (its
    lo = hi is the point, not a certainty), so it reads '0.512 (n=1)' instead of a zero-width bracket."""
    mean = f"{m['mean'] * scale:{fmt}}"
    if m.get("n", 2) < 2 or "lo" not in m or "hi" not in m:
        return f"{mean} (n={m['n']})" if "n" in m else mean
    suffix = n_suffix.format(n=m["n"]) if n_suffix and "n" in m else ""
    return f"{mean} [{m['lo'] * scale:{fmt}}, {m['hi'] * scale:{fmt}}]{suffix}"


def t_quantile(df: float, q: float) -> float:
    """Student's t quantile (df may be fractional, as Welch-Satterthwaite gives)."""
    from scipy.special import stdtrit  # without importing all of scipy.stats

    return float(stdtrit(df, q))


def _t_interval(arr: np.ndarray, mean: float, alpha: float) -> tuple[float, float]:
    half = t_quantile(arr.size - 1, 1 - alpha / 2) * float(arr.std(ddof=1)) / arr.size**0.5
    return mean - half, mean + half


def _bootstrap_interval(arr: np.ndarray, mean: float, n_boot: int, alpha: float, rng_seed: int) -> tuple[float, float]:
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))  # [n_boot, n]
    boot_means = arr[idx].mean(axis=1)  # [n_boot]
    lo, hi = np.quantile(boot_means, [alpha / 2, 1 - alpha / 2])
    # The percentile interval of the mean contains the sample mean except for float
    # rounding in the resampled sums; clamp so a report never shows mean outside [lo, hi].
    return min(float(lo), mean), max(float(hi), mean)


def paired_difference(
    a: Mapping[Seed, float], b: Mapping[Seed, float], n_boot: int = 2000, alpha: float = 0.05, rng_seed: int = 0,
    method: str = DEFAULT_INTERVAL, exclude: Collection[Seed] = (),
) -> dict[str, Any]:
    """Mean of a[s] - b[s] over the seeds both have, with its interval (summarize's `method`).

    Returns {mean, lo, hi, n, seeds, interval}. Seeds only one side has are ignored: an
    unpaired seed would mix seed noise into the difference. Seeds in `exclude` are no pair either
    (core.eval_noise.seeds_on_other_warm_starts: trained from two different warm starts).
    """
    na, nb = _normalise(a), _normalise(b)
    skip = {_seed_key(s) for s in exclude}
    common = [k for k in na if k in nb and k not in skip]
    if not common:
        raise StatsError(
            f"no common seeds to pair (a has {sorted(na) or 'none'}, b has {sorted(nb) or 'none'}); "
            "rerun one candidate on the other's seeds"
        )
    s = summarize({k: na[k] - nb[k] for k in common}, n_boot=n_boot, alpha=alpha, rng_seed=rng_seed, method=method)
    return {"mean": s["mean"], "lo": s["lo"], "hi": s["hi"], "n": s["n"], "seeds": common, "interval": method}


def paired_metrics(a: Mapping[str, Any], b: Mapping[str, Any], exclude: Collection[Seed] = ()) -> dict[str, Any]:
    """paired_difference of two stored metrics ({per_seed, interval, ...}) by the interval method they were
    stored with, so a comparison uses the run's [stats] interval like the metrics it compares. Seeds in
    `exclude` are left out (paired_difference)."""
    return paired_difference(a.get("per_seed") or {}, b.get("per_seed") or {}, method=a.get("interval", DEFAULT_INTERVAL),
                             exclude=exclude)


def _as_dict(result: Any) -> dict[str, Any]:
    return asdict(result) if is_dataclass(result) else dict(result)


def _collect(results: Mapping[Seed, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """values[part][split or "overall"][seed] from the seeds whose outcome is evaluated."""
    values: dict[str, dict[str, dict[str, float]]] = {}
    for seed, raw in results.items():
        res = _as_dict(raw)
        if res.get("outcome") != "evaluated":
            continue  # diverged/crashed seeds have no scores; they show in status, not in means
        for part, splits in (res.get("eval") or {}).items():
            for split, score in splits.items():
                values.setdefault(part, {}).setdefault(split, {})[_seed_key(seed)] = float(score)
        for part, score in (res.get("overall") or {}).items():
            values.setdefault(part, {}).setdefault("overall", {})[_seed_key(seed)] = float(score)
    return values


def aggregate_results(results: Mapping[Seed, Any], method: str = DEFAULT_INTERVAL) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics of a candidate from its per-seed JobResults (dicts or JobResult objects).

    Returns {part: {split or "overall": summarize(..., method=method)}} over evaluated seeds only;
    {} when no seed was evaluated.
    """
    values = _collect(results)
    return {
        part: {split: summarize(per_seed, method=method) for split, per_seed in sorted(splits.items())}
        for part, splits in values.items()
    }
