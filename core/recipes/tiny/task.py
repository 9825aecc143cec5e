"""The tiny task: procedurally generated arithmetic with a strict, verifiable answer format.

A prompt is an expression followed by "=", e.g. ``12+7*3=``. The expected response is
one short worked line and a final answer, e.g. ``7*3=21 12+21=33 #### 33``, ended by
the end-of-sequence token. "Format-valid" means the response matches STRICT_FORMAT
and was not truncated; it can fail (the warm start is SFT'd on partly malformed
targets), so validity masking is a real lever here.

Six difficulty splits play the role of the paper's six benchmarks. Every split has a
selection part and a disjoint held-out part; training prompts are drawn from the
same generators but never equal an evaluation problem. Everything is a pure
function of a seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

# Strict final format: worked steps separated by single spaces, then " #### <int>".
STRICT_FORMAT = re.compile(r"^(?:[0-9+\-*=]+ )+#### (-?\d+)$")


@dataclass(frozen=True)
class Problem:
    split: str
    prompt: str       # "12+7*3="
    answer: int
    solution: str     # "7*3=21 12+21=33 #### 33" (the SFT target, without EOS)


def _two(op: str, a: int, b: int) -> tuple[str, int, str]:
    value = a + b if op == "+" else a - b if op == "-" else a * b
    expr = f"{a}{op}{b}"
    return expr, value, f"{expr}={value}"


def _add1(rng: random.Random) -> tuple[str, int, str]:
    return _two("+", rng.randint(0, 20), rng.randint(0, 20))


def _add2(rng: random.Random) -> tuple[str, int, str]:
    return _two("+", rng.randint(10, 99), rng.randint(10, 99))


def _sub(rng: random.Random) -> tuple[str, int, str]:
    a = rng.randint(10, 99)
    return _two("-", a, rng.randint(0, a))


def _mul(rng: random.Random) -> tuple[str, int, str]:
    return _two("*", rng.randint(2, 9), rng.randint(2, 30))


def _mixed(rng: random.Random) -> tuple[str, int, str]:
    a, b, c = rng.randint(0, 50), rng.randint(2, 9), rng.randint(2, 9)
    p = b * c
    return f"{a}+{b}*{c}", a + p, f"{b}*{c}={p} {a}+{p}={a + p}"


def _chain(rng: random.Random) -> tuple[str, int, str]:
    a, b = rng.randint(0, 30), rng.randint(0, 30)
    c = rng.randint(0, a + b)  # keep the result non-negative
    s = a + b
    return f"{a}+{b}-{c}", s - c, f"{a}+{b}={s} {s}-{c}={s - c}"


GENERATORS: dict[str, Callable[[random.Random], tuple[str, int, str]]] = {
    "add1": _add1,
    "add2": _add2,
    "sub": _sub,
    "mul": _mul,
    "mixed": _mixed,
    "chain": _chain,
}
SPLITS = tuple(GENERATORS)


def make_problem(split: str, rng: random.Random) -> Problem:
    expr, value, work = GENERATORS[split](rng)
    return Problem(split, f"{expr}=", value, f"{work} #### {value}")


def parse_answer(text: str) -> int | None:
    """The final answer if `text` is exactly in the strict format, else None."""
    m = STRICT_FORMAT.match(text)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Score:
    correct: bool
    valid: bool


def score(text: str, truncated: bool, answer: int) -> Score:
    """A truncated response is never valid: the format requires the end token."""
    parsed = None if truncated else parse_answer(text)
    return Score(correct=parsed is not None and parsed == answer, valid=parsed is not None)


@dataclass
class EvalSets:
    """selection[split] and heldout[split]: disjoint lists of problems, fixed by the task seed."""

    selection: dict[str, list[Problem]]
    heldout: dict[str, list[Problem]]

    def all_prompts(self) -> set[str]:
        return {p.prompt for part in (self.selection, self.heldout) for ps in part.values() for p in ps}


def _unique(split: str, rng: random.Random, n: int, exclude: set[str]) -> list[Problem]:
    out: list[Problem] = []
    seen = set(exclude)
    for _ in range(n * 200):  # the smallest split (mul) has 232 problems; this bound is never hit there
        if len(out) == n:
            return out
        p = make_problem(split, rng)
        if p.prompt not in seen:
            seen.add(p.prompt)
            out.append(p)
    raise ValueError(f"split {split!r} cannot supply {n} distinct problems; lower eval_size")


def make_eval_sets(seed: int, size: int, splits: tuple[str, ...] = SPLITS) -> EvalSets:
    """Selection and held-out parts of every split, `size` problems each, disjoint by prompt."""
    rng = random.Random(f"tiny-eval-{seed}")
    selection, heldout = {}, {}
    for split in splits:
        both = _unique(split, rng, 2 * size, set())
        selection[split], heldout[split] = both[:size], both[size:]
    return EvalSets(selection, heldout)


class TrainSampler:
    """Training prompts from all splits, never equal to an evaluation problem."""

    def __init__(self, seed: int, exclude: set[str], splits: tuple[str, ...] = SPLITS) -> None:
        self.rng = random.Random(f"tiny-train-{seed}")
        self.exclude = exclude
        self.splits = splits

    def sample(self, n: int) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            p = make_problem(self.rng.choice(self.splits), self.rng)
            if p.prompt not in self.exclude:
                out.append(p)
        return out


def corrupt(solution: str, rng: random.Random) -> str:
    """A near-miss of the strict format, used for part of the SFT data so the warm start
    sometimes answers in an invalid format (as real base models do)."""
    work, ans = solution.rsplit(" #### ", 1)
    variants = (f"{work} ## {ans}", f"{work} {ans}", f"{work} ####{ans}", f"{work} #### {ans} ####", f"{work}")
    return rng.choice(variants)
