#!/usr/bin/env python3
"""The seed recipe, faithfully, with measurement hooks (bench/reference/common.py) around it.

pandas read_csv -> LabelEncoder -> Dataset.from_pandas -> tokenizer(padding='longest',
truncation=True) in batched map (so every row is padded to the longest row of its 1000-row map
chunk, as the seed does) -> AutoModelForSequenceClassification(num_labels) -> Trainer with
save_strategy='no', evaluation each epoch, compute_metrics with accuracy and micro
precision/recall/F1. On CUDA the seed's `fp16` flag is on; on CPU fp32.

Prints (and with --out writes) a JSON report; see common.finish for the fields.
"""

import time

import common  # First: starts the wall clock before the heavy imports.

import math  # noqa: E402

import datasets  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.preprocessing import LabelEncoder  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    set_seed,
)


def main():
    a = common.cli(__doc__.split("\n\n")[0])
    datasets.disable_progress_bar()
    set_seed(a.seed)
    cuda = torch.cuda.is_available()
    precision = a.precision if a.precision != "auto" else ("fp16" if cuda else "fp32")

    # --- preprocessing: CSV read + label encode + tokenize (timed) ---
    t0 = time.perf_counter()
    train_df = pd.read_csv(f"{a.data_dir}/train.csv")
    test_df = pd.read_csv(common.eval_file(a.data_dir))
    t_read = time.perf_counter()
    le = LabelEncoder()
    train_df["label"] = le.fit_transform(train_df[a.label_column])
    test_df = common.drop_unseen(test_df, le, a.label_column)  # Bench addition; see common.py.
    test_df["label"] = le.transform(test_df[a.label_column])
    t_labels = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    t_tok_load = time.perf_counter()

    def tokenize(batch):
        return tokenizer(batch[a.text_column], padding="longest", truncation=True, max_length=a.max_length)

    train_dataset = datasets.Dataset.from_pandas(train_df[[a.text_column, "label"]])
    test_dataset = datasets.Dataset.from_pandas(test_df[[a.text_column, "label"]])
    train_dataset = train_dataset.map(tokenize, batched=True)
    test_dataset = test_dataset.map(tokenize, batched=True)
    t_tok = time.perf_counter()
    prep = {
        "csv_read_s": t_read - t0,
        "label_encode_s": t_labels - t_read,
        "tokenizer_load_s": t_tok_load - t_labels,
        "tokenize_s": t_tok - t_tok_load,
        "preprocess_s": t_tok - t0,
    }

    # --- model and Trainer, as the seed builds them ---
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(le.classes_))
    steps = math.ceil(len(train_dataset) / a.batch_size) * a.epochs
    clock = common.StepClock()
    clock.warm = common.pick_warm(a.warmup_excluded, int(steps))
    args = common.training_arguments(
        a,
        precision,
        "recipe",
    )
    trainer = common.TokenCountingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=test_dataset,
        compute_metrics=common.compute_metrics,
        processing_class=tokenizer,
        clock=clock,
        callbacks=[clock],
    )
    trainer.train()
    common.finish("recipe", a, trainer=trainer, clock=clock, prep=prep, n_train=len(train_dataset),
                  n_eval=len(test_dataset), num_labels=len(le.classes_), precision=precision, extra={})


if __name__ == "__main__":
    main()
