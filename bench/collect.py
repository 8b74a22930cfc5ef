#!/usr/bin/env python3
"""Builds bench/run's table from one run folder and appends it to bench/RESULTS.md.

  collect.py RUN_DIR [--results bench/RESULTS.md] [--no-record] [--note TEXT]

RUN_DIR (or, after `bench/run --repeat N`, each RUN_DIR/round-K) holds, per implementation NAME in
(txcat, txcat_bf16, recipe, tuned, tuned_bf16):
  NAME.measure.json  wall time and peak RSS measured from outside (measure.py), for all three alike;
  NAME.json          the Python references' own report (reference/common.py);
  NAME/output/data/run_summary.json, metrics.json, NAME.log  what txcat wrote: values are looked up by
                     the key names in TXCAT_KEYS, in that order (the log as `name=value`);
  run.json           the run's settings (written by bench/run, in RUN_DIR).
With rounds, every figure is the median over the rounds (ratios are ratios of medians) and the
per-round train samples/s ratios are listed under the table.
Ratios are "txcat's advantage": txcat/ref for rates, ref/txcat for times and memory, so a number
above 1 always means txcat did better; accuracy and macro-F1 show the difference txcat - ref.
"""

import argparse
import datetime as dt
import json
import os
import platform
import glob
import re
import statistics
import sys

# (field, label, better, format); better: "high" or "low" (ratio), "diff" (txcat - ref, scores).
ROWS = [
    ("train_samples_per_s", "train samples/s (after warm-up)", "high", "{:.1f}"),
    ("train_real_tokens_per_s", "real tokens/s", "high", "{:.0f}"),
    ("train_padded_tokens_per_s", "padded tokens/s", "high", "{:.0f}"),
    ("padding_efficiency", "padding efficiency (real/padded)", "high", "{:.3f}"),
    ("preprocess_s", "preprocessing s (CSV+labels+tokenize)", "low", "{:.3f}"),
    ("preprocess_rows_per_s", "preprocessing rows/s", "high", "{:.0f}"),
    ("wall_s", "wall time s (end to end)", "low", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MiB", "low", "{:.0f}"),
    ("eval_accuracy", "eval accuracy", "diff", "{:.4f}"),
    ("eval_f1_macro", "eval macro-F1", "diff", "{:.4f}"),
    ("gpu_peak_mem_mb", "GPU memory peak MiB (torch allocator, refs only)", "low", "{:.0f}"),
    ("gpu_mem_used_peak_mb", "GPU memory used peak MiB (nvidia-smi, whole process)", "low", "{:.0f}"),
    ("mfu", "MFU (6·params·real tok/s / peak bf16)", "high", "{:.3f}"),
]

# Names txcat uses for each field, looked up in run_summary.json, then metrics.json (any depth; the
# last list item wins, so a history's final entry is preferred), then as `name=value` in its log.
# Throughput is the steady-state figure (after min(20, steps/10) warm-up steps, evaluation
# excluded), the same window the references time; txcat's whole-run `train_samples_per_second`
# (which includes warm-up and evaluation) is deliberately not used.
TXCAT_KEYS = {
    "train_samples_per_s": ["train_steady_samples_per_second"],
    "train_real_tokens_per_s": ["train_steady_real_tokens_per_second"],
    "train_padded_tokens_per_s": ["train_steady_padded_tokens_per_second"],
    "padding_efficiency": ["padding_efficiency", "train_padding_efficiency"],
    "preprocess_s": ["preprocess_seconds", "preprocess_s", "preprocessing_seconds"],
    "eval_accuracy": ["eval_accuracy"],
    "eval_f1_macro": ["eval_f1_macro"],
    "gpu_peak_mem_mb": ["gpu_peak_memory_mb", "gpu_peak_mem_mb", "cuda_peak_memory_mb"],
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def find_key(obj, names):
    """Breadth-first search for the first of `names`; lists are scanned last item first."""
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            for n in names:
                if isinstance(cur.get(n), (int, float)) and not isinstance(cur.get(n), bool):
                    return float(cur[n])
            queue.extend(cur.values())
        elif isinstance(cur, list):
            queue.extend(reversed(cur))
    return None


def from_log(text, names):
    for n in names:
        hits = re.findall(rf"\b{re.escape(n)}=([-+0-9.eE]+)", text)
        if hits:
            try:
                return float(hits[-1])
            except ValueError:
                pass
    return None


TXCATS = ("txcat", "txcat_bf16")
REFS = ("recipe", "tuned", "tuned_bf16")


def txcat_values(run_dir, ref_for_params, name="txcat"):
    data_dir = os.path.join(run_dir, name, "output", "data")
    summary = load(os.path.join(data_dir, "run_summary.json")) or {}
    metrics = load(os.path.join(data_dir, "metrics.json")) or {}
    try:
        with open(os.path.join(run_dir, f"{name}.log"), errors="replace") as f:
            log = f.read()
    except OSError:
        log = ""
    v = {}
    for field, names in TXCAT_KEYS.items():
        x = find_key(summary, names)
        if x is None:
            x = find_key(metrics, names)
        v[field] = x if x is not None else from_log(log, names)
    rows = (summary.get("train_rows") or 0) + (summary.get("eval_rows") or 0)
    if not rows:
        rows = (ref_for_params or {}).get("rows_train", 0) + (ref_for_params or {}).get("rows_eval", 0)
    v["precision"] = summary.get("precision")
    v["phases"] = summary.get("phases")
    v["steady"] = summary.get("train_steady")
    if v.get("preprocess_s") and rows:
        v["preprocess_rows_per_s"] = rows / v["preprocess_s"]
    # Same model and labels as the references, so their parameter count applies.
    ref = ref_for_params or {}
    if ref.get("peak_bf16_flops") and ref.get("params") and v.get("train_real_tokens_per_s"):
        v["mfu"] = 6 * ref["params"] * v["train_real_tokens_per_s"] / ref["peak_bf16_flops"]
    return v


def machine(refs):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = next((r.get("gpu") for r in refs if r and r.get("gpu")), None)
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    text = f"{cpu}, {os.cpu_count()} cores{mem}"
    return f"{gpu} ({text})" if gpu else text


def fmt(x, pattern):
    return "n/a" if x is None else pattern.format(x)


def ratio(tx, ref, better):
    if tx is None or ref is None:
        return "—"
    if better == "diff":
        return f"{tx - ref:+.4f}"
    if tx == 0 or ref == 0:
        return "—"
    return f"{(tx / ref if better == 'high' else ref / tx):.2f}x"


def round_values(run_dir, impls):
    """(the references' own reports, every implementation's figures) of one round."""
    refs = {name: load(os.path.join(run_dir, f"{name}.json")) for name in REFS if name in impls}
    values = {name: dict(rep or {}) for name, rep in refs.items()}
    for name in TXCATS:
        if name in impls:
            values[name] = txcat_values(run_dir, next((r for r in refs.values() if r), None), name)
    for name in impls:  # Outside measurements replace self-reported wall time and RSS.
        m = load(os.path.join(run_dir, f"{name}.measure.json"))
        if m:
            values.setdefault(name, {})
            values[name]["wall_s"] = m["wall_s"]
            values[name]["peak_rss_mb"] = m["peak_rss_mb"]
            values[name]["rc"] = m["rc"]
            if m.get("gpu_mem_used_peak_mb") is not None:
                values[name]["gpu_mem_used_peak_mb"] = m["gpu_mem_used_peak_mb"]
    return refs, values


def median_values(per_round):
    """Field-wise median over rounds (numbers only; the first round's other values; the worst exit code)."""
    out = dict(per_round[0]) if per_round else {}
    for field in {k for r in per_round for k in r}:
        xs = [r[field] for r in per_round if isinstance(r.get(field), (int, float)) and not isinstance(r.get(field), bool)]
        if field == "rc":
            out[field] = max(xs, key=abs) if xs else None
        elif xs:
            out[field] = statistics.median(xs)
    return out


# A reference may be slower per padded token than the plain recipe only by noise: the kernels are
# the same, so a bigger gap means the reference is mis-tuned and a ratio against it is not real.
PER_TOKEN_TOLERANCE = 0.85


def per_token_warnings(values, cols):
    """Lines warning about references that compute padded tokens much slower than the recipe."""
    base = values.get("recipe", {}).get("train_padded_tokens_per_s")
    out = []
    for name in cols:
        rate = values.get(name, {}).get("train_padded_tokens_per_s")
        if name == "recipe" or not base or not rate:
            continue
        if rate < PER_TOKEN_TOLERANCE * base:
            out += ["", f"**Warning:** {name} computes {rate:.0f} padded tokens/s, {rate / base:.2f}x the "
                        f"recipe's {base:.0f}: more than {1 - PER_TOKEN_TOLERANCE:.0%} slower per padded token, "
                        "so ratios against it overstate txcat."]
    return out


def target_lines(values):
    """Issue 16's targets, each a ratio of figures from this run (medians with rounds)."""
    def rate(name):
        return values.get(name, {}).get("train_samples_per_s")

    out = []
    tx, tuned = rate("txcat"), rate("tuned")
    if tx and tuned:
        prec = values["txcat"].get("precision") or "?"
        out.append(f"- txcat ({prec}, its default) vs tuned fp32: {tx / tuned:.2f}x train samples/s")
    best_name = max((n for n in ("tuned", "tuned_bf16") if rate(n)), key=rate, default=None)
    best_tx = max((n for n in TXCATS if rate(n)), key=rate, default=None)
    if best_name and "txcat" in values and rate("txcat"):
        out.append(f"- txcat default vs the tuned reference's best ({best_name}): "
                   f"{rate('txcat') / rate(best_name):.2f}x (target >= 1.3x)")
    if best_name and best_tx and best_tx != "txcat":
        out.append(f"- {best_tx} vs the tuned reference's best ({best_name}): {rate(best_tx) / rate(best_name):.2f}x")
    recipe_loop = values.get("recipe", {}).get("train_s")
    for name in TXCATS:
        wall = values.get(name, {}).get("wall_s")
        if wall and recipe_loop:
            out.append(f"- {name} whole run (load + tokenize + train + eval + save) vs the recipe's training "
                       f"loop alone ({recipe_loop:.1f} s): {recipe_loop / wall:.2f}x (target >= 3x)")
    phases = values.get("txcat", {}).get("phases")
    if isinstance(phases, dict):
        parts = [f"{k[:-8]} {v:.2f}" for k, v in phases.items() if k.endswith("_seconds") and isinstance(v, (int, float))]
        out.append("- txcat phases, seconds (run_summary.json `phases`): " + ", ".join(parts))
    steady = values.get("txcat", {}).get("steady") or {}
    profile, steps = steady.get("step_profile"), steady.get("timed_steps")
    if isinstance(profile, dict) and steps:
        total = sum(profile.values()) or 1.0
        parts = [f"{k[:-2]} {1000 * v / steps:.1f} ms ({100 * v / total:.0f}%)" for k, v in profile.items()]
        out.append(f"- txcat step profile over {steps} timed steps (run_summary.json `train_steady.step_profile`), "
                   "per step: " + ", ".join(parts))
    return ["", "Targets (issue 16):"] + out if out else []


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--note", default="")
    a = p.parse_args()
    run = load(os.path.join(a.run_dir, "run.json")) or {}
    impls = run.get("impls", ["txcat", "recipe", "tuned"])
    round_dirs = sorted(
        (d for d in glob.glob(os.path.join(a.run_dir, "round-*")) if os.path.isdir(d)),
        key=lambda d: int(d.rsplit("-", 1)[1]) if d.rsplit("-", 1)[1].isdigit() else 0,
    ) or [a.run_dir]
    rounds = [round_values(d, impls) for d in round_dirs]
    refs = rounds[0][0]
    values = {name: median_values([r[1].get(name, {}) for r in rounds]) for name in impls}
    gpu = any(r and r.get("device") == "cuda" for r in refs.values())

    cols = [n for n in TXCATS + REFS if n in impls]
    refs_cols = [r for r in cols if r in REFS]
    # txcat against every reference; its bf16 variant against the bf16 reference.
    pairs = [("txcat", r) for r in refs_cols if "txcat" in impls]
    if "txcat_bf16" in impls and "tuned_bf16" in impls:
        pairs.append(("txcat_bf16", "tuned_bf16"))
    header = ["metric"] + cols + [f"{a} vs {b}" for a, b in pairs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for field, label, better, pattern in ROWS:
        if field in ("gpu_peak_mem_mb", "gpu_mem_used_peak_mb", "mfu") and not gpu:
            continue
        cells = [label] + [fmt(values.get(n, {}).get(field), pattern) for n in cols]
        cells += [ratio(values.get(a, {}).get(field), values.get(b, {}).get(field), better) for a, b in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rounds) > 1 and "txcat" in impls:
        lines.append("")
        lines.append(f"Medians of {len(rounds)} rounds (each round ran every implementation in turn).")
        for a_, b_ in pairs:
            per = [ratio(v.get(a_, {}).get("train_samples_per_s"), v.get(b_, {}).get("train_samples_per_s"), "high")
                   for _, v in rounds]
            lines.append(f"Train samples/s, {a_} vs {b_}, per round: {', '.join(per)}.")
    lines += per_token_warnings(values, [c for c in cols if c in ("recipe", "tuned")])
    lines += target_lines(values)
    table = "\n".join(lines)

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    any_ref = next((r for r in refs.values() if r), {}) or {}
    settings = (f"data `{run.get('data', '?')}` ({any_ref.get('rows_train', '?')} train / "
                f"{any_ref.get('rows_eval', '?')} eval rows, {any_ref.get('num_labels', '?')} labels); "
                f"model `{run.get('model_name', '?')}` ({any_ref.get('params', '?')} params); "
                f"epochs {run.get('epochs')}, batch {run.get('batch_size')}, lr {run.get('lr')}, "
                f"max_length {run.get('max_length')}, seed {run.get('seed')}, threads {run.get('threads')}; "
                f"precision recipe/tuned: {(refs.get('recipe') or {}).get('precision', '-')}/"
                f"{(refs.get('tuned') or {}).get('precision', '-')}; "
                f"txcat: {(values.get('txcat') or {}).get('precision') or '-'}; "
                f"torch {any_ref.get('torch', '?')}, transformers {any_ref.get('transformers', '?')}; "
                f"load average at start/end: {run.get('loadavg_start', '?')} / "
                f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = [f"{n} exited {values[n]['rc']}" for n in cols if values.get(n, {}).get("rc")]
    block = [f"### {now} — {machine(list(refs.values()))}", "", settings + ".", ""]
    if failed:
        block += ["**Failed:** " + ", ".join(failed) + " (its column shows what it left).", ""]
    if a.note:
        block += [a.note, ""]
    block += [table, ""]
    text = "\n".join(block)
    print(text)
    if not a.no_record:
        new = not os.path.exists(a.results)
        with open(a.results, "a") as f:
            if new:
                f.write("# Benchmark results\n\nAppended by bench/run and bench/gpu.sh; "
                        "ratios: above 1 means txcat did better; "
                        "accuracy/F1 columns show txcat minus the reference.\n\n")
            f.write(text + "\n")
        print(f"appended to {a.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
