"""Our mechanisms against TRL's own GRPOTrainer code (the oracle nobody here wrote).

TRL's loss lives in `GRPOTrainer._compute_loss` and its reward normalisation in
`GRPOTrainer._generate_and_score_completions`. Neither needs a training run: we
build the trainer with `object.__new__` and set exactly the attributes those two
methods read. The only replaced pieces are the model forward (FakePolicy returns
the chosen per-token log-probs) and generation/reward calls (they return the
chosen rewards) -- every formula under test is TRL's code.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from core.mechanisms import Composition, preset, run_advantages, run_policy_loss
from core.mechanisms.probe import synthetic_batch

GRPOTrainer = pytest.importorskip("trl.trainer.grpo_trainer").GRPOTrainer
TOL = 1e-6


class FakeAccelerator:
    """Single process: gather/reduce are the identity."""

    device = torch.device("cpu")
    process_index = 0
    num_processes = 1
    sync_gradients = True
    is_main_process = True

    def gather(self, t):
        return t

    gather_for_metrics = gather

    def reduce(self, t, reduction="sum"):
        return t


# The generation limit, above the batch width (7): length-normalised losses must divide by the limit, not by
# the longest response, and equal widths would hide a mix-up of the two.
MAX_LEN = 12


def trl_trainer(**overrides) -> GRPOTrainer:
    """A GRPOTrainer with only the state that _compute_loss and the reward normalisation read."""
    t = object.__new__(GRPOTrainer)
    cfg = {
        "loss_type": "grpo", "epsilon_low": 0.2, "epsilon_high": 0.2, "beta": 0.0, "importance_sampling_level": "token",
        "top_entropy_quantile": 1.0, "off_policy_mask_threshold": None, "use_vllm": False,
        "vllm_importance_sampling_correction": False, "aux_loss_enabled": False, "_entropy_bonus_enabled": False,
        "entropy_coef": 0.0, "use_adaptive_entropy": False, "current_gradient_accumulation_steps": 1,
        "max_completion_length": MAX_LEN, "scale_rewards": "group", "multi_objective_aggregation": "sum_then_normalize",
        "num_generations": 6, "num_iterations": 1, "mask_truncated_completions": False, "pad_to_multiple_of": None,
        "environment_factories": None, "environments": None, "tools": None, "log_multimodal": False, "ref_model": None,
    }
    cfg.update(overrides)
    for key, value in cfg.items():
        setattr(t, key, value)
    t.args = SimpleNamespace(
        use_bias_correction_kl=False, delta=None, sapo_temperature_pos=1.0, sapo_temperature_neg=1.05,
        steps_per_generation=1, gradient_accumulation_steps=1, per_device_train_batch_size=64,
        gradient_checkpointing_kwargs=None,
    )
    t.model = SimpleNamespace(training=True, is_gradient_checkpointing=False)
    t.accelerator = FakeAccelerator()
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    return t


def trl_loss(trainer: GRPOTrainer, logprobs: torch.Tensor, batch, advantages: torch.Tensor) -> torch.Tensor:
    """TRL's loss for the given current log-probs (FakePolicy) and batch."""
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logprobs, torch.zeros_like(logprobs), None)
    bsz, t = batch.response_mask.shape
    inputs = {
        "prompt_ids": torch.zeros(bsz, 1, dtype=torch.long),
        "prompt_mask": torch.ones(bsz, 1, dtype=torch.long),
        "completion_ids": torch.zeros(bsz, t, dtype=torch.long),
        "completion_mask": batch.response_mask.long(),
        "advantages": advantages,
        "old_per_token_logps": batch.old_logprobs,
        "num_items_in_batch": batch.response_mask.sum(),
    }
    if batch.ref_logprobs is not None:
        inputs["ref_per_token_logps"] = batch.ref_logprobs
    return trainer._compute_loss(None, inputs)


def current_logprobs(batch, seed: int, spread: float = 0.4) -> torch.Tensor:
    """Current-policy log-probs near old ones, some far enough to be clipped; requires grad."""
    g = torch.Generator().manual_seed(seed)
    noise = spread * torch.randn(batch.old_logprobs.shape, generator=g, dtype=batch.old_logprobs.dtype)
    return (batch.old_logprobs + noise).clamp(max=-1e-3).requires_grad_(True)


def both_losses(comp: Composition, trainer: GRPOTrainer, seed: int):
    batch = synthetic_batch(seed, tokens=7, with_ref=trainer.beta != 0.0, max_len=MAX_LEN)
    adv = run_advantages(comp, batch)
    ours_lp, theirs_lp = current_logprobs(batch, seed), current_logprobs(batch, seed)
    ours, _ = run_policy_loss(comp, ours_lp, batch, adv)
    theirs = trl_loss(trainer, theirs_lp, batch, adv)
    ours.backward()
    theirs.backward()
    return ours, theirs, ours_lp.grad, theirs_lp.grad


# (our composition, TRL trainer settings): one row per TRL loss_type / option under test.
LOSS_CASES = {
    "grpo": (preset("grpo"), {"loss_type": "grpo", "beta": 0.04}),
    "grpo_no_kl": ({"advantage": "grpo", "policy_loss": "ppo_clip"}, {"loss_type": "grpo"}),
    "dr_grpo": (preset("dr_grpo"), {"loss_type": "dr_grpo"}),
    "dapo": ({"advantage": "grpo", "policy_loss": {"name": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28},
              "aggregation": "token-mean"}, {"loss_type": "dapo", "epsilon_high": 0.28}),
    "bnpo": (preset("bnpo"), {"loss_type": "bnpo"}),
    "cispo": (preset("cispo"), {"loss_type": "cispo", "epsilon_high": 5.0}),
    "cispo_tight": ({"advantage": "grpo", "policy_loss": {"name": "cispo", "ratio_max": 1.1},
                     "aggregation": "token-mean"}, {"loss_type": "cispo", "epsilon_high": 1.1}),
    "sapo": (preset("sapo"), {"loss_type": "sapo"}),
    "gspo": ({"advantage": "grpo", "policy_loss": {"name": "gspo", "eps_low": 0.05, "eps_high": 0.08}},
             {"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon_low": 0.05, "epsilon_high": 0.08}),
    "gspo_kl": ({"advantage": "grpo", "policy_loss": {"name": "gspo", "eps_low": 0.05, "eps_high": 0.08},
                 "kl": "k3", "kl_coef": 0.1},
                {"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon_low": 0.05,
                     "epsilon_high": 0.08, "beta": 0.1}),
}


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_gradient_match_trl(case: str, seed: int) -> None:
    spec, settings = LOSS_CASES[case]
    comp = spec if isinstance(spec, Composition) else Composition.from_dict(spec)
    ours, theirs, g_ours, g_theirs = both_losses(comp, trl_trainer(**settings), seed)
    assert abs(float(ours.detach()) - float(theirs.detach())) < TOL, f"{case}: loss ours={float(ours.detach())} TRL={float(theirs.detach())}"
    assert torch.allclose(g_ours, g_theirs, atol=TOL, rtol=0), f"{case}: gradients differ from TRL"
    assert float(g_ours.abs().sum()) > 0, "the check is vacuous if nothing has a gradient"


def test_the_clip_is_exercised() -> None:
    """The oracle cases must actually hit the clip region, or eps mistakes would go unseen."""
    batch = synthetic_batch(0, tokens=7)
    lp = current_logprobs(batch, 0)
    ratio = torch.exp(lp - batch.old_logprobs)[batch.response_mask > 0]
    assert bool(((ratio > 1.28) | (ratio < 0.8)).any()) and bool(((ratio > 1.2) & (ratio < 1.28)).any())


def test_entropy_bonus_matches_trl() -> None:
    comp = Composition.from_dict({"advantage": "grpo", "policy_loss": "ppo_clip",
                                  "entropy": {"name": "fixed", "coef": 0.01}})
    batch = synthetic_batch(3, tokens=7, with_ref=False)
    g = torch.Generator().manual_seed(9)
    batch.entropy = torch.rand(batch.response_mask.shape, generator=g, dtype=torch.float64)
    adv = run_advantages(comp, batch)
    lp = current_logprobs(batch, 3)
    ours, _ = run_policy_loss(comp, lp, batch, adv)
    trainer = trl_trainer(_entropy_bonus_enabled=True, entropy_coef=0.01)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (lp, batch.entropy, None)
    inputs = _inputs(batch, adv)
    theirs = trainer._compute_loss(None, inputs)
    assert abs(float(ours.detach()) - float(theirs.detach())) < TOL


def _inputs(batch, adv: torch.Tensor) -> dict:
    bsz, t = batch.response_mask.shape
    return {"prompt_ids": torch.zeros(bsz, 1, dtype=torch.long), "prompt_mask": torch.ones(bsz, 1, dtype=torch.long),
            "completion_ids": torch.zeros(bsz, t, dtype=torch.long), "completion_mask": batch.response_mask.long(),
            "advantages": adv, "old_per_token_logps": batch.old_logprobs,
            "num_items_in_batch": batch.response_mask.sum()}


# --- reward normalisation: TRL's _generate_and_score_completions -------------------------------


def trl_advantages(batch, **settings) -> torch.Tensor:
    """Advantages as TRL computes them from the batch's rewards (or reward_parts, one reward function each)."""
    parts = list(batch.reward_parts.values()) if settings.get("multi_objective_aggregation") == "normalize_then_sum" \
        else [batch.rewards]
    bsz, _t = batch.response_mask.shape
    trainer = trl_trainer(**settings)
    trainer.reward_func_names = [f"r{k}" for k in range(len(parts))]
    names = list(batch.reward_parts) if len(parts) > 1 else ["rewards"]
    trainer.reward_weights = torch.tensor([float(batch.reward_weights.get(n, 1.0)) for n in names])
    trainer.reward_funcs = [None] * len(parts)
    trainer._tokenizer = SimpleNamespace(pad_token_id=0)
    trainer._logs = {"prompt": [], "completion": [], "rewards": defaultdict(list), "advantages": [],
                     "extra": defaultdict(list)}
    trainer._pending_extra_logs, trainer._pending_metrics = {}, {}
    lengths = batch.lengths.tolist()
    trainer._generate = lambda prompts: ([[1]] * bsz, [[1] * n for n in lengths], None, ["c"] * bsz, None, {}, None,
                                         None)
    trainer._calculate_rewards = lambda *a: torch.stack(parts, dim=1).float()
    return trainer._generate_and_score_completions([{"prompt": f"p{i}"} for i in range(bsz)])["advantages"]


ADV_CASES = {
    "group": ({"name": "grpo"}, {"scale_rewards": "group"}),
    "batch": ({"name": "grpo", "scale": "batch"}, {"scale_rewards": "batch"}),
    "lite_ppo": ({"name": "lite_ppo"}, {"scale_rewards": "batch"}),
    "none": ({"name": "grpo", "scale": "none"}, {"scale_rewards": "none"}),
    "dr_grpo": ({"name": "dr_grpo"}, {"scale_rewards": "none"}),
    "gdpo": ({"name": "gdpo"}, {"multi_objective_aggregation": "normalize_then_sum"}),
}
# Reward weights per case (recipe math's {"correct": 1, "format": format_weight}); none = every part weight 1.
ADV_WEIGHTS = {"gdpo_weighted": {"correct": 1.0, "format": 0.3}, "gdpo_side_signal": {"correct": 1.0, "format": 0.0}}
ADV_CASES.update(dict.fromkeys(ADV_WEIGHTS, ADV_CASES["gdpo"]))


@pytest.mark.parametrize("case", sorted(ADV_CASES))
@pytest.mark.parametrize("binary", [True, False])
def test_advantages_match_trl(case: str, binary: bool) -> None:
    spec, settings = ADV_CASES[case]
    batch = synthetic_batch(5, groups=4, group_size=6, binary=binary)
    batch.rewards = batch.rewards.float()  # TRL computes rewards in float32
    batch.reward_parts = {k: v.float() for k, v in batch.reward_parts.items()}
    batch.reward_weights = ADV_WEIGHTS.get(case, {})
    comp = Composition.from_dict({"advantage": spec, "policy_loss": "ppo_clip"})
    ours = run_advantages(comp, batch)
    theirs = trl_advantages(batch, num_generations=6, **settings)
    worst = float((ours.float() - theirs).abs().max())
    assert worst < TOL, f"{case}: advantages differ from TRL by up to {worst:.3g}"
    assert float(theirs.abs().sum()) > 0
