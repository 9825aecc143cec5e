"""A tiny local Qwen2 policy for exercising recipe `math` on CPU (tests, smoke runs, the GPU benchmark's dry run).

Real parts, small sizes: a byte-level BPE tokenizer trained with `tokenizers` on the given texts, a chat
template in the Qwen style, and a randomly initialised `Qwen2ForCausalLM`. `warm_start` teaches it the
answer format by a few SFT steps on (prompt, "\\boxed{answer}") pairs whose answers are drawn at random from
the answer pool, so sampled rewards are mixed (some correct, some not) and GRPO has a signal to act on.
"""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(texts: list[str], vocab_size: int = 400):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()  # byte-level round trip: "\\boxed{3}" decodes to itself
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_qwen2(out_dir: Path, texts: list[str], seed: int = 0, hidden: int = 32, layers: int = 2,
                     vocab_size: int = 1000) -> Path:
    """Save a random tiny Qwen2ForCausalLM and its tokenizer to `out_dir`; returns `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer(texts, vocab_size)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def warm_start(model_dir: Path, prompts: list[str], answers: list[str], steps: int = 30, batch: int = 16,
               seed: int = 0) -> None:
    """SFT the saved model in place on (prompt -> "\\boxed{a}") with `a` drawn at random from `answers`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rng = random.Random(seed)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        pairs = [(rng.choice(prompts), rng.choice(answers)) for _ in range(batch)]
        ids, labels, att = _sft_batch(tok, pairs)
        model(input_ids=ids, attention_mask=att, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(model_dir)


def _sft_batch(tok, pairs: list[tuple[str, str]]):  # -> ids, labels, attention [N, L] each
    import torch

    rows, masks = [], []
    for prompt, answer in pairs:
        head = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
        head_ids = tok(head, add_special_tokens=False)["input_ids"]
        tail_ids = tok(f"The answer is \\boxed{{{answer}}}.<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append(head_ids + tail_ids)
        masks.append([0] * len(head_ids) + [1] * len(tail_ids))  # learn the response only
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])  # [N, L], right padded
    learn = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    att = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, ids.masked_fill(learn == 0, -100), att
