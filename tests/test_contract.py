"""RolloutBatch validation gives clear errors; select() keeps rows consistent."""

from __future__ import annotations

import pytest
import torch

from core.contract import RolloutBatch, check_module
from core.errors import ContractError


def batch(**over):
    B, T = 4, 5
    kw = {
        "rewards": torch.tensor([1.0, 0.0, 1.0, 0.0]),
        "group_ids": torch.tensor([0, 0, 1, 1]),
        "valid": torch.tensor([True, True, False, True]),
        "truncated": torch.zeros(B, dtype=torch.bool),
        "response_mask": torch.ones(B, T),
        "old_logprobs": torch.zeros(B, T),
        "lengths": torch.full((B,), T),
    }
    kw.update(over)
    return RolloutBatch(**kw)


def test_valid_batch_has_sizes():
    b = batch()
    assert (b.batch_size, b.num_tokens, b.max_response_len) == (4, 5, 5)


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"rewards": torch.tensor([1.0, 0.0])}, "group_ids has 4 rows, rewards has 2"),
        ({"valid": torch.ones(4)}, "valid must be bool"),
        ({"rewards": torch.tensor([1.0, float("nan"), 0.0, 0.0])}, "NaN"),
        ({"old_logprobs": torch.zeros(4, 6)}, "old_logprobs shape (4, 6) != response_mask shape (4, 5)"),
        ({"ref_logprobs": torch.zeros(4)}, "ref_logprobs shape"),
        ({"group_ids": torch.tensor([0.0, 0.0, 1.0, 1.0])}, "group_ids must be integer"),
        ({"reward_parts": {"fmt": torch.zeros(3)}}, "reward_parts['fmt']"),
        ({"step": 7, "total_steps": 5}, "step 7 outside"),
        ({"reward_parts": {"fmt": torch.zeros(4)}, "reward_weights": {"correct": 1.0}},
         "reward_weights['correct'] names no reward part (parts: ['fmt'])"),
        ({"reward_parts": {"fmt": torch.zeros(4)}, "reward_weights": {"fmt": float("inf")}},
         "reward_weights['fmt'] must be a finite number"),
        ({"reward_parts": {"fmt": torch.zeros(4)}, "reward_weights": {"fmt": torch.tensor(1.0)}},
         "reward_weights['fmt'] must be a finite number"),
    ],
)
def test_invalid_batches_are_named(over, msg):
    with pytest.raises(ContractError) as err:
        batch(**over)
    assert msg in str(err.value)


def test_select_keeps_rows_aligned():
    b = batch(reward_parts={"fmt": torch.tensor([1.0, 2.0, 3.0, 4.0])}, ref_logprobs=torch.ones(4, 5))
    s = b.select(torch.tensor([False, True, True, False]))
    assert s.rewards.tolist() == [0.0, 1.0]
    assert s.reward_parts["fmt"].tolist() == [2.0, 3.0]
    assert s.ref_logprobs.shape == (2, 5)


def test_select_keeps_the_reward_weights():
    b = batch(reward_parts={"fmt": torch.ones(4)}, reward_weights={"fmt": 0.5})
    assert b.select(torch.tensor([True, False, True, False])).reward_weights == {"fmt": 0.5}


def test_check_module_names_missing_pieces():
    import types

    m = types.ModuleType("cand")
    with pytest.raises(ContractError, match="compute_advantages"):
        check_module(m)
    m.compute_advantages = lambda b, hp: None
    m.compute_policy_loss = lambda lp, b, a, hp: None
    with pytest.raises(ContractError, match="HPARAMS"):
        check_module(m)
    m.HPARAMS = {}
    with pytest.raises(ContractError, match="'lr'"):
        check_module(m)
    m.HPARAMS = {"lr": 1e-3}
    check_module(m)
