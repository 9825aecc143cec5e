"""LLM backends: llama.cpp (default, embedded SmolLM2 GGUF) and an optional OpenAI-compatible local server."""
