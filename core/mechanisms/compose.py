"""A Composition: one choice per mechanism kind, validated against the registry.

`run_*` apply a composition directly with the library functions; `render`
(render.py) writes the same pipeline as a self-contained algorithm.py. The two
must agree numerically (tests/test_render.py checks it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import MechanismError
from core.mechanisms.registry import MechanismInfo, get

if TYPE_CHECKING:
    import torch

    from core.contract import RolloutBatch

# HPARAMS keys that the trainers read (not the mechanisms); see workspace/CONTRACT.md. The trainers
# also read "kl_coef" (> 0: keep a reference model, fill ref_logprobs) and an optional "weight_decay".
TRAINER_HPARAMS: dict[str, Any] = {
    "lr": 1e-5,             # AdamW learning rate
    "max_grad_norm": 1.0,   # gradient clipping before each optimizer step
}


@dataclass
class Step:
    """One chosen mechanism and the parameters it overrides."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> MechanismInfo:
        return get(self.kind, self.name)

    def resolved(self) -> dict[str, Any]:
        """The mechanism's defaults with this step's overrides applied."""
        return {**self.info.params, **self.params}


@dataclass
class Composition:
    """A complete algorithm made of registered mechanisms (the proposer's "compose" mode)."""

    advantage: Step
    policy_loss: Step
    aggregation: str = "seq-mean-token-mean"
    kl: str | None = None
    kl_coef: float = 0.0
    entropy: Step | None = None
    filters: list[Step] = field(default_factory=list)
    masks: list[Step] = field(default_factory=list)
    shaping: list[Step] = field(default_factory=list)
    hparams: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Composition:
        """Build and validate; unknown names or parameters raise MechanismError listing the valid ones."""
        known = {"advantage", "policy_loss", "aggregation", "kl", "kl_coef", "entropy",
                 "filters", "masks", "shaping", "hparams"}
        extra = sorted(set(data) - known)
        if extra:
            raise MechanismError(f"composition has unknown keys {extra}; valid keys: {', '.join(sorted(known))}")
        for key in ("advantage", "policy_loss"):
            if key not in data:
                raise MechanismError(f"composition needs {key!r} (a mechanism name or {{'name': ..., params}})")
        comp = cls(
            advantage=_step("advantage", data["advantage"]),
            policy_loss=_step("policy_loss", data["policy_loss"]),
            aggregation=get("aggregation", data.get("aggregation", "seq-mean-token-mean")).name,
            kl=get("kl", data["kl"]).name if data.get("kl") else None,
            kl_coef=float(data.get("kl_coef", 0.0)),
            entropy=_step("entropy", data["entropy"]) if data.get("entropy") else None,
            filters=[_step("filter", s) for s in data.get("filters", [])],
            masks=[_step("mask", s) for s in data.get("masks", [])],
            shaping=[_step("shaping", s) for s in data.get("shaping", [])],
            hparams=dict(data.get("hparams", {})),
        )
        comp.validate()
        return comp

    def validate(self) -> None:
        for kind, steps in (("filter", self.filters), ("mask", self.masks), ("shaping", self.shaping)):
            names = [s.name for s in steps]
            if len(names) != len(set(names)):
                raise MechanismError(f"{kind} {names} lists a mechanism twice; list each at most once")
        clash = sorted(set(self.hparams) & {"advantage", "policy_loss", "entropy", "filters", "masks", "shaping"})
        if clash:
            raise MechanismError(f"hparams may not override mechanism sections {clash}; set their params instead")

    def to_hparams(self) -> dict[str, Any]:
        """The HPARAMS dict of the rendered algorithm: trainer keys plus every mechanism's parameters."""
        hp: dict[str, Any] = {**TRAINER_HPARAMS, **copy.deepcopy(self.hparams)}
        hp["advantage"] = self.advantage.resolved()
        hp["policy_loss"] = self.policy_loss.resolved()
        hp["kl_coef"] = self.kl_coef if self.kl else 0.0
        if self.entropy is not None:
            hp["entropy"] = self.entropy.resolved()
        for key, steps in (("filters", self.filters), ("masks", self.masks), ("shaping", self.shaping)):
            if steps:
                hp[key] = {s.name: s.resolved() for s in steps}
        return hp

    def summary(self) -> str:
        parts = [f"advantage={self.advantage.name}", f"policy_loss={self.policy_loss.name}",
                 f"aggregation={self.aggregation}"]
        if self.kl:
            parts.append(f"kl={self.kl}(coef {self.kl_coef:g})")
        if self.entropy:
            parts.append(f"entropy={self.entropy.name}")
        parts += [f"{k}={','.join(s.name for s in v)}" for k, v in
                  (("filters", self.filters), ("masks", self.masks), ("shaping", self.shaping)) if v]
        return ", ".join(parts)


def _step(kind: str, spec: Any) -> Step:
    """A Step from "name" or {"name": ..., **params}; checks the name and the parameter names."""
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
        name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise MechanismError(f"{kind} must be a name or a dict with a 'name' key, got {spec!r}")
    valid = get(kind, name).params
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise MechanismError(
            f"{kind} {name!r} has no parameter(s) {unknown}; valid parameters: {', '.join(valid) or '(none)'}"
        )
    return Step(kind, name, params)


# --- the pipeline, applied directly with library functions -------------------------------------


def run_filter(comp: Composition, batch: RolloutBatch) -> torch.Tensor:
    """bool [B]: rows kept by every filter (all True when there is none)."""
    import torch

    keep = torch.ones_like(batch.valid)
    for step in comp.filters:
        keep = keep & step.info.fn(batch, **step.resolved())
    return keep


def run_advantages(comp: Composition, batch: RolloutBatch) -> torch.Tensor:
    """Shaping in order, then the advantage estimator: [B] or [B, T]."""
    rewards = batch.rewards
    for step in comp.shaping:
        rewards = step.info.fn(batch, rewards, **step.resolved())
    return comp.advantage.info.fn(batch, rewards, **comp.advantage.resolved())


def run_policy_loss(
    comp: Composition, logprobs: torch.Tensor, batch: RolloutBatch, advantages: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masks, per-token loss, optional KL term, aggregation, optional entropy bonus."""
    from core.mechanisms.helpers import masked_mean

    mask = batch.response_mask
    for step in comp.masks:
        mask = mask * step.info.fn(batch, **step.resolved())
    per_token, metrics = comp.policy_loss.info.fn(logprobs, batch, advantages, mask, **comp.policy_loss.resolved())
    if comp.kl and batch.ref_logprobs is not None and comp.kl_coef != 0:
        kl = get("kl", comp.kl).fn(logprobs, batch.ref_logprobs)  # [B, T]
        per_token = per_token + comp.kl_coef * kl
        metrics["kl"] = float(masked_mean(kl.detach(), mask))
    loss = get("aggregation", comp.aggregation).fn(per_token, mask, batch.max_response_len)
    if comp.entropy is not None and batch.entropy is not None:
        loss = loss - comp.entropy.info.fn(batch.entropy, mask, **comp.entropy.resolved())
    return loss, metrics
