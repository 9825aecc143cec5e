"""Recipe tiny, the task: deterministic generation, disjoint splits, the strict answer format."""

from __future__ import annotations

import random

import pytest

from core.recipes.tiny.task import (
    SPLITS,
    TrainSampler,
    corrupt,
    make_eval_sets,
    make_problem,
    parse_answer,
    score,
)


def test_eval_sets_are_deterministic_from_the_seed():
    a, b, c = make_eval_sets(7, 16), make_eval_sets(7, 16), make_eval_sets(8, 16)
    assert a.selection == b.selection and a.heldout == b.heldout
    assert a.selection != c.selection


def test_selection_and_heldout_are_disjoint_in_every_split():
    sets = make_eval_sets(0, 64)
    for split in SPLITS:
        sel = {p.prompt for p in sets.selection[split]}
        held = {p.prompt for p in sets.heldout[split]}
        assert len(sel) == len(held) == 64
        assert not sel & held, split


def test_training_prompts_never_equal_an_evaluation_problem():
    sets = make_eval_sets(0, 64)
    exclude = sets.all_prompts()
    train = TrainSampler(3, exclude).sample(3000)
    assert not {p.prompt for p in train} & exclude
    assert {p.split for p in train} == set(SPLITS)


def test_training_sampler_is_deterministic_per_seed():
    assert TrainSampler(1, set()).sample(50) == TrainSampler(1, set()).sample(50)
    assert TrainSampler(1, set()).sample(50) != TrainSampler(2, set()).sample(50)


@pytest.mark.parametrize("split", SPLITS)
def test_reference_solution_is_valid_and_correct(split):
    rng = random.Random(split)
    for _ in range(50):
        p = make_problem(split, rng)
        assert eval(p.prompt[:-1]) == p.answer  # the expression really evaluates to the answer
        assert score(p.solution, truncated=False, answer=p.answer).correct


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12+7=19 #### 19", 19),
        ("7*3=21 12+21=33 #### 33", 33),
        ("5-9=-4 #### -4", -4),
        ("1+1=2 #### 3", 3),  # valid format, wrong value: parsed, scored wrong
    ],
)
def test_parser_accepts_the_strict_format(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "#### 19",              # no worked line
        "12+7=19 ## 19",
        "12+7=19 ####19",
        "12+7=19 #### 19 ####",
        "12+7=19 #### 19 ",     # trailing space
        "12+7=19  #### 19",     # double space
        "12+7=19 19",
        "12+7=19",
        "12+7=19 #### 1 9",
        "12+7=19 #### +19",
    ],
)
def test_parser_rejects_near_misses(text):
    assert parse_answer(text) is None


def test_truncated_response_is_never_valid():
    s = score("12+7=19 #### 19", truncated=True, answer=19)
    assert not s.valid and not s.correct


def test_valid_but_wrong_is_distinguished_from_invalid():
    wrong = score("12+7=18 #### 18", truncated=False, answer=19)
    invalid = score("12+7=19 ## 19", truncated=False, answer=19)
    assert (wrong.valid, wrong.correct) == (True, False)
    assert (invalid.valid, invalid.correct) == (False, False)


def test_corrupted_sft_targets_are_always_invalid():
    rng = random.Random(0)
    for split in SPLITS:
        for _ in range(30):
            p = make_problem(split, rng)
            assert parse_answer(corrupt(p.solution, rng)) is None
