"""The mechanism registry and hand-computed cases for what TRL does not implement."""

from __future__ import annotations

import math

import pytest
import torch

from core.contract import RolloutBatch
from core.errors import MechanismError, PoiseError
from core.mechanisms import advantages_agree, get, list_mechanisms, names, register
from core.mechanisms.helpers import group_mean, group_std
from core.mechanisms.probe import probe_batches, synthetic_batch

REQUIRED = {
    "advantage": {"grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gpg", "lite_ppo", "gdpo",
                  "av", "vm", "fa"},
    "policy_loss": {"ppo_clip", "gspo", "gmpo", "cispo", "sapo", "pg", "clip_cov", "kl_cov"},
    "aggregation": {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"},
    "kl": {"k1", "k2", "k3"},
    "entropy": {"fixed", "adaptive"},
    "filter": {"dynamic_sampling"},
    "mask": {"truncation", "high_entropy"},
    "shaping": {"overlong_penalty", "format_penalty"},
}


def batch_of(rewards, group_ids=None, valid=None, lengths=None, tokens=None, truncated=None, **kw) -> RolloutBatch:
    r = torch.tensor(rewards, dtype=torch.float64)
    bsz = r.shape[0]
    lengths = torch.tensor(lengths if lengths is not None else [2] * bsz)
    tokens = tokens or int(lengths.max())
    mask = (torch.arange(tokens).unsqueeze(0) < lengths.unsqueeze(1)).double()
    return RolloutBatch(
        rewards=r,
        group_ids=torch.tensor(group_ids if group_ids is not None else [0] * bsz),
        valid=torch.tensor(valid if valid is not None else [True] * bsz),
        truncated=torch.tensor(truncated if truncated is not None else [False] * bsz),
        response_mask=mask, old_logprobs=torch.full((bsz, tokens), -1.0, dtype=torch.float64), lengths=lengths,
        **kw,
    )


def adv(name: str, batch: RolloutBatch, **params) -> torch.Tensor:
    return get("advantage", name).fn(batch, batch.rewards, **params)


# --- registry ---------------------------------------------------------------------------------


def test_registry_has_the_required_mechanisms_documented() -> None:
    for kind, required in REQUIRED.items():
        assert required <= set(names(kind)), required - set(names(kind))
    for info in list_mechanisms():
        assert info.idea and info.formula and info.citation, info.name
        assert "[B" in (info.fn.__doc__ or ""), f"{info.name}: docstring must give tensor shapes"


def test_registry_refuses_a_conflicting_name_and_lists_taken_ones() -> None:
    def other(batch, rewards):
        """Another estimator.

        Formula: A = R. Shapes [B].
        Cite: nobody.
        """
        return rewards

    with pytest.raises(MechanismError, match="already registered.*Taken: av, dr_grpo"):
        register("advantage", "grpo")(other)
    assert get("advantage", "grpo").fn is not other


def test_registry_refuses_undocumented_and_unknown() -> None:
    with pytest.raises(MechanismError, match="'Formula:' line"):
        register("advantage", "undocumented_test_only")(lambda batch, rewards: rewards)
    with pytest.raises(MechanismError, match="valid names: .*grpo"):
        get("advantage", "nope")
    with pytest.raises(MechanismError, match="valid kinds: advantage, policy_loss"):
        get("advantages", "grpo")
    assert issubclass(MechanismError, PoiseError)
    assert "undocumented_test_only" not in names("advantage")


def test_params_are_the_keyword_defaults() -> None:
    assert get("policy_loss", "ppo_clip").params == {"eps_low": 0.2, "eps_high": 0.2}
    assert get("advantage", "vm").params["a_floor"] < -get("advantage", "vm").params["adv_clip"]


# --- advantages ---------------------------------------------------------------------------------


def test_rloo_is_leave_one_out() -> None:
    b = batch_of([1, 0, 0, 1, 5], group_ids=[0, 0, 0, 0, 1])
    assert torch.allclose(adv("rloo", b), torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0], dtype=torch.float64))


def test_reinforce_pp_whitens_over_tokens() -> None:
    b = batch_of([1, 0], group_ids=[0, 1], lengths=[1, 2])  # tokens: 1 | 0 0 -> mean 1/3, var (unbiased) 1/3
    a = adv("reinforce_pp", b)
    s = math.sqrt(1 / 3 + 1e-8)
    expected = torch.tensor([[(2 / 3) / s, 0.0], [-(1 / 3) / s, -(1 / 3) / s]], dtype=torch.float64)
    assert torch.allclose(a, expected, atol=1e-9)


def test_reinforce_pp_baseline_subtracts_group_mean_first() -> None:
    b = batch_of([3, 1, 10, 10], group_ids=[0, 0, 1, 1])  # centred: 1, -1, 0, 0 (two tokens each)
    a = adv("reinforce_pp_baseline", b)
    std = math.sqrt(4 / 7)  # 8 tokens, values +-1 x2 and 0 x4: var = 4 / 7 (unbiased)
    assert torch.allclose(a[:, 0], torch.tensor([1 / std, -1 / std, 0, 0], dtype=torch.float64), atol=1e-6)


def test_gpg_rescales_by_informative_fraction() -> None:
    b = batch_of([1, 0, 1, 1], group_ids=[0, 0, 1, 1])  # alpha = 4 / 2
    assert torch.allclose(adv("gpg", b), torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64))


def test_lite_ppo_uses_group_mean_and_batch_std() -> None:
    b = batch_of([1, 0, 1, 1], group_ids=[0, 0, 1, 1])
    std = torch.tensor([1.0, 0, 1, 1]).std().item()
    expected = torch.tensor([0.5, -0.5, 0, 0], dtype=torch.float64) / (std + 1e-4)
    assert torch.allclose(adv("lite_ppo", b), expected)


def test_gdpo_normalises_parts_separately() -> None:
    parts = {"correct": torch.tensor([1.0, 0, 1, 0]), "format": torch.tensor([1.0, 1, 1, 0])}
    b = batch_of([2, 1, 2, 0], reward_parts=parts)
    s_c, s_f = torch.tensor([1.0, 0, 1, 0]).std().item(), torch.tensor([1.0, 1, 1, 0]).std().item()
    expected = torch.tensor([.5, -.5, .5, -.5]) / (s_c + 1e-4) + torch.tensor([.25, .25, .25, -.75]) / (s_f + 1e-4)
    assert torch.allclose(adv("gdpo", b, batch_norm=False).float(), expected, atol=1e-5)
    summed = adv("grpo", b)  # normalising the sum instead gives another answer
    assert not torch.allclose(adv("gdpo", b, batch_norm=False), summed, atol=1e-2)


def test_gdpo_weighs_parts_as_the_recipe_does_and_skips_side_signals() -> None:
    parts = {"correct": torch.tensor([1.0, 0, 1, 0]), "format": torch.tensor([1.0, 1, 1, 0])}
    s_c, s_f = torch.tensor([1.0, 0, 1, 0]).std().item(), torch.tensor([1.0, 1, 1, 0]).std().item()
    norm_c = torch.tensor([.5, -.5, .5, -.5]) / (s_c + 1e-4)  # hand-computed group-normalised parts
    norm_f = torch.tensor([.25, .25, .25, -.75]) / (s_f + 1e-4)
    weighted = batch_of([1.5, 0.5, 1.5, 0], reward_parts=parts, reward_weights={"correct": 1.0, "format": 0.5})
    assert torch.allclose(adv("gdpo", weighted, batch_norm=False).float(), norm_c + 0.5 * norm_f, atol=1e-5)
    # tiny's case: "format" is a side signal, so GDPO sees correctness alone, not an invented format reward
    side = batch_of([1, 0, 1, 0], reward_parts=parts, reward_weights={"correct": 1.0})
    assert torch.allclose(adv("gdpo", side, batch_norm=False).float(), norm_c, atol=1e-5)


def test_av_sigma_is_the_population_group_std() -> None:
    for batch in probe_batches():
        r = batch.rewards
        pop = group_std(r, batch.group_ids, unbiased=False)
        a = adv("av", batch, sigma_min=1e-12)
        ref = torch.where(pop > 0, (r - group_mean(r, batch.group_ids)) / pop.clamp(min=1e-12), torch.zeros_like(r))
        assert torch.allclose(a, ref, atol=1e-9)
        for gid in batch.group_ids.unique():  # and the same, group by group, with torch.std
            sel = batch.group_ids == gid
            assert math.isclose(float(pop[sel][0]), float(r[sel].std(unbiased=False)), abs_tol=1e-12)


def test_av_floor_caps_near_uniform_groups() -> None:
    b = batch_of([0, 0, 0, 0.1])  # population std 0.0433 < floor 0.1
    assert torch.allclose(adv("av", b, sigma_min=0.1), torch.tensor([-.25, -.25, -.25, .75], dtype=torch.float64))


def test_duplicate_detector() -> None:
    def av(b):
        return adv("av", b, sigma_min=1e-12)

    def grpo_population_std(b):
        r = b.rewards
        return (r - group_mean(r, b.group_ids)) / (group_std(r, b.group_ids, unbiased=False) + 1e-12)

    assert advantages_agree(av, grpo_population_std)  # POISE's AV is the group std under another name
    assert not advantages_agree(av, lambda b: adv("grpo", b))  # Bessel's correction differs
    assert advantages_agree(lambda b: adv("dr_grpo", b), lambda b: adv("grpo", b, scale="none"))
    assert not advantages_agree(lambda b: adv("dr_grpo", b), lambda b: adv("rloo", b))
    # a [B, T] formulation of a [B] estimator is the same estimator
    assert advantages_agree(lambda b: adv("grpo", b), lambda b: adv("grpo", b).unsqueeze(1) * b.response_mask)


def test_vm_hand_values() -> None:
    b = batch_of([1, 0, 0, 0], valid=[True, True, True, False], lengths=[2, 2, 4, 3])
    a = adv("vm", b)
    mu, sigma = 0.4, math.sqrt(0.24)  # (1 + 1) / (3 + 2)
    mean_len = 8 / 3
    expected = [(1 - mu) / sigma, -mu / sigma / (2 / mean_len), -mu / sigma / (4 / mean_len), -3.0]
    assert torch.allclose(a, torch.tensor(expected, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_vm_ordering_invalid_much_below_wrong_below_correct(seed: int) -> None:
    b = synthetic_batch(seed, groups=5, group_size=8)
    a = adv("vm", b)
    for gid in b.group_ids.unique():
        g = b.group_ids == gid
        invalid, valid = a[g & ~b.valid], a[g & b.valid]
        wrong, right = a[g & b.valid & (b.rewards == 0)], a[g & b.valid & (b.rewards == 1)]
        if len(invalid) and len(valid):
            assert float(invalid.max()) <= float(valid.min()) - 0.5  # "<<": a clear margin
        if len(wrong) and len(right):
            assert float(wrong.max()) < float(right.min())


def test_fa_all_fail_groups_and_clipping() -> None:
    b = batch_of([0, 0, 0] + [1] + [0] * 11, group_ids=[0, 0, 0] + [1] * 12, valid=[True, False, True] + [True] * 12)
    a = adv("fa", b)
    assert a[:3].tolist() == [-0.5, -2.0, -0.5]
    assert float(a[3]) == 3.0  # (11/12) / sqrt(1/12) = 3.18, clipped
    assert math.isclose(float(a[4]), -(1 / 12) / (math.sqrt(1 / 12) + 1e-4), rel_tol=1e-9)


# --- losses, KL, aggregation, masks, shaping -------------------------------------------------------


def test_kl_estimators_by_hand() -> None:
    lp, ref = torch.tensor([[-1.0]]), torch.tensor([[-1.5]])
    assert math.isclose(float(get("kl", "k1").fn(lp, ref)), 0.5)
    assert math.isclose(float(get("kl", "k2").fn(lp, ref)), 0.125)
    assert math.isclose(float(get("kl", "k3").fn(lp, ref)), math.exp(-0.5) + 0.5 - 1, rel_tol=1e-6)


def test_aggregations_by_hand() -> None:
    loss, mask = torch.tensor([[1.0, 2.0], [3.0, 9.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert float(get("aggregation", "token-mean").fn(loss, mask, 4)) == 2.0
    assert float(get("aggregation", "seq-mean-token-mean").fn(loss, mask, 4)) == 2.25
    assert float(get("aggregation", "seq-mean-token-sum-norm").fn(loss, mask, 4)) == 0.75


def test_gmpo_geometric_mean_of_clipped_ratios() -> None:
    b = batch_of([1.0], lengths=[2])
    lp = b.old_logprobs + torch.tensor([[0.1, 0.5]], dtype=torch.float64)
    loss, _ = get("policy_loss", "gmpo").fn(lp, b, torch.tensor([1.0], dtype=torch.float64), b.response_mask)
    assert torch.allclose(loss, torch.full((1, 2), -math.exp(0.25), dtype=torch.float64))  # 0.5 clipped to 0.4


def test_pg_is_minus_advantage_times_logprob() -> None:
    b = batch_of([1.0, 0.0], lengths=[2, 2])
    loss, _ = get("policy_loss", "pg").fn(b.old_logprobs, b, torch.tensor([2.0, -1.0], dtype=torch.float64),
                                          b.response_mask)
    assert loss.tolist() == [[2.0, 2.0], [-1.0, -1.0]]


def _cov_setup():
    b = batch_of([1.0, 0.0], group_ids=[0, 1], lengths=[3, 3])
    a = torch.tensor([[2.0, 2.0, 2.0], [-2.0, -2.0, -2.0]], dtype=torch.float64)
    lp = b.old_logprobs.clone()  # old log-probs are all -1
    lp[1] = -2.5  # ratio 0.22 with A < 0: clipped, so Clip-Cov may not pick these; mean logp = -1.733
    lp[0, 0] = -0.9  # ratio 1.105 (unclipped), cov = 2 * 0.833 = 1.67: the top eligible token
    return b, a, lp.requires_grad_(True)


def test_clip_cov_detaches_the_top_covariance_unclipped_token() -> None:
    b, a, lp = _cov_setup()
    loss, metrics = get("policy_loss", "clip_cov").fn(lp, b, a, b.response_mask, cov_ratio=0.01)
    base, _ = get("policy_loss", "ppo_clip").fn(lp, b, a, b.response_mask)
    chosen = torch.zeros_like(loss, dtype=torch.bool)
    chosen[0, 0] = True
    assert float(loss.detach()[0, 0]) == 0.0 and float(base.detach()[0, 0]) != 0.0
    assert torch.equal(loss[~chosen], base[~chosen]) and metrics["cov_frac"] == pytest.approx(1 / 6)
    loss.sum().backward()
    assert float(lp.grad[0, 0]) == 0.0 and float(lp.grad[0, 1]) != 0.0


def test_kl_cov_penalises_the_top_covariance_token() -> None:
    b, a, lp = _cov_setup()
    loss, _ = get("policy_loss", "kl_cov").fn(lp, b, a, b.response_mask, cov_ratio=0.01, kl_coef=1.0)
    plain = -a * torch.exp(lp - b.old_logprobs)
    diff = (loss - plain).detach()
    assert math.isclose(float(diff[0, 0]), 0.1, rel_tol=1e-9)  # |log ratio| of the top token
    assert float(diff.abs().sum()) == pytest.approx(0.1)


def test_truncation_mask_removes_gradient_but_not_statistics() -> None:
    b = batch_of([1, 0, 0, 1], lengths=[2, 2, 2, 2], truncated=[False, False, True, False])
    m = get("mask", "truncation").fn(b)
    assert m[:, 0].tolist() == [1, 1, 0, 1]
    assert float(adv("grpo", b)[2]) < 0  # the truncated row still counts in its group's statistics


def test_high_entropy_mask_keeps_the_top_fraction() -> None:
    b = batch_of([1.0, 0.0], lengths=[5, 5])
    b.entropy = torch.arange(10, dtype=torch.float64).view(2, 5)
    m = get("mask", "high_entropy").fn(b, top_frac=0.2)
    assert int(m.sum()) == 2 and m[1, 3:].tolist() == [1.0, 1.0]


def test_dynamic_sampling_drops_uniform_groups() -> None:
    b = batch_of([0, 0, 1, 1, 1, 0], group_ids=[0, 0, 1, 1, 2, 2])
    assert get("filter", "dynamic_sampling").fn(b).tolist() == [False, False, False, False, True, True]


def test_overlong_and_format_shaping() -> None:
    b = batch_of([1, 1, 1, 1], lengths=[8, 9, 10, 3], valid=[True, True, True, False], tokens=10)
    shaped = get("shaping", "overlong_penalty").fn(b, b.rewards, cache_frac=0.2)  # L_max 10, cache 2
    assert shaped.tolist() == [1.0, 0.5, 0.0, 1.0]
    assert get("shaping", "format_penalty").fn(b, b.rewards, penalty=0.5).tolist() == [1, 1, 1, 0.5]


def test_entropy_bonuses() -> None:
    ent, mask = torch.tensor([[0.1, 0.3], [0.5, 9.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert math.isclose(float(get("entropy", "fixed").fn(ent, mask, coef=0.1)), 0.03, rel_tol=1e-6)
    assert math.isclose(float(get("entropy", "adaptive").fn(ent, mask, coef=0.1, target=0.5)), 0.03, rel_tol=1e-6)
    assert float(get("entropy", "adaptive").fn(ent, mask, coef=0.1, target=0.2)) == 0.0


@pytest.mark.parametrize("name", sorted(REQUIRED["advantage"]))
def test_every_advantage_is_finite_on_degenerate_groups(name: str) -> None:
    b = batch_of([1, 1, 1, 0, 0.5], group_ids=[0, 0, 0, 1, 2], lengths=[1, 2, 2, 1, 2])
    assert bool(torch.isfinite(adv(name, b)).all())
