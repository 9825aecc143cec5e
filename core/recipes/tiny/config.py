"""Config of recipe `tiny` (section [tiny] of run.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configlib import opt
from core.recipes.tiny.task import SPLITS

SMOKE_STEPS = 3  # RL steps of a verification smoke job (at most)

# Every split supplies eval_size selection and eval_size held-out problems, all distinct; the smallest
# (mul: 2..9 times 2..30, core/recipes/tiny/task.py) has 232, so a larger eval_size fails in every job.
MAX_EVAL_SIZE = 116


@dataclass
class TinyConfig:
    # --- RL protocol (the same for every candidate of a run) ---
    steps: int = opt(100, "RL steps (rollout rounds) per evaluation; the same for every candidate of a run.",
                     at_least=1)
    prompts_per_step: int = opt(16, "Prompts sampled per step (the paper uses 256 on GPU).", at_least=1)
    group_size: int = opt(8, "Responses per prompt (G); group statistics are computed over these.", at_least=2,
                          because="GRPO compares the responses to one prompt with each other")
    max_response_tokens: int = opt(32, "Generation limit; longer responses are truncated and flagged (never valid).",
                                   at_least=1)
    temperature: float = opt(1.0, "Sampling temperature for rollouts; log-probs use the same temperature.", above=0)
    ppo_epochs: int = opt(1, "Passes over each step's rollouts (1 = on-policy; >1 makes clipping matter).", at_least=1)
    # The trainer chunks each step's rollouts into this many minibatches (fewer when there are fewer rollouts),
    # so any count >= 1 works; it need not divide prompts_per_step * group_size.
    minibatches: int = opt(4, "Optimizer steps per epoch; the rollouts are split into this many minibatches "
                           "(4 gave the seed GRPO at lr 1e-5 a clear gain in 80 steps; 2 about half of it).",
                           at_least=1)
    default_max_grad_norm: float = opt(1.0, "Gradient clipping when the candidate's HPARAMS has no max_grad_norm.",
                                       above=0, because="0 would zero every gradient")
    weight_decay: float = opt(0.0, "AdamW weight decay (the candidate's HPARAMS weight_decay wins when present).",
                              at_least=0)
    threads: int = opt(1, "Torch CPU threads of a tiny job (0 = keep POISE_THREADS). Its matrices are so small that a "
                       "second thread only adds synchronisation; on a loaded 2-core box 2 threads ran 10-15x slower.",
                       at_least=0)
    # --- task ---
    task_seed: int = opt(1234, "Seed of the evaluation problems; fixed per run so every candidate sees the same sets.")
    eval_size: int = opt(64, "Problems per split in each part (selection and held-out).", at_least=1,
                         at_most=MAX_EVAL_SIZE, because=f"split 'mul' has only {2 * MAX_EVAL_SIZE} distinct problems")
    pass_k: int = opt(4, "k of pass@k (sampled at T=1.0) on the pass@k splits.", at_least=1)
    greedy_splits: list[str] = opt(["add1", "add2", "sub"], "Splits scored by greedy acc@1 (like MATH-500, Minerva, Olympiad).")
    passk_splits: list[str] = opt(["mul", "mixed", "chain"], "Splits scored by pass@k at T=1.0 (like AIME24, AIME25, AMC).")
    weights: dict[str, float] = opt(
        {"mul": 0.2, "mixed": 0.2, "chain": 0.15, "add1": 0.15, "add2": 0.15, "sub": 0.15},
        "Weights of the Overall utility per split; the paper's structure: 0.2+0.2 on two pass@k sets, 0.15 on four others.",
    )
    # --- warm-start model (cached by a hash of these fields) ---
    arch: Literal["llama", "qwen2"] = opt("llama", "transformers model class of the tiny decoder.")
    hidden_size: int = opt(64, "Width of the tiny decoder.", at_least=1)
    layers: int = opt(2, "Decoder layers.", at_least=1)
    heads: int = opt(4, "Attention heads (head dim = hidden_size / heads).", at_least=1)
    intermediate_size: int = opt(192, "MLP width.", at_least=1)
    model_seed: int = opt(0, "Seed of the warm start (init + SFT data); all candidates share this model.")
    sft_steps: int = opt(700, "SFT optimizer steps of the warm start; few enough to leave room for RL.", at_least=1)
    sft_batch_size: int = opt(64, "SFT sequences per step.", at_least=1)
    sft_lr: float = opt(3e-3, "SFT learning rate (AdamW, cosine decay).", above=0)
    sft_format_noise: float = opt(0.5, "Fraction of SFT targets in a near-miss (invalid) format, so validity can be "
                                  "learned by RL.", at_least=0, at_most=1)

    def rl_steps(self, mode: str) -> int:
        """RL steps of a job: all of them, or a few for a verification smoke job."""
        return min(SMOKE_STEPS, self.steps) if mode == "smoke" else self.steps

    def config_problems(self) -> list[tuple[str, str]]:
        """Checks across fields (see core/configlib.py): (key, what is wrong)."""
        splits = self.greedy_splits + self.passk_splits
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            which = "greedy_splits" if unknown[0] in self.greedy_splits else "passk_splits"
            return [(which, f"unknown split(s) {unknown}; the tiny task has {', '.join(SPLITS)}")]
        both = sorted(set(self.greedy_splits) & set(self.passk_splits))
        if both:
            return [("passk_splits", f"split(s) {both} are also in greedy_splits; score each split one way")]
        return self._weight_problems(splits) + self._head_problems()

    def _weight_problems(self, splits: list[str]) -> list[tuple[str, str]]:
        # Overall is the weighted mean over the splits that have a weight: an evaluated split without one would
        # be scored and silently left out of Overall, and a weight for a split that is not evaluated never counts.
        missing = [s for s in splits if s not in self.weights]
        unknown = sorted(set(self.weights) - set(splits))
        said = ([f"no weight for {', '.join(missing)}"] if missing else []) + (
            [f"{', '.join(unknown)} not in greedy_splits or passk_splits"] if unknown else [])
        if said:
            rule = f"weights must name exactly the evaluated splits: {', '.join(splits)}"
            return [("weights", f"{'; '.join(said)} ({rule})")]
        negative = {s: w for s, w in self.weights.items() if not w >= 0}  # NaN too
        if negative:
            return [("weights", f"weights must be >= 0, got {negative}")]
        if not any(w > 0 for w in self.weights.values()):
            return [("weights", "every split has weight 0; give at least one a positive weight")]
        return []

    def _head_problems(self) -> list[tuple[str, str]]:
        if self.hidden_size % self.heads:
            return [("heads", f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")]
        return []
