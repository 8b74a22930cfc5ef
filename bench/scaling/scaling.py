#!/usr/bin/env python3
"""bench/scaling: 2 data-parallel workers x 1 thread against 1 worker x 2 threads on one host;
with --gpus N, 1 GPU against N GPUs over NCCL (bench/gpu.sh --gpus N).

Both configurations train the same global batch (`--batch`; per worker `--batch / workers`, as
Hugging Face counts `train_batch_size`), so they take the same steps on the same rows; txcat's
data-parallel semantics make the two runs' weights equal up to float reduction order, so their
final scores should agree. Rounds alternate the configurations so a slow spell of a shared
machine hits both. Figures come from each job's run_summary.json and metrics.json; samples/s
are global (rank 0's steady rate x world size). Dropout masks are drawn per rank, so the two
configurations' scores agree statistically, not to the digit.

--gpus N measures weak scaling as DDP users quote it: `--batch` rows per GPU in both runs (global
batch N x batch with N GPUs), efficiency = samples/s with N GPUs / (N x samples/s with one). The
N-GPU job's log must say its group runs on NCCL (the plugin, csrc/nccl_plugin.cpp): a run that fell
back to Gloo is reported as a failure, not as a figure. With --gpus 1 the second job is one
torchrun-style worker (RANK=0, WORLD_SIZE=1) forced onto NCCL: a machine with one GPU then runs
the whole NCCL path (plugin, communicator, broadcast, allreduce) and shows its cost.
"""
import argparse
import os
import statistics
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import txcat_run  # noqa: E402
CONFIGS = (("1 worker x 2 threads", 1, 2), ("2 workers x 1 thread (Gloo)", 2, 1))


def job(a, data, workers, threads, work, per_device_batch=None, env=None):
    hp = {"model_name_or_path": a.model, "epochs": a.epochs,
          "train_batch_size": per_device_batch or a.batch // workers,
          "max_length": 64, "learning_rate": "1e-4", "seed": 42, "num_threads": threads,
          "num_processes": workers, "save_strategy": "no", "baseline_tfidf": "false",
          "load_best_model_at_end": "false"}
    if a.gpus:
        hp["device"] = "cuda"
    channels = {"train": f"{data}/train.csv", "validation": f"{data}/val.csv"}
    if env and "WORLD_SIZE" in env:
        del hp["num_processes"]  # a torchrun-style worker: the variables say the world
    root, wall = txcat_run.train(a.txcat, work, channels, hp, env=env)
    summary = txcat_run.output_json(root, "run_summary.json")
    final = txcat_run.output_json(root, "metrics.json")["final"]
    # run_summary's steady figures are rank 0's share in a data-parallel run; the shares differ
    # by at most one row, so the global rate is that times the world size.
    world = summary.get("world_size", 1)
    with open(os.path.join(root, "job.log"), encoding="utf-8", errors="replace") as f:
        log = f.read()
    backend = "Nccl" if "backend=Nccl" in log else "Gloo" if "backend=Gloo" in log else "-"
    return {"steady": summary["train_steady_samples_per_second"] * world, "wall": wall, "backend": backend,
            "world": summary.get("world_size", 1), "steps": summary["global_steps"],
            "acc": final["eval_accuracy"], "f1": final["eval_f1_macro"]}


def generate(a, prefix, eval_fraction):
    """A work folder and generated train/val CSVs in it."""
    work = tempfile.mkdtemp(prefix=prefix)
    data = os.path.join(work, "data")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gen_transactions.py"), "--out-dir", data,
                    "--rows", str(a.rows), "--eval-fraction", str(eval_fraction), "--seed", "42"], check=True)
    return work, data


def run_rounds(a, configs, run):
    """`run(config)` for each config in turn, `a.rounds` times; the results per config name
    (a config's first field), and their median steady samples/s."""
    runs = {c[0]: [] for c in configs}
    for r in range(a.rounds):
        for c in configs:
            res = run(c)
            runs[c[0]].append(res)
            print(f"[scaling] round {r + 1}: {c[0]}: {res['steady']:.1f} samples/s ({res['backend']}), "
                  f"{res['wall']:.1f} s, acc {res['acc']:.4f}", file=sys.stderr, flush=True)
    return runs, {name: statistics.median(x["steady"] for x in rs) for name, rs in runs.items()}


def print_table(runs, medians):
    """One markdown row per configuration, per-round figures joined."""
    print("| configuration | world size | backend | steps | global steady samples/s (per round) | median | wall s (median) | eval accuracy | eval macro-F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        joined = lambda key, fmt: ", ".join(format(x[key], fmt) for x in rs)
        wall = statistics.median(x["wall"] for x in rs)
        print(f"| {name} | {rs[0]['world']} | {rs[0]['backend']} | {rs[0]['steps']} | {joined('steady', '.1f')} | "
              f"{medians[name]:.1f} | {wall:.1f} | {joined('acc', '.4f')} | {joined('f1', '.4f')} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--txcat", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--epochs", default="1")
    p.add_argument("--batch", type=int, default=32, help="global batch (per worker: batch / workers)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--gpus", type=int, default=0, help="1 GPU against this many (NCCL); --batch is then per GPU")
    a = p.parse_args()
    if a.gpus:
        return gpu_scaling(a)
    work, data = generate(a, "txcat-scaling-", 0.2)
    runs, medians = run_rounds(a, CONFIGS, lambda c: job(a, data, c[1], c[2], work))
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"]
    print(f"\n{a.rows} generated train rows, MiniLM, {a.epochs} epoch(s), global batch {a.batch}, "
          f"max_length 64, lr 1e-4, seed 42, {os.cpu_count()} cores; load average at the end {' '.join(load)}\n")
    print_table(runs, medians)
    one, two = (medians[n] for n, _, _ in CONFIGS)
    print(f"\n2 workers x 1 thread vs 1 worker x 2 threads: {two / one:.2f}x steady samples/s.")
    return 0


def gpu_scaling(a):
    """1 GPU against `a.gpus` GPUs, `a.batch` rows per GPU; exits non-zero when the N-GPU job did
    not run on NCCL."""
    work, data = generate(a, "txcat-gpu-scaling-", 0.05)
    if a.gpus == 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        one_rank = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(port), "TXCAT_DIST_BACKEND": "nccl"}
        configs = (("1 GPU", 1, None), ("1 GPU, an NCCL group of one rank", 1, one_rank))
    else:
        configs = (("1 GPU", 1, None), (f"{a.gpus} GPUs (NCCL)", a.gpus, None))
    runs, medians = run_rounds(a, configs, lambda c: job(a, data, c[1], 4, work, per_device_batch=a.batch, env=c[2]))
    print(f"\n{a.rows} generated train rows, {a.model}, {a.epochs} epoch(s), {a.batch} rows per GPU, "
          f"max_length 64, lr 1e-4, seed 42\n")
    print_table(runs, medians)
    one, many = (medians[c[0]] for c in configs)
    if a.gpus == 1:
        print(f"\nAn NCCL group of one rank trains at {many / one:.2f}x the plain one-GPU job (the NCCL path's cost).")
    else:
        print(f"\nScaling efficiency 1 -> {a.gpus} GPUs: {many / (a.gpus * one):.2f} (target >= 0.9 at 4 GPUs).")
    if any(x["backend"] != "Nccl" for x in runs[configs[1][0]]):
        print("bench/scaling: the multi-GPU job did not run on NCCL (no plugin? see its job.log)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
