"""Recipe `math` rewards: math-verify correctness on boxed answers, strict format validity."""

from __future__ import annotations

from core.recipes.math import rewards


def test_equivalent_boxed_answers_are_correct():
    assert rewards.score("So x = \\boxed{\\frac{1}{2}}.", "0.5") == rewards.Score(correct=True, valid=True)
    assert rewards.score("Thus \\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)").correct


def test_a_wrong_boxed_answer_is_valid_but_not_correct():
    assert rewards.score("\\boxed{7}", "8") == rewards.Score(correct=False, valid=True)


def test_only_the_last_box_counts():
    assert not rewards.score("\\boxed{8} no wait \\boxed{7}", "8").correct


def test_missing_empty_or_cut_off_box_is_invalid():
    for text in ("the answer is 8", "\\boxed{}", "\\boxed{  }", "\\boxed{\\frac{8}{"):
        assert rewards.score(text, "8") == rewards.Score(correct=False, valid=False), text


def test_trl_reward_functions_accept_conversational_completions():
    completions = [[{"role": "assistant", "content": "\\boxed{4}"}], [{"role": "assistant", "content": "4"}]]
    assert rewards.correct_reward(completions, answer=["4", "4"]) == [1.0, 0.0]
    assert rewards.format_reward(completions, answer=["4", "4"]) == [1.0, 0.0]
    assert [f.__name__ for f in rewards.REWARD_FUNCS] == ["correct", "format"]


def test_prompt_asks_for_a_boxed_answer():
    (msg,) = rewards.format_prompt("What is 2+2?")
    assert msg["role"] == "user" and msg["content"].endswith("\\boxed{}.")
