"""The bundled default warm start: shipped, checked, copied into the cache instead of built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.errors import CorruptResourceError
from core.recipes.tiny import bundle
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import MODEL_FIELDS, load_or_build, model_dir, model_hash

SMALL = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "sft_steps": 4, "sft_batch_size": 8,
         "eval_size": 8}


def _no_build(done: int, total: int, message: str) -> None:
    raise AssertionError(f"the warm start was built ({message}); the bundle should have been copied")


def test_the_default_config_is_bundled_and_its_checksum_holds():
    """Fails when a default model field or BUILD_VERSION changes without `make warm-start`."""
    cfg = TinyConfig()
    src = bundle.bundled_model(model_hash(cfg))
    assert src is not None, f"no bundle for the default hash {model_hash(cfg)}; run `make warm-start`"
    meta = json.loads((src / "meta.json").read_text())
    assert meta["config"] == {k: getattr(cfg, k) for k in MODEL_FIELDS}
    assert bundle.sha256_of(src / bundle.WEIGHTS) == meta["weights_sha256"]
    assert meta["built_with"]["threads"] == 1


def test_a_fresh_cache_gets_the_bundled_weights_without_building(tmp_path: Path):
    cfg = TinyConfig()
    model, tok, path = load_or_build(cfg, str(tmp_path), _no_build)
    shipped = load_file(bundle.bundled_model(model_hash(cfg)) / bundle.WEIGHTS)
    for name, p in model.named_parameters():
        assert torch.equal(p, shipped[name]), name
    assert path == model_dir(cfg, str(tmp_path)) and tok.decode(tok.encode("12+3=", add_special_tokens=False)) == "12+3="


def test_a_damaged_bundle_is_a_clear_error_and_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = TinyConfig()
    fake_assets = tmp_path / "assets"
    shutil.copytree(bundle.bundled_model(model_hash(cfg)), fake_assets / model_hash(cfg))
    weights = fake_assets / model_hash(cfg) / bundle.WEIGHTS
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit pattern in the last float
    weights.write_bytes(bytes(raw))
    monkeypatch.setattr(bundle, "warm_starts_dir", lambda: fake_assets)
    with pytest.raises(CorruptResourceError, match="damaged.*reinstall"):
        load_or_build(cfg, str(tmp_path / "cache"), _no_build)
    assert not any((tmp_path / "cache" / "tiny").iterdir())  # no model, no leftover temporary directory


def test_a_written_bundle_is_what_a_later_load_gets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The regeneration path end to end on a small config: build -> bundle -> copy into another cache."""
    cfg = TinyConfig(**SMALL)
    dest = bundle.write_bundle(cfg, tmp_path / "assets")
    assert dest.name == model_hash(cfg) and sorted(p.name for p in dest.iterdir()) == sorted(bundle.BUNDLED_FILES)
    monkeypatch.setattr(bundle, "warm_starts_dir", lambda: tmp_path / "assets")
    model, _, _ = load_or_build(cfg, str(tmp_path / "cache"), _no_build)
    shipped = load_file(dest / bundle.WEIGHTS)
    assert all(torch.equal(p, shipped[n]) for n, p in model.named_parameters())


def test_a_config_that_is_not_bundled_is_built(tmp_path: Path):
    cfg = TinyConfig(**SMALL)
    assert bundle.bundled_model(model_hash(cfg)) is None
    seen: list[int] = []
    load_or_build(cfg, str(tmp_path), lambda d, t, m: seen.append(d))
    assert seen[-1] == cfg.sft_steps
    meta = json.loads((model_dir(cfg, str(tmp_path)) / "meta.json").read_text())
    assert "weights_sha256" not in meta and meta["built_with"]["cpu_capability"]
