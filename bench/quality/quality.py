#!/usr/bin/env python3
"""bench/quality: is the model txcat ships better than the one users run today?

Per data set, on a test split no choice ever saw:
- the seed's production model, word 1-2-gram tf-idf + LinearSVC (scikit-learn, fit on train);
- the encoder trained by txcat with the old defaults (the recipe's: 3 epochs, lr 5e-5, batch 8,
  max_length 128), the blend off;
- the encoder trained by txcat with the new recipe (chosen on the validation split), alone
  (`predict --encoder-only`) and as txcat ships it (with the tf-idf blend when the job kept it;
  the job chooses the blend's weight on the validation split).
Accuracy and macro-F1 from scikit-learn on txcat predict's output; wall seconds of each whole job
(load + tokenize + train + evaluate + save) and of the scikit-learn fit.

Splits: za-bank-txn ships train/val/test; oxford-pcard is split here (seeded, per label 70/15/15,
labels with fewer than 4 rows only in train); generated data comes from scripts/gen_transactions.py.
"""
import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.svm import LinearSVC

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import txcat_run  # noqa: E402

OLD = {}  # txcat's defaults are the recipe's
# Chosen on the validation splits of za-bank-txn and oxford-pcard (2026-12-03 sweep: 5, 6 and 10
# epochs, lr 3e-4 or 5e-4, class weights, label smoothing; bench/RESULTS.md): 6 epochs keep the
# job within 2x the old recipe's samples, balanced class weights lift the tail labels' F1. The
# head's own rate (2026-12-04 sweep: none, 1e-3, 3e-3) raised the encoder's validation accuracy
# and macro-F1 on all three sets at 1e-3.
NEW = {"epochs": "6", "learning_rate": "3e-4", "warmup_ratio": "0.1", "train_batch_size": "16",
       "class_weights": "balanced", "classifier_learning_rate": "1e-3"}


def read_rows(path, text_col="text", label_col="category", encoding="utf-8"):
    with open(path, newline="", encoding=encoding) as f:
        return [(r[text_col], r[label_col]) for r in csv.DictReader(f)
                if r[text_col].strip() and r[label_col].strip()]


def write_rows(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows(rows)


def split_by_label(rows, seed):
    by = defaultdict(list)
    for r in rows:
        by[r[1]].append(r)
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in sorted(by):
        group = by[label]
        rng.shuffle(group)
        n_eval = round(0.15 * len(group)) if len(group) >= 4 else 0
        test += group[:n_eval]
        val += group[n_eval:2 * n_eval]
        train += group[2 * n_eval:]
    for part in (train, val, test):
        rng.shuffle(part)
    return train, val, test


def prepare(name, work):
    """Writes train/val/test CSVs (text,category) for data set `name`; returns their paths."""
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    if name == "za-bank-txn":
        parts = [read_rows(os.path.join(ROOT, "data/za-bank-txn", f"{p}.csv")) for p in ("train", "val", "test")]
    elif name == "oxford-pcard":
        rows = read_rows(os.path.join(ROOT, "data/oxford-pcard/procurement-card-spending-jan-mar-2017.csv"),
                         "Merchant", "Transaction description", "utf-8-sig")
        parts = split_by_label(rows, 7)
    elif name == "generated":
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gen_transactions.py"), "--out-dir", d,
                        "--rows", "1500", "--eval-fraction", "0.2", "--seed", "5"], check=True)
        parts = [read_rows(os.path.join(d, f"{p}.csv")) for p in ("train", "val", "test")]
    else:
        raise SystemExit(f"unknown data set {name}")
    paths = []
    for p, rows in zip(("train", "val", "test"), parts):
        path = os.path.join(d, f"{p}.csv")
        write_rows(path, rows)
        paths.append(path)
    return paths, [len(p) for p in parts], len({r[1] for r in parts[0]})


def scores(gold, pred):
    return accuracy_score(gold, pred), f1_score(gold, pred, average="macro", zero_division=0)


def tfidf(train, val, test):
    """Test scores, and seconds to fit on train and score val (what the job's baseline does)."""
    tr, va, te = read_rows(train), read_rows(val), read_rows(test)
    start = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2))
    clf = LinearSVC().fit(vec.fit_transform([t for t, _ in tr]), [l for _, l in tr])
    clf.predict(vec.transform([t for t, _ in va]))
    seconds = time.perf_counter() - start
    pred = clf.predict(vec.transform([t for t, _ in te]))
    return scores([l for _, l in te], list(pred)), seconds


def txcat_job(txcat, model, train, val, hp, work, threads, seed=42):
    fixed = {"model_name_or_path": model, "num_threads": threads, "save_strategy": "no", "seed": seed,
             "unseen_eval_labels": "drop"}
    root, seconds = txcat_run.train(txcat, work, {"train": train, "validation": val}, dict(fixed, **hp))
    return os.path.join(root, "model"), txcat_run.output_json(root, "metrics.json"), seconds


def txcat_predict(txcat, model_dir, test, work, encoder_only):
    out = os.path.join(tempfile.mkdtemp(dir=work), "pred.csv")
    args = [txcat, "predict", "--model", model_dir, "--input", test, "--output", out]
    if encoder_only:
        args.append("--encoder-only")
    subprocess.run(args, check=True, capture_output=True)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    gold, label = header.index("category"), header.index("predicted_label")
    return scores([r[gold] for r in body], [r[label] for r in body])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--txcat", required=True)
    p.add_argument("--model", required=True, help="pretrained encoder directory (MiniLM)")
    p.add_argument("--datasets", default="za-bank-txn,oxford-pcard,generated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--new", default="", help="override the new recipe: k=v,k=v (hyperparameters)")
    p.add_argument("--seeds", default="42",
                   help="training seeds, comma-separated: each txcat row is the mean over them (the splits stay fixed)")
    a = p.parse_args()
    seeds = [int(x) for x in a.seeds.split(",") if x]
    new = dict(NEW, **dict(kv.split("=", 1) for kv in a.new.split(",") if kv))
    print(f"[quality] new recipe: {new}", file=sys.stderr, flush=True)
    work = tempfile.mkdtemp(prefix="txcat-quality-")
    results = []
    for name in a.datasets.split(","):
        (train, val, test), sizes, labels = prepare(name, work)
        print(f"[quality] {name}: train/val/test {sizes}, {labels} labels", file=sys.stderr, flush=True)
        (acc, f1), secs = tfidf(train, val, test)
        rows = [("tf-idf 1-2-gram + LinearSVC (scikit-learn)", acc, f1, secs, "wall s: fit on train + score val")]
        in_job = None
        runs = {}  # row name -> [(acc, f1, secs, note)] over the seeds
        for seed in seeds:
            for recipe, hp in (("old defaults", dict(OLD, blend_tfidf="false")), ("new recipe", new)):
                model_dir, metrics, secs = txcat_job(a.txcat, a.model, train, val, hp, work, a.threads, seed)
                acc, f1 = txcat_predict(a.txcat, model_dir, test, work, encoder_only=True)
                runs.setdefault(f"txcat encoder, {recipe}", []).append((acc, f1, secs, ""))
                if in_job is None and "tfidf_baseline" in metrics:
                    in_job = metrics["tfidf_baseline"]["seconds"]
                blend = metrics.get("tfidf_blend")
                if blend is not None and recipe == "new recipe":
                    acc, f1 = txcat_predict(a.txcat, model_dir, test, work, encoder_only=False)
                    note = (f"weight {blend['weight']:.2f}" if blend.get("kept") else "not kept")
                    runs.setdefault("txcat as shipped, new recipe (encoder + tf-idf blend)", []).append(
                        (acc, f1, secs, note))
                print(f"[quality] {name}: {recipe}, seed {seed} done in {secs:.0f} s", file=sys.stderr, flush=True)
        for row, rs in runs.items():
            mean = lambda i: statistics.mean(r[i] for r in rs)
            note = "; ".join(f"seed {sd}: {r[0]:.3f} / {r[1]:.3f}{', ' + r[3] if r[3] else ''}"
                             for sd, r in zip(seeds, rs)) if len(seeds) > 1 else rs[0][3]
            rows.append((row if len(seeds) == 1 else f"{row}, mean of {len(seeds)} seeds", mean(0), mean(1), mean(2), note))
        results.append({"dataset": name, "sizes": sizes, "labels": labels, "rows": rows,
                        "sklearn_s": rows[0][3], "in_job_s": in_job})

    print(f"\nNew recipe: {', '.join(f'{k}={v}' for k, v in new.items())} (old: txcat's defaults, the recipe's)")
    for r in results:
        base = r["rows"][0]
        print(f"\n#### {r['dataset']} (train/val/test {r['sizes'][0]}/{r['sizes'][1]}/{r['sizes'][2]} rows, "
              f"{r['labels']} training labels)\n")
        print("| model | test accuracy | test macro-F1 | wall s | note |")
        print("|---|---|---|---|---|")
        for name, acc, f1, secs, note in r["rows"]:
            print(f"| {name} | {acc:.3f} | {f1:.3f} | {secs:.1f} | {note} |")
        shipped = r["rows"][-1]
        old_secs = r["rows"][1][3]
        verdict = shipped[1] > base[1] and shipped[2] > base[2]
        print(f"\nAs shipped vs tf-idf: accuracy {shipped[1] - base[1]:+.3f}, macro-F1 {shipped[2] - base[2]:+.3f} "
              f"({'beats it on both' if verdict else 'does not beat it on both'}); "
              f"time vs old defaults {shipped[3] / old_secs:.2f}x (target <= 2x).")
        if r["in_job_s"] is not None:
            print(f"The job's own tf-idf baseline (fit on train + score val, inside `txcat train`): "
                  f"{r['in_job_s']:.3f} s vs scikit-learn's {r['sklearn_s']:.3f} s for the same work "
                  f"({r['sklearn_s'] / max(r['in_job_s'], 1e-9):.1f}x).")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
