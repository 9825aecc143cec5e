"""render(comp) -> a self-contained algorithm.py that equals the library applied directly."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
import torch

from core.contract import load_algorithm
from core.errors import MechanismError
from core.mechanisms import PRESETS, Composition, names, preset, render, run_advantages, run_filter, run_policy_loss
from core.mechanisms.probe import synthetic_batch

ALLOWED_IMPORTS = {"torch", "math", "typing", "dataclasses", "functools"}


def _compositions() -> dict[str, dict]:
    """Every preset, then every advantage and every loss at least once, cycling the other kinds."""
    comps = {f"preset-{k}": v for k, v in PRESETS.items()}
    cycle = itertools.cycle
    aggs, kls = cycle(names("aggregation")), cycle([None, *names("kl")])
    ents, masks = cycle([None, *names("entropy")]), cycle([[], *[[m] for m in names("mask")], names("mask")])
    shapes, filts = cycle([[], *[[s] for s in names("shaping")]]), cycle([[], names("filter")])
    pairs = list(zip(names("advantage"), cycle(names("policy_loss"))))
    pairs += list(zip(cycle(names("advantage")), names("policy_loss")))
    for adv, loss in pairs:
        kl = next(kls)
        comps[f"{adv}+{loss}"] = {
            "advantage": adv, "policy_loss": loss, "aggregation": next(aggs), "kl": kl, "kl_coef": 0.1 if kl else 0,
            "entropy": next(ents), "masks": next(masks), "shaping": next(shapes), "filters": next(filts),
        }
    return comps


COMPOSITIONS = _compositions()


def test_every_mechanism_is_rendered_somewhere() -> None:
    used = {(k, n) for spec in COMPOSITIONS.values() for k, n in _named(Composition.from_dict(spec))}
    for kind in ("advantage", "policy_loss", "aggregation", "kl", "entropy", "filter", "mask", "shaping"):
        assert {(kind, n) for n in names(kind)} <= used, kind


def _named(comp: Composition):
    yield ("advantage", comp.advantage.name)
    yield ("policy_loss", comp.policy_loss.name)
    yield ("aggregation", comp.aggregation)
    if comp.kl:
        yield ("kl", comp.kl)
    if comp.entropy:
        yield ("entropy", comp.entropy.name)
    for kind, steps in (("filter", comp.filters), ("mask", comp.masks), ("shaping", comp.shaping)):
        yield from ((kind, s.name) for s in steps)


@pytest.mark.parametrize("key", sorted(COMPOSITIONS))
def test_render_equals_library(key: str, tmp_path: Path) -> None:
    comp = Composition.from_dict(COMPOSITIONS[key])
    source = render(comp)
    _assert_only_allowed_imports(source)
    path = tmp_path / "algorithm.py"
    path.write_text(source)
    module = load_algorithm(str(path))
    for seed in (0, 1):
        _assert_same(comp, module, synthetic_batch(seed, binary=seed == 0), seed)


def _assert_same(comp: Composition, module, batch, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    batch.entropy = torch.rand(batch.response_mask.shape, generator=g, dtype=torch.float64) * 0.4
    if hasattr(module, "filter_groups"):
        keep = module.filter_groups(batch, module.HPARAMS)
        assert torch.equal(keep, run_filter(comp, batch))
        batch = batch.select(keep) if bool(keep.any()) else batch
    adv_lib = run_advantages(comp, batch)
    adv_mod = module.compute_advantages(batch, module.HPARAMS)
    assert torch.equal(adv_lib, adv_mod)
    base = batch.old_logprobs + 0.3 * torch.randn(batch.old_logprobs.shape, generator=g, dtype=torch.float64)
    lp_lib, lp_mod = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    loss_lib, m_lib = run_policy_loss(comp, lp_lib, batch, adv_lib)
    loss_mod, m_mod = module.compute_policy_loss(lp_mod, batch, adv_mod, module.HPARAMS)
    assert torch.isfinite(loss_lib) and torch.equal(loss_lib.detach(), loss_mod.detach())
    loss_lib.backward()
    loss_mod.backward()
    assert torch.equal(lp_lib.grad, lp_mod.grad) and m_lib == m_mod
    assert float(lp_lib.grad[batch.response_mask == 0].abs().sum()) == 0.0, "padding got a gradient"


def _assert_only_allowed_imports(source: str) -> None:
    tree = ast.parse(source)
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= ALLOWED_IMPORTS, mods - ALLOWED_IMPORTS


def test_render_uses_overrides_in_hparams(tmp_path: Path) -> None:
    comp = Composition.from_dict({"advantage": {"name": "av", "sigma_min": 0.37}, "policy_loss": "ppo_clip",
                                  "hparams": {"lr": 3e-6}})
    path = tmp_path / "algorithm.py"
    path.write_text(render(comp))
    module = load_algorithm(str(path))
    assert module.HPARAMS["lr"] == 3e-6 and module.HPARAMS["advantage"] == {"sigma_min": 0.37}


def test_rendered_hparams_drive_the_rendered_code(tmp_path: Path) -> None:
    """Editing HPARAMS in the file changes behaviour: the functions read hp, not baked-in constants."""
    path = tmp_path / "algorithm.py"
    path.write_text(render(preset("grpo")))
    module = load_algorithm(str(path))
    batch = synthetic_batch(0, binary=False)
    a = module.compute_advantages(batch, module.HPARAMS)
    b = module.compute_advantages(batch, {**module.HPARAMS, "advantage": {"eps": 1.0, "scale": "group"}})
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("spec, fragment", [
    ({"advantage": "grpoo", "policy_loss": "ppo_clip"}, "valid names: av, dr_grpo"),
    ({"advantage": "grpo", "policy_loss": "ppo"}, "valid names: cispo, clip_cov"),
    ({"advantage": "grpo", "policy_loss": "ppo_clip", "aggregation": "mean"}, "seq-mean-token-mean"),
    ({"advantage": {"name": "grpo", "epsilon": 1}, "policy_loss": "ppo_clip"}, "valid parameters: eps, scale"),
    ({"advantage": "grpo", "policy_loss": "ppo_clip", "kl": "k4"}, "valid names: k1, k2, k3"),
    ({"advantage": "grpo", "policy_loss": "ppo_clip", "filters": ["dynamic_sampling"] * 2}, "twice"),
    ({"advantage": "grpo", "policy_loss": "ppo_clip", "klcoef": 1}, "valid keys"),
    ({"policy_loss": "ppo_clip"}, "needs 'advantage'"),
])
def test_from_dict_errors_list_valid_names(spec: dict, fragment: str) -> None:
    with pytest.raises(MechanismError, match=fragment):
        Composition.from_dict(spec)


def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(MechanismError, match="valid presets: .*dapo"):
        preset("ppo")
