"""One `txcat train` job for the bench scripts (bench/quality, bench/scaling, bench/retrain):
channels and hyperparameters as flags, the job's log kept in `<root>/job.log`, the wall seconds
of the whole process."""
import json
import os
import subprocess
import tempfile
import time


def train(txcat, work, channels, hp, root=None, env=None):
    """Runs the job in `root` (default: a fresh folder under `work`), with `env` added to the
    environment; returns (root, wall seconds); exits with the log's tail if the job fails."""
    root = root or tempfile.mkdtemp(dir=work)
    os.makedirs(root, exist_ok=True)
    args = [txcat, "train", "--root", root]
    for name, path in channels.items():
        args += ["--channel", f"{name}={path}"]
    for k, v in hp.items():
        args += ["--hp", f"{k}={v}"]
    log = os.path.join(root, "job.log")
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        rc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT,
                            env=dict(os.environ, **env) if env else None).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        with open(log, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"txcat train failed (exit {rc}; {' '.join(args)}); {log} ends:\n{tail}")
    return root, seconds


def output_json(root, name):
    """A file of the job's output/data folder (metrics.json, run_summary.json), parsed."""
    with open(os.path.join(root, "output/data", name)) as f:
        return json.load(f)
