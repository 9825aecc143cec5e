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
    """Sample (or greedy-decode) one response per prompt with an incremental KV cache.

    A row that has produced EOS leaves the batch (and the cache) at once: responses end at very
    different lengths (8 to 32 tokens in one GRPO step), and the decode cost is proportional to the
    rows still running, so this skips about a third of the work the padded batch would do.
    """
    import torch
    from transformers import DynamicCache

    ids, mask = encode_prompts(tok, prompts)
    bsz = ids.shape[0]
    out_ids = torch.full((bsz, max_new), tok.pad_token_id, dtype=torch.long)  # [B, max_new]
    out_lp = torch.zeros(bsz, max_new)  # [B, max_new]
    lengths = torch.full((bsz,), max_new, dtype=torch.long)  # [B] set when a row ends
    live = torch.arange(bsz)  # [b] original row of each row still generating
    cache = DynamicCache()
    attn, pos, step_in = mask, _positions(mask), ids
    with torch.no_grad():
        for t in range(max_new):
            logits = model(input_ids=step_in, attention_mask=attn, position_ids=pos,
                           cache=cache, use_cache=True).logits[:, -1].float()  # [b, V]
            logp = torch.log_softmax(logits / max(temperature, 1e-6), dim=-1)  # [b, V]
            nxt = logits.argmax(-1) if greedy else sample(logp, generator)
            out_ids[live, t] = nxt
            out_lp[live, t] = logp.gather(1, nxt[:, None]).squeeze(1)
            ended = nxt == tok.eos_token_id  # [b]
            if bool(ended.any()):
                lengths[live[ended]] = t + 1
                going = (~ended).nonzero().squeeze(1)  # [b'] rows that continue
                if going.numel() == 0:
                    break
                live, nxt, attn, pos = live[going], nxt[going], attn[going], pos[going]
                cache.batch_select_indices(going)
            attn = torch.cat([attn, torch.ones(live.shape[0], 1, dtype=attn.dtype)], 1)
            pos, step_in = pos[:, -1:] + 1, nxt[:, None]
    width = int(lengths.max()) if bsz else 0  # the longest response: the loop ran this many steps
    response = out_ids[:, :width]  # [B, T]
    resp_mask = (torch.arange(width)[None, :] < lengths[:, None]).float()  # [B, T] EOS included
    truncated = (response == tok.eos_token_id).sum(1) == 0  # [B] no EOS within the limit
    # out_lp is 0 wherever a row was no longer generating: nothing was written there
    return Rollout(ids, mask, response, resp_mask, out_lp[:, :width], truncated, _decode(tok, response))


def sample(logp: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of log-probs [b, V], by inverse transform: one uniform number per row.

    torch.multinomial draws an exponential per vocabulary entry; at V = 32K that was 68% of a rollout
    (bench/RESULTS.md). Here a token is drawn exactly when the uniform number falls in its step of the
    cumulative distribution, so a token of probability 0 (an empty step) is never drawn. The uniform
    number is scaled by the row's total, so float rounding of the sum never runs past the last token.
    """
    import torch

    cdf = logp.exp().cumsum(-1)  # [b, V] non-decreasing
    u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]  # [b, 1] in [0, total)
    return torch.searchsorted(cdf, u, right=True).squeeze(1)  # [b] first index whose cdf exceeds u


def _decode(tok: PreTrainedTokenizerFast, response: torch.Tensor) -> list[str]:
    # The special ids are read once: each tokenizer attribute access goes through a slow
    # __getattr__, and per token it cost ~10% of a whole rollout.
    eos, pad = tok.eos_token_id, tok.pad_token_id
    rows = []
    for row in response.tolist():
        if eos in row:
            row = row[: row.index(eos)]
        rows.append([t for t in row if t != pad])
    return tok.batch_decode(rows)


def token_logprobs(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                   response_ids: torch.Tensor, response_mask: torch.Tensor, temperature: float,
                   with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(response token) [B, T] and token entropy [B, T] under the current weights (grad flows).

    Rows are sorted by length and run in a few chunks, each cut to its own longest prompt and
    response: a third of a padded GRPO batch is padding, and the forward cost follows the padded
    size. Each row's values are those of one padded forward (padding is invisible to the model);
    positions past a row's response are 0.
    """
    import torch
    import torch.nn.functional as F

    p_width, t_width = prompt_ids.shape[1], response_ids.shape[1]
    p_len, r_len = prompt_mask.sum(1), response_mask.sum(1).long()  # [B], [B]
    order = torch.argsort(p_len + r_len, stable=True)  # [B]
    logps, ents = [], []
    for rows in order.tensor_split(_chunk_count(len(order))):
        wp, wr = int(p_len[rows].max()), max(1, int(r_len[rows].max()))
        lp, ent = _padded_logprobs(model, prompt_ids[rows, p_width - wp :], prompt_mask[rows, p_width - wp :],
                                   response_ids[rows, :wr], response_mask[rows, :wr], temperature, with_entropy)
        logps.append(F.pad(lp, (0, t_width - wr)))
        ents.append(F.pad(ent, (0, t_width - wr)) if ent is not None else None)
    back = torch.argsort(order)  # [B] undoes the sort
    mask = response_mask.to(torch.float32)  # [B, T]
    return torch.cat(logps)[back] * mask, (torch.cat(ents)[back] * mask if with_entropy else None)


def _chunk_count(rows: int) -> int:
    """Chunks of at most 32 rows, and at least two once there are 16 rows (bench/bench_trainer_vs_trl.py:
    a 32-row update ran 14% faster in two chunks, a 128-row reference forward 40% faster in four;
    smaller chunks lose it again to per-call overhead)."""
    return max(-(-rows // 32), 2 if rows >= 16 else 1)


def _padded_logprobs(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                     response_ids: torch.Tensor, response_mask: torch.Tensor, temperature: float,
                     with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward over left-padded prompts + right-padded responses: log-probs [B, T] and entropy [B, T]."""
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
