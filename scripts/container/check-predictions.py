"""Checks a trained txcat model folder from the outside, as users will use it.

usage: check-predictions.py MODEL_DIR INPUT_CSV PREDICTIONS_CSV [TEXT_COLUMN]

Opens MODEL_DIR with transformers (AutoTokenizer + AutoModelForSequenceClassification), predicts the
top label of every text in INPUT_CSV, and compares with PREDICTIONS_CSV written by `txcat predict` in the
container: same rows in the same order, the input columns kept, and the same top label on every row
(except rows whose two best transformers scores are closer than 1e-4, where either label is right).
Exits non-zero with a one-line reason on the first mismatch; prints a summary on success.
"""
import csv
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main() -> int:
    model_dir, input_csv, pred_csv = sys.argv[1:4]
    text_column = sys.argv[4] if len(sys.argv) > 4 else "text"
    with open(input_csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    with open(pred_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        pred_rows = list(reader)
        pred_columns = reader.fieldnames or []
    if len(pred_rows) != len(rows):
        print(f"{pred_csv}: {len(pred_rows)} rows, {input_csv} has {len(rows)}")
        return 1
    new_columns = [c for c in pred_columns if c not in rows[0]]
    if not new_columns:
        print(f"{pred_csv}: no column added to the input's {list(rows[0])}")
        return 1
    label_column = new_columns[0]  # the first appended column holds the top label
    for i, (row, pred) in enumerate(zip(rows, pred_rows), start=2):
        if pred[text_column] != row[text_column]:
            print(f"{pred_csv}:{i}: text {pred[text_column]!r} != input {row[text_column]!r} (row order lost)")
            return 1

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    texts = [r[text_column] for r in rows]
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1)
    top2 = probs.topk(2, dim=-1)
    id2label = model.config.id2label
    agree = 0
    for i, (pred, scores, ids) in enumerate(zip(pred_rows, top2.values, top2.indices), start=2):
        expected = id2label[int(ids[0])]
        if pred[label_column] == expected:
            agree += 1
        elif not (pred[label_column] == id2label[int(ids[1])] and float(scores[0] - scores[1]) < 1e-4):
            print(f"{pred_csv}:{i}: txcat predicts {pred[label_column]!r}, transformers {expected!r}")
            return 1
    print(f"transformers opened {model_dir} ({len(id2label)} labels); txcat predict agrees on {agree}/{len(rows)} rows"
          f" (column {label_column!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
