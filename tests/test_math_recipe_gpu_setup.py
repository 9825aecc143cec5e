"""Recipe math's GPU-side setup, checked on CPU: what vLLM is given, and what would make the first GPU run
fail or train on the CPU without saying so."""

from __future__ import annotations

from typing import Any

from core.recipes.math.evaluate import VLLMSampler, prompt_token_ids


def bos_template_tokenizer():  # -> PreTrainedTokenizerFast
    """A real tokenizer whose chat template writes BOS and whose post-processor would add another
    (Llama-style): the case where text given to vLLM gets two."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", *"abcdefghijklmnopqrstuvwxyz ?:"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("<s>|."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{% if " \
                         "add_generation_prompt %} a:{% endif %}"
    return fast


class FakeVLLM:
    """Stands in for vllm.LLM in a unit test of VLLMSampler: records the requests, answers by rote."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.params: Any = None

    def generate(self, requests, params, use_tqdm=True):
        self.requests, self.params = requests, params

        class Completion:
            def __init__(self, text: str) -> None:
                self.text = text

        class Output:
            def __init__(self, i: int) -> None:
                self.outputs = [Completion(f"p{i}s{j}") for j in range(params.n)]

        return [Output(i) for i in range(len(requests))]


def test_vllm_gets_token_ids_with_one_bos_and_answers_map_back_to_prompts(monkeypatch):
    import sys
    import types

    class FakeSamplingParams:  # vllm is not installed on CPU machines: the sampler imports this name
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=FakeSamplingParams))
    tok = bos_template_tokenizer()
    prompts = [[{"role": "user", "content": "what is up?"}], [{"role": "user", "content": "hi"}]]
    llm = FakeVLLM()
    out = VLLMSampler(llm, tok, seed=7).sample(prompts, 3, 1.0, 50)
    assert out == [["p0s0", "p0s1", "p0s2"], ["p1s0", "p1s1", "p1s2"]]
    ids = [r["prompt_token_ids"] for r in llm.requests]
    assert ids == prompt_token_ids(tok, prompts)
    assert [row.count(tok.bos_token_id) for row in ids] == [1, 1] and all(r[0] == tok.bos_token_id for r in ids)
    text = tok.apply_chat_template(prompts[1], add_generation_prompt=True, tokenize=False)
    assert tok(text)["input_ids"].count(tok.bos_token_id) == 2  # what giving vLLM the text would have done
    assert (llm.params.n, llm.params.seed, llm.params.max_tokens, llm.params.temperature) == (3, 7, 50, 1.0)

