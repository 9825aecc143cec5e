"""Our CPU GRPO step against TRL's GRPOTrainer on the same tiny model, prompts and group size.

One "step" = generate prompts_per_step x group_size responses, score them, and take
`minibatches` optimizer steps over them (ours: cfg.minibatches; TRL: steps_per_generation).
Both run in this process, one after the other, with the same torch thread count, so
the ratio is measured in one run. The first step of each is a warm-up and not timed.

    .venv/bin/python bench/bench_trainer_vs_trl.py [--steps 4] [--threads 1] [--vocab N]

`--vocab N` pads the tokenizer and the (tied) embedding to N tokens, the new rows initialised around
the mean embedding. It asks how the ratio moves with the vocabulary size, which is where the issue
expected TRL's cost to be. The padded model samples its new tokens too, so responses run to the
length limit and rewards are 0. The work is still the same for both trainers, but the numbers are not
those of the recipe.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core.contract import load_algorithm
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import load_or_build
from core.recipes.tiny.task import TrainSampler, make_eval_sets, score
from core.recipes.tiny.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def algorithm_path() -> Path:
    seed = REPO / "workspace" / "algorithm.py"
    return seed if seed.exists() else REPO / "core" / "recipes" / "tiny" / "grpo_fallback.py"


def bench_ours(model, tok, cfg: TinyConfig, steps: int) -> dict[str, float]:
    algo = load_algorithm(str(algorithm_path()))
    trainer = Trainer(model, tok, algo, cfg, seed=0, exclude=set())
    trainer.step(1, steps + 1)  # warm-up
    trainer.result.timings = {k: 0.0 for k in trainer.result.timings}
    t0 = time.perf_counter()
    for s in range(2, steps + 2):
        trainer.step(s, steps + 1)
    wall = time.perf_counter() - t0
    t = trainer.result.timings
    other = wall - sum(t.values())
    return {"step_s": wall / steps, **{k: v / steps for k, v in t.items()}, "scoring_and_rest_s": other / steps}


class StepTimer:
    """A TrainerCallback that records the wall time of each optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def __getattr__(self, name: str):  # TrainerCallback protocol: every other event is a no-op
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kw):
        self.ends.append(time.perf_counter())


class PhaseTimes:
    """Wall time inside three GRPOTrainer methods, to say where TRL's step goes: `_generate` (rollouts),
    `_generate_and_score_completions` (rollouts + rewards + the old and reference log-prob forwards), and
    every log-prob forward. Only timers are added around the methods; they run unchanged."""

    METHODS = ("_generate", "_generate_and_score_completions", "_get_per_token_logps_and_entropies")

    def __init__(self, cls: type) -> None:
        self.cls, self.totals = cls, dict.fromkeys(self.METHODS, 0.0)
        self.originals = {m: getattr(cls, m) for m in self.METHODS}

    def __enter__(self) -> Self:
        for name, original in self.originals.items():
            setattr(self.cls, name, self._timed(name, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.originals.items():
            setattr(self.cls, name, original)

    def _timed(self, name: str, original):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.totals[name] += time.perf_counter() - t0
        return timed

    def per_step(self, rounds: int, step_s: float) -> dict[str, float]:
        gen, rollout, logps = (self.totals[m] / rounds for m in self.METHODS)
        # the old/reference forwards run inside _generate_and_score_completions, the training ones outside
        return {"generate_s": gen, "old_and_reference_s": rollout - gen, "update_s": step_s - rollout,
                "all_logprob_forwards_s": logps}


def bench_trl(model, tok, cfg: TinyConfig, steps: int, grad_ckpt: bool) -> dict[str, float]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    sampler = TrainSampler(0, set())
    n_prompts = cfg.prompts_per_step * (steps + 2)
    problems = {f"<bos>{p.prompt}": p.answer for p in sampler.sample(n_prompts)}
    data = Dataset.from_list([{"prompt": k} for k in problems])

    def reward(prompts, completions, **kw):
        return [float(score(c.replace("<eos>", "").replace("<pad>", ""), False, problems[p]).correct)
                for p, c in zip(prompts, completions)]

    rollouts = cfg.prompts_per_step * cfg.group_size
    args = GRPOConfig(
        output_dir="/tmp/poise_bench_trl", use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1000, num_generations=cfg.group_size,
        per_device_train_batch_size=rollouts // cfg.minibatches, steps_per_generation=cfg.minibatches,
        max_completion_length=cfg.max_response_tokens, temperature=cfg.temperature, beta=0.04, learning_rate=3e-4,
        max_steps=(steps + 1) * cfg.minibatches, gradient_checkpointing=grad_ckpt, seed=0, shuffle_dataset=False)
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=data, processing_class=tok,
                          callbacks=[timer])
    start = time.perf_counter()
    with PhaseTimes(GRPOTrainer) as phases:
        trainer.train()
    ends = timer.ends[cfg.minibatches - 1 :: cfg.minibatches]  # end of each generation round
    first = ends[0] if ends else start
    step_s = (ends[-1] - first) / max(len(ends) - 1, 1)
    # phase totals include the warm-up round, so they are averaged over every round
    return {"step_s": step_s, **phases.per_step(len(ends), (ends[-1] - start) / max(len(ends), 1))}


def profile_ours(model, tok, cfg: TinyConfig) -> str:
    """Top ops of one of our steps, to say where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    trainer = Trainer(model, tok, load_algorithm(str(algorithm_path())), cfg, seed=1, exclude=set())
    trainer.step(1, 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.step(2, 3)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def padded_vocabulary(model, tok, size: int, out_dir: Path):
    """The model and tokenizer with unused tokens up to `size`, saved to and loaded back from `out_dir`
    (TRL loads its reference model from the path in the model's config)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok.add_tokens([f"<u{i}>" for i in range(max(0, size - len(tok)))])
    model.resize_token_embeddings(len(tok), mean_resizing=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return AutoModelForCausalLM.from_pretrained(out_dir), AutoTokenizer.from_pretrained(out_dir)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--vocab", type=int, default=0, help="pad the vocabulary to this size (0: the recipe's own)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = TinyConfig()
    base, tok, _ = load_or_build(cfg)
    if a.vocab:
        torch.manual_seed(0)
        base, tok = padded_vocabulary(base, tok, a.vocab, Path(tempfile.mkdtemp(prefix="poise-bench-vocab-")))
        print(f"vocabulary padded to {len(tok)} tokens", flush=True)
    make_eval_sets(cfg.task_seed, cfg.eval_size)
    ours = bench_ours(copy.deepcopy(base), tok, cfg, a.steps)
    print("ours", json.dumps(ours), flush=True)
    trl_nockpt = bench_trl(copy.deepcopy(base), tok, cfg, a.steps, grad_ckpt=False)
    print("trl (gradient_checkpointing=False)", json.dumps(trl_nockpt), flush=True)
    trl_default = bench_trl(copy.deepcopy(base), tok, cfg, a.steps, grad_ckpt=True)
    print("trl (defaults: gradient_checkpointing=True)", json.dumps(trl_default), flush=True)
    print(f"speed-up vs TRL: {trl_nockpt['step_s'] / ours['step_s']:.2f}x (no ckpt), "
          f"{trl_default['step_s'] / ours['step_s']:.2f}x (TRL defaults)")
    if a.profile:
        print(profile_ours(copy.deepcopy(base), tok, cfg))


if __name__ == "__main__":
    main()
