"""GPU benchmark of recipe `math`: optimizer steps/s of the TRL adapter and generation tokens/s.

Run on a GPU machine:
    POISE_GPU_MODEL=/models/Qwen2.5-Math-1.5B .venv/bin/python bench/bench_math_gpu.py --steps 4
Without CUDA it prints why and exits 0, so `make bench` stays green on CPU.
Prints one JSON object: steps_per_s and rollout tokens/s of training (first step excluded: vLLM warm-up),
and tokens/s of pure generation with the evaluation sampler (vLLM when installed, else HF generate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("POISE_GPU_MODEL", ""), help="local HF model directory")
    ap.add_argument("--algorithm", default="workspace/algorithm.py", help="candidate file (default: the GRPO seed)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=32, help="prompts per step")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--micro", type=int, default=16, help="micro-batch size (responses)")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--generation-only", action="store_true", help="(internal) the generation bench alone")
    return ap.parse_args()


def train_bench(a: argparse.Namespace, candidate) -> dict:
    from core.jobspec import JobSpec
    from core.recipes.math.run import run_job

    lines: list[dict] = []
    cfg = {"model_path": a.model, "prompts_per_step": a.prompts, "group_size": a.group, "micro_batch_size": a.micro,
           "smoke_steps": a.steps, "max_response_tokens": a.max_tokens, "use_vllm": not a.no_vllm,
           "lr_source": "config"}
    with tempfile.TemporaryDirectory() as job:
        spec = JobSpec(recipe="math", algorithm_path=a.algorithm, job_dir=job, seed=0, recipe_config=cfg, mode="smoke")
        result = run_job(spec, candidate, lines.append)
    timed = lines[1:] or lines  # the first step pays vLLM/CUDA-graph warm-up
    step_s = sum(ln["step_time_s"] for ln in timed) / len(timed)
    tokens = sum(ln["response_length"] for ln in timed) / len(timed) * a.prompts * a.group
    return {"steps_per_s": 1.0 / step_s, "step_time_s": step_s, "train_rollout_tokens_per_s": tokens / step_s,
            "use_vllm": result.extra["use_vllm"], "per_step": lines}


def generation_bench(a: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.recipes.math.data import load_math500
    from core.recipes.math.evaluate import HFSampler, VLLMSampler, vllm_usable
    from core.recipes.math.rewards import format_prompt

    tok = AutoTokenizer.from_pretrained(a.model)
    if vllm_usable() and not a.no_vllm:
        from vllm import LLM

        sampler = VLLMSampler(LLM(model=a.model, gpu_memory_utilization=0.5, seed=0), tok)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).cuda()
        sampler = HFSampler(model, tok, batch_size=64)
    prompts = [format_prompt(p.problem) for p in load_math500()[: a.prompts]]
    t0 = time.perf_counter()
    outs = sampler.sample(prompts, a.group, 1.0, a.max_tokens)
    dt = time.perf_counter() - t0
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for o in outs for t in o)
    return {"generation_tokens_per_s": n_tokens / dt, "generation_s": dt, "sampler": type(sampler).__name__}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench_math_gpu: no CUDA device here; run it on a GPU machine (recipe math is the GPU protocol).")
        return 0
    a = parse()
    if not a.model:
        print("bench_math_gpu: pass --model or set POISE_GPU_MODEL to a local HF model directory.")
        return 2
    if a.generation_only:
        print(json.dumps(generation_bench(a)))
        return 0
    from core.contract import load_algorithm

    out = {"model": a.model, "gpu": torch.cuda.get_device_name(0), **train_bench(a, load_algorithm(a.algorithm))}
    out.update(generation_in_a_fresh_process())
    print(json.dumps(out, indent=1))
    return 0


def generation_in_a_fresh_process() -> dict:
    """The generation bench in its own interpreter: the training job's colocated vLLM engine and process group
    live on in this one, and a second engine beside them would fail or hang."""
    import subprocess

    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--generation-only"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        return {"generation_error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
