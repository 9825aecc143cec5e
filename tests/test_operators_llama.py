"""The operators with the REAL embedded model (SmolLM2-135M-Instruct GGUF through llama.cpp).

Small contexts and small max_tokens keep each call to seconds. Skipped only when llama_cpp is not
importable (it is compiled by `make setup`). The mechanism library and static check are stand-ins
(FakeLibrary, fake_static_check from test_operators): what is under test is the model + operators.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup compiles it)")

from test_operators import FAKE_MECHANISMS, PARENT_SOURCE

from core.errors import LLMError
from core.llm import LLMConfig, make_llm
from core.llm.base import prompt_tokens
from core.llm.schema import schema_errors
from core.operators import CallRecord, Rejection, call_json
from core.operators.context import NodeView, fit_sections, load_prompt
from core.operators.implement import implement
from core.operators.propose import ProposalContext, proposal_schema, proposal_sections, propose
from core.operators.reflect import REFLECT_SCHEMA, ReflectionInput, reflect

ROOT = Path(__file__).resolve().parents[1]
CFG = LLMConfig(n_ctx=2048, propose_max_tokens=400, reflect_max_tokens=384, seed=1)


@pytest.fixture(scope="module")
def llm():
    return make_llm(CFG)


def small_parent() -> NodeView:
    metrics = {"selection": {"overall": {"mean": 0.41, "lo": 0.38, "hi": 0.44, "n": 3}}}
    comp = {"advantage": {"name": "grpo"}, "policy_loss": {"name": "ppo_clip"}, "kl": "k3", "kl_coef": 0.04}
    return NodeView("c000", "GRPO", PARENT_SOURCE, metrics, composition=comp,
                    reflection={"diagnosis": "KL spikes in groups with near-zero reward std"})


def test_model_is_loaded_once_and_shared(llm) -> None:
    again = make_llm(CFG)
    assert again._llama is llm._llama and llm.n_ctx == 2048
    assert llm.count_tokens("def compute_advantages(batch, hp):") > 5


def test_real_compose_proposal_is_schema_valid_and_renders(llm) -> None:
    """The real model, the real mechanism library (enums from the registry) and the real static check."""
    from core.operators.implement import RegistryLibrary, default_check

    lib = RegistryLibrary()
    rnd = propose(llm, ProposalContext(small_parent(), directive="shorter responses at equal accuracy"), n=1,
                  mode="compose", cfg=CFG, library=lib)
    (call,) = rnd.calls
    assert not rnd.rejections, rnd.rejections
    (prop,) = rnd.proposals
    comp = prop.change["composition"]
    assert comp["advantage"]["name"] in {m.name for m in lib.infos() if m.kind == "advantage"} and prop.title
    src = implement(prop, PARENT_SOURCE, lib, default_check())
    assert isinstance(src, str) and "def compute_policy_loss" in src, src
    assert call.prompt_tokens > 100 and call.completion_tokens > 10 and call.seconds > 0
    print(f"\npropose: {call.prompt_tokens}+{call.completion_tokens} tokens, {call.seconds:.1f} s")


def test_real_reflection_is_schema_valid(llm) -> None:
    rows = [{"step": s, "reward_mean": 0.2 + 0.01 * s, "kl": 0.01 * s, "entropy": 1 - 0.01 * s} for s in range(1, 21)]
    inp = ReflectionInput("c001", {"title": "Floored std", "mechanism": "divide by max(std, 0.1)"},
                          "-    adv = (r - m) / (s + eps)\n+    adv = (r - m) / max(s, 0.1)\n", rows=rows,
                          metrics={"selection": {"overall": {"mean": 0.45, "lo": 0.42, "hi": 0.48, "n": 3}}},
                          parent_metrics=small_parent().metrics)
    refl, call = reflect(llm, inp, cfg=CFG)
    assert call.prompt_tokens > 100 and call.completion_tokens > 5 and call.seconds > 0
    if refl.fallback:  # the grammar makes the JSON valid; only a loop or a reply without prose is refused
        assert call.error.startswith(("degenerate reply", "implausible reply")), call.error
        assert refl.diagnosis.startswith("Floored std: outcome evaluated")  # the numeric summary stands in
    else:
        assert schema_errors({k: getattr(refl, k) for k in REFLECT_SCHEMA["properties"]}, REFLECT_SCHEMA) == []
    print(f"\nreflect: {call.prompt_tokens}+{call.completion_tokens} tokens, {call.seconds:.1f} s, fallback={refl.fallback}")


def test_prompt_larger_than_context_is_an_llm_error_not_a_crash(llm) -> None:
    huge = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(LLMError, match="context tokens"):
        llm.chat(huge, max_tokens=8)
    record = CallRecord("propose")
    out = call_json(llm, huge, proposal_schema("compose", FAKE_MECHANISMS), record, max_tokens=8, temperature=0, seed=0)
    assert isinstance(out, Rejection) and "context tokens" in out.reason and record.error


def test_overflowing_proposal_context_is_trimmed_with_the_real_tokenizer(llm) -> None:
    """The preflight counts with the model's own tokenizer; no generation needed to prove the fit."""
    outsiders = [NodeView(f"c{i:03d}", f"variant {i}", proposal={"mechanism": "scale advantages by length " * 6})
                 for i in range(80)]
    ctx = ProposalContext(small_parent(), outside=outsiders, directive="shorter responses")
    sections = proposal_sections(ctx, FAKE_MECHANISMS, "compose")
    system = load_prompt("propose", mode="compose", n="1")
    full = llm.count_tokens(system + "\n".join(s.render() for s in sections))
    messages, rep = fit_sections(system, sections, llm.count_tokens, 1024, 256)
    assert full > 1024 and rep.prompt_tokens <= 1024 - 256
    assert prompt_tokens(llm, messages) <= 1024 - 256  # the backend's own preflight agrees
    assert rep.trimmed + rep.dropped == ["Nodes outside this lineage"]  # only the lowest tier had to give
    assert "shorter responses" in messages[1]["content"] and "k3 (kl)" in messages[1]["content"]


def test_loading_prints_nothing_to_the_terminal() -> None:
    code = ("from core.llm import make_llm, LLMConfig; llm = make_llm(LLMConfig(n_ctx=512));"
            "llm.chat([{'role': 'user', 'content': 'hi'}], max_tokens=2)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stderr == b"" and out.stdout == b""
