"""bench/serve driver (started by bench/serve/run): txcat serve against the Python references on
the same cores, with wrk on loopback; prints one markdown table.

Per server: start pinned (taskset), time to the first 200 on /ping, a label sanity sample, then
wrk points (c=1 single text; c=16 single text; c=16 50-text requests), then VmHWM."""

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def get(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except Exception:
        return None


def post(url, texts):
    req = urllib.request.Request(url, data=json.dumps({"inputs": texts}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def vm(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def cuda_library_rss(pid):
    """MiB of the process's resident pages that belong to CUDA libraries' files (the CUDA wheel's
    nvidia/ folder, libtorch_cuda, libc10_cuda): what a CPU-only torch would not map at all. Their
    start-up heap allocations are not counted here (anonymous memory has no name)."""
    kib, name = 0, ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:
                name = head[5] if len(head) > 5 else ""
            elif head[0] == "Rss:" and ("/nvidia/" in name or "_cuda" in os.path.basename(name)):
                kib += int(head[1])
    return kib / 1024


def start(name, cmd, env, port, work, limit=180.0):
    log = open(work / f"{name}.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode} before /ping; see {work}/{name}.log")
        if get(f"http://127.0.0.1:{port}/ping", timeout=0.5) == 200:
            return proc, time.monotonic() - t0
        time.sleep(0.01)
    proc.kill()
    sys.exit(f"{name}: no 200 on /ping within {limit} s")


def wrk(args, port, bodies, conns, seconds):
    cmd = ["taskset", "-c", args.wrk_cores, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
           "--timeout", "60s", "--latency", "-s", str(HERE / "post.lua"),
           f"http://127.0.0.1:{port}", "--", str(bodies)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRKJSON "))
    return json.loads(line[len("WRKJSON "):])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="/tmp/ox/model")
    p.add_argument("--txcat", default=str(ROOT / "target/release/txcat"))
    p.add_argument("--data", default=str(ROOT / "data/oxford-pcard/procurement-card-spending-jan-mar-2017.csv"))
    p.add_argument("--text-column", default="Merchant")
    p.add_argument("--label-column", default="Transaction description")
    p.add_argument("--work", default="/tmp/txcat-servebench")
    p.add_argument("--server-cores", default="1", help="taskset list for every server")
    p.add_argument("--wrk-cores", default="0", help="taskset list for wrk")
    p.add_argument("--seconds", type=int, default=10, help="per wrk point")
    p.add_argument("--max-length", type=int, default=32, help="pipeline truncation (txcat uses the model's)")
    p.add_argument("--servers", default="txcat,pipeline,tfidf")
    p.add_argument("--variant", action="append", default=[],
                   help="extra txcat row: NAME:KEY=VALUE,KEY=VALUE (environment), repeatable")
    p.add_argument("--sanity", type=int, default=300, help="texts compared between txcat and pipeline")
    args = p.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    if not model.exists():
        shutil.copytree(args.model, model)
    threads = len(os.sched_getaffinity(0) & set(parse_cores(args.server_cores)))

    with open(args.data, newline="", encoding="utf-8") as f:
        texts = sorted({r[args.text_column].strip() for r in csv.DictReader(f) if r[args.text_column].strip()})
    random.Random(0).shuffle(texts)
    b1, b50 = work / "bodies1.jsonl", work / "bodies50.jsonl"
    b1.write_text("".join(json.dumps({"inputs": t}) + "\n" for t in texts))
    pool = texts * 50
    b50.write_text("".join(json.dumps({"inputs": pool[i:i + 50]}) + "\n" for i in range(0, 50 * 200, 50)))
    pkl = work / "tfidf.pkl"
    if "tfidf" in args.servers:
        subprocess.run([sys.executable, "tfidf_server.py", "fit", args.data, args.text_column,
                        args.label_column, str(pkl)], cwd=HERE, check=True)

    pin = ["taskset", "-c", args.server_cores]
    base_env = dict(os.environ)
    servers = []
    for name in args.servers.split(","):
        if name == "txcat":
            servers.append(("txcat serve (defaults)", "txcat", pin + [args.txcat, "serve", "--model", str(model), "--port", "{port}"], {}))
        elif name == "pipeline":
            servers.append(("transformers pipeline + http.server", "pipeline", pin + [sys.executable, "pipeline_server.py", str(model), "{port}", str(threads), str(args.max_length)], {}))
        elif name == "pipeline-int8":
            servers.append(("transformers pipeline, quantize_dynamic int8 + http.server", "pipeline-int8", pin + [sys.executable, "pipeline_server.py", str(model), "{port}", str(threads), str(args.max_length)], {"PIPE_QUANTIZE": "int8"}))
        elif name == "tfidf":
            servers.append(("tf-idf + LinearSVC + http.server", "tfidf", pin + [sys.executable, "tfidf_server.py", "serve", str(pkl), "{port}"], {"OMP_NUM_THREADS": str(threads)}))
    for v in args.variant:
        vname, _, kvs = v.partition(":")
        env = dict(kv.split("=", 1) for kv in kvs.split(",") if kv)
        servers.append((f"txcat serve ({vname})", f"txcat-{vname}", pin + [args.txcat, "serve", "--model", str(model), "--port", "{port}"], env))

    rows, labels = [], {}
    sample = texts[: args.sanity]
    for i, (title, key, cmd, extra) in enumerate(servers):
        port = 18400 + i
        cmd = [c.replace("{port}", str(port)) for c in cmd]
        env = dict(base_env, **extra)
        proc, startup = start(key, cmd, env, port, work)
        url = f"http://127.0.0.1:{port}/invocations"
        labels[key] = [r["label"] for r in post(url, sample)]
        wrk(args, port, b1, 16, 2)  # warm-up, not recorded
        c1 = wrk(args, port, b1, 1, args.seconds)
        c16 = wrk(args, port, b1, 16, args.seconds)
        c16b = wrk(args, port, b50, 16, args.seconds)
        hwm = vm(proc.pid, "VmHWM")
        cuda_mib = cuda_library_rss(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        errors = sum(w[k] for w in (c1, c16, c16b) for k in ("non2xx", "connect", "read", "write", "timeout"))
        rows.append({
            "server": title, "key": key, "env": extra, "startup_s": startup, "rss_mib": hwm, "cuda_lib_mib": cuda_mib,
            "p50_ms": c1["p50_us"] / 1000, "p99_ms": c1["p99_us"] / 1000,
            "c16_1": c16["requests"] / (c16["duration_us"] / 1e6),
            "c16_50": 50 * c16b["requests"] / (c16b["duration_us"] / 1e6),
            "errors": errors, "raw": {"c1": c1, "c16_1": c16, "c16_50": c16b},
        })
        print(f"# {title}: done ({rows[-1]['p50_ms']:.2f} ms p50, {rows[-1]['c16_1']:.0f} / {rows[-1]['c16_50']:.0f} texts/s)", file=sys.stderr)

    (work / "results.json").write_text(json.dumps({"rows": rows, "args": vars(args), "threads": threads}, indent=1))
    print(f"\nservers on cores {args.server_cores} ({threads} torch thread(s)), wrk -t1 on cores {args.wrk_cores}, "
          f"{args.seconds} s per point, {len(texts)} distinct texts from {Path(args.data).name} ({args.text_column})\n")
    print("| server | p50 ms, c=1, 1 text | p99 ms, c=1 | texts/s, c=16, 1 text | texts/s, c=16, 50 texts | peak RSS MiB | of it CUDA libraries' pages MiB | start-up s (first 200 /ping) | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['c16_1']:.0f} | {r['c16_50']:.0f} | {r['rss_mib']:.0f} | {r['cuda_lib_mib']:.0f} | {r['startup_s']:.2f} | {r['errors']} |")
    for ref_key, targets in (("pipeline", "; targets: p50 >= 3, throughput >= 3, RSS >= 2"), ("pipeline-int8", "")):
        ref = next((r for r in rows if r["key"] == ref_key), None)
        if not ref:
            continue
        print(f"\nRatios against the {ref_key} server (above 1 = better than it{targets}):\n")
        print("| server | p50 | texts/s c=16 1 text | texts/s c=16 50 texts | RSS |")
        print("|---|---|---|---|---|")
        for r in rows:
            if r is ref or r["key"].startswith("pipeline"):
                continue
            print(f"| {r['server']} | {ratio(ref['p50_ms'], r['p50_ms'])} | {ratio(r['c16_1'], ref['c16_1'])} | {ratio(r['c16_50'], ref['c16_50'])} | {ratio(ref['rss_mib'], r['rss_mib'])} |")
    if "txcat" in labels:
        for key, got in labels.items():
            if key != "txcat":
                same = sum(a == b for a, b in zip(labels["txcat"], got))
                print(f"\nSanity: txcat (defaults) and {key} give the same label on {same}/{len(sample)} texts.")


def ratio(a, b):
    return f"{a / b:.1f}x" if b else "n/a"


def parse_cores(spec):
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


if __name__ == "__main__":
    main()
