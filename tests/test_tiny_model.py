"""Recipe tiny, the warm-start model: tokenizer, determinism, the atomic cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import build_tokenizer, load_or_build, model_dir, model_hash
from core.recipes.tiny.rollout import generate, token_logprobs

# Small enough that a build takes a couple of seconds: the tests check plumbing, not competence.
TEST_MODEL = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "sft_steps": 8, "sft_batch_size": 16,
              "eval_size": 8}


def test_tokenizer_round_trips_every_character():
    tok = build_tokenizer()
    text = "12+7*3=21 0-9=-9 #### 33"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id} == {0, 1, 2}


def test_tokenizer_survives_save_and_load(tmp_path: Path):
    from transformers import PreTrainedTokenizerFast

    build_tokenizer().save_pretrained(tmp_path)
    tok = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert tok.decode(tok.encode("99*9=891 #### 891", add_special_tokens=False)) == "99*9=891 #### 891"


def test_hash_depends_on_model_fields_only():
    base = TinyConfig(**TEST_MODEL)
    assert model_hash(base) == model_hash(TinyConfig(**TEST_MODEL, steps=3, group_size=2))
    assert model_hash(base) != model_hash(TinyConfig(**{**TEST_MODEL, "sft_steps": 9}))


def test_build_is_deterministic_and_cached(tmp_path: Path):
    cfg = TinyConfig(**TEST_MODEL)
    seen: list[int] = []
    m1, _, p1 = load_or_build(cfg, str(tmp_path / "a"), lambda d, t, m: seen.append(d))
    m2, _, _ = load_or_build(cfg, str(tmp_path / "b"), lambda d, t, m: None)
    assert seen and seen[-1] == cfg.sft_steps  # progress reached the end
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(a, b), n
    calls: list[int] = []
    load_or_build(cfg, str(tmp_path / "a"), lambda d, t, m: calls.append(d))
    assert calls == []  # second load hits the cache, no rebuild
    assert p1.name == model_hash(cfg) and p1.parent == tmp_path / "a" / "tiny"


def test_the_build_is_the_same_model_whatever_the_callers_thread_count(tmp_path: Path):
    """Default width, 10 steps: unpinned, 1 and 2 threads already differ here (by ~7e-6 after 10 steps, by
    several points of warm-start accuracy after 700)."""
    cfg = TinyConfig(sft_steps=10, sft_batch_size=64, eval_size=8)
    before = torch.get_num_threads()
    models = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            models.append(load_or_build(cfg, str(tmp_path / str(threads)), lambda d, t, m: None)[0])
            assert torch.get_num_threads() == threads  # the caller's setting is given back
    finally:
        torch.set_num_threads(before)
    for (n, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(a, b), n


def test_killed_build_leaves_no_cache(tmp_path: Path):
    class FakeKill(Exception):
        pass

    def die(done: int, total: int, msg: str) -> None:
        raise FakeKill

    cfg = TinyConfig(**TEST_MODEL)
    with pytest.raises(FakeKill):
        load_or_build(cfg, str(tmp_path), die)
    assert not model_dir(cfg, str(tmp_path)).exists()
    assert list((tmp_path / "tiny").iterdir()) == []  # the temp dir is gone too


def test_env_var_sets_the_cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POISE_CACHE_DIR", str(tmp_path))
    assert model_dir(TinyConfig()).parent == tmp_path / "tiny"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_sampling_logprobs_match_a_full_forward(tmp_path: Path, arch: str):
    """The KV-cache sampler and the training forward agree, with left-padded prompts of mixed length."""
    cfg = TinyConfig(**TEST_MODEL, arch=arch)
    model, tok, _ = load_or_build(cfg, str(tmp_path), lambda d, t, m: None)
    prompts = ["1+2=", "12+7*3=", "99-9=", "4*25="]
    ro = generate(model, tok, prompts, 12, temperature=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp, ent = token_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 1.0)
    mask = ro.response_mask  # [B, T]
    assert torch.allclose(lp * mask, ro.logprobs * mask, atol=1e-4)
    assert bool(torch.isfinite(ent).all()) and bool((ent >= 0).all())
    assert ro.truncated.tolist() == [tok.eos_token_id not in r for r in ro.response_ids.tolist()]
