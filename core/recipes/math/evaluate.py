"""Final evaluation of recipe `math`: pass@k at T=1.0 on AIME24/25 and AMC, greedy acc@1 on the rest.

Two samplers with one interface: `VLLMSampler` wraps a vLLM `LLM` (core.recipes.math.score starts one on the
trained weights, in the scoring process), `HFSampler` uses `model.generate` (CPU, or GPU without vLLM). Scores are in [0, 1], per part ("selection", "heldout").
"""

from __future__ import annotations

import importlib.util
from math import comb
from typing import Any, Protocol

from core.jobspec import EvalTick
from core.recipes.math.data import GREEDY, PASS_AT_K, Problem, overall
from core.recipes.math.rewards import format_prompt, score

Messages = list[dict[str, str]]


class Sampler(Protocol):
    def sample(self, prompts: list[Messages], n: int, temperature: float, max_tokens: int) -> list[list[str]]:
        """n responses per prompt; temperature 0 means greedy."""
        ...


def vllm_usable() -> bool:
    """vLLM is installed (the `gpu` extra) and CUDA is present."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def render(tok: Any, prompts: list[Messages]) -> list[str]:
    """The chat template with the assistant turn opened: the text both samplers continue."""
    return [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]


def prompt_token_ids(tok: Any, prompts: list[Messages]) -> list[list[int]]:
    """Token ids of the rendered prompts. The template already holds any BOS, so no special tokens are
    added (vLLM, given text, would add a second BOS for Llama-style tokenizers)."""
    return [tok(text, add_special_tokens=False)["input_ids"] for text in render(tok, prompts)]


class HFSampler:
    """transformers generate, batched with left padding."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32) -> None:
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size

    def sample(self, prompts: list[Messages], n: int, temperature: float, max_tokens: int) -> list[list[str]]:
        per_call = max(1, self.batch_size // n)
        out: list[list[str]] = []
        for i in range(0, len(prompts), per_call):
            out.extend(self._sample_chunk(prompts[i : i + per_call], n, temperature, max_tokens))
        return out

    def _sample_chunk(self, prompts: list[Messages], n: int, temperature: float, max_tokens: int) -> list[list[str]]:
        import torch

        texts = render(self.tok, prompts)
        self.tok.padding_side = "left"  # generation continues from the right end of every row
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        # Every sampling setting is given, so the model's generation_config.json (Qwen2.5-Math ships top_k 20,
        # repetition_penalty 1.05) cannot change the protocol, and HF and vLLM sample the same distribution.
        plain = {"repetition_penalty": 1.0, "top_p": 1.0, "top_k": 0, "min_p": None}
        sampling = {"do_sample": True, "temperature": temperature, **plain} if temperature > 0 else {
            "do_sample": False, **plain}
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            ids = self.model.generate(
                **enc, max_new_tokens=max_tokens, num_return_sequences=n, pad_token_id=self.tok.pad_token_id, **sampling
            )  # [len(prompts) * n, P + new]
        self.model.train(was_training)
        texts_out = self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [texts_out[j * n : (j + 1) * n] for j in range(len(prompts))]


class VLLMSampler:
    """A vLLM LLM; prompts are rendered with the tokenizer's chat template, like in training."""

    def __init__(self, llm: Any, tokenizer: Any, seed: int = 0) -> None:
        self.llm, self.tok, self.seed = llm, tokenizer, seed

    def sample(self, prompts: list[Messages], n: int, temperature: float, max_tokens: int) -> list[list[str]]:
        from vllm import SamplingParams

        requests = [{"prompt_token_ids": ids} for ids in prompt_token_ids(self.tok, prompts)]
        params = SamplingParams(n=n, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=self.seed)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [[c.text for c in o.outputs] for o in outputs]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021); with n == k it is 'any correct'."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def score_benchmark(sampler: Sampler, name: str, problems: list[Problem], k: int, temperature: float,
                    max_tokens: int) -> list[float]:
    """Per-problem score: pass@k at `temperature` for AIME/AMC, greedy acc@1 for the others."""
    if not problems:
        return []
    prompts = [format_prompt(p.problem) for p in problems]
    if name in PASS_AT_K:
        samples = sampler.sample(prompts, k, temperature, max_tokens)
        return [pass_at_k(len(s), sum(score(r, p.answer).correct for r in s), k) for s, p in zip(samples, problems)]
    assert name in GREEDY, name
    samples = sampler.sample(prompts, 1, 0.0, max_tokens)
    return [float(score(s[0], p.answer).correct) for s, p in zip(samples, problems)]


PerProblem = dict[str, dict[str, list[float]]]  # [part][benchmark] -> one score per problem


def evaluate(sampler: Sampler, sets: dict[str, dict[str, list[Problem]]], k: int, temperature: float,
             max_tokens: int, tick: EvalTick | None = None
             ) -> tuple[dict[str, dict[str, float]], dict[str, float], str, PerProblem]:
    """sets[name][part] -> problems. Returns (eval[part][name], overall[part], note on the weights,
    per_problem[part][name]: each problem's score in the set's fixed order). tick(done, total, benchmark)
    counts problems, once before each benchmark and once at the end."""
    result: dict[str, dict[str, float]] = {"selection": {}, "heldout": {}}
    per_problem: PerProblem = {"selection": {}, "heldout": {}}
    total = sum(len(parts["selection"]) + len(parts["heldout"]) for parts in sets.values())
    done = 0
    for name, parts in sets.items():
        ordered = parts["selection"] + parts["heldout"]  # one sampler call per benchmark: better batching
        if tick:
            tick(done, total, name)
        scores = score_benchmark(sampler, name, ordered, k, temperature, max_tokens)
        done += len(ordered)
        cut = len(parts["selection"])
        for part, values in (("selection", scores[:cut]), ("heldout", scores[cut:])):
            result[part][name] = sum(values) / len(values) if values else 0.0
            per_problem[part][name] = [float(v) for v in values]
    if tick and total:
        tick(total, total, name)
    totals, note = {}, ""
    for part, part_scores in result.items():
        totals[part], note = overall(part_scores)
    return result, totals, note, per_problem
