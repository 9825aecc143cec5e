"""Recipe tiny, the GRPO loop on a very small model: parameters move, metrics are written, NaN is caught."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from core.contract import load_algorithm
from core.jobspec import METRIC_KEYS
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import load_or_build
from core.recipes.tiny.trainer import early_kill_reason, train

TEST_CFG = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "sft_steps": 8, "sft_batch_size": 16,
            "eval_size": 8, "steps": 3, "prompts_per_step": 3, "group_size": 4, "max_response_tokens": 16,
            "minibatches": 2}

# A barely trained model almost never answers correctly, so real rewards would give zero advantages
# and no gradient. This fake advantage (longer than average = good) always varies, which is all a
# test of the trainer's plumbing needs. It still reads KL through the reference when asked.
FAKE_LENGTH_ADVANTAGE = '''
import torch
HPARAMS = {"lr": 1e-2, "kl_coef": 0.1, "max_grad_norm": 1.0}

def compute_advantages(batch, hp):
    x = batch.lengths.float()
    return (x - x.mean()) / (x.std() + 1e-6) + batch.reward_parts["format"] * 0.0

def compute_policy_loss(logprobs, batch, advantages, hp):
    ratio = torch.exp(logprobs - batch.old_logprobs)
    kl = batch.ref_logprobs - logprobs
    tok = -ratio * advantages[:, None] + hp["kl_coef"] * (torch.exp(kl) - kl - 1) - 0.01 * batch.entropy
    m = batch.response_mask
    return (tok * m).sum() / m.sum(), {"clip_frac": 0.25}
'''

FAKE_NAN_LOSS = FAKE_LENGTH_ADVANTAGE.replace('return (tok * m).sum() / m.sum(), {"clip_frac": 0.25}',
                                              'return (tok * m).sum() * float("nan"), {}')

FAKE_FILTER_ALL = FAKE_LENGTH_ADVANTAGE + '''
def filter_groups(batch, hp):
    return torch.zeros_like(batch.valid)
'''


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def _algo(tmp_path: Path, source: str):
    path = tmp_path / "algorithm.py"
    path.write_text(source)
    return load_algorithm(str(path))


def _run(tmp_path: Path, cache: str, source: str) -> tuple[torch.nn.Module, dict, list[dict], object]:
    cfg = TinyConfig(**TEST_CFG)
    model, tok, _ = load_or_build(cfg, cache, lambda d, t, m: None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lines: list[dict] = []
    res = train(model, tok, _algo(tmp_path, source), cfg, seed=0, steps=cfg.steps, exclude=set(), emit=lines.append)
    return model, before, lines, res


def test_every_parameter_changes(tmp_path: Path, cache: str):
    model, before, _, res = _run(tmp_path, cache, FAKE_LENGTH_ADVANTAGE)
    assert res.diverged == "" and res.steps_done == 3
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} did not change"


def test_metrics_lines_have_the_contract_keys(tmp_path: Path, cache: str):
    _, _, lines, res = _run(tmp_path, cache, FAKE_LENGTH_ADVANTAGE)
    assert [ln["step"] for ln in lines] == [1, 2, 3]
    for ln in lines:
        assert set(METRIC_KEYS) <= set(ln), set(METRIC_KEYS) - set(ln)
        json.dumps(ln)  # a metrics line must serialise
        assert 0.0 <= ln["valid_rate"] <= 1.0 and 0.0 <= ln["zero_var_frac"] <= 1.0
        assert ln["clip_frac"] == 0.25  # taken from the candidate's metrics dict
        assert ln["kl"] >= 0.0 and ln["entropy"] > 0.0
    assert lines[-1]["kl"] > 0.0  # the reference is frozen while the policy moves
    assert res.generated_tokens > 0 and res.trained_tokens > 0


def test_nan_loss_stops_as_diverged(tmp_path: Path, cache: str):
    model, before, lines, res = _run(tmp_path, cache, FAKE_NAN_LOSS)
    assert "nan" in res.diverged and res.steps_done == 1
    assert len(lines) == 1
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), f"{name} was updated with a NaN loss"


def test_filtering_every_group_skips_the_update(tmp_path: Path, cache: str):
    model, before, lines, res = _run(tmp_path, cache, FAKE_FILTER_ALL)
    assert res.diverged == "" and [ln["kept_frac"] for ln in lines] == [0.0, 0.0, 0.0]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_no_reference_without_kl(tmp_path: Path, cache: str):
    src = FAKE_LENGTH_ADVANTAGE.replace('"kl_coef": 0.1', '"kl_coef": 0.0').replace(
        "kl = batch.ref_logprobs - logprobs", "assert batch.ref_logprobs is None; kl = logprobs * 0")
    _, _, lines, res = _run(tmp_path, cache, src)
    assert res.diverged == "" and all(ln["kl"] == 0.0 for ln in lines)


def test_early_kill_thresholds():
    line = {"step": 4, "kl": 9.0, "entropy": 0.5, "reward_mean": 0.0}
    assert "KL" in early_kill_reason(line, {"max_kl": 5.0}, 0)
    assert "entropy" in early_kill_reason({**line, "entropy": 1e-6}, {"min_entropy": 1e-4}, 0)
    assert "reward was 0" in early_kill_reason(line, {"zero_reward_steps": 3}, 3)
    assert early_kill_reason(line, {"max_kl": 10.0, "min_entropy": 1e-4, "zero_reward_steps": 5}, 3) == ""


def test_the_batch_carries_the_generation_limit_not_the_longest_response():
    """Overlong penalties and Dr. GRPO's divisor are defined against the limit (here 32); no response of this
    batch came near it, so the longest response (5 tokens) would have penalised the longest answer."""
    from core.recipes.tiny.rollout import Rollout
    from core.recipes.tiny.task import Problem
    from core.recipes.tiny.trainer import make_batch

    lengths = torch.tensor([5, 3, 4, 2])
    mask = (torch.arange(5)[None, :] < lengths[:, None]).float()  # [4, 5]
    ro = Rollout(prompt_ids=torch.ones(4, 3, dtype=torch.long), prompt_mask=torch.ones(4, 3, dtype=torch.long),
                 response_ids=torch.ones(4, 5, dtype=torch.long), response_mask=mask, logprobs=torch.zeros(4, 5),
                 truncated=torch.zeros(4, dtype=torch.bool), texts=["1 #### 2", "#### 2", "x", "#### 3"])
    problems = [Problem("add1", "1+1=", 2, "#### 2")] * 4
    batch = make_batch(ro, problems, 2, 0, 10, None, max_response_len=32)
    assert batch.max_response_len == 32 and batch.num_tokens == 5
    assert batch.lengths.tolist() == [5, 3, 4, 2]


def test_the_reward_is_correctness_and_format_a_side_signal():
    """GDPO sums the weighted parts: an unweighted "format" would become a reward the recipe does not give."""
    from core.recipes.tiny.rollout import Rollout
    from core.recipes.tiny.task import Problem
    from core.recipes.tiny.trainer import make_batch

    mask = torch.ones(4, 5)
    ro = Rollout(prompt_ids=torch.ones(4, 3, dtype=torch.long), prompt_mask=torch.ones(4, 3, dtype=torch.long),
                 response_ids=torch.ones(4, 5, dtype=torch.long), response_mask=mask, logprobs=torch.zeros(4, 5),
                 truncated=torch.zeros(4, dtype=torch.bool), texts=["1 #### 2", "1 #### 3", "x", "1 #### 2"])
    batch = make_batch(ro, [Problem("add1", "1+1=", 2, "#### 2")] * 4, 2, 0, 10, None, max_response_len=5)
    assert batch.rewards.tolist() == [1.0, 0.0, 0.0, 1.0] and batch.reward_parts["format"].tolist() == [1, 1, 0, 1]
    assert batch.reward_weights == {"correct": 1.0}
    assert torch.equal(batch.rewards, sum(w * batch.reward_parts[k] for k, w in batch.reward_weights.items()))
