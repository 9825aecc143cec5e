"""The policy file format between training and scoring (core/recipes/policy.py): safetensors shards that each
stay under the sandbox's file-size limit, loaded strictly. Real transformers models, real files, and a real
RLIMIT_FSIZE in a child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.recipes.policy import load_policy, policy_dir, save_policy, unique_tensors

ROOT = Path(__file__).resolve().parent.parent


def tied_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def test_round_trip_through_split_tensors_and_many_shards(tmp_path: Path) -> None:
    """Budget 2 KB: the 12 KB embedding is split in parts, the rest packed into several shards; a model with
    other weights then holds exactly the saved ones, and its head is still the embedding."""
    src, dst = tied_llama(0), tied_llama(1)
    save_policy(src, tmp_path, budget=2048)
    shards = sorted(policy_dir(tmp_path).iterdir())
    assert len(shards) > 5 and all(p.stat().st_size <= 2048 + 4096 for p in shards)
    from safetensors import safe_open

    names = [k for p in shards for k in safe_open(str(p), framework="pt").keys()]  # noqa: SIM118 - safe_open is not iterable
    assert any(k.startswith("model.embed_tokens.weight#") for k in names) and "lm_head.weight" not in names
    assert not all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    assert load_policy(dst, tmp_path) == ""
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), name
    assert dst.lm_head.weight.data_ptr() == dst.model.embed_tokens.weight.data_ptr()


def test_a_file_size_limit_is_respected(tmp_path: Path) -> None:
    """Under RLIMIT_FSIZE = 64 KiB a model of ~400 KB saves in shards; one safetensors file could not."""
    code = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.test_policy_shards import tied_llama
from core.recipes.policy import save_policy
model = tied_llama(0)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
if sys.argv[1] == "one-file":
    from safetensors.torch import save_model
    save_model(model, sys.argv[2] + "/one.safetensors")
else:
    save_policy(model, sys.argv[2])
"""
    one = subprocess.run([sys.executable, "-c", code, "one-file", str(tmp_path)], capture_output=True, text=True, check=False)
    assert one.returncode != 0, "precondition: the model is larger than the limit"
    sharded = subprocess.run([sys.executable, "-c", code, "shards", str(tmp_path)], capture_output=True, text=True, check=False)
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    assert max(p.stat().st_size for p in policy_dir(tmp_path).iterdir()) <= 65536
    assert load_policy(tied_llama(1), tmp_path) == ""


def _rewrite(tmp_path: Path, change) -> str:
    """Save tied_llama(0) in parts, let `change` edit the {name: tensor} of the shards, load into a fresh model."""
    from safetensors.torch import load_file, save_file

    save_policy(tied_llama(0), tmp_path, budget=2048)
    folder = policy_dir(tmp_path)
    tensors = {k: v for p in sorted(folder.iterdir()) for k, v in load_file(str(p)).items()}
    for p in folder.iterdir():
        p.unlink()
    save_file(change(tensors), str(folder / "shard-00000.safetensors"))
    return load_policy(tied_llama(1), tmp_path)


def _drop_a_part(t: dict) -> dict:
    return {k: v for k, v in t.items() if not k.startswith("model.embed_tokens.weight#1/")}


@pytest.mark.parametrize(("change", "why"), [
    (lambda t: t, ""),  # the untouched tensors in one file load fine
    (_drop_a_part, "missing or incomplete"),
    (lambda t: {k: v for k, v in t.items() if k != "model.norm.weight"}, "missing or incomplete"),
    (lambda t: {**t, "extra.weight": torch.zeros(2)}, "is not the model's"),
    (lambda t: {**t, "model.norm.weight": t["model.norm.weight"].half()}, "dtype"),
    (lambda t: {**t, "model.norm.weight": torch.zeros(3)}, "shape"),
    (lambda t: {**t, "model.embed_tokens.weight": torch.zeros(97, 32)}, "stored twice"),
])
def test_loading_is_strict(tmp_path: Path, change, why: str) -> None:
    reason = _rewrite(tmp_path, change)
    assert (reason == "") if not why else (why in reason), reason


def test_unexpected_files_and_a_part_of_the_wrong_size_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = tied_llama(0)
    save_policy(model, tmp_path, budget=2048)
    (policy_dir(tmp_path) / "notes.txt").write_text("hi")
    assert "unexpected file notes.txt" in load_policy(tied_llama(1), tmp_path)
    (policy_dir(tmp_path) / "notes.txt").unlink()
    first = next(k for k in unique_tensors(model) if "embed" in k)
    k = -(-97 * 32 * 4 // 2048)  # ceil: as many parts as save_policy makes
    bad = {f"{first}#{i}/{k}": torch.zeros(5) for i in range(k)}
    for p in policy_dir(tmp_path).iterdir():
        p.unlink()
    save_file({**{n: t for n, t in unique_tensors(model).items() if n != first}, **bad},
              str(policy_dir(tmp_path) / "shard-00000.safetensors"))
    assert "wrong number of elements" in load_policy(tied_llama(1), tmp_path)
