"""core.recipes.preflight: what a recipe needs from the machine, listed before any job starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import RunConfig
from core.errors import ConfigError
from core.recipes import preflight

USER_BENCHMARKS = ["aime24", "aime25", "amc", "olympiadbench"]


def test_the_default_tiny_recipe_is_ready() -> None:
    assert preflight.problems(RunConfig()) == []


def test_a_tiny_eval_config_mistake_is_listed() -> None:
    cfg = RunConfig()
    cfg.tiny.weights = {**cfg.tiny.weights, "division": 0.1}
    with pytest.raises(ConfigError, match=r"(?s)recipe tiny is not ready.*division"):
        preflight.check(cfg)


def test_math_lists_every_missing_path_then_is_ready_once_they_exist(tmp_path: Path) -> None:
    cfg = RunConfig(recipe="math")
    found = preflight.problems(cfg)
    assert len(found) == 1 + len(USER_BENCHMARKS), found
    assert "model_path is empty" in found[0]
    assert all(f"{name}.jsonl" in p for name, p in zip(USER_BENCHMARKS, found[1:]))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for name in USER_BENCHMARKS:
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    cfg.math.model_path, cfg.math.data_dir = str(model), str(tmp_path)
    assert preflight.problems(cfg) == []
    (tmp_path / "amc.jsonl").write_text("{broken\n")
    assert len(found := preflight.problems(cfg)) == 1 and "amc.jsonl:1" in found[0], found


def test_poise_check_says_what_is_ready_and_what_is_not(tmp_path: Path) -> None:
    from engine_support import poise

    from core.config import load_config, save_config

    cache = tmp_path / "cache"
    tiny, math = tmp_path / "tiny", tmp_path / "math"
    assert "start it with: poise run" in poise(["init", tiny], cache).stdout
    out = poise(["check", tiny], cache).stdout
    assert "recipe tiny: ready" in out and "workspace: ready" in out
    told = poise(["init", "--recipe", "math", math], cache).stdout  # init says what is missing at once
    assert "before it can run, edit" in told and "model_path is empty" in told and "poise check" in told
    cfg = load_config(math / "run.toml")
    cfg.llm.model_path = str(tmp_path / "missing.gguf")
    save_config(cfg, math / "run.toml")
    (math / "repo" / "algorithm.py").write_text("# an edit nobody committed\n")
    proc = poise(["check", math], cache, check=False)
    assert proc.returncode == 1
    assert "recipe math: NOT READY" in proc.stdout and "model_path is empty" in proc.stdout
    assert "llm (llama_cpp): NOT READY" in proc.stdout and "missing.gguf" in proc.stdout
    assert "workspace: NOT READY" in proc.stdout


def test_math_says_when_disk_mb_cannot_hold_a_jobs_policy_and_checkpoints(tmp_path: Path) -> None:
    """A job stopped for its disk use hours into training is the configuration's fault: preflight sizes it
    from the model's safetensors headers (2M parameters: 8 MB policy, 2 x 24 MB checkpoints)."""
    import torch
    from safetensors.torch import save_file

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    save_file({"embed": torch.zeros(1000, 1024), "head": torch.zeros(976, 1024)}, str(model / "model-1.safetensors"))
    save_file({"norm": torch.zeros(72 * 1024)}, str(model / "model-2.safetensors"))
    assert preflight.model_parameters(model) == 2 * 1024 * 1024
    for name in USER_BENCHMARKS:
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    cfg = RunConfig(recipe="math")
    cfg.math.model_path, cfg.math.data_dir = str(model), str(tmp_path)
    cfg.limits.disk_mb = 300
    (found,) = preflight.problems(cfg)
    assert "disk_mb = 300 is less than a job writes" in found and "set disk_mb >= 312" in found, found
    cfg.math.checkpoint_steps = 0  # the policy alone: 8 MiB + 256
    assert preflight.problems(cfg) == []
    cfg.math.checkpoint_steps, cfg.limits.disk_mb = 20, 0  # no cap
    assert preflight.problems(cfg) == []
