"""Recipe math's GPU-side setup, checked on CPU: what vLLM is given, and what would make the first GPU run
fail or train on the CPU without saying so."""

from __future__ import annotations

from typing import Any

import pytest

from core.recipes.math.config import MathConfig
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



def ready_math_config(tmp_path):  # -> RunConfig whose files all exist
    import json

    from core.config import RunConfig

    cfg = RunConfig(recipe="math")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for name in ("aime24", "aime25", "amc", "olympiadbench"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    cfg.math.model_path, cfg.math.data_dir = str(model), str(tmp_path)
    return cfg


def pretend_gpu_is_present(monkeypatch, present: bool) -> None:
    """Presence is read from the driver's files; on this CPU machine they are pointed at a directory
    that exists (present) or one that does not."""
    from core.recipes.math import device

    monkeypatch.setattr(device, "DRIVER_FILES", ("/" if present else "/no/such/nvidia",))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_on_a_gpu_machine_preflight_refuses_an_address_space_limit_and_a_missing_vllm(tmp_path, monkeypatch):
    import importlib.util

    from core.recipes import preflight

    cfg = ready_math_config(tmp_path)
    pretend_gpu_is_present(monkeypatch, False)
    assert preflight.problems(cfg) == []  # on CPU: limits are fine and HF generation is the documented path
    pretend_gpu_is_present(monkeypatch, True)
    found = preflight.problems(cfg)
    assert any("memory_mb = 8192" in p and "set memory_mb = 0" in p for p in found), found
    if importlib.util.find_spec("vllm") is None:
        assert any("use_vllm = true but vLLM is not installed" in p and "2048 responses" in p for p in found), found
    cfg.limits.memory_mb, cfg.math.use_vllm = 0, False
    assert preflight.problems(cfg) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # GPUs hidden on purpose: a CPU run, nothing to refuse
    cfg.limits.memory_mb = 8192
    assert preflight.problems(cfg) == []


def test_a_job_that_cannot_start_cuda_on_a_gpu_machine_says_why_instead_of_training_on_cpu(monkeypatch):
    import torch

    from core.recipes.math import device

    assert not torch.cuda.is_available()  # this suite's machine
    pretend_gpu_is_present(monkeypatch, False)
    assert device.training_device() == "cpu"
    pretend_gpu_is_present(monkeypatch, True)
    with pytest.raises(device.GPUUnusableError, match=r"(?s)CUDA cannot start.*memory_mb = 0.*CUDA_VISIBLE_DEVICES"):
        device.training_device()


def test_poise_init_of_recipe_math_writes_limits_a_gpu_job_survives(tmp_path):
    from core.cli import init_run
    from core.config import LimitsConfig, load_config

    limits = load_config(init_run(tmp_path / "m", recipe="math") / "run.toml").limits
    assert (limits.memory_mb, limits.cpu_s) == (0, 0) and limits.timeout_s >= 24 * 3600
    assert limits.nproc > LimitsConfig().nproc
    assert limits.disk_mb << 20 >= 1.5e9 * 28  # a 1.5B model's policy and two checkpoints
    tiny = load_config(init_run(tmp_path / "t") / "run.toml").limits
    assert tiny == LimitsConfig()  # the CPU recipe keeps its tight sandbox


def test_a_generation_batch_vllm_would_refuse_is_a_config_error_naming_the_fix():
    from core.configlib import from_dict
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"prompts_per_step.*1024 \* 8 = 8192.*4096.*use_vllm = false"):
        from_dict(MathConfig, {"prompts_per_step": 1024}, "[math]")
    assert from_dict(MathConfig, {"prompts_per_step": 1024, "use_vllm": False}, "[math]").prompts_per_step == 1024
    assert from_dict(MathConfig, {"prompts_per_step": 512}, "[math]").prompts_per_step == 512  # 4096: the limit
