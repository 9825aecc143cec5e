"""Recipe tiny throughput: generation tokens/s (our KV-cache loop vs model.generate), training tokens/s,
and the wall time of one full tiny evaluation (train + eval, one seed) through the real job entry point.

    .venv/bin/python bench/bench_tiny.py [--seeds 0,1,2] [--threads 1]

The warm start is built first (and its time reported) when it is not cached yet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from core.jobspec import JobResult, JobSpec
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import load_or_build, model_dir, read_meta
from core.recipes.tiny.rollout import encode_prompts, generate
from core.recipes.tiny.task import TrainSampler


def bench_generation(model, tok, cfg: TinyConfig, rows: int, reps: int = 3) -> dict[str, float]:
    prompts = [p.prompt for p in TrainSampler(0, set()).sample(rows)]
    gen = torch.Generator().manual_seed(0)
    generate(model, tok, prompts, cfg.max_response_tokens, 1.0, generator=gen)  # warm-up
    t0, tokens = time.perf_counter(), 0
    for _ in range(reps):
        ro = generate(model, tok, prompts, cfg.max_response_tokens, 1.0, generator=gen)
        tokens += int(ro.response_mask.sum())
    ours = tokens / (time.perf_counter() - t0)
    ids, mask = encode_prompts(tok, prompts)
    t0, tokens = time.perf_counter(), 0
    with torch.no_grad():
        for _ in range(reps):
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                 max_new_tokens=cfg.max_response_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
            resp = out[:, ids.shape[1] :]
            tokens += int((resp != tok.pad_token_id).sum())
    hf = tokens / (time.perf_counter() - t0)
    return {"ours_tok_per_s": ours, "hf_generate_tok_per_s": hf, "rows": rows}


def run_full_job(cfg: TinyConfig, seed: int, threads: int) -> JobResult:
    algo = REPO / "workspace" / "algorithm.py"
    if not algo.exists():
        algo = REPO / "core" / "recipes" / "tiny" / "grpo_fallback.py"
    job_dir = Path(tempfile.mkdtemp(prefix="poise_bench_tiny_"))
    spec = JobSpec(recipe="tiny", algorithm_path=str(algo), job_dir=str(job_dir), seed=seed,
                   recipe_config=asdict(cfg), mode="full")
    path = spec.save()
    env = {**os.environ, "POISE_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    results, walls = [], []
    for entry in ("core.recipes.job", "core.recipes.eval_job"):  # train, then score, as core.jobs runs them
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", entry, str(path)], cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        results.append(JobResult.load(job_dir))
    trained, scored = results
    result = scored.after_training(trained)
    result.extra["process_wall_s"] = time.perf_counter() - t0
    result.extra["train_process_s"], result.extra["score_process_s"] = walls
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = TinyConfig()
    cached = (model_dir(cfg) / "meta.json").exists()
    t0 = time.perf_counter()
    model, tok, path = load_or_build(cfg)
    how = "bundled" if "weights_sha256" in read_meta(path) else "built"
    print(f"warm start ({how}): {'cached' if cached else f'ready in {time.perf_counter() - t0:.1f}s'}")
    print("generation", json.dumps(bench_generation(model, tok, cfg, cfg.prompts_per_step * cfg.group_size)))
    for seed in [int(s) for s in a.seeds.split(",")]:
        r = run_full_job(cfg, seed, a.threads)
        ws = r.extra["warm_start"]["overall"]
        print(json.dumps({
            "seed": seed, "outcome": r.outcome, "process_wall_s": round(r.extra["process_wall_s"], 1),
            "train_process_s": round(r.extra["train_process_s"], 1),
            "score_process_s": round(r.extra["score_process_s"], 1),
            "train_s": round(r.extra["train_s"], 1), "eval_s": round(r.extra["eval_s"], 1),
            "step_s": round(r.extra["train_s"] / max(r.steps_done, 1), 3),
            "generate_tok_per_s": round(r.extra["generate_tok_per_s"]),
            "train_tok_per_s": round(r.extra["train_tok_per_s"]),
            "warm_overall": ws, "rl_overall": r.overall,
            "gain": {k: round(r.overall[k] - ws[k], 4) for k in ws}}), flush=True)


if __name__ == "__main__":
    main()
