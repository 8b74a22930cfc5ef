#!/usr/bin/env python3
"""Runs a command and writes its wall time and peak resident memory as JSON.

  measure.py OUT.json -- COMMAND [ARGS...]

Peak RSS is the largest ru_maxrss among the waited-for descendants (Linux: KiB), i.e. the biggest
single process of the command tree, the same way for txcat and the Python references. The
command's exit status is passed through; its stdout/stderr are inherited.
"""

import json
import resource
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: measure.py OUT.json -- COMMAND [ARGS...]")
    out, cmd = sys.argv[1], sys.argv[3:]
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out, "w") as f:
        json.dump({"cmd": cmd, "rc": rc, "wall_s": wall, "peak_rss_mb": rss_kib / 1024.0}, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
