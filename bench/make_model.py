#!/usr/bin/env python3
"""Random-init DistilBERT directories for benchmarking (no downloads).

  make_model.py tiny OUT_DIR --tokenizer-from MINILM_DIR   # dim 32, 2 layers: fast smoke runs
  make_model.py base OUT_DIR --tokenizer-from MINILM_DIR   # distilbert-base-sized: throughput only

Each directory holds config.json, model.safetensors and the tokenizer files copied unchanged from
`--tokenizer-from` (the MiniLM uncased WordPiece vocabulary: 30522 tokens, the same size as
distilbert-base-uncased's). Weights are saved as DistilBertForMaskedLM, the shape of the real
distilbert-base-uncased checkpoint (`distilbert.` prefix, MLM head that classifiers ignore), so
both txcat and AutoModelForSequenceClassification load them as they would the real model.
Deterministic for a given --seed.
"""

import argparse
import json
import os
import shutil
import sys

import torch
from transformers import DistilBertConfig, DistilBertForMaskedLM

SIZES = {
    "tiny": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    "base": dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072),  # distilbert-base-uncased.
}
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("size", choices=sorted(SIZES))
    p.add_argument("out_dir")
    p.add_argument("--tokenizer-from", required=True, help="directory with tokenizer.json and vocab.txt")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    src = a.tokenizer_from
    if not os.path.exists(os.path.join(src, "tokenizer.json")):
        sys.exit(f"error: {src}/tokenizer.json not found; pass --tokenizer-from the MiniLM directory")
    with open(os.path.join(src, "vocab.txt"), encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)

    torch.manual_seed(a.seed)
    config = DistilBertConfig(vocab_size=vocab_size, max_position_embeddings=512, pad_token_id=0,
                              **SIZES[a.size])
    model = DistilBertForMaskedLM(config)
    os.makedirs(a.out_dir, exist_ok=True)
    model.save_pretrained(a.out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(a.out_dir, name))
    params = sum(t.numel() for n, t in model.named_parameters() if not n.startswith("vocab_"))
    info = {"size": a.size, "dir": os.path.abspath(a.out_dir), "encoder_params": params, **SIZES[a.size]}
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
