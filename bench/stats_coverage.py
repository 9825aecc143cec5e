"""Coverage of core.stats' seed intervals: how often the 95% interval holds the true mean.

    .venv/bin/python bench/stats_coverage.py [--trials 4000]

Seeds are drawn from a known distribution, summarize() is called exactly as the archive calls it, and
the fraction of intervals that contain the distribution's mean is printed per method and seed count.
Distributions: normal (seed noise of a score), and a skewed one (lognormal, sigma 1) as a hard case.
The percentile bootstrap cannot leave the data's range, which at n = 3 is why it misses so often.

--problems: paired differences of two candidates on simulated seeds x eval problems (binary scores, recipe
tiny's shape: 6 splits x 64 problems, its weights), where the target is the difference on the task (new
problems and new seeds), not on one fixed eval set. Compared: the seed-only t interval of the per-seed
Overall difference (core.stats, what the archive stores) and core.eval_noise's seeds x problems interval.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.eval_noise import paired_with_problems
from core.stats import INTERVALS, paired_difference, summarize

DISTRIBUTIONS = {
    "normal": (lambda rng, n: rng.normal(0.5, 0.02, n), 0.5),
    "lognormal": (lambda rng, n: rng.lognormal(0.0, 1.0, n), float(np.exp(0.5))),
}


def coverage(draw, true_mean: float, n: int, method: str, trials: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for t in range(trials):
        s = summarize(dict(enumerate(draw(rng, n))), method=method, rng_seed=t)
        hits += s["lo"] <= true_mean <= s["hi"]
    return hits / trials


# Recipe tiny's Overall weights and eval size; per-problem logits of the baseline's solve rate; the
# candidate's gain varies by problem (GAIN_SD) and each training seed shifts a model's logits (SEED_SD).
WEIGHTS = {"mul": 0.2, "mixed": 0.2, "chain": 0.15, "add1": 0.15, "add2": 0.15, "sub": 0.15}
PROBLEMS, BASE_SD, GAIN, GAIN_SD, SEED_SD = 64, 1.5, 0.25, 0.6, 0.15
SHARED = (0.0, 0.8, 0.95)  # from independent answers per training to nearly the same answers


def _solve_prob(base, gain, seed_shift):
    return 1.0 / (1.0 + np.exp(-(base + gain + seed_shift)))


def true_gain(rng, draws: int = 400_000) -> float:
    """E over problems and seeds of P(candidate solves) - P(baseline solves), by Monte Carlo."""
    base, gain = rng.normal(0, BASE_SD, draws), rng.normal(GAIN, GAIN_SD, draws)
    sa, sb = rng.normal(0, SEED_SD, draws), rng.normal(0, SEED_SD, draws)
    return float((_solve_prob(base, gain, sa) - _solve_prob(base, 0, sb)).mean())


def simulated_pair(rng, n_seeds: int, shared: float) -> tuple[dict, dict]:
    """Results of a candidate and a baseline on one freshly drawn eval set, paired over seeds. `shared`: the
    chance that a (model, problem) outcome reuses the problem's one uniform draw instead of a fresh one, i.e.
    how alike two trainings' answers to the same problem are (greedy decoding of models from one warm start)."""
    sets = {j: (rng.normal(0, BASE_SD, PROBLEMS), rng.normal(GAIN, GAIN_SD, PROBLEMS), rng.random(PROBLEMS))
            for j in WEIGHTS}
    a, b = {}, {}
    for s in range(n_seeds):
        shifts = rng.normal(0, SEED_SD, 2)
        per = ({}, {})
        for j, (base, gain, u) in sets.items():
            for k, g in enumerate((gain, 0.0)):
                draw = np.where(rng.random(PROBLEMS) < shared, u, rng.random(PROBLEMS))
                per[k][j] = (draw < _solve_prob(base, g, shifts[k])).astype(int).tolist()
        for out, scores in zip((a, b), per):
            overall = sum(w * np.mean(scores[j]) for j, w in WEIGHTS.items())
            out[str(s)] = {"outcome": "evaluated", "per_problem": {"heldout": scores}, "weights": WEIGHTS,
                           "overall": overall}
    return a, b


def problem_coverage(n_seeds: int, shared: float, trials: int, seed: int) -> tuple[float, float, float, float]:
    """(seed-only coverage, seeds x problems coverage, their mean widths) of the task-level gain."""
    rng = np.random.default_rng(seed)
    truth = true_gain(np.random.default_rng(seed + 1000))
    hits_t = hits_p = width_t = width_p = 0.0
    for _ in range(trials):
        a, b = simulated_pair(rng, n_seeds, shared)
        t = paired_difference({s: r["overall"] for s, r in a.items()}, {s: r["overall"] for s, r in b.items()})
        p = paired_with_problems(a, b, "heldout")
        hits_t += t["lo"] <= truth <= t["hi"]
        hits_p += p["lo"] <= truth <= p["hi"]
        width_t += t["hi"] - t["lo"]
        width_p += p["hi"] - p["lo"]
    return hits_t / trials, hits_p / trials, width_t / trials, width_p / trials


def main_problems(trials: int, ns: list[int]) -> None:
    print(f"task-level gain, {len(WEIGHTS)} splits x {PROBLEMS} problems, {trials} trials per cell: "
          "coverage (mean width)")
    for shared in SHARED:
        for n in ns:
            ct, cp, wt, wp = problem_coverage(n, shared, trials, seed=n)
            print(f"shared={shared:<4} n={n:<3} seed-only t {ct:.3f} ({wt:.3f})   seeds x problems {cp:.3f} ({wp:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--seeds", default="3,6,12", help="seed counts n to measure")
    ap.add_argument("--problems", action="store_true", help="seeds x problems: paired task-level differences")
    args = ap.parse_args()
    ns = [int(x) for x in args.seeds.split(",")]
    if args.problems:
        t0 = time.perf_counter()
        main_problems(args.trials, ns)
        print(f"({time.perf_counter() - t0:.1f} s)")
        return
    print(f"95% interval coverage, {args.trials} trials per cell (binomial s.e. ~"
          f"{(0.95 * 0.05 / args.trials) ** 0.5:.3f} at 95%)")
    print(f"{'distribution':<12} {'method':<10} " + " ".join(f"{'n=' + str(n):>7}" for n in ns))
    t0 = time.perf_counter()
    for name, (draw, true_mean) in DISTRIBUTIONS.items():
        for method in INTERVALS:
            cells = [coverage(draw, true_mean, n, method, args.trials, seed=n) for n in ns]
            print(f"{name:<12} {method:<10} " + " ".join(f"{c:>7.3f}" for c in cells))
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
