"""The algorithm contract: what every candidate receives and must provide.

Both trainers (the CPU `tiny` loop and the TRL adapter on GPU) build a
`RolloutBatch` and call a candidate module's functions. A mechanism written
once against this contract therefore runs on both.

A candidate module (`algorithm.py`) must define::

    HPARAMS: dict[str, Any]
    compute_advantages(batch: RolloutBatch, hp: dict) -> Tensor  # [B] or [B, T]
    compute_policy_loss(logprobs: Tensor, batch: RolloutBatch,
                        advantages: Tensor, hp: dict) -> tuple[Tensor, dict[str, float]]

and may define::

    filter_groups(batch: RolloutBatch, hp: dict) -> Tensor  # bool [B], True = keep

torch is imported lazily so that `import core.contract` stays cheap for the TUI.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from core.errors import ContractError

if TYPE_CHECKING:
    import torch

REQUIRED_FUNCTIONS = ("compute_advantages", "compute_policy_loss")
OPTIONAL_FUNCTIONS = ("filter_groups",)
REQUIRED_HPARAMS = ("lr",)


@dataclass
class RolloutBatch:
    """One batch of sampled responses, B = prompts x group size, T = max response tokens.

    Fields (shapes):
      rewards        float [B]     the scalar reward the recipe optimises: sum_k reward_weights[k] * reward_parts[k]
      group_ids      long  [B]     responses with the same id answer the same prompt
      valid          bool  [B]     the answer was parseable in the strict format
      truncated      bool  [B]     the response hit the length limit
      response_mask  float [B, T]  1.0 on response tokens, 0.0 on padding
      old_logprobs   float [B, T]  log pi_old(token) of the sampling policy (no grad)
      lengths        long  [B]     response lengths in tokens (= response_mask.sum(1))
      ref_logprobs   float [B, T]  log pi_ref(token), or None when the run has no reference
      step, total_steps            training progress, for schedules
      reward_parts   dict name -> float [B]   reward components and side signals (correct, format, ...)
      reward_weights dict name -> float       how `rewards` is made of the parts; a part not named here is a side
                                   signal (tiny: {"correct": 1.0}; math: {"correct": 1, "format": format_weight}).
                                   Empty when the recipe did not say: then every part counts with weight 1.
      max_response_len             the generation limit T_max, for length shaping
      entropy        float [B, T]  current-policy token entropy WITH grad; the trainer
                                   fills it before compute_policy_loss (None before that)
    """

    rewards: torch.Tensor
    group_ids: torch.Tensor
    valid: torch.Tensor
    truncated: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    lengths: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    step: int = 0
    total_steps: int = 1
    reward_parts: dict[str, torch.Tensor] = field(default_factory=dict)
    reward_weights: dict[str, float] = field(default_factory=dict)
    max_response_len: int = 0
    entropy: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _validate(self)
        if self.max_response_len <= 0:
            self.max_response_len = int(self.response_mask.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.shape[1])

    def select(self, keep: torch.Tensor) -> RolloutBatch:
        """Rows where bool `keep` [B] is True; used after filter_groups."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "reward_parts":
                v = {k: t[keep] for k, t in v.items()}
            elif _is_tensor(v):
                v = v[keep]
            values[f.name] = v
        return RolloutBatch(**values)


def _is_tensor(v: object) -> bool:
    torch = sys.modules.get("torch")  # not imported here: no tensor can exist without it
    return torch is not None and isinstance(v, torch.Tensor)


def _validate(b: RolloutBatch) -> None:
    import torch

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ContractError(f"RolloutBatch: {msg}")

    for name in ("rewards", "group_ids", "valid", "truncated", "lengths"):
        t = getattr(b, name)
        need(_is_tensor(t), f"{name} must be a torch.Tensor, got {type(t).__name__}")
        need(t.dim() == 1, f"{name} must have shape [B], got {tuple(t.shape)}")
    bsz = b.rewards.shape[0]
    need(bsz > 0, "empty batch (B = 0)")
    for name in ("group_ids", "valid", "truncated", "lengths"):
        need(getattr(b, name).shape[0] == bsz, f"{name} has {getattr(b, name).shape[0]} rows, rewards has {bsz}")
    need(b.rewards.is_floating_point(), "rewards must be floating point")
    need(bool(torch.isfinite(b.rewards).all()), "rewards contain NaN or inf")
    need(b.valid.dtype == torch.bool, f"valid must be bool, got {b.valid.dtype}")
    need(b.truncated.dtype == torch.bool, f"truncated must be bool, got {b.truncated.dtype}")
    need(not b.group_ids.is_floating_point(), "group_ids must be integer")
    for name in ("response_mask", "old_logprobs"):
        t = getattr(b, name)
        need(_is_tensor(t) and t.dim() == 2, f"{name} must have shape [B, T]")
        need(t.shape[0] == bsz, f"{name} has {t.shape[0]} rows, rewards has {bsz}")
    shape = tuple(b.response_mask.shape)
    need(tuple(b.old_logprobs.shape) == shape, f"old_logprobs shape {tuple(b.old_logprobs.shape)} != response_mask shape {shape}")
    if b.ref_logprobs is not None:
        need(tuple(b.ref_logprobs.shape) == shape, f"ref_logprobs shape {tuple(b.ref_logprobs.shape)} != {shape}")
    for key, part in b.reward_parts.items():
        need(_is_tensor(part) and tuple(part.shape) == (bsz,), f"reward_parts[{key!r}] must have shape [B]")
    for key, weight in b.reward_weights.items():
        need(key in b.reward_parts, f"reward_weights[{key!r}] names no reward part (parts: {sorted(b.reward_parts)})")
        need(isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight),
             f"reward_weights[{key!r}] must be a finite number, got {weight!r}")
    need(0 <= b.step <= max(b.total_steps, 1), f"step {b.step} outside [0, total_steps={b.total_steps}]")


def check_module(module: ModuleType) -> None:
    """Raise ContractError unless `module` defines the candidate interface."""
    for name in REQUIRED_FUNCTIONS:
        if not callable(getattr(module, name, None)):
            raise ContractError(f"algorithm.py must define a function {name}(...)")
    hp = getattr(module, "HPARAMS", None)
    if not isinstance(hp, dict):
        raise ContractError("algorithm.py must define HPARAMS as a dict")
    for key in REQUIRED_HPARAMS:
        if key not in hp:
            raise ContractError(f"HPARAMS must contain {key!r}")
    fg = getattr(module, "filter_groups", None)
    if fg is not None and not callable(fg):
        raise ContractError("filter_groups must be a function when defined")


def load_algorithm(path: str) -> ModuleType:
    """Import a candidate file as a fresh module and check the interface.

    This executes the file: call it only inside the sandboxed job process.
    """
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"poise_candidate_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ContractError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # candidate code is untrusted: report, do not crash the caller
        raise ContractError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    check_module(module)
    return module
