"""LLM backends: llama.cpp (default, embedded SmolLM2 GGUF) and an optional OpenAI-compatible local server.

`make_llm(cfg)` builds the configured backend. Heavy imports (llama_cpp) happen only when a
LlamaCppLLM is constructed, so importing this package is cheap.
"""

from __future__ import annotations

from core.llm.base import LLM, LLMReply, Message, parse_json_reply, prompt_tokens
from core.llm.config import LLMConfig


def make_llm(cfg: LLMConfig) -> LLM:
    """The backend named by `cfg.backend`; the llama.cpp model is shared process-wide."""
    if cfg.backend == "openai":
        from core.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(cfg.base_url, cfg.model_name, cfg.n_ctx, cfg.timeout_s)
    from core.llm.llamacpp import LlamaCppLLM

    return LlamaCppLLM(cfg.model_path, cfg.n_ctx, cfg.n_gpu_layers, cfg.n_threads, cfg.repeat_penalty,
                       cfg.prompt_cache_mb)


__all__ = ["LLM", "LLMConfig", "LLMReply", "Message", "make_llm", "parse_json_reply", "prompt_tokens"]
