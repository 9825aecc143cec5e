"""The arithmetic floor of one GRPO step of recipe tiny: only the step's linear-layer matmuls, at the
token counts of a real rollout, each timed alone (best of N). Attention, norms, the LM head, sampling
and autograd bookkeeping are left out, so no trainer doing the same work on this CPU can beat it.

    .venv/bin/python bench/floor_tiny.py

Compare with `bench_trainer_vs_trl.py`: our step and TRL's, over this floor, say how much of each is
arithmetic and how much is per-op overhead (dispatch, small elementwise kernels, Python).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import load_or_build
from core.recipes.tiny.rollout import generate
from core.recipes.tiny.task import TrainSampler


def weight_shapes(cfg: TinyConfig) -> list[tuple[int, int]]:
    h, i = cfg.hidden_size, cfg.intermediate_size
    return [(h, h)] * 4 + [(h, i), (h, i), (i, h)]  # q k v o, gate up, down


def matmul_time(cfg: TinyConfig, tokens: int, backward: bool = False, reps: int = 20) -> float:
    """Best-of-reps seconds for every linear layer's matmuls over `tokens` rows (and their two backward ones)."""
    pairs = [(torch.randn(tokens, a), torch.randn(a, b)) for a, b in weight_shapes(cfg)]
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _layer in range(cfg.layers):
            for x, w in pairs:
                y = x @ w
                if backward:
                    grad = torch.ones_like(y)
                    _ = grad @ w.T, x.T @ grad  # input gradient, weight gradient
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    torch.set_num_threads(1)  # the recipe's default, and bench_trainer_vs_trl's
    cfg = TinyConfig()
    model, tok, _ = load_or_build(cfg)
    problems = [p for p in TrainSampler(0, set()).sample(cfg.prompts_per_step) for _ in range(cfg.group_size)]
    ro = generate(model, tok, [p.prompt for p in problems], cfg.max_response_tokens, cfg.temperature,
                  generator=torch.Generator().manual_seed(0))
    r_len = ro.response_mask.sum(1)
    tokens = int(ro.prompt_mask.sum() + r_len.sum())
    live_rows = [int((r_len > t).sum()) for t in range(ro.response_ids.shape[1])]  # rows decoded at each step
    gen = matmul_time(cfg, ro.prompt_ids.numel()) + sum(matmul_time(cfg, n, reps=5) for n in live_rows)
    ref = matmul_time(cfg, tokens)
    upd = cfg.minibatches * matmul_time(cfg, tokens // cfg.minibatches, backward=True)
    print(f"{len(problems)} rows, {tokens} tokens (padded: {ro.prompt_ids.shape[1] + ro.response_ids.shape[1]} "
          f"per row), mean response {float(r_len.float().mean()):.1f}")
    print(f"matmul floor per step: generation {gen * 1e3:.1f} ms, reference {ref * 1e3:.1f} ms, "
          f"updates {upd * 1e3:.1f} ms, total {(gen + ref + upd) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
