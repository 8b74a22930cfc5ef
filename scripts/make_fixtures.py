#!/usr/bin/env python3
"""Makes the small committed model fixtures under tests/fixtures/ (issue 3).

Writes a tiny random DistilBERT and a tiny random BERT sequence classifier (small WordPiece
vocabulary, dim 32, 2 layers) as transformers saves them, plus golden token ids, attention masks
and logits for the bank-transaction texts in tests/fixtures/texts.json. The Rust tests in
tests/model_*.rs must reproduce the ids exactly and the logits within 1e-4.

Deterministic: seeded torch RNG, sorted vocabulary. Run with the cache venv:
    source scripts/lib.sh && setup_test && "$TXCAT_PY" scripts/make_fixtures.py
"""
import json
import pathlib
import shutil

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MAX_LENGTH = 16
LABELS = ["groceries", "transport", "income"]

WORDS = """
pos purchase payment debit order credit transfer atm withdrawal card fee salary uber eats
woolworths checkers pick pay spar shell engen sasol netflix spotify takealot vodacom mtn
eskom rent insurance interest monthly account service cash deposit ref from to the and of
cafe food fuel airtime data online int ach eft wallet refund reversal bank charges
""".split()


def build_vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    punct = list(".,*-/#&'():")
    pieces = ["##" + c for c in chars]
    return special + punct + chars + pieces + sorted(set(WORDS))


def perturb(model: torch.nn.Module) -> None:
    # HF init leaves biases at 0 and LayerNorm weights at 1; noise on everything makes the
    # golden logits exercise every tensor (a swapped or ignored weight would show).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def golden(model, tokenizer, texts, type_ids_variant: bool) -> dict:
    unpadded = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    batch = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    out = {
        "max_length": MAX_LENGTH,
        "texts": texts,
        "input_ids": unpadded["input_ids"],
        "padded_input_ids": batch["input_ids"].tolist(),
        "attention_mask": batch["attention_mask"].tolist(),
        "logits": logits.tolist(),
    }
    if type_ids_variant:
        # Segment ids 1 on the second half of each row: checks token_type_embeddings are used.
        seq = batch["input_ids"].shape[1]
        type_ids = torch.zeros_like(batch["input_ids"])
        type_ids[:, seq // 2 :] = 1
        with torch.no_grad():
            logits_t = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=type_ids,
            ).logits
        out["token_type_ids"] = type_ids.tolist()
        out["logits_with_token_type_ids"] = logits_t.tolist()
    return out


def save(model, tokenizer, vocab, name: str, texts, type_ids_variant: bool) -> None:
    out_dir = ROOT / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # transformers 5 writes only tokenizer.json; vocab.txt feeds txcat's WordPiece fallback.
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (out_dir / "golden.json").write_text(json.dumps(golden(model, tokenizer, texts, type_ids_variant)))


def main() -> None:
    texts = json.loads((ROOT / "texts.json").read_text())
    vocab = build_vocab()
    tokenizer = BertTokenizerFast(
        vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True, model_max_length=64
    )
    id2label = dict(enumerate(LABELS))
    label2id = {v: k for k, v in id2label.items()}

    torch.manual_seed(1234)
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=len(vocab), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
            max_position_embeddings=64, id2label=id2label, label2id=label2id,
        )
    )
    perturb(distil)
    save(distil, tokenizer, vocab, "tiny-distilbert", texts, type_ids_variant=False)

    # Same architecture with transformers' own initialisation (no noise): the starting point the
    # end-to-end training tests fine-tune, since it learns a small task in a few seconds.
    torch.manual_seed(4321)
    fresh = DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=len(vocab), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
            max_position_embeddings=64, id2label=id2label, label2id=label2id,
        )
    )
    save(fresh, tokenizer, vocab, "tiny-distilbert-trainable", texts, type_ids_variant=False)

    torch.manual_seed(5678)
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
            layer_norm_eps=1e-7, id2label=id2label, label2id=label2id,
        )
    )
    perturb(bert)
    save(bert, tokenizer, vocab, "tiny-bert", texts, type_ids_variant=True)


if __name__ == "__main__":
    main()
