"""Final evaluation of recipe `tiny`: greedy acc@1 on some splits, pass@k at T=1.0 on others,
on the selection and held-out parts separately, combined into a weighted Overall like the paper's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.jobspec import EvalTick, write_json_atomic
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.rollout import generate
from core.recipes.tiny.task import EvalSets, Problem, score

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

PARTS = ("selection", "heldout")
CHUNK = 512  # rows per generation call: bounds memory, large enough to amortise per-token overhead


def check_eval_config(cfg: TinyConfig) -> None:
    """TinyConfig's cross-field checks (run at load too), again for configs built in code or changed since."""
    problems = cfg.config_problems()
    if problems:
        raise ConfigError("; ".join(f"[tiny].{key}: {what}" for key, what in problems))


def _solved(model: PreTrainedModel, tok: PreTrainedTokenizerFast, problems: list[Problem], max_new: int,
            greedy: bool, seed: int, on_chunk: Callable[[int], None]) -> list[bool]:
    """Whether each problem's single response is correct, generated in chunks (on_chunk(rows) after each)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    solved: list[bool] = []
    for i in range(0, len(problems), CHUNK):
        chunk = problems[i : i + CHUNK]
        ro = generate(model, tok, [p.prompt for p in chunk], max_new, 1.0, greedy=greedy, generator=gen)
        solved += [score(t, bool(tr), p.answer).correct for t, tr, p in zip(ro.texts, ro.truncated, chunk)]
        on_chunk(len(chunk))
    return solved


Scores = dict[str, dict[str, float]]  # [part][split]
PerProblem = dict[str, dict[str, list[float]]]  # [part][split] -> one score per problem, in eval-set order


def evaluate(model: PreTrainedModel, tok: PreTrainedTokenizerFast, cfg: TinyConfig, sets: EvalSets,
             tick: EvalTick | None = None, what: str = "policy") -> tuple[Scores, dict[str, float], PerProblem]:
    """eval[part][split] in [0, 1], overall[part] and each problem's score (1 solved, 0 not); sampling is
    seeded by task_seed so it is comparable. tick(done, total, what) counts generated rows."""
    check_eval_config(cfg)
    model.eval()
    greedy_rows = [(part, p) for part in PARTS for s in cfg.greedy_splits for p in getattr(sets, part)[s]]
    sample_rows = [(part, p) for part in PARTS for s in cfg.passk_splits for p in getattr(sets, part)[s]
                   for _ in range(cfg.pass_k)]
    on_chunk = _row_counter(len(greedy_rows) + len(sample_rows), tick, what)
    g = _solved(model, tok, [p for _, p in greedy_rows], cfg.max_response_tokens, True, cfg.task_seed, on_chunk)
    k = _solved(model, tok, [p for _, p in sample_rows], cfg.max_response_tokens, False, cfg.task_seed, on_chunk)
    per_problem: PerProblem = {part: {} for part in PARTS}
    _acc_at_1(per_problem, greedy_rows, g)
    _pass_at_k(per_problem, sample_rows, k)
    scores = {part: {split: sum(v) / len(v) for split, v in splits.items()} for part, splits in per_problem.items()}
    return scores, {part: overall(scores[part], cfg.weights) for part in PARTS}, per_problem


def _row_counter(total: int, tick: EvalTick | None, what: str) -> Callable[[int], None]:
    done = 0
    if tick:
        tick(0, total, what)

    def on_chunk(rows: int) -> None:
        nonlocal done
        done += rows
        if tick:
            tick(done, total, what)
    return on_chunk


def _acc_at_1(per_problem: PerProblem, rows: list[tuple[str, Problem]], ok: list[bool]) -> None:
    for (part, p), c in zip(rows, ok):
        per_problem[part].setdefault(p.split, []).append(int(c))


def _pass_at_k(per_problem: PerProblem, rows: list[tuple[str, Problem]], ok: list[bool]) -> None:
    """A problem counts as solved when any of its k samples is correct (rows hold each problem k times in a row)."""
    solved: dict[tuple[str, str, str], bool] = {}
    for (part, p), c in zip(rows, ok):
        key = (part, p.split, p.prompt)
        solved[key] = solved.get(key, False) or c
    for (part, split, _), c in solved.items():
        per_problem[part].setdefault(split, []).append(int(c))


def overall(split_scores: dict[str, float], weights: dict[str, float]) -> float:
    """Weighted mean over the scored splits (equal to the paper's weighted sum when weights sum to 1)."""
    used = {s: w for s, w in weights.items() if s in split_scores}
    total = sum(used.values())
    return sum(w * split_scores[s] for s, w in used.items()) / total if total else 0.0


def warm_start_scores(model: PreTrainedModel, tok: PreTrainedTokenizerFast, cfg: TinyConfig, sets: EvalSets,
                      model_path: Path, tick: EvalTick | None = None) -> dict[str, Any]:
    """Pre-RL scores, computed once per (model, evaluation protocol) and cached next to the model."""
    import hashlib

    proto = {k: asdict(cfg)[k] for k in ("eval_size", "pass_k", "greedy_splits", "passk_splits", "weights",
                                          "max_response_tokens", "task_seed")}
    key = hashlib.sha256(json.dumps(proto, sort_keys=True).encode()).hexdigest()[:12]
    path = model_path / f"warm_eval_{key}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if "per_problem" in cached:  # older caches lack it: evaluate once more
            return cached
    scores, ov, per_problem = evaluate(model, tok, cfg, sets, tick, "warm start")
    result = {"outcome": "evaluated", "eval": scores, "overall": ov, "per_problem": per_problem,
              "weights": dict(cfg.weights)}  # check_eval_config: they name exactly the evaluated splits
    write_json_atomic(path, result)
    return result
