"""Verification rejects a candidate that never trains: its filter_groups drops every rollout of the smoke run.
Left in, its scores are the warm start's, identical on every seed, and they read as a real, stable result."""

from __future__ import annotations

from pathlib import Path

from engine_support import ROOT, copy_run, poise, session_cache
from engine_support import base_run as _base_run

from core.archive import Archive

# rewards are 0/1, so a group's std is at most ~0.53: this filter keeps nothing, ever
DROP_EVERYTHING = '''

def filter_groups(batch, hp: dict) -> torch.Tensor:
    _, std = group_mean_std(batch.rewards, batch.group_ids)  # [B], [B]: each row's group std
    return std >= 1.0  # [B]
'''


def test_a_filter_that_keeps_nothing_fails_the_smoke_run(tmp_path_factory, tmp_path: Path) -> None:
    cache = session_cache(tmp_path_factory)
    run = copy_run(_base_run(tmp_path_factory), tmp_path / "run", None, budget=1)
    src = tmp_path / "strict_filter.py"
    src.write_text((ROOT / "workspace" / "algorithm.py").read_text() + DROP_EVERYTHING)
    poise(["add", run, src, "--parent", "seed", "--title", "Keep only high-variance groups"], cache)
    out = poise(["verify", run, "c001"], cache, timeout=300, check=False)
    assert out.returncode == 1 and "c001: failed" in out.stdout, out.stdout + out.stderr
    c = Archive.open(run, readonly=True).get("c001")
    assert c.status == "rejected" and c.verification["stage"] == "smoke"
    assert "filter_groups kept no rollout in any of its 3 steps" in c.verification["reason"]
