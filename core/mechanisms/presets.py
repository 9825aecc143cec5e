"""Named compositions: the published algorithms, as the literature priors the proposer can start from."""

from __future__ import annotations

from typing import Any

from core.errors import MechanismError
from core.mechanisms.compose import Composition

_CLIP_HIGHER = {"name": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28}

PRESETS: dict[str, dict[str, Any]] = {
    # DeepSeekMath GRPO: the seed (workspace/algorithm.py must equal its render).
    "grpo": {"advantage": "grpo", "policy_loss": "ppo_clip", "aggregation": "seq-mean-token-mean",
             "kl": "k3", "kl_coef": 0.04},
    "dr_grpo": {"advantage": "dr_grpo", "policy_loss": "ppo_clip", "aggregation": "seq-mean-token-sum-norm"},
    "dapo": {"advantage": "grpo", "policy_loss": _CLIP_HIGHER, "aggregation": "token-mean",
             "filters": ["dynamic_sampling"], "shaping": ["overlong_penalty"]},
    # TRL's loss_type="bnpo": GRPO advantages, token-mean over the (local) batch.
    "bnpo": {"advantage": "grpo", "policy_loss": "ppo_clip", "aggregation": "token-mean"},
    "gspo": {"advantage": "grpo", "policy_loss": "gspo", "aggregation": "seq-mean-token-mean"},
    "gmpo": {"advantage": "grpo", "policy_loss": "gmpo", "aggregation": "seq-mean-token-mean"},
    "cispo": {"advantage": "grpo", "policy_loss": "cispo", "aggregation": "token-mean"},
    "sapo": {"advantage": "grpo", "policy_loss": "sapo", "aggregation": "seq-mean-token-mean"},
    "rloo": {"advantage": "rloo", "policy_loss": "ppo_clip", "aggregation": "token-mean"},
    "reinforce_pp": {"advantage": "reinforce_pp", "policy_loss": "ppo_clip", "aggregation": "token-mean",
                     "kl": "k2", "kl_coef": 1e-3},
    "reinforce_pp_baseline": {"advantage": "reinforce_pp_baseline", "policy_loss": "ppo_clip",
                              "aggregation": "token-mean", "kl": "k2", "kl_coef": 1e-3},
    "gpg": {"advantage": "gpg", "policy_loss": "pg", "aggregation": "token-mean"},
    "lite_ppo": {"advantage": "lite_ppo", "policy_loss": "ppo_clip", "aggregation": "token-mean"},
    "gdpo": {"advantage": "gdpo", "policy_loss": "ppo_clip", "aggregation": "seq-mean-token-mean"},
    "clip_cov": {"advantage": "grpo", "policy_loss": "clip_cov", "aggregation": "token-mean"},
    "kl_cov": {"advantage": "grpo", "policy_loss": "kl_cov", "aggregation": "token-mean"},
    # POISE's winners: AV ships with a strict format penalty and a lower entropy coefficient.
    "av_grpo": {"advantage": "av", "policy_loss": "ppo_clip", "aggregation": "seq-mean-token-mean",
                "kl": "k3", "kl_coef": 0.04, "shaping": ["format_penalty"],
                "entropy": {"name": "fixed", "coef": 5e-4}},
    "vm_av_grpo": {"advantage": "vm", "policy_loss": "ppo_clip", "aggregation": "seq-mean-token-mean",
                   "kl": "k3", "kl_coef": 0.04, "entropy": {"name": "fixed", "coef": 5e-4}},
    "fa_grpo": {"advantage": "fa", "policy_loss": "ppo_clip", "aggregation": "seq-mean-token-mean",
                "kl": "k3", "kl_coef": 0.04},
}


def preset(name: str) -> Composition:
    """The named composition; the error lists the valid names."""
    if name not in PRESETS:
        raise MechanismError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return Composition.from_dict(PRESETS[name])
