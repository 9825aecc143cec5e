"""core.probes: the contract checks catch each kind of broken candidate; the fingerprint tells no-ops apart.

These run the probes in-process on candidates written by the tests (trusted code);
the sandboxed path is covered by tests/test_jobs.py::test_run_probe_* .
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.probes import build_probes, main, probe_file

ADV = Path(__file__).resolve().parent / "adversarial"
GRPO = (ADV / "grpo.py").read_text()


def probe_src(tmp_path: Path, src: str, name: str = "algorithm.py") -> dict:
    path = tmp_path / name
    path.write_text(src)
    return probe_file(str(path))


def test_grpo_candidate_passes_every_probe(tmp_path: Path) -> None:
    report = probe_src(tmp_path, GRPO)
    assert report["ok"], report["problems"]
    assert len(report["fingerprint"]) == 16
    assert report["outputs"]["mixed"]["grad_norm"] > 0


def test_seed_template_passes_every_probe() -> None:
    report = probe_file(str(Path(__file__).resolve().parent.parent / "workspace" / "algorithm.py"))
    assert report["ok"], report["problems"]


def test_probe_batches_are_deterministic() -> None:
    a, b = build_probes(), build_probes()
    assert [c.name for c in a] == [c.name for c in b]
    for x, y in zip(a, b):
        assert torch.equal(x.batch.rewards, y.batch.rewards) and torch.equal(x.logprobs, y.logprobs)
        assert torch.equal(x.batch.response_mask, y.batch.response_mask)


def test_probes_cover_the_batch_variants() -> None:
    cases = {c.name: c.batch for c in build_probes()}
    assert cases["all_correct"].rewards.min() == 1 and cases["all_wrong"].rewards.max() == 0
    assert not cases["invalid"].valid.all() and cases["invalid"].reward_parts
    assert cases["truncated"].truncated.any()
    assert cases["no_ref"].ref_logprobs is None and cases["mixed"].ref_logprobs is not None
    assert (cases["padding"].response_mask == 0).float().mean() > 0.5


def test_nan_loss_is_reported(tmp_path: Path) -> None:
    report = probe_src(tmp_path, (ADV / "nan_loss.py").read_text())
    assert not report["ok"]
    assert any("loss is nan" in p for p in report["problems"]), report["problems"]


def test_unmasked_padding_gradient_is_reported(tmp_path: Path) -> None:
    src = GRPO.replace("per_seq = (per_token * mask).sum(1)", "per_seq = per_token.sum(1)")
    report = probe_src(tmp_path, src)
    assert any("padding positions get gradient" in p for p in report["problems"]), report["problems"]


def test_wrong_advantage_shape_is_reported(tmp_path: Path) -> None:
    src = GRPO.replace("    return adv\n", "    return adv[:, None, None]\n")
    report = probe_src(tmp_path, src)
    assert any("compute_advantages must return a tensor of shape" in p for p in report["problems"])


def test_detached_loss_is_reported(tmp_path: Path) -> None:
    src = GRPO.replace("loss = per_seq.mean()", "loss = per_seq.mean().detach()")
    report = probe_src(tmp_path, src)
    assert any("loss has no gradient" in p for p in report["problems"]), report["problems"]


def test_zero_gradient_with_varying_rewards_is_reported(tmp_path: Path) -> None:
    src = GRPO.replace("loss = per_seq.mean()", "loss = per_seq.mean() * 0.0")
    report = probe_src(tmp_path, src)
    assert any("gradient w.r.t. logprobs is all zero" in p for p in report["problems"]), report["problems"]


def test_tensor_metrics_are_reported(tmp_path: Path) -> None:
    src = GRPO.replace('{"clip_frac": float(clip_frac)}', '{"clip_frac": clip_frac}')
    report = probe_src(tmp_path, src)
    assert any("metrics values must be finite Python floats" in p for p in report["problems"])


def test_in_place_batch_mutation_is_reported(tmp_path: Path) -> None:
    src = GRPO.replace("    groups = torch.unique", "    batch.rewards.mul_(2.0)\n    groups = torch.unique")
    report = probe_src(tmp_path, src)
    assert any("modified batch.rewards in place" in p for p in report["problems"]), report["problems"]


def test_exception_names_the_candidate_line(tmp_path: Path) -> None:
    src = GRPO.replace("    return adv\n", "    raise ValueError('boom')\n")
    report = probe_src(tmp_path, src)
    line = src.splitlines().index("    raise ValueError('boom')") + 1
    assert any(f"raised ValueError at line {line} of algorithm.py: boom" in p for p in report["problems"])


def test_malformed_filter_groups_is_reported_and_valid_one_passes(tmp_path: Path) -> None:
    bad = probe_src(tmp_path, GRPO + "\n\ndef filter_groups(batch, hp):\n    return batch.rewards\n", "bad.py")
    assert any("filter_groups must return a bool tensor" in p for p in bad["problems"]), bad["problems"]
    keep_varied = ("\n\ndef filter_groups(batch, hp):\n    g = batch.group_ids\n"
                   "    std = torch.stack([batch.rewards[g == i].std() for i in g.tolist()])\n"
                   "    return std > 0\n")
    good = probe_src(tmp_path, GRPO + keep_varied, "good.py")
    assert good["ok"], good["problems"]
    assert good["outputs"]["all_correct"] == {"kept": 0}  # everything filtered: the trainer skips the step


def test_fingerprint_ignores_refactoring_but_not_behaviour(tmp_path: Path) -> None:
    base = probe_src(tmp_path, GRPO, "a.py")
    refactored = GRPO.replace("per_token", "token_loss").replace('"""A well-behaved', '"""Renamed; a well-behaved')
    same = probe_src(tmp_path, refactored, "b.py")
    wider_clip = probe_src(tmp_path, GRPO.replace('"clip_eps": 0.2', '"clip_eps": 0.3'), "c.py")
    no_kl = probe_src(tmp_path, GRPO.replace('"kl_coef": 0.01', '"kl_coef": 0.0'), "d.py")
    assert same["fingerprint"] == base["fingerprint"]
    assert wider_clip["fingerprint"] != base["fingerprint"]
    assert no_kl["outputs"]["behaviour_fingerprint"] != base["outputs"]["behaviour_fingerprint"]


def test_learning_rate_change_changes_fingerprint_not_behaviour(tmp_path: Path) -> None:
    base = probe_src(tmp_path, GRPO, "a.py")
    lr = probe_src(tmp_path, GRPO.replace('"lr": 1e-3', '"lr": 2e-3'), "b.py")
    assert lr["fingerprint"] != base["fingerprint"]
    assert lr["outputs"]["behaviour_fingerprint"] == base["outputs"]["behaviour_fingerprint"]


def test_import_failure_gives_a_not_ok_report(tmp_path: Path) -> None:
    report = probe_src(tmp_path, (ADV / "raise_at_import.py").read_text())
    assert not report["ok"] and "candidate exploded at import" in report["problems"][0]


@pytest.mark.parametrize("argv", [[], ["only-one"]])
def test_main_rejects_bad_usage(argv: list[str]) -> None:
    assert main(argv) == 2


def test_report_is_json_serialisable(tmp_path: Path) -> None:
    json.dumps(probe_src(tmp_path, GRPO))
