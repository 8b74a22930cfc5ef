"""One `txcat train` job for the bench scripts (bench/quality, bench/scaling): a fresh root
under `work`, channels and hyperparameters as flags, the wall seconds of the whole process."""
import json
import os
import subprocess
import tempfile
import time


def train(txcat, work, channels, hp):
    """Runs the job; returns (its root, wall seconds); exits with the log tail if it fails."""
    root = tempfile.mkdtemp(dir=work)
    args = [txcat, "train", "--root", root]
    for name, path in channels.items():
        args += ["--channel", f"{name}={path}"]
    for k, v in hp.items():
        args += ["--hp", f"{k}={v}"]
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"txcat train failed ({' '.join(args)}):\n{out.stderr[-3000:]}")
    return root, seconds


def output_json(root, name):
    """A file of the job's output/data folder (metrics.json, run_summary.json), parsed."""
    with open(os.path.join(root, "output/data", name)) as f:
        return json.load(f)
