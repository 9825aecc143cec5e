"""A real, tiny training job for the supervisor tests: `python -m tests.adversarial.bandit_job spec.json`.

The policy is a table of logits over K tokens for each of T positions; each prompt
draws G responses, the reward is the fraction of tokens equal to `target` (never
rewarded when target = -1). It calls the candidate exactly like a trainer does
(filter_groups, compute_advantages, compute_policy_loss, an optimizer step) and
writes metrics.jsonl rows and result.json in the JobSpec file format, in a
fraction of a second per step, so the supervisor can be tested without a model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from core.contract import RolloutBatch, load_algorithm
from core.jobspec import JobResult, JobSpec
from core.sandbox import install_guard

K, T, PROMPTS, GROUP = 6, 5, 4, 4


def rollout(logits: torch.Tensor, gen: torch.Generator, target: int) -> tuple[RolloutBatch, torch.Tensor]:
    b = PROMPTS * GROUP
    with torch.no_grad():
        probs = torch.softmax(logits, -1).expand(b, T, K)                     # [B, T, K]
        tokens = torch.multinomial(probs.reshape(-1, K), 1, generator=gen).view(b, T)  # [B, T]
        old = torch.log_softmax(logits, -1).expand(b, T, K).gather(2, tokens[..., None])[..., 0]  # [B, T]
    rewards = (tokens == target).float().mean(1)                               # [B]
    batch = RolloutBatch(
        rewards=rewards, group_ids=torch.arange(PROMPTS).repeat_interleave(GROUP),
        valid=torch.ones(b, dtype=torch.bool), truncated=torch.zeros(b, dtype=torch.bool),
        response_mask=torch.ones(b, T), old_logprobs=old, lengths=torch.full((b,), T),
        ref_logprobs=old.clone(),
    )
    return batch, tokens


def step_metrics(step: int, logits: torch.Tensor, batch: RolloutBatch, loss: torch.Tensor) -> dict:
    logp = torch.log_softmax(logits.detach(), -1)                              # [T, K]
    entropy = -(logp.exp() * logp).sum(-1).mean()
    return {"step": step, "reward_mean": batch.rewards.mean().item(), "entropy": entropy.item(),
            "kl": 0.0, "loss": loss.item()}


def train(spec: JobSpec) -> JobResult:
    algo = load_algorithm(spec.algorithm_path)
    cfg = spec.recipe_config
    gen = torch.Generator().manual_seed(spec.seed)
    logits = torch.zeros(T, K, requires_grad=True)                             # [T, K]
    opt = torch.optim.SGD([logits], lr=float(algo.HPARAMS["lr"]))
    t0 = time.perf_counter()
    with open(Path(spec.job_dir) / "metrics.jsonl", "a", buffering=1) as out:
        for step in range(1, int(cfg["steps"]) + 1):
            batch, tokens = rollout(logits.detach(), gen, int(cfg.get("target", 0)))
            adv = algo.compute_advantages(batch, algo.HPARAMS)
            logprobs = torch.log_softmax(logits, -1).expand(batch.batch_size, T, K).gather(2, tokens[..., None])[..., 0]
            loss, _ = algo.compute_policy_loss(logprobs, batch, adv, algo.HPARAMS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.write(json.dumps(step_metrics(step, logits, batch, loss)) + "\n")
    final = torch.softmax(logits.detach(), -1)[:, int(cfg.get("target", 0))].mean().item()
    return JobResult("evaluated", eval={"selection": {"bandit": final}}, overall={"selection": final},
                     wall_s=time.perf_counter() - t0, steps_done=int(cfg["steps"]))


def main(argv: list[str]) -> int:
    spec = JobSpec.load(Path(argv[0]))
    install_guard()  # no-op under the sandbox bootstrap; protects a run by hand
    train(spec).save(spec.job_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
