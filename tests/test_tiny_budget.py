"""The default tiny budget: RL with the seed GRPO clearly improves Overall over the warm start.

This is the recipe's reason to exist (candidates are compared by what RL adds), so it runs
the real defaults: the bundled warm start (assets/warm_starts/), 100 RL steps, full evaluation.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from core.contract import load_algorithm
from core.jobspec import JobSpec
from core.recipes.tiny.bundle import bundled_model
from core.recipes.tiny.config import TinyConfig
from core.recipes.tiny.model import model_hash
from core.recipes.tiny.run import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]


def _seed_algorithm() -> Path:
    seed = REPO / "workspace" / "algorithm.py"
    return seed if seed.exists() else REPO / "core" / "recipes" / "tiny" / "grpo_fallback.py"


@pytest.mark.slow
def test_default_budget_improves_overall_on_both_parts(tmp_path: Path):
    before = torch.get_num_threads()
    spec = JobSpec(recipe="tiny", algorithm_path=str(_seed_algorithm()), job_dir=str(tmp_path / "job"), seed=0,
                   recipe_config=asdict(TinyConfig()), mode="full")
    try:
        result = train_and_evaluate(spec, lambda line: None, load_algorithm(spec.algorithm_path), progress=lambda d, t, m: None)
    finally:
        torch.set_num_threads(before)
    warm = result.extra["warm_start"]["overall"]
    assert result.outcome == "evaluated", result.reason
    shipped = json.loads((bundled_model(model_hash(TinyConfig())) / "meta.json").read_text())["weights_sha256"]
    assert result.extra["warm_start_sha256"] == shipped  # RL started from the bundled model, not a local build
    for part in ("selection", "heldout"):
        assert 0.1 < warm[part] < 0.8, f"warm start {part} {warm[part]:.3f} leaves no room (or is broken)"
        assert result.overall[part] > warm[part] + 0.02, f"{part}: RL {result.overall[part]:.3f} vs warm {warm[part]:.3f}"
