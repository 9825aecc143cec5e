"""Batched sampling with a KV cache, and token log-probs/entropy of given responses.

Prompts are left-padded (position ids from the attention mask, so padding is
invisible to the model); responses are right-padded after the end token. Our
own loop is used rather than `model.generate`: bench/bench_tiny.py measures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast


@dataclass
class Rollout:
    prompt_ids: torch.Tensor      # long  [B, P] left-padded
    prompt_mask: torch.Tensor     # long  [B, P]
    response_ids: torch.Tensor    # long  [B, T] pad after EOS
    response_mask: torch.Tensor   # float [B, T] 1 on generated tokens (EOS included)
    logprobs: torch.Tensor        # float [B, T] log pi(token) at the sampling temperature
    truncated: torch.Tensor       # bool  [B] no EOS within the limit
    texts: list[str]                # decoded responses without EOS


def encode_prompts(tok: PreTrainedTokenizerFast, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + prompt, left-padded: ids [B, P] and mask [B, P]."""
    import torch

    rows = [[tok.bos_token_id, *tok.encode(p, add_special_tokens=False)] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(1) - 1).clamp(min=0)  # [B, L]


def generate(model: PreTrainedModel, tok: PreTrainedTokenizerFast, prompts: list[str], max_new: int,
             temperature: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None) -> Rollout:
    """Sample (or greedy-decode) one response per prompt with an incremental KV cache."""
    import torch
    from transformers import DynamicCache

    ids, mask = encode_prompts(tok, prompts)
    bsz = ids.shape[0]
    done = torch.zeros(bsz, dtype=torch.bool)
    out_ids, out_lp, out_mask = [], [], []
    cache = DynamicCache()
    attn, pos, step_in = mask, _positions(mask), ids
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(input_ids=step_in, attention_mask=attn, position_ids=pos,
                           cache=cache, use_cache=True).logits[:, -1].float()  # [B, V]
            logp = torch.log_softmax(logits / max(temperature, 1e-6), dim=-1)  # [B, V]
            nxt = logits.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id), nxt)  # [B]
            out_ids.append(nxt)
            out_lp.append(logp.gather(1, nxt[:, None]).squeeze(1) * (~done))
            out_mask.append((~done).float())
            done = done | (nxt == tok.eos_token_id)
            if bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones(bsz, 1, dtype=attn.dtype)], 1)
            pos, step_in = pos[:, -1:] + 1, nxt[:, None]
    response = torch.stack(out_ids, 1)  # [B, T]
    return Rollout(ids, mask, response, torch.stack(out_mask, 1), torch.stack(out_lp, 1), ~done,
                   _decode(tok, response))


def _decode(tok: PreTrainedTokenizerFast, response: torch.Tensor) -> list[str]:
    texts = []
    for row in response.tolist():
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id)]
        texts.append(tok.decode([t for t in row if t != tok.pad_token_id]))
    return texts


def token_logprobs(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                   response_ids: torch.Tensor, response_mask: torch.Tensor, temperature: float,
                   with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(response token) [B, T] and token entropy [B, T] under the current weights (grad flows)."""
    import torch

    full = torch.cat([prompt_ids, response_ids], 1)  # [B, P+T]
    attn = torch.cat([prompt_mask, response_mask.long()], 1)  # [B, P+T]
    p = prompt_ids.shape[1]
    logits = model(input_ids=full, attention_mask=attn, position_ids=_positions(attn)).logits
    logits = logits[:, p - 1 : -1].float() / max(temperature, 1e-6)  # [B, T, V] predicts each response token
    logp_all = torch.log_softmax(logits, dim=-1)  # [B, T, V]
    logp = logp_all.gather(2, response_ids[:, :, None]).squeeze(2)  # [B, T]
    entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None  # [B, T]
    return logp, entropy
