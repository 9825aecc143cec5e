"""Probe batches and an equivalence check for advantage functions.

POISE's AV turned out to be the group std under another name. `advantages_agree`
runs two advantage functions on the same synthetic probe batches and says
whether they produce the same advantages everywhere: the verifier uses it to
notice that a "new" mechanism reduces to an existing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from core.contract import RolloutBatch

AdvFn = Callable[["RolloutBatch"], "torch.Tensor"]


def synthetic_batch(
    seed: int,
    groups: int = 4,
    group_size: int = 6,
    tokens: int = 7,
    binary: bool = True,
    with_ref: bool = True,
    max_len: int = 0,
) -> RolloutBatch:
    """A random but valid RolloutBatch: mixed groups, some invalid and truncated rows, ragged lengths.
    max_len is the generation limit (default: the width, `tokens`); above it, no row is truncated."""
    import torch

    from core.contract import RolloutBatch

    g = torch.Generator().manual_seed(seed)
    bsz = groups * group_size
    lengths = torch.randint(1, tokens + 1, (bsz,), generator=g)  # [B]
    mask = (torch.arange(tokens).unsqueeze(0) < lengths.unsqueeze(1)).double()  # [B, T]
    if binary:
        rewards = (torch.rand(bsz, generator=g, dtype=torch.float64) < 0.5).double()
    else:
        rewards = torch.randn(bsz, generator=g, dtype=torch.float64)
    old = -torch.rand(bsz, tokens, generator=g, dtype=torch.float64) * 2 - 0.05  # [B, T] log-probs < 0
    ref = old + 0.1 * torch.randn(bsz, tokens, generator=g, dtype=torch.float64) if with_ref else None
    parts = {"correct": rewards.clone(), "format": (torch.rand(bsz, generator=g) < 0.7).double()}
    return RolloutBatch(
        rewards=rewards,
        group_ids=torch.arange(groups).repeat_interleave(group_size),
        valid=torch.rand(bsz, generator=g) < 0.8,
        truncated=lengths == (max_len or tokens),
        response_mask=mask,
        old_logprobs=old,
        lengths=lengths,
        ref_logprobs=ref,
        step=1,
        total_steps=10,
        reward_parts=parts,
        max_response_len=max_len or tokens,
    )


def probe_batches(n: int = 6) -> list[RolloutBatch]:
    """Varied probes: binary and continuous rewards, small and large groups."""
    shapes = [(4, 6, True), (3, 8, False), (5, 4, True), (2, 16, False), (6, 2, True), (4, 5, False)]
    return [synthetic_batch(seed=100 + i, groups=gr, group_size=gs, binary=b) for i, (gr, gs, b) in
            enumerate(shapes[:n])]


def advantages_agree(a: AdvFn, b: AdvFn, batches: list[RolloutBatch] | None = None, atol: float = 1e-3) -> bool:
    """True when a(batch) and b(batch) match on every probe batch's response tokens (to atol, relative to scale).

    [B] and [B, T] advantages are compared at the token level, so a sequence-level and a
    token-level formulation of the same estimator agree.
    """
    import torch

    for batch in batches or probe_batches():
        mask = batch.response_mask > 0
        x, y = _per_token(a(batch), mask), _per_token(b(batch), mask)
        scale = max(1.0, float(torch.maximum(x.abs().max(), y.abs().max())))
        if not bool(torch.isfinite(x).all() and torch.isfinite(y).all()):
            return False
        if float((x - y).abs().max()) > atol * scale:
            return False
    return True


def _per_token(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    adv = adv.detach().double()
    if adv.dim() == 1:
        adv = adv.unsqueeze(1).expand(mask.shape)
    return adv[mask]
