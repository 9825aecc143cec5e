"""The seed candidate: contract-conformant, GRPO by hand-checked numbers, equal to the library's GRPO render."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.contract import RolloutBatch, load_algorithm
from core.mechanisms import preset, render
from core.mechanisms.probe import synthetic_batch

SEED = Path(__file__).resolve().parents[1] / "workspace" / "algorithm.py"


@pytest.fixture(scope="module")
def seed_module():
    return load_algorithm(str(SEED))


@pytest.fixture(scope="module")
def grpo_render(tmp_path_factory):
    path = tmp_path_factory.mktemp("render") / "algorithm.py"
    path.write_text(render(preset("grpo")))
    return load_algorithm(str(path))


def test_seed_imports_only_the_allow_list() -> None:
    import ast

    allowed = {"torch", "math", "typing", "dataclasses", "functools"}
    tree = ast.parse(SEED.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= allowed, imported - allowed


def test_seed_grpo_by_hand(seed_module) -> None:
    """One group R = [1, 0, 0, 1]: mean .5, std (Bessel) = sqrt(1/3); ratio 1 so the loss is -mean(A) + 0 KL."""
    mask = torch.ones(4, 2)
    batch = RolloutBatch(
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0]), group_ids=torch.zeros(4, dtype=torch.long),
        valid=torch.ones(4, dtype=torch.bool), truncated=torch.zeros(4, dtype=torch.bool),
        response_mask=mask, old_logprobs=torch.full((4, 2), -1.0), lengths=torch.full((4,), 2),
        ref_logprobs=torch.full((4, 2), -1.5),
    )
    adv = seed_module.compute_advantages(batch, seed_module.HPARAMS)
    expected = 0.5 / (3 ** -0.5 + 1e-4)
    assert torch.allclose(adv, torch.tensor([expected, -expected, -expected, expected]), atol=1e-6)
    logprobs = torch.full((4, 2), -1.0, requires_grad=True)
    loss, metrics = seed_module.compute_policy_loss(logprobs, batch, adv, seed_module.HPARAMS)
    k3 = torch.exp(torch.tensor(-0.5)) + 0.5 - 1  # ref - logp = -0.5
    assert abs(float(loss.detach()) - 0.04 * float(k3)) < 1e-6  # the advantages cancel in the mean
    assert abs(metrics["kl"] - float(k3)) < 1e-6 and metrics["clip_frac"] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_seed_equals_library_render(seed_module, grpo_render, seed: int) -> None:
    batch = synthetic_batch(seed, groups=3, group_size=5, binary=seed % 2 == 0, with_ref=seed != 3)
    a_seed = seed_module.compute_advantages(batch, seed_module.HPARAMS)
    a_lib = grpo_render.compute_advantages(batch, grpo_render.HPARAMS)
    assert torch.allclose(a_seed, a_lib, atol=1e-10, rtol=0)
    g = torch.Generator().manual_seed(seed)
    base = batch.old_logprobs + 0.4 * torch.randn(batch.old_logprobs.shape, generator=g, dtype=torch.float64)
    lp1, lp2 = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    l1, m1 = seed_module.compute_policy_loss(lp1, batch, a_seed, seed_module.HPARAMS)
    l2, m2 = grpo_render.compute_policy_loss(lp2, batch, a_lib, grpo_render.HPARAMS)
    l1.backward()
    l2.backward()
    assert abs(float(l1.detach()) - float(l2.detach())) < 1e-10
    assert torch.allclose(lp1.grad, lp2.grad, atol=1e-12, rtol=0)
    assert m1.keys() == m2.keys() and all(abs(m1[k] - m2[k]) < 1e-10 for k in m1)


def test_seed_padding_gets_no_gradient(seed_module) -> None:
    batch = synthetic_batch(7)
    lp = batch.old_logprobs.clone().requires_grad_(True)
    adv = seed_module.compute_advantages(batch, seed_module.HPARAMS)
    loss, _ = seed_module.compute_policy_loss(lp, batch, adv, seed_module.HPARAMS)
    loss.backward()
    assert float(lp.grad[batch.response_mask == 0].abs().sum()) == 0.0
    assert float(lp.grad[batch.response_mask > 0].abs().sum()) > 0.0


def test_seed_is_finite_when_a_group_is_uniform(seed_module) -> None:
    batch = synthetic_batch(2)
    batch.rewards = torch.zeros_like(batch.rewards)
    adv = seed_module.compute_advantages(batch, seed_module.HPARAMS)
    assert bool(torch.isfinite(adv).all()) and float(adv.abs().max()) == 0.0
