"""Proposal prompts are prefix-friendly (static text first, the parent after) and keep the parent's summary
under any prompt budget. The prompts are built by the real operators with the real mechanism library;
FakeLLM (from test_operators) only records what it is sent."""

from __future__ import annotations

import json
import os

import pytest
from test_operators import PARENT_SOURCE, FakeLLM, good_proposal

from core.llm.config import LLMConfig
from core.operators import CallRecord
from core.operators.context import NodeView, curve_stats, fit_sections
from core.operators.implement import RegistryLibrary
from core.operators.propose import ProposalContext, proposal_messages, proposal_sections, proposal_system, propose

SPLITS = ("add1", "add2", "sub", "mul", "mixed", "chain")


def realistic_node(i: int, comp: dict | None) -> NodeView:
    """A scored node as Discovery.node builds it: 6 splits with CIs, 100-step curves, a full reflection."""
    band = lambda m: {"mean": m, "lo": m - 0.011, "hi": m + 0.012, "n": 3}
    metrics = {"selection": {"overall": band(0.47 + i / 100), **{s: band(0.3 + j / 10) for j, s in enumerate(SPLITS)}}}
    rows = [{"step": s, "reward_mean": 0.15 + s / 600, "valid_rate": 0.53 + s / 400, "entropy": 0.26 - s / 1500,
             "kl": s / 7000, "response_length": 19.0, "grad_norm": 0.8, "accuracy": 0.2 + s / 700} for s in range(1, 101)]
    reflection = {"diagnosis": "Rescaling by the share of informative groups raised reward faster than the parent; "
                               "entropy fell at the same rate, so the gain is not from exploration. " * 2,
                  "evidence": "reward_mean 0.15->0.32 vs 0.15->0.31; mul 0.33 [0.30, 0.34] vs 0.30 [0.28, 0.31].",
                  "design_principle": f"Principle {i}: rescale advantages by the share of groups that carry signal.",
                  "next_steps": "Add a std floor (av) and clip-higher; keep the KL term small."}
    title = f"variant {i}"
    return NodeView(f"c{i:03d}", title, PARENT_SOURCE, metrics, curve_stats(rows), reflection,
                    {"title": title, "mechanism": "rescale advantages by informative-group share " * 3,
                     "change": {"composition": comp}}, comp)


COMP = {"advantage": {"name": "gpg", "f_norm": 1.0}, "policy_loss": {"name": "gmpo", "eps_low": 0.3}, "kl": "k3",
        "kl_coef": 0.02}


def realistic_context(i: int, comp: dict | None = COMP) -> ProposalContext:
    others = [realistic_node(j, COMP) for j in range(20, 27)]
    return ProposalContext(realistic_node(i, comp), pareto=others[:3], contrasting=others[3:5], outside=others[5:],
                           directive="shorter responses at equal accuracy")


def prompt_of(call: dict) -> str:
    return "\n".join(m["content"] for m in call["messages"])


def common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def test_the_n_proposal_calls_of_one_parent_are_identical_but_for_the_seed() -> None:
    llm = FakeLLM([json.dumps(good_proposal())])
    propose(llm, realistic_context(1), n=3, mode="compose", cfg=LLMConfig(seed=4), library=RegistryLibrary())
    assert [c["seed"] for c in llm.calls] == [4, 5, 6]
    assert llm.calls[0]["messages"] == llm.calls[1]["messages"] == llm.calls[2]["messages"]


@pytest.mark.parametrize("cap", [1024, 0])
def test_prompts_of_two_parents_share_the_system_prompt_and_the_mechanism_list(cap: int) -> None:
    llm = FakeLLM([json.dumps(good_proposal())])
    cfg = LLMConfig(max_prompt_tokens=cap)
    for i in (1, 2):
        propose(llm, realistic_context(i), n=1, mode="compose", cfg=cfg, library=RegistryLibrary())
    a, b = (prompt_of(c) for c in llm.calls)
    shared = common_prefix(a, b)
    user_a = llm.calls[0]["messages"][1]["content"]
    mechanisms_end = len(llm.calls[0]["messages"][0]["content"]) + 1 + user_a.index("## Parent c001")
    assert shared >= mechanisms_end and a[shared:].startswith("1")  # they part at the parent's id
    assert shared > 0.4 * len(a), (shared, len(a))
    assert user_a.index("Known mechanisms") < user_a.index("## Parent c001") < user_a.index("## Directive")


def test_the_parent_sections_come_after_every_static_part() -> None:
    sections = proposal_sections(realistic_context(1), RegistryLibrary().infos(), "compose")
    titles = [s.title for s in sections]
    assert titles[0].startswith("Known mechanisms") and titles[1] == "Parent c001: variant 1" and titles[-1] == "Directive"
    assert "advantage: av, dr_grpo" in sections[0].text  # every name first, descriptions after


def summary_survives(messages: list[dict], record: CallRecord, parent: NodeView) -> None:
    user = messages[1]["content"]
    for needle in (f"## Parent {parent.id}: {parent.title}\n", "advantage=gpg(f_norm=1.0)",
                   "policy_loss=gmpo(eps_low=0.3)", "selection overall: 0.480 [0.469, 0.492] n=3",
                   "curves: reward_mean 0.159->0.309", f"principle learned: {parent.reflection['design_principle']}",
                   "shorter responses at equal accuracy"):
        assert needle in user, (needle, record.dropped_sections, record.trimmed_sections)
    assert f"Parent {parent.id}: {parent.title}" not in record.trimmed_sections + record.dropped_sections


@pytest.mark.parametrize("cap", [1024, 512, 384])
def test_the_parent_summary_survives_any_prompt_budget_word_counts(cap: int) -> None:
    """Model-free (FakeLLM counts words); the real-tokenizer version is below."""
    llm = FakeLLM([json.dumps(good_proposal())])
    record = CallRecord("propose")
    ctx = realistic_context(1)
    messages = proposal_messages(llm, ctx, "compose", LLMConfig(max_prompt_tokens=cap), RegistryLibrary().infos(), record)
    summary_survives(messages, record, ctx.parent)
    assert llm.count_tokens(prompt_of({"messages": messages})) <= cap
    assert record.dropped_sections + record.trimmed_sections  # the budget did bind


@pytest.fixture(scope="module")
def smollm():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup compiles it)")
    from core.llm import make_llm

    return make_llm(LLMConfig(n_ctx=2048))  # tokenizer only: nothing is generated


@pytest.mark.parametrize("cap", [1024, 512])
def test_the_parent_summary_survives_trimming_with_the_embedded_tokenizer(smollm, cap: int) -> None:
    from core.llm.base import prompt_tokens

    record = CallRecord("propose")
    ctx = realistic_context(1)
    messages = proposal_messages(smollm, ctx, "compose", LLMConfig(max_prompt_tokens=cap), RegistryLibrary().infos(),
                                 record)
    summary_survives(messages, record, ctx.parent)
    assert prompt_tokens(smollm, messages) <= cap
    assert "Nodes outside this lineage" in record.dropped_sections  # lowest tier went first


def test_without_a_composition_the_code_may_go_but_the_summary_stays(smollm) -> None:
    record = CallRecord("propose")
    ctx = realistic_context(1, comp=None)
    messages = proposal_messages(smollm, ctx, "compose", LLMConfig(max_prompt_tokens=512), RegistryLibrary().infos(),
                                 record)
    user = messages[1]["content"]
    assert "mechanisms: hand-written algorithm.py" in user and "selection overall: 0.480" in user
    assert "Parent c001 code" in record.dropped_sections + record.trimmed_sections


def test_same_budget_same_mechanism_list_with_the_embedded_tokenizer(smollm) -> None:
    """The list is fitted to a room fixed by the budget, not by the parent: a prefix llama.cpp can reuse."""
    lists = []
    for i, comp in ((1, COMP), (2, None)):
        record = CallRecord("propose")
        messages = proposal_messages(smollm, realistic_context(i, comp), "compose", LLMConfig(max_prompt_tokens=1024),
                                     RegistryLibrary().infos(), record)
        lists.append(messages[1]["content"].split("## Parent")[0])
    assert lists[0] == lists[1] and "advantage: av" in lists[0]
    system = proposal_system("compose")
    assert "composition" in system and "{{" not in system


def test_fit_sections_cuts_a_lower_priority_required_section_before_a_higher_one() -> None:
    from core.operators.context import Section

    count = lambda text: len(text.split())
    secs = [Section("List", "\n".join(f"item {i} with words" for i in range(50)), 60, required=True),
            Section("Summary", "id: c1\ntitle: t\noverall: 0.5", 100, required=True)]
    messages, rep = fit_sections("sys", secs, count, 120, 40)
    assert "overall: 0.5" in messages[1]["content"] and rep.trimmed == ["List"]


def test_the_reflection_ablation_hides_the_principle_too() -> None:
    llm = FakeLLM([json.dumps(good_proposal())])
    ctx = realistic_context(1)
    ctx.use_reflection = False
    propose(llm, ctx, n=1, mode="compose", cfg=LLMConfig(max_prompt_tokens=0), library=RegistryLibrary())
    user = llm.calls[0]["messages"][1]["content"]
    assert "Principle 1" not in user and "Rescaling by the share" not in user and "selection overall: 0.480" in user
