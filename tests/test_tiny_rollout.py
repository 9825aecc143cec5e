"""Recipe tiny, rollouts: rows that end early leave the decode batch, and the training forward runs
in length-sorted chunks. Both must give every row exactly what it would get alone."""

from __future__ import annotations

import pytest
import torch

from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import load_or_build
from core.recipes.tiny.rollout import Rollout, generate, token_logprobs

TEST_MODEL = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "sft_steps": 8, "sft_batch_size": 16,
              "eval_size": 8}
PROMPTS = ["1+2=", "12+7*3=", "99-9=", "4*25=", "7=", "123+456-78="]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_tok(request, tmp_path_factory: pytest.TempPathFactory):
    cfg = TinyConfig(**TEST_MODEL, arch=request.param)
    model, tok, _ = load_or_build(cfg, str(tmp_path_factory.mktemp("m")), lambda d, t, m: None)
    return model, tok


def sampled(model, tok, rows: int = 48, max_new: int = 24) -> Rollout:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(rows)]
    return generate(model, tok, prompts, max_new, temperature=1.0, generator=torch.Generator().manual_seed(3))


def alone(model, ro: Rollout, row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle: log-probs and entropy of one row's response from a forward over that row alone, no padding."""
    prompt = ro.prompt_ids[row][ro.prompt_mask[row].bool()]
    n = int(ro.response_mask[row].sum())
    ids = torch.cat([prompt, ro.response_ids[row, :n]])[None]  # [1, L]
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()  # [n, V]
    logp_all = torch.log_softmax(logits, -1)
    return logp_all.gather(1, ro.response_ids[row, :n, None]).squeeze(1), -(logp_all.exp() * logp_all).sum(-1)


def test_rows_end_at_different_times(model_tok):
    """The premise of the other tests: the batch shrinks during decoding."""
    model, tok = model_tok
    ro = sampled(model, tok)
    lengths = ro.response_mask.sum(1)
    assert len(set(lengths.tolist())) >= 4
    assert bool((~ro.truncated).any()) and bool(ro.truncated.any())


def test_sampling_logprobs_match_each_row_alone(model_tok):
    """After rows leave the batch, each remaining row still sees its own cache and positions."""
    model, tok = model_tok
    ro = sampled(model, tok)
    with torch.no_grad():
        for row in range(ro.response_ids.shape[0]):
            n = int(ro.response_mask[row].sum())
            want, _ = alone(model, ro, row)
            assert torch.allclose(ro.logprobs[row, :n], want, atol=1e-4), row
            assert bool((ro.logprobs[row, n:] == 0).all())


def test_response_layout_after_the_end_token(model_tok):
    model, tok = model_tok
    ro = sampled(model, tok)
    for row, ids in enumerate(ro.response_ids.tolist()):
        n = int(ro.response_mask[row].sum())
        assert ro.response_mask[row, :n].eq(1).all() and ro.response_mask[row, n:].eq(0).all()
        assert set(ids[n:]) <= {tok.pad_token_id}
        assert (ids[n - 1] == tok.eos_token_id) != bool(ro.truncated[row])
        text_ids = ids[: n - 1] if not ro.truncated[row] else ids[:n]
        assert ro.texts[row] == tok.decode([t for t in text_ids if t != tok.pad_token_id])  # a sampled pad is dropped


def test_greedy_batch_equals_each_prompt_alone(model_tok):
    model, tok = model_tok
    batch = generate(model, tok, PROMPTS, 16, greedy=True)
    for row, prompt in enumerate(PROMPTS):
        one = generate(model, tok, [prompt], 16, greedy=True)
        n = int(one.response_mask.sum())
        assert batch.texts[row] == one.texts[0]
        assert batch.response_ids[row, :n].tolist() == one.response_ids[0, :n].tolist()
        assert torch.allclose(batch.logprobs[row, :n], one.logprobs[0, :n], atol=1e-4)


def test_chunked_logprobs_and_entropy_match_each_row_alone(model_tok):
    model, tok = model_tok
    ro = sampled(model, tok)
    mask = ro.response_mask
    lp, ent = token_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, mask, 1.0)
    for row in range(mask.shape[0]):
        n = int(mask[row].sum())
        want_lp, want_ent = alone(model, ro, row)
        assert torch.allclose(lp[row, :n], want_lp, atol=1e-5), row
        assert torch.allclose(ent[row, :n], want_ent, atol=1e-5), row
    assert bool((lp[mask == 0] == 0).all()) and bool((ent[mask == 0] == 0).all())


def test_chunked_gradients_match_row_by_row_gradients(model_tok):
    """The policy gradient through the chunks equals the sum of per-row gradients."""
    model, tok = model_tok
    ro = sampled(model, tok, rows=40)
    weights = torch.linspace(-1, 1, 40)[:, None] * ro.response_mask  # [B, T] like advantages on live tokens

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    lp, ent = token_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 1.0)
    chunked = grads((weights * lp).sum() + 0.1 * (ro.response_mask * ent).sum())
    per_row = torch.zeros(())
    for row in range(40):
        n = int(ro.response_mask[row].sum())
        r_lp, r_ent = alone(model, ro, row)
        per_row = per_row + (weights[row, :n] * r_lp).sum() + 0.1 * r_ent.sum()
    for got, want in zip(chunked, grads(per_row)):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 3, 16, 40, 130])
def test_any_batch_size_returns_rows_in_their_order(model_tok, rows: int):
    model, tok = model_tok
    ro = sampled(model, tok, rows=rows, max_new=6)
    with torch.no_grad():
        lp, ent = token_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 1.0,
                                 with_entropy=False)
    assert ent is None and lp.shape == ro.response_ids.shape
    assert torch.allclose(lp, ro.logprobs, atol=1e-4)


def test_sample_draws_each_token_with_its_probability() -> None:
    """Inverse-transform sampling against the known distribution: a chi-square test on 40,000 draws
    (seeded, so it cannot flake), zero-probability tokens never drawn, one-hot rows always their token."""
    from core.recipes.tiny.rollout import sample

    p = torch.tensor([0.0, 0.5, 0.2, 0.0, 0.25, 0.05])
    n = 40_000
    draws = sample(torch.log(p).expand(n, -1), torch.Generator().manual_seed(0))  # [n]
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[0] == 0 and counts[3] == 0
    nonzero = p > 0
    chi2 = float((((counts - n * p) ** 2)[nonzero] / (n * p)[nonzero]).sum())
    assert chi2 < 16.27, chi2  # the 0.999 quantile of chi-square with 3 degrees of freedom
    first, last = torch.full((4, 6), float("-inf")), torch.full((4, 6), float("-inf"))
    first[:, 0], last[:, 5] = 0.0, 0.0
    assert sample(first).tolist() == [0] * 4 and sample(last).tolist() == [5] * 4
