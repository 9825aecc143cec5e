"""A lean forward pass over a transformers Llama/Qwen2 model's own parameters.

Why: the tiny model (hidden 64, 2 layers) does ~30 MFLOP per decode step, so the
transformers forward spends most of its time in per-call machinery (mask building,
cache objects, output classes), not in arithmetic. This module runs the same math
(RMSNorm, rotary attention with padding, SwiGLU MLP, tied head) by calling the
model's own submodules, with a preallocated KV cache for decoding. Gradients flow
to the model's parameters, so the optimizer, checkpoints and evaluation are those of
the transformers model. tests/test_tiny_fastlm.py checks logits, gradients and
greedy decoding against the transformers forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SUPPORTED = ("llama", "qwen2")


@dataclass
class KVCache:
    keys: list[torch.Tensor]     # per layer [B, H_kv, L_max, D]
    values: list[torch.Tensor]   # per layer [B, H_kv, L_max, D]
    length: int = 0              # positions filled so far


def supports(model: PreTrainedModel) -> bool:
    """Only plain decoders whose math this module reproduces (no sliding window, no rope scaling)."""
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    return (cfg.model_type in SUPPORTED and rope.get("rope_type", "default") == "default"
            and not getattr(cfg, "use_sliding_window", False) and cfg.hidden_act == "silu")


class FastLM:
    """forward(ids, positions, key_mask) -> logits, the same function as model(...).logits."""

    def __init__(self, model: PreTrainedModel) -> None:
        cfg = model.config
        self.model = model
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.layers = model.model.layers

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        shape = (batch, self.kv_heads, max_len, self.head_dim)
        dtype = self.model.model.embed_tokens.weight.dtype
        n = len(self.layers)
        return KVCache([torch.zeros(shape, dtype=dtype) for _ in range(n)],
                       [torch.zeros(shape, dtype=dtype) for _ in range(n)])

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        """ids/positions [B, L] (the new tokens); key_mask [B, K] over every key seen so far
        (K = cache.length + L with a cache, else L). Returns logits [B, L, V]."""
        x = self.model.model.embed_tokens(ids)  # [B, L, H]
        cos, sin = self.model.model.rotary_emb(x, positions)  # [B, L, D] each
        mask = attention_mask(key_mask, ids.shape[1])  # [B, 1, L, K]
        for i, layer in enumerate(self.layers):
            x = x + self._attention(i, layer, layer.input_layernorm(x), cos, sin, mask, cache)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        if cache is not None:
            cache.length += ids.shape[1]
        return self.model.lm_head(self.model.model.norm(x))  # [B, L, V]

    def _attention(self, i: int, layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   mask: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        attn = layer.self_attn
        b, n, _ = h.shape
        q = attn.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, Hq, L, D]
        k = attn.k_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, D]
        v = attn.v_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, D]
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            end = cache.length + n
            cache.keys[i][:, :, cache.length:end] = k
            cache.values[i][:, :, cache.length:end] = v
            k, v = cache.keys[i][:, :, :end], cache.values[i][:, :, :end]  # [B, Hkv, K, D]
        out = attend(q, k, v, mask)  # [B, Hq, L, D]
        return attn.o_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))  # [B, L, H]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention. For one decode query it is written out: at these sizes (K <= ~50 keys,
    D = 16) torch's CPU flash kernel costs ~0.5 ms per call in set-up alone, and bmm over 512 tiny
    matrices ~0.25 ms; broadcast products take ~0.05 ms. q [B, Hq, L, D], k/v [B, Hkv, K, D]."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: share each key/value head
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scale = q.shape[-1] ** -0.5
    if q.shape[2] == 1:  # one decode step: broadcast products beat 512 tiny batched matmuls (bmm) here
        scores = (q * k).sum(-1, keepdim=True).transpose(-1, -2) * scale  # [B, H, 1, K]
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # [B, H, 1, K]
        return (probs.transpose(-1, -2) * v).sum(-2, keepdim=True)  # [B, H, 1, D]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, L, D] (prefill: many queries)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the rotate-half convention of Llama/Qwen2. x [B, H, L, D], cos/sin [B, L, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def attention_mask(key_mask: torch.Tensor, n_new: int) -> torch.Tensor:
    """Boolean [B, 1, L, K]: query j (the last L of K positions) sees real keys up to itself.

    A query always sees itself, so a left-padding query never has an empty row (an all-masked
    row gives NaN in SDPA, and NaN would leak through the zero weights of later layers)."""
    k = key_mask.shape[1]
    q_pos = torch.arange(k - n_new, k)[:, None]  # [L, 1]
    k_pos = torch.arange(k)[None, :]  # [1, K]
    causal = k_pos <= q_pos  # [L, K]
    allowed = causal[None] & key_mask.bool()[:, None, :]  # [B, L, K]
    allowed = allowed | (k_pos == q_pos)[None]
    return allowed[:, None]  # [B, 1, L, K]
