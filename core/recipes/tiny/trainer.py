"""Our lean CPU GRPO loop. It calls only the candidate contract (core/contract.py):

    sample prompts -> G responses each (KV cache) -> rewards -> RolloutBatch
    -> filter_groups (if defined) -> compute_advantages
    -> for each epoch and minibatch: logprobs + entropy -> compute_policy_loss -> backward,
       clip (HPARAMS max_grad_norm), AdamW step (HPARAMS lr)

It never looks at what a mechanism is. HPARAMS keys it reads: lr, max_grad_norm,
weight_decay, and kl_coef / use_reference (a frozen reference copy is kept and
ref_logprobs filled only when kl_coef > 0 or use_reference is true).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from core.contract import RolloutBatch
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.rollout import Rollout, generate, token_logprobs
from core.recipes.tiny.task import Problem, TrainSampler, score

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

Emit = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    diverged: str = ""                 # reason when training stopped as diverged, else ""
    steps_done: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"generate_s": 0.0, "reference_s": 0.0, "update_s": 0.0})
    generated_tokens: int = 0
    trained_tokens: int = 0


def needs_reference(hp: dict[str, Any]) -> bool:
    return float(hp.get("kl_coef", 0.0) or 0.0) > 0 or bool(hp.get("use_reference", False))


# The reward is correctness alone; "format" is a side signal (a correct answer is always format-valid).
REWARD_WEIGHTS = {"correct": 1.0}


def make_batch(ro: Rollout, problems: list[Problem], group_size: int, step: int, total: int,
               ref_logprobs: torch.Tensor | None, max_response_len: int) -> RolloutBatch:
    """Score the responses and pack the contract's RolloutBatch (rows are grouped by prompt).

    max_response_len is the generation limit, not the longest response of this batch: length shaping
    (overlong penalties, Dr. GRPO's constant divisor) is defined against the limit."""
    import torch

    scores = [score(t, bool(tr), p.answer) for t, tr, p in zip(ro.texts, ro.truncated, problems)]
    correct = torch.tensor([float(s.correct) for s in scores])  # [B]
    valid = torch.tensor([s.valid for s in scores])  # [B]
    return RolloutBatch(
        rewards=correct.clone(), group_ids=torch.arange(len(problems)) // group_size, valid=valid,
        truncated=ro.truncated.clone(), response_mask=ro.response_mask, old_logprobs=ro.logprobs,
        lengths=ro.response_mask.sum(1).long(), ref_logprobs=ref_logprobs, step=step, total_steps=total,
        reward_parts={"correct": correct, "format": valid.float()}, reward_weights=REWARD_WEIGHTS,
        max_response_len=max_response_len)


def rollout_stats(b: RolloutBatch) -> dict[str, float]:
    groups = b.rewards.view(-1, int((b.group_ids == b.group_ids[0]).sum()))  # [P, G]
    return {
        "reward_mean": float(b.rewards.mean()), "reward_std": float(b.rewards.std()) if b.batch_size > 1 else 0.0,
        "accuracy": float(b.reward_parts["correct"].mean()), "valid_rate": float(b.valid.float().mean()),
        "truncation_rate": float(b.truncated.float().mean()), "response_length": float(b.lengths.float().mean()),
        "zero_var_frac": float((groups.max(1).values == groups.min(1).values).float().mean()),
    }


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


class Trainer:
    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerFast, algo: ModuleType,
                 cfg: TinyConfig, seed: int, exclude: set[str]) -> None:
        import torch

        torch.manual_seed(seed)
        self.model, self.tok, self.algo, self.cfg = model, tok, algo, cfg
        self.hp: dict[str, Any] = dict(algo.HPARAMS)
        self.gen = torch.Generator().manual_seed(seed)
        self.sampler = TrainSampler(seed, exclude)
        self.ref = self._frozen_copy(model) if needs_reference(self.hp) else None
        wd = float(self.hp.get("weight_decay", cfg.weight_decay))
        # fused: one kernel over all parameter tensors, 0.2 ms per step instead of 1.0 ms (bench/RESULTS.md)
        self.opt = torch.optim.AdamW(model.parameters(), lr=float(self.hp["lr"]), weight_decay=wd, fused=True)
        self.result = TrainResult()

    @staticmethod
    def _frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def rollout(self, step: int, total: int) -> tuple[RolloutBatch, Rollout]:
        import torch

        t0 = time.perf_counter()
        problems = [p for p in self.sampler.sample(self.cfg.prompts_per_step) for _ in range(self.cfg.group_size)]
        ro = generate(self.model, self.tok, [p.prompt for p in problems], self.cfg.max_response_tokens,
                      self.cfg.temperature, generator=self.gen)
        t1 = time.perf_counter()
        ref_lp = None
        if self.ref is not None:
            with torch.no_grad():
                ref_lp, _ = token_logprobs(self.ref, ro.prompt_ids, ro.prompt_mask, ro.response_ids,
                                           ro.response_mask, self.cfg.temperature, with_entropy=False)
        self.result.timings["generate_s"] += t1 - t0
        self.result.timings["reference_s"] += time.perf_counter() - t1
        self.result.generated_tokens += int(ro.response_mask.sum())
        batch = make_batch(ro, problems, self.cfg.group_size, step, total, ref_lp, self.cfg.max_response_tokens)
        return batch, ro

    def update(self, batch: RolloutBatch, ro: Rollout, adv: torch.Tensor) -> dict[str, float]:
        """ppo_epochs x minibatches optimizer steps; returns averaged metrics, or {"diverged": reason}."""
        import torch

        t0 = time.perf_counter()
        logs: list[dict[str, float]] = []
        for _ in range(self.cfg.ppo_epochs):
            for idx in torch.randperm(batch.batch_size, generator=self.gen).chunk(self.cfg.minibatches):
                keep = torch.zeros(batch.batch_size, dtype=torch.bool)
                keep[idx] = True
                log = self._minibatch_step(batch.select(keep), ro, keep, adv[keep])
                logs.append(log)
                if "diverged" in log:
                    return log
        self.result.timings["update_s"] += time.perf_counter() - t0
        return {k: sum(d.get(k, 0.0) for d in logs) / len(logs) for k in logs[0]}

    def _minibatch_step(self, mb: RolloutBatch, ro: Rollout, keep: torch.Tensor, adv: torch.Tensor
                        ) -> dict[str, float]:
        import torch

        self.model.train()
        logp, ent = token_logprobs(self.model, ro.prompt_ids[keep], ro.prompt_mask[keep], ro.response_ids[keep],
                                   mb.response_mask, self.cfg.temperature)  # [b, T], [b, T]
        mb.entropy = ent
        loss, metrics = self.algo.compute_policy_loss(logp, mb, adv, self.hp)
        if not bool(torch.isfinite(loss)):
            return {"diverged": f"loss is {float(loss.detach())} at step {mb.step + 1}"}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = float(self.hp.get("max_grad_norm", self.cfg.default_max_grad_norm))
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(gnorm):
            return {"diverged": f"gradient norm is {gnorm} at step {mb.step + 1}"}
        self.opt.step()
        self.result.trained_tokens += int(ro.prompt_mask[keep].sum() + mb.response_mask.sum())
        return self._mb_metrics(loss, metrics, gnorm, logp.detach(), ent.detach(), mb)

    @staticmethod
    def _mb_metrics(loss: torch.Tensor, metrics: dict[str, float], gnorm: float, logp: torch.Tensor,
                    ent: torch.Tensor, mb: RolloutBatch) -> dict[str, float]:
        import torch

        out = {"loss": float(loss.detach()), "grad_norm": gnorm, "entropy": _masked_mean(ent, mb.response_mask),
               "clip_frac": float(metrics.get("clip_frac", 0.0)), "kl": 0.0}
        if mb.ref_logprobs is not None:
            d = mb.ref_logprobs - logp  # [b, T] k3 estimator of KL(pi || ref)
            out["kl"] = _masked_mean(torch.exp(d) - d - 1, mb.response_mask)
        return out

    def step(self, step: int, total: int) -> dict[str, Any]:
        """One RL step; returns its metrics line (with "diverged" when it must stop)."""
        t0 = time.perf_counter()
        batch, ro = self.rollout(step - 1, total)
        line: dict[str, Any] = {"step": step, **rollout_stats(batch)}
        filt = getattr(self.algo, "filter_groups", None)
        keep = filt(batch, self.hp).bool() if filt is not None else None
        if keep is not None and not bool(keep.any()):
            line["kept_frac"] = 0.0  # every group filtered out: no update this step
        else:
            if keep is not None:
                line["kept_frac"] = float(keep.float().mean())
                batch, ro = batch.select(keep), _select_rollout(ro, keep)
            adv = self.algo.compute_advantages(batch, self.hp)
            line |= self.update(batch, ro, adv)
        line["step_time_s"] = time.perf_counter() - t0
        return line


def _select_rollout(ro: Rollout, keep: torch.Tensor) -> Rollout:
    texts = [t for t, k in zip(ro.texts, keep.tolist()) if k]
    return Rollout(ro.prompt_ids[keep], ro.prompt_mask[keep], ro.response_ids[keep], ro.response_mask[keep],
                   ro.logprobs[keep], ro.truncated[keep], texts)


def early_kill_reason(line: dict[str, Any], limits: dict[str, Any], zero_streak: int) -> str:
    """Why the dynamics say stop (thresholds from the run's [early_kill]); "" to go on."""
    if "max_kl" in limits and line.get("kl", 0.0) > float(limits["max_kl"]):
        return f"KL to reference {line['kl']:.3g} > max_kl {limits['max_kl']} at step {line['step']}"
    if "min_entropy" in limits and "entropy" in line and line["entropy"] < float(limits["min_entropy"]):
        return f"entropy collapsed to {line['entropy']:.3g} < min_entropy {limits['min_entropy']} at step {line['step']}"
    n = int(limits.get("zero_reward_steps", 0) or 0)
    if n and zero_streak >= n:
        return f"reward was 0 for {zero_streak} consecutive steps (zero_reward_steps = {n})"
    return ""


def train(model: PreTrainedModel, tok: PreTrainedTokenizerFast, algo: ModuleType, cfg: TinyConfig, seed: int,
          steps: int, exclude: set[str], emit: Emit, early_kill: dict[str, Any] | None = None) -> TrainResult:
    """Run `steps` RL steps, emitting one metrics line per step; stop early as diverged when needed."""
    trainer = Trainer(model, tok, algo, cfg, seed, exclude)
    zero_streak = 0
    for step in range(1, steps + 1):
        line = trainer.step(step, steps)
        reason = line.pop("diverged", "")
        zero_streak = zero_streak + 1 if line["reward_mean"] == 0 else 0
        emit(line)
        trainer.result.steps_done = step
        reason = reason or early_kill_reason(line, early_kill or {}, zero_streak)
        if reason:
            trainer.result.diverged = reason
            break
    model.eval()
    return trainer.result
