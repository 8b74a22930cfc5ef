#!/usr/bin/env python3
"""Runs the retraining-stream benchmark (issue 12) and reports it; bench/retrain/run is the
entry point (it finds the Python, the model and the binary, then calls this).

For each month of a stream written by gen_stream.py: month 1 trains from the pretrained model;
every later month m trains twice on the same data with the same hyperparameters and epochs:
`warm` starts from month m-1's warm model.tar.gz (month 1's job for m = 2; the head matched by
label name, warm_start=auto) and `scratch` starts from the pretrained model. Each job evaluates
every epoch on the month's val.csv. Prints a markdown table and appends a dated section to
bench/RESULTS.md (unless --no-record).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import txcat_run  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] retrain: {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}"


def hyperparameters(a) -> dict:
    return {
        "epochs": a.epochs, "train_batch_size": a.batch_size, "eval_batch_size": 64,
        "learning_rate": a.lr, "warmup_steps": 0, "max_length": a.max_length, "seed": a.seed,
        "num_threads": a.threads, "save_strategy": "no", "load_best_model_at_end": "false",
        "baseline_tfidf": "false", "warm_start": "auto",
    }


def pack(model_dir: str, tarball: str) -> None:
    """model.tar.gz as SageMaker writes it: the model directory's files at the archive root."""
    with tarfile.open(tarball, "w:gz") as t:
        for name in sorted(os.listdir(model_dir)):
            t.add(os.path.join(model_dir, name), arcname=name)


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def train(a, root: str, start: str, month_dir: str, hps: dict) -> dict:
    """One txcat job; returns what the table needs from its output/data."""
    channels = {"train": os.path.join(month_dir, "train.csv"),
                "validation": os.path.join(month_dir, "val.csv")}
    _, wall = txcat_run.train(a.txcat, None, channels, dict(model_name_or_path=start, **hps), root=root)
    metrics = txcat_run.output_json(root, "metrics.json")
    summary = txcat_run.output_json(root, "run_summary.json")
    history = [h for h in metrics["history"] if "eval_accuracy" in h]
    pack(os.path.join(root, "model"), os.path.join(root, "model.tar.gz"))
    ws = summary.get("warm_start") or {}
    baseline = metrics.get("baseline") or {}
    return {
        "wall_s": wall, "total_seconds": summary.get("total_seconds"),
        "train_runtime_seconds": summary.get("train_runtime_seconds"),
        "history": [{"epoch": h["epoch"], "acc": h["eval_accuracy"], "f1": h["eval_f1_macro"]}
                    for h in history],
        "final_acc": metrics["final"]["eval_accuracy"], "final_f1": metrics["final"]["eval_f1_macro"],
        "head": ws.get("head"), "kept": ws.get("kept", []), "added": ws.get("added", []),
        "removed": ws.get("removed", []),
        "baseline_acc": (baseline.get("final") or {}).get("eval_accuracy"),
        "baseline_rows": baseline.get("eval_rows"),
    }


def epochs_to_reach(history: list, target: float):
    """First epoch whose evaluation accuracy is at least `target`, or None."""
    return next((h["epoch"] for h in history if h["acc"] >= target - 1e-12), None)


def fmt_epoch(e) -> str:
    return "not reached" if e is None else f"{e:g}"


def table(months: list, epochs: float) -> list:
    head = ["month", "categories", "warm start kept/added/removed", "prev. model before training",
            "acc ep1 warm", "acc ep1 scratch", "final acc warm", "final acc scratch",
            "final F1 warm", "final F1 scratch", "warm epochs to scratch-final acc",
            "wall s warm", "wall s scratch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in months:
        s = m["scratch"]
        change = ", ".join([f"-{d}" for d in m["dropped"]] + [f"+{x}" for x in m["added"]])
        cats = f"{len(m['categories'])}" + (f" ({change})" if change else "")
        w = m.get("warm")
        if w is None:
            row = [str(m["month"]), cats, "(from MiniLM)", "—", "—", f"{s['history'][0]['acc']:.4f}",
                   "—", f"{s['final_acc']:.4f}", "—", f"{s['final_f1']:.4f}", "—", "—",
                   f"{s['wall_s']:.0f}"]
        else:
            base = ("—" if w["baseline_acc"] is None
                    else f"{w['baseline_acc']:.4f} ({w['baseline_rows']} rows)")
            row = [str(m["month"]), cats, f"{len(w['kept'])}/{len(w['added'])}/{len(w['removed'])}",
                   base, f"{w['history'][0]['acc']:.4f}", f"{s['history'][0]['acc']:.4f}",
                   f"{w['final_acc']:.4f}", f"{s['final_acc']:.4f}", f"{w['final_f1']:.4f}",
                   f"{s['final_f1']:.4f}", f"{fmt_epoch(m['warm_epochs_to_scratch_final'])} of {epochs:g}",
                   f"{w['wall_s']:.0f}", f"{s['wall_s']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--txcat", required=True)
    p.add_argument("--model", required=True, help="the pretrained model directory (MiniLM)")
    p.add_argument("--out", required=True)
    p.add_argument("--months", type=int, default=4)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--eval-fraction", type=float, default=0.25)
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-seed", type=int, default=21)
    p.add_argument("--results", default=os.path.join(HERE, "..", "RESULTS.md"))
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--note", default="")
    p.add_argument("--command", default="", help="the command line to record")
    a = p.parse_args(argv)

    os.makedirs(a.out, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    load_start = loadavg()
    data = os.path.join(a.out, "data")
    gen = [sys.executable, os.path.join(HERE, "gen_stream.py"), "--out-dir", data,
           "--months", str(a.months), "--rows", str(a.rows), "--eval-fraction", str(a.eval_fraction),
           "--seed", str(a.data_seed)]
    subprocess.run(gen, check=True)
    stream = read_json(os.path.join(data, "stream.json"))
    hps = hyperparameters(a)

    months = []
    prev_warm = None  # model.tar.gz the next month's warm job starts from
    t_all = time.monotonic()
    for plan in stream["months"]:
        m = plan["month"]
        month_dir = os.path.join(data, f"month-{m}")
        rec = dict(plan)
        if prev_warm is not None:
            log(f"month {m}: warm job from {os.path.relpath(prev_warm, a.out)}")
            rec["warm"] = train(a, os.path.join(a.out, f"month-{m}", "warm"), prev_warm, month_dir, hps)
        log(f"month {m}: from-scratch job from {a.model}")
        rec["scratch"] = train(a, os.path.join(a.out, f"month-{m}", "scratch"), a.model, month_dir, hps)
        chain = rec.get("warm", rec["scratch"])
        prev_warm = os.path.join(a.out, f"month-{m}", "warm" if "warm" in rec else "scratch", "model.tar.gz")
        if "warm" in rec:
            rec["warm_epochs_to_scratch_final"] = epochs_to_reach(rec["warm"]["history"],
                                                                  rec["scratch"]["final_acc"])
        log(f"month {m}: final accuracy {chain['final_acc']:.4f}"
            + (f" (scratch {rec['scratch']['final_acc']:.4f})" if "warm" in rec else ""))
        months.append(rec)
    total_s = time.monotonic() - t_all
    load_end = loadavg()

    later = [m for m in months if "warm" in m]
    half = a.epochs / 2
    met = [m["month"] for m in later
           if m["warm_epochs_to_scratch_final"] is not None and m["warm_epochs_to_scratch_final"] <= half]
    missed = [m["month"] for m in later if m["month"] not in met]
    verdict = (f"**Target** (warm reaches the from-scratch final accuracy in at most half the epochs, "
               f"<= {half:g} of {a.epochs:g}): "
               + ("met in every warm month" if not missed else "not met")
               + f" ({len(met)} of {len(later)} warm months"
               + (f"; missed in month {', '.join(map(str, missed))}" if missed else "") + ").")
    lines = table(months, a.epochs)
    with open(os.path.join(a.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"months": months, "hyperparameters": hps, "total_seconds": total_s,
                   "loadavg": [load_start, load_end], "verdict": verdict}, f, indent=1)
    print("\n".join(lines + ["", verdict]))

    if not a.no_record:
        first = stream["months"][0]
        sizes = (f"{a.months} months of {first['train_rows']} train / {first['val_rows']} val rows "
                 f"(`bench/retrain/gen_stream.py --rows {a.rows} --eval-fraction {a.eval_fraction:g} "
                 f"--seed {a.data_seed}`; val: {stream['args']['unseen']:g} of rows from merchants "
                 f"train never shows)")
        hp_text = ", ".join(f"{k}={v}" for k, v in hps.items())
        block = [
            f"### {started:%Y-%m-%d %H:%M} UTC — retraining stream (bench/retrain) — {machine()}", "",
            f"Command: `{a.command or 'bench/retrain/run'}`. Data: {sizes}. Model: MiniLM-L6 "
            f"(pretrained) for month 1 and every scratch job; warm jobs start from the previous "
            f"month's warm `model.tar.gz`. Hyperparameters (all jobs): {hp_text}. Every job "
            f"evaluates on its month's val.csv at each epoch end; \"prev. model before training\" is "
            f"the starting model scored on the val rows whose labels it knows (the champion "
            f"baseline in metrics.json). Wall s: the whole `txcat train` process, measured outside; "
            f"the whole stream took {total_s / 60:.1f} min, load average {load_start} at start, "
            f"{load_end} at end.", "",
            "Schedule: " + "; ".join(
                f"month {m['month']}: {len(m['categories'])} categories"
                + (f", dropped {', '.join(m['dropped'])}" if m["dropped"] else "")
                + (f", added {', '.join(m['added'])}" if m["added"] else "")
                for m in stream["months"]) + ".", "",
        ]
        if a.note:
            block += [a.note, ""]
        block += lines + ["", verdict, ""]
        with open(a.results, "a", encoding="utf-8") as f:
            f.write("\n" + "\n".join(block))
        log(f"appended to {os.path.normpath(a.results)}")
    log(f"job folders, logs and results.json in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
