#!/usr/bin/env python3
"""Generate a tiny, deterministic, random-weight Llama model directory.

No model can be downloaded on the development/CI machines, so the engine image
ships a model made here: a ``LlamaForCausalLM`` (hidden 128, 2 layers, 2 heads,
32k context, ~1.4 M parameters) with seeded random weights, plus a byte-level BPE
tokenizer trained locally with ``tokenizers`` on a seeded synthetic corpus,
saved as a Hugging Face model directory with a chat template.

Its greedy output is gibberish, but it depends on the prompt, so that "warm output
identical to cold output at temperature 0" is a check that can fail: a wrong or
misplaced KV block changes the text. Hugging Face's default init (std 0.02, tied
embeddings) made every prompt's continuation one repeated token ("5555...",
"\n\n\n...") whatever the prompt. The init here (`init_weights`):

* token embeddings N(0, 1), every projection N(0, 1/fan_in), norms 1: each layer
  changes the residual stream as much as the token itself does;
* an untied output head (N(0, 1/128)): the next token is no longer the current
  one (tied small embeddings make every token predict itself);
* attention heads that look somewhere in particular. Head 0 gets a constant
  query and key bias (RECENCY on each of its dimensions): through the rotary
  embedding a constant q.k term is a sum of cosines of the distance, largest at
  distance 0 and falling with it, so the head attends mostly to the last few
  dozen tokens. Head 1's query and key weights are scaled by CONTENT: sharp
  attention to a few tokens anywhere in the context, chosen by their content.
  With the plain init both heads average over the whole context: prompts that
  share a 16k-token document and end in different questions get one
  continuation, and a different document changes nothing either.

Measured, 16 greedy tokens, bf16: 37 distinct continuations for 37 prompts shaped
like configs/test_config.yaml's scenarios (1.5k-16k-token shared prefixes + distinct
questions, unique 2k-token prompts, prompts differing in their last word, one
question after 6 different documents), the same tokens whether a prompt is
prefilled at once or as a cached prefix + the rest (transformers), and 29 of 36
prompts whose one 16-token block was replaced by other tokens changed their
output. vLLM CPU serves it (10 of 10 prompts distinct; warm == cold with vLLM's
prefix cache, 16k tokens cached). The default init: 1 output for 8 prompts
sharing a document, 1 for 4 prompts differing in their last word.

Usage: python make_tiny_model.py OUT_DIR [--seed N]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

# Single-threaded BPE training: merge ties are then broken the same way every run.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB_SIZE = 4096
MAX_POSITIONS = 32768
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SPECIAL_TOKENS = [BOS, EOS, PAD, *ROLE_TOKENS]

# Minimal template for system/user/assistant turns (content as a string or as a
# list of OpenAI-style {"type": "text", "text": ...} parts).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def synthetic_corpus(seed: int, n_lines: int = 20000) -> list[str]:
    """Deterministic pseudo-English lines: syllable words, numbers, punctuation."""
    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s",
              "t", "v", "w", "st", "tr", "pl", "ch", "sh", "th", "gr", "br"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "ee"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck"]
    words = ["".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                     for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    weights = [1.0 / (i + 1) for i in range(len(words))]  # Zipf-like frequencies
    punct = [".", ",", "?", "!", ";", ":"]
    lines = []
    for _ in range(n_lines):
        toks = rng.choices(words, weights=weights, k=rng.randint(4, 24))
        if rng.random() < 0.3:
            toks.insert(rng.randrange(len(toks)), str(rng.randint(0, 99999)))
        if rng.random() < 0.5:
            toks[0] = toks[0].capitalize()
        lines.append(" ".join(toks) + rng.choice(punct))
    return lines


def train_tokenizer(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(synthetic_corpus(seed), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def save_tokenizer(tok, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        model_max_length=MAX_POSITIONS,
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(str(out))
    # transformers 5 writes its own class name; the 4.x-compatible alias loads in both.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


HIDDEN, HEADS = 128, 2
# Head 0: a constant query/key bias on every dimension, attention to recent tokens.
RECENCY = 1.5
# Head 1: query/key weights scaled up, sharp attention to a few tokens chosen by content.
CONTENT = 3.0


def init_weights(model, seed: int) -> None:
    """Seeded init whose greedy continuation depends on the prompt (see the module docstring)."""
    import math

    import torch

    head_dim = HIDDEN // HEADS
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
                if name.endswith(("q_proj.bias", "k_proj.bias")):
                    p[:head_dim] = RECENCY
            else:
                std = 1.0 if "embed_tokens" in name else 1 / math.sqrt(p.shape[1])
                p.copy_(torch.randn(p.shape, generator=gen) * std)
                if name.endswith(("q_proj.weight", "k_proj.weight")):
                    p[head_dim : 2 * head_dim] *= CONTENT


def save_model(tok, out: Path, seed: int) -> int:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        attention_bias=True,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD),
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    init_weights(model, seed)
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    ).save_pretrained(str(out))
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    tok = train_tokenizer(args.seed)
    save_tokenizer(tok, out)
    n_params = save_model(tok, out, args.seed)
    info = {
        "vocab_size": tok.get_vocab_size(),
        "params": n_params,
        "seed": args.seed,
        "init": f"embed N(0,1), projections N(0,1/fan_in), untied head, head 0 q/k bias {RECENCY}, "
        f"head 1 q/k x{CONTENT}",
    }
    (out / "kvbench_tiny.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"tiny model written to {out}: {json.dumps(info)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
