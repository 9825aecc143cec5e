"""Decoding speed of recipe tiny: the lean decoder (core/recipes/tiny/fastlm.py) against the
transformers forward with its DynamicCache, same model, prompts and sampling, back to back.

    .venv/bin/python bench/bench_decode.py [--repeats 5] [--rows 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core.recipes.tiny import fastlm
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import load_or_build
from core.recipes.tiny.rollout import generate
from core.recipes.tiny.task import TrainSampler


def timed(model, tok, prompts: list[str], cfg: TinyConfig, lean: bool) -> tuple[float, int]:
    original = fastlm.supports
    fastlm.supports = original if lean else (lambda m: False)
    try:
        t0 = time.perf_counter()
        ro = generate(model, tok, prompts, cfg.max_response_tokens, cfg.temperature,
                      generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0, int(ro.response_mask.sum())
    finally:
        fastlm.supports = original


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = TinyConfig()
    model, tok, _ = load_or_build(cfg)
    model.eval()
    prompts = [p.prompt for p in TrainSampler(0, set()).sample(a.rows)]
    lean, plain = [], []
    for _ in range(a.repeats):  # interleaved, so load changes hit both alike
        lean.append(timed(model, tok, prompts, cfg, lean=True))
        plain.append(timed(model, tok, prompts, cfg, lean=False))
    med = lambda xs: statistics.median(t for t, _ in xs)
    toks = lean[0][1]
    print(f"lean decoder:  median {med(lean):.3f} s, {toks / med(lean):,.0f} tok/s")
    print(f"transformers:  median {med(plain):.3f} s, {toks / med(plain):,.0f} tok/s")
    print(f"lean / transformers speed: {med(plain) / med(lean):.2f}x ({a.rows} rows, {a.repeats} repeats)")


if __name__ == "__main__":
    main()
