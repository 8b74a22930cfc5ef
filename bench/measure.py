#!/usr/bin/env python3
"""Runs a command and writes its wall time and peak resident memory as JSON.

  measure.py OUT.json -- COMMAND [ARGS...]

Peak RSS is the largest ru_maxrss among the waited-for descendants (Linux: KiB), i.e. the biggest
single process of the command tree, the same way for txcat and the Python references. The
command's exit status is passed through; its stdout/stderr are inherited.

Where `nvidia-smi` is on PATH, GPU 0's used memory is also sampled every 0.2 s while the command
runs: `gpu_mem_used_peak_mb` is the peak minus the reading just before the start, i.e. what the
command's process held (CUDA context, caching allocator reserve and all), measured the same way
for txcat and the references (whose own `torch.cuda.max_memory_allocated` counts live tensors
only and is reported separately).
"""

import json
import resource
import shutil
import subprocess
import sys
import threading
import time


def gpu_used_mb():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


class GpuSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.base = gpu_used_mb()
        self.peak = self.base
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            x = gpu_used_mb()
            if x is not None and (self.peak is None or x > self.peak):
                self.peak = x


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: measure.py OUT.json -- COMMAND [ARGS...]")
    out, cmd = sys.argv[1], sys.argv[3:]
    sampler = GpuSampler() if shutil.which("nvidia-smi") else None
    if sampler:
        sampler.start()
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = {"cmd": cmd, "rc": rc, "wall_s": wall, "peak_rss_mb": rss_kib / 1024.0}
    if sampler:
        sampler.done.set()
        sampler.join()
        if sampler.base is not None and sampler.peak is not None:
            report["gpu_mem_used_peak_mb"] = sampler.peak - sampler.base
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
