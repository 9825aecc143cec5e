"""Paired differences whose interval counts the eval problems as a sample too, not only the seeds.

Why: core.stats' seed intervals answer "would another seed give the same difference *on these
problems*?". A run's eval set is fixed by task_seed, so a difference of +0.05 can be real on these
64 problems per split and still partly the luck of which problems were drawn. The question a reader
of "RL improves held-out Overall" asks is about the task, i.e. about problems not in the set.

Model: the per-problem difference d[s, p] of split j (seed s, problem p) is mu + a_s + b_p + e_sp, seeds
and problems crossed, each a random sample. The variance of the weighted mean over seeds and problems is
sigma_a^2 / n_s + sigma_b^2 / n_p + sigma_e^2 / (n_s n_p) (per split, weighted by w_j^2; seed effects are
shared across splits, so that part is taken from the per-seed Overall). Each piece is estimated without a
model fit, from mean squares:
  V_seed = var_s(Overall_s) / n_s                         ~ sigma_a^2 / n_s + sigma_e^2 / (n_s n_p)
  V_prob = sum_j w_j^2 var_p(mean_s d[., p]) / n_p        ~ sigma_b^2 / n_p + sigma_e^2 / (n_s n_p)
  V_res  = sum_j w_j^2 MS_residual / (n_s n_p)             ~ sigma_e^2 / (n_s n_p)
  V = V_seed + V_prob - V_res, and never below V_seed or V_prob (each is a variance it must cover).
The interval is mean +- t(df) sqrt(V), df by Welch-Satterthwaite over the terms (n_s - 1 for the seed
part, n_p - 1 per split, (n_s - 1)(n_p - 1) per residual), and never narrower than the seed-only t
interval (at 3 seeds Satterthwaite trusts a seed part measured with 2 df too much); with one seed, the
problem part alone.
bench/stats_coverage.py --problems measures its coverage against the seed-only interval on simulated
seeds x problems.

Input: the per-seed JobResult dicts of two candidates evaluated on the same problems (JobResult.per_problem,
JobResult.weights). None when they cannot be paired that way (older results, another eval set).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.stats import DEFAULT_INTERVAL, interval_text, paired_difference, t_quantile

INTERVAL = "t-seeds+problems"


def paired_with_problems(a: Mapping[str, Any], b: Mapping[str, Any], part: str, alpha: float = 0.05
                         ) -> dict[str, Any] | None:
    """Mean of Overall(a) - Overall(b) over common seeds and its interval over seeds and problems.

    a, b: seed -> result dict. Returns {mean, lo, hi, n, problems, seed_se, problem_se, interval}, or None."""
    diffs, weights = _paired_arrays(a, b, part)
    if not diffs:
        return None
    n_s = next(iter(diffs.values())).shape[0]
    overall_s = sum(w * diffs[j].mean(axis=1) for j, w in weights.items())  # [n_s]
    # (variance term, its degrees of freedom): the seed part, each split's problem part and residual
    seed = [(float(overall_s.var(ddof=1)) / n_s, n_s - 1)] if n_s > 1 else []
    prob = [(w**2 * _problem_var(diffs[j]), diffs[j].shape[1] - 1) for j, w in weights.items()]
    res = [(w**2 * _residual_var(diffs[j]), (n_s - 1) * (diffs[j].shape[1] - 1)) for j, w in weights.items()]
    v_seed, v_prob, v_res = (sum(v for v, _ in terms) for terms in (seed, prob, res))
    var, terms = v_seed + v_prob - v_res, seed + prob + res
    for floor, its_terms in ((v_seed, seed), (v_prob, prob)):
        if floor > var * (1 + 1e-9):  # the estimate fell below a part it must cover: use that part
            var, terms = floor, its_terms
    mean = float(overall_s.mean())
    df = _satterthwaite(var, terms)
    half = t_quantile(df, 1 - alpha / 2) * var**0.5 if var > 0 else 0.0
    if n_s > 1:  # never narrower than the seed-only interval: it counts a subset of the same noise
        half = max(half, t_quantile(n_s - 1, 1 - alpha / 2) * v_seed**0.5)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n_s,
            "problems": int(sum(d.shape[1] for d in diffs.values())), "seed_se": v_seed**0.5,
            "problem_se": v_prob**0.5, "df": df, "interval": INTERVAL}


def _satterthwaite(var: float, terms: list[tuple[float, int]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent mean-square terms (a term's sign does
    not matter: its square enters). Few seeds and a large seed part give about n_s - 1; a problem part that
    dominates gives many more, so the interval is not inflated by t(2) for noise measured on hundreds."""
    denom = sum(v**2 / df for v, df in terms if df > 0 and v > 0)
    return var**2 / denom if denom > 0 else float("inf")


def _paired_arrays(a: Mapping[str, Any], b: Mapping[str, Any], part: str):
    """({split: d [n_s, n_p]}, {split: normalised weight}) over the seeds both evaluated on the same problems;
    ({}, {}) when there are none."""
    import numpy as np

    pairs = {s: (_scores(a[s], part), _scores(b[s], part)) for s in a if s in b}
    pairs = {s: (sa, sb) for s, (sa, sb) in pairs.items() if sa is not None and sb is not None}
    if not pairs:
        return {}, {}
    first_seed = next(iter(pairs))
    first = pairs[first_seed][0]
    given = a[first_seed].get("weights")
    raw = {j: float(w) for j, w in (given if isinstance(given, dict) else {}).items()
           if j in first and isinstance(w, (int, float)) and first[j]}
    total = sum(raw.values())
    if total <= 0:
        return {}, {}
    if any(j not in sa or j not in sb or not len(sa[j]) == len(sb[j]) == len(first[j])
           for sa, sb in pairs.values() for j in raw):
        return {}, {}  # another eval set, or a split missing: these results cannot be paired per problem
    diffs = {j: np.asarray([sa[j] for sa, _ in pairs.values()], dtype=np.float64)
             - np.asarray([sb[j] for _, sb in pairs.values()], dtype=np.float64) for j in raw}
    return diffs, {j: w / total for j, w in raw.items()}


def _scores(result: Any, part: str) -> dict[str, list[float]] | None:
    """An evaluated result's per-problem scores of `part`; None when it has none, or not as lists of numbers
    (a hand-edited archive must not break a report)."""
    if not isinstance(result, Mapping) or result.get("outcome") != "evaluated":
        return None
    per_problem = (result.get("per_problem") or {}).get(part)
    if not isinstance(per_problem, dict) or not per_problem:
        return None
    numbers = all(isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                  for v in per_problem.values())
    return per_problem if numbers else None


def _problem_var(d) -> float:
    """var over problems of the seed-mean difference, / n_p: the problem part (with its share of residual)."""
    n_p = d.shape[1]
    return float(d.mean(axis=0).var(ddof=1)) / n_p if n_p > 1 else 0.0


def _residual_var(d) -> float:
    """The two-way residual mean square / (n_s n_p): counted in both parts above, so taken out once."""
    n_s, n_p = d.shape
    if n_s < 2 or n_p < 2:
        return 0.0
    r = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + d.mean()
    return float((r**2).sum()) / ((n_s - 1) * (n_p - 1)) / (n_s * n_p)


def describe(d: dict[str, Any]) -> str:
    """'+0.034 [-0.010, +0.078] over 3 seeds x 384 problems' (no problems for a seed-only difference)."""
    over = f"{d['n']} seed" + ("s" if d["n"] != 1 else "") + (f" x {d['problems']} problems" if "problems" in d else "")
    return f"{interval_text(d, '+.3f')} over {over}"


def warm_start_models(results: Mapping[str, Any]) -> set[str]:
    """The warm-start weights (sha256) that a candidate's evaluated seeds were trained from, where recorded.
    More than one means the seeds ran on different installs or machines and do not share a baseline."""
    return {sha for sha in map(_warm_start_sha, results.values()) if sha is not None}


def seeds_on_other_warm_starts(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Seeds two candidates both evaluated (seed -> result dicts) whose recorded warm-start weights differ.
    A pair is the same seed from the same initial model; from two models (another install, another CPU
    kernel path built another SFT) the difference mixes the models' gap into the candidates', so such a
    seed is no pair. A seed without a record (a result from before the sha was kept) is not judged."""
    shas = {seed: (_warm_start_sha(r), _warm_start_sha(b.get(seed))) for seed, r in a.items()}
    return [seed for seed, (sa, sb) in shas.items() if sa is not None and sb is not None and sa != sb]


def _warm_start_sha(result: Any) -> str | None:
    if not (isinstance(result, Mapping) and result.get("outcome") == "evaluated"):
        return None
    sha = (result.get("extra") or {}).get("warm_start_sha256")
    return sha if isinstance(sha, str) else None


def gain_over_warm_start(results: Mapping[str, Any], part: str, method: str = DEFAULT_INTERVAL
                         ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The RL gain, Overall after training - Overall of the warm start, over a candidate's evaluated seeds:
    (seed-only paired difference, the same counting problems too, or None). None without a warm start
    (recipe tiny records it in each result's extra["warm_start"]; it is the same model for every seed).
    `method` is the seed-only interval's (the run's [stats] interval); the one with problems is always a
    Satterthwaite t interval (a closed form over the two crossed samples, seeds and problems)."""
    runs = {s: r for s, r in results.items() if isinstance(r, Mapping) and r.get("outcome") == "evaluated"
            and isinstance((r.get("extra") or {}).get("warm_start"), Mapping)
            and part in (r.get("overall") or {}) and part in (r["extra"]["warm_start"].get("overall") or {})}
    if not runs:
        return None
    warm = {s: r["extra"]["warm_start"] for s, r in runs.items()}
    seeds_only = paired_difference({s: r["overall"][part] for s, r in runs.items()},
                                   {s: w["overall"][part] for s, w in warm.items()}, method=method)
    return seeds_only, paired_with_problems(runs, warm, part)
