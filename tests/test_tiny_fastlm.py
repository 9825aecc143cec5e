"""The lean decoder of recipe tiny computes the same function as the transformers model it reads.

Oracle: the transformers forward (LlamaForCausalLM / Qwen2ForCausalLM) on the same weights,
with left-padded prompts, a KV cache and grouped-query attention."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from core.recipes.tiny import fastlm
from core.recipes.tiny.rollout import _positions

COMMON = dict(vocab_size=23, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)


def make(arch: str, kv_heads: int) -> torch.nn.Module:
    torch.manual_seed(3)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**COMMON, num_key_value_heads=kv_heads, rms_norm_eps=1e-6))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**COMMON, num_key_value_heads=kv_heads, rms_norm_eps=1e-6))
        for layer in model.model.layers:  # Qwen2 has q/k/v biases; make them matter
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    return model.eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts of lengths 7, 3 and 5: ids [3, 7], mask [3, 7]."""
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 3, 5]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 7 - n:] = torch.randint(3, 23, (n,), generator=gen)
        mask[row, 7 - n:] = 1
    return ids, mask


CASES = [("llama", 4), ("llama", 2), ("qwen2", 4), ("qwen2", 1)]


@pytest.mark.parametrize(("arch", "kv_heads"), CASES)
def test_prefill_logits_match_transformers_on_real_tokens(arch: str, kv_heads: int) -> None:
    model = make(arch, kv_heads)
    ids, mask = padded_batch()
    pos = _positions(mask)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # [3, 7, V]
        got = fastlm.FastLM(model).forward(ids, pos, mask)
    real = mask.bool()
    assert torch.isfinite(got).all(), "padding positions must not produce NaN (they would leak through later layers)"
    assert torch.allclose(got[real], want[real], atol=1e-5), (got[real] - want[real]).abs().max()


@pytest.mark.parametrize(("arch", "kv_heads"), CASES)
def test_cached_decoding_matches_transformers_step_by_step(arch: str, kv_heads: int) -> None:
    model = make(arch, kv_heads)
    ids, mask = padded_batch()
    lean = fastlm.FastLM(model)
    cache, dyn = lean.new_cache(3, 7 + 6), DynamicCache()
    keys, pos, step_in = mask, _positions(mask), ids
    with torch.no_grad():
        for _ in range(6):
            want = model(input_ids=step_in, attention_mask=keys, position_ids=pos, cache=dyn, use_cache=True).logits
            got = lean.forward(step_in, pos, keys, cache)
            assert torch.allclose(got[:, -1], want[:, -1], atol=1e-5), (got[:, -1] - want[:, -1]).abs().max()
            nxt = want[:, -1].argmax(-1, keepdim=True)  # [3, 1] both continue from the same token
            keys = torch.cat([keys, torch.ones(3, 1, dtype=keys.dtype)], 1)
            pos, step_in = pos[:, -1:] + 1, nxt
    assert cache.length == 7 + 5


def test_gradients_reach_the_transformers_parameters() -> None:
    model = make("llama", 2).train()
    ids, mask = padded_batch()
    fastlm.FastLM(model).forward(ids, _positions(mask), mask).logsumexp(-1)[mask.bool()].sum().backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)).logits.logsumexp(-1)[mask.bool()].sum().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(ours[name], p.grad, atol=1e-5), name


def test_unsupported_configs_are_left_to_transformers() -> None:
    model = make("llama", 4)
    assert fastlm.supports(model)
    model.config.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    assert not fastlm.supports(model)


@pytest.mark.parametrize("greedy", [True, False])
def test_generate_gives_the_same_rollout_with_and_without_the_lean_decoder(monkeypatch, greedy: bool) -> None:
    from core.recipes.tiny.config import TinyConfig
    from core.recipes.tiny.model import build_model, build_tokenizer
    from core.recipes.tiny.rollout import generate

    tok = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(TinyConfig(), len(tok)).eval()
    prompts = ["12+7=", "3*4=", "(5-2)*11="]
    lean = generate(model, tok, prompts, 12, 1.0, greedy=greedy, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(fastlm, "supports", lambda m: False)
    plain = generate(model, tok, prompts, 12, 1.0, greedy=greedy, generator=torch.Generator().manual_seed(5))
    assert torch.equal(lean.response_ids, plain.response_ids)
    assert torch.equal(lean.response_mask, plain.response_mask)
    assert torch.allclose(lean.logprobs, plain.logprobs, atol=1e-5)
