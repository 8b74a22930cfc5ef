#!/usr/bin/env python3
"""The seed recipe as a careful Python user would tune it (same CLI and report as recipe.py).

Differences from recipe.py, each a stock transformers/torch switch:
- tokenize without padding (truncation only) and let DataCollatorWithPadding pad each batch;
- group_by_length: batches of similar lengths (LengthGroupedSampler) from a precomputed length column;
- dataloader workers (persistent, pinned memory on CUDA);
- fused AdamW (as the recipe gets by default); on CUDA also bf16 autocast, SDPA attention, TF32.
Same data, model, hyperparameters, sequence length, thread count and seed as the recipe.
"""

import time

import common  # First: starts the wall clock before the heavy imports.

import dataclasses  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import datasets  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.preprocessing import LabelEncoder  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    TrainingArguments,
    set_seed,
)


def group_by_length_args() -> dict:
    """transformers 5 names it `train_sampling_strategy`; 4.x has the `group_by_length` flag."""
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length", "length_column_name": "length"}
    return {"group_by_length": True, "length_column_name": "length"}


def main():
    a = common.cli(__doc__.split("\n\n")[0])
    datasets.disable_progress_bar()
    set_seed(a.seed)
    cuda = torch.cuda.is_available()
    precision = a.precision if a.precision != "auto" else ("bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32")
    # Workers only pay off with cores to spare: on CPU torch already uses --threads of them.
    spare = max(0, (os.cpu_count() or 1) - a.threads)
    workers = int(os.environ.get("BENCH_WORKERS", 4 if cuda else min(2, spare)))
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

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
        enc = tokenizer(batch[a.text_column], truncation=True, max_length=a.max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    train_dataset = datasets.Dataset.from_pandas(train_df[[a.text_column, "label"]])
    test_dataset = datasets.Dataset.from_pandas(test_df[[a.text_column, "label"]])
    train_dataset = train_dataset.map(tokenize, batched=True, remove_columns=[a.text_column])
    test_dataset = test_dataset.map(tokenize, batched=True, remove_columns=[a.text_column])
    t_tok = time.perf_counter()
    prep = {
        "csv_read_s": t_read - t0,
        "label_encode_s": t_labels - t_read,
        "tokenizer_load_s": t_tok_load - t_labels,
        "tokenize_s": t_tok - t_tok_load,
        "preprocess_s": t_tok - t0,
    }

    model_kw = {"attn_implementation": "sdpa"} if cuda else {}
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(le.classes_), **model_kw)
    steps = math.ceil(len(train_dataset) / a.batch_size) * a.epochs
    clock = common.StepClock()
    clock.warm = common.pick_warm(a.warmup_excluded, int(steps))
    args = common.training_arguments(
        a,
        precision,
        "tuned",
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        dataloader_pin_memory=cuda,
        # Fused AdamW runs on CPU tensors too (torch >= 2.4) and is transformers' own default from
        # torch 2.8, so the recipe uses it; forcing the for-loop "adamw_torch" here made the comparison unfair.
        optim="adamw_torch_fused",
        **group_by_length_args(),
    )
    trainer = common.TokenCountingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=test_dataset,
        compute_metrics=common.compute_metrics,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        clock=clock,
        callbacks=[clock],
    )
    trainer.train()
    common.finish("tuned", a, trainer=trainer, clock=clock, prep=prep, n_train=len(train_dataset),
                  n_eval=len(test_dataset), num_labels=len(le.classes_), precision=precision,
                  extra={"dataloader_workers": workers})


if __name__ == "__main__":
    main()
