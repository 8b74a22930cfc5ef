"""Measurement and CLI shared by the two Python references (recipe.py, tuned.py).

The references themselves stay close to the seed recipe; everything here only observes:
- `cli()` parses the flags both references (and bench/run) use;
- `StepClock` (a TrainerCallback) records when each optimizer step ends, syncing CUDA first, and
  leaves evaluation time out, so throughput covers training steps after a warm-up only;
- `TokenCountingTrainer` counts real (attention_mask == 1) and padded tokens of every training batch
  without a host sync on GPU (the sums stay on the device until the end);
- `finish()` assembles the JSON report: preprocessing, throughput, padding efficiency, wall time,
  peak RSS, GPU memory peak, MFU, final evaluation metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

T_START = time.perf_counter()  # Imported first by each reference, before torch and transformers.

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

# Dense bf16 tensor-core peaks (FLOP/s) by GPU name, from the vendors' data sheets.
PEAK_BF16 = [
    ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12),
    ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12),
]


def cli(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", required=True, help="folder with train.csv and val.csv (or test.csv)")
    p.add_argument("--model", required=True, help="HF model directory (config, weights, tokenizer)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                   help="auto: fp32 on CPU; on CUDA the reference's own choice")
    p.add_argument("--warmup-excluded", type=int, default=None,
                   help="optimizer steps left out of throughput (default min(20, steps/10), at least 1)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="category")
    p.add_argument("--out", help="write the JSON report here (it is always printed too)")
    p.add_argument("--work-dir", default=None, help="Trainer output_dir (nothing is saved there)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    return a


def eval_file(data_dir: str) -> str:
    """The seed evaluates on its `test` channel, which holds val.csv; prefer val.csv here too."""
    for name in ("val.csv", "validation.csv", "test.csv"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    sys.exit(f"error: {data_dir} has no val.csv, validation.csv or test.csv; add one")


def drop_unseen(df, encoder, column: str):
    """Drops evaluation rows whose label never occurs in train (the seed's LabelEncoder.transform
    would raise on them, e.g. on za-bank-txn); the count goes into the report."""
    known = set(encoder.classes_)
    keep = df[column].isin(known)
    DROPPED["eval_rows_dropped_unseen_label"] = int((~keep).sum())
    return df[keep].reset_index(drop=True)


DROPPED = {"eval_rows_dropped_unseen_label": 0}


def compute_metrics(pred):
    """The seed's metrics (accuracy, micro precision/recall/F1) plus macro-F1 for the benchmark."""
    labels = pred.label_ids
    preds = np.asarray(pred.predictions).argmax(-1)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, preds, average="micro")
    return {
        "accuracy": accuracy_score(labels, preds),
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "f1_macro": f1_score(labels, preds, average="macro"),
    }


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    """Times optimizer steps after `warm` steps; evaluation between steps is not counted."""

    def __init__(self):
        self.warm = 1
        self.mark = None  # perf_counter at the end of the last counted step.
        self.timed_s = 0.0
        self.timed_steps = 0
        self.eval_started = None
        self.evals = []

    def on_train_begin(self, args, state, control, **kw):
        self.train_begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        _sync()
        now = time.perf_counter()
        if state.global_step == self.warm:
            self.mark = now
        elif state.global_step > self.warm and self.mark is not None:
            self.timed_s += now - self.mark
            self.timed_steps += 1
            self.mark = now

    def on_epoch_end(self, args, state, control, **kw):
        self.eval_started = time.perf_counter()  # Epoch-end evaluation follows this callback.

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        now = time.perf_counter()
        if self.eval_started is not None and self.mark is not None:
            self.mark += now - self.eval_started  # Shift the mark past the evaluation.
        self.eval_started = None
        self.evals.append(dict(metrics or {}, epoch=state.epoch))

    def on_train_end(self, args, state, control, **kw):
        self.train_end = time.perf_counter()


class TokenCountingTrainer(Trainer):
    """Trainer that also counts tokens per training batch (measurement only; no behaviour change).

    Counts after the warm-up go to `timed_*`, matching the steps `StepClock` times: the batch of
    optimizer step k (1-based) runs while `state.global_step == k - 1`.
    """

    def __init__(self, *a, clock: StepClock, **kw):
        super().__init__(*a, **kw)
        self.clock = clock
        self.counts = {"samples": 0, "real": 0, "padded": 0}
        self.timed = {"samples": 0, "real": 0, "padded": 0}

    def training_step(self, model, inputs, *a, **kw):
        mask = inputs["attention_mask"]
        real = mask.sum()  # Stays on the device: no sync per step.
        rows, width = mask.shape
        for bucket, on in ((self.counts, True), (self.timed, self.state.global_step >= self.clock.warm)):
            if on:
                bucket["samples"] += rows
                bucket["real"] = bucket["real"] + real
                bucket["padded"] += rows * width
        return super().training_step(model, inputs, *a, **kw)



def training_arguments(a, precision: str, impl: str, **extra):
    """The `TrainingArguments` both references share (the seed's: eval each epoch, no saving), plus
    the variant's own `extra` settings."""
    from transformers import TrainingArguments

    if precision == "bf16" and not torch.cuda.is_available():
        # Transformers refuses bf16 without a GPU unless told to run on the CPU (autocast to bf16).
        extra.setdefault("use_cpu", True)
    return TrainingArguments(
        output_dir=a.work_dir or tempfile.mkdtemp(prefix=f"txcat-bench-{impl}-"),
        num_train_epochs=a.epochs,
        per_device_train_batch_size=a.batch_size,
        per_device_eval_batch_size=a.eval_batch_size,
        warmup_steps=a.warmup_steps,
        learning_rate=a.lr,
        eval_strategy="epoch",
        save_strategy="no",
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        seed=a.seed,
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        **extra,
    )

def pick_warm(requested, total_steps: int) -> int:
    if requested is not None:
        return max(0, min(requested, total_steps - 1))
    return max(1, min(20, total_steps // 10))


def _peak_flops(name: str):
    for key, flops in PEAK_BF16:
        if key in name:
            return flops
    return None


def finish(impl: str, a, *, trainer: TokenCountingTrainer, clock: StepClock, prep: dict,
           n_train: int, n_eval: int, num_labels: int, precision: str, extra: dict) -> dict:
    """Builds, prints and writes the JSON report."""
    _sync()
    model = trainer.model
    params = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    timed_real = int(trainer.timed["real"])
    timed_padded = int(trainer.timed["padded"])
    all_real, all_padded = int(trainer.counts["real"]), int(trainer.counts["padded"])
    t = clock.timed_s
    last = clock.evals[-1] if clock.evals else {}
    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Dataloader workers.
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else None
    report = {
        "impl": impl,
        "model": os.path.abspath(a.model),
        "data_dir": os.path.abspath(a.data_dir),
        "device": "cuda" if cuda else "cpu",
        "gpu": gpu,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "max_length": a.max_length,
        "seed": a.seed,
        "rows_train": n_train,
        "rows_eval": n_eval,
        "num_labels": num_labels,
        "params": params,
        "params_non_embedding": params - emb,
        **prep,
        "preprocess_rows_per_s": (n_train + n_eval) / prep["preprocess_s"] if prep["preprocess_s"] > 0 else None,
        "train_s": clock.train_end - clock.train_begin,
        "train_steps": trainer.state.global_step,
        "warmup_steps_excluded": clock.warm,
        "timed_steps": clock.timed_steps,
        "timed_s": t,
        "train_samples_per_s": trainer.timed["samples"] / t if t > 0 else None,
        "train_real_tokens_per_s": timed_real / t if t > 0 else None,
        "train_padded_tokens_per_s": timed_padded / t if t > 0 else None,
        "padding_efficiency": all_real / all_padded if all_padded else None,
        "eval_accuracy": last.get("eval_accuracy"),
        "eval_f1_macro": last.get("eval_f1_macro"),
        "eval_f1_micro": last.get("eval_f1"),
        "eval_loss": last.get("eval_loss"),
        "eval_history": clock.evals,
        **DROPPED,
        "wall_s": time.perf_counter() - T_START,
        "peak_rss_mb": max(usage_self, usage_children) / 1024.0,  # Linux reports KiB.
        **extra,
    }
    if cuda:
        report["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        peak = _peak_flops(gpu or "")
        tok_s = report["train_real_tokens_per_s"]
        report["peak_bf16_flops"] = peak
        report["mfu"] = 6 * params * tok_s / peak if peak and tok_s else None
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return report
