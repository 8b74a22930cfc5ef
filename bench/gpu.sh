#!/usr/bin/env bash
# GPU benchmark: txcat vs the seed recipe vs the tuned recipe on a distilbert-base-sized model and
# >= 50,000 synthetic rows, in one command, within 8 minutes, on a machine that has PyTorch 2.11.0
# and transformers preinstalled (its python3) and nothing downloadable.
#
# Here (the dev machine), once:   bench/gpu.sh --prepare
#   builds target/release/txcat and gathers into .dev/gpu-kit/ what the GPU machine lacks: the
#   binary, ProcessGroupNCCL's plugin (scripts/lib.sh build_nccl_plugin), the MiniLM tokenizer
#   files (for the random model), and wheels of `datasets` and the two pure-Python packages it
#   needs (dill, multiprocess), for Python 3.12.
# There (repo root, with .dev/gpu-kit carried along):   bench/gpu.sh [--rows 50000] [--epochs 1]
#       [--batch-size 32] [--model base] [--impls txcat,recipe,tuned]
# There, on a machine with N GPUs:                        bench/gpu.sh --gpus N [--rows 50000]
#   data-parallel scaling instead (issue 15): the same job on 1 GPU and on N GPUs over NCCL (the
#   kit's libtxcat_nccl.so), --batch-size rows per GPU; prints efficiency = N-GPU samples/s /
#   (N x 1-GPU samples/s) (target >= 0.9 at N = 4 with the base model) and fails if the N-GPU
#   job did not run on NCCL. --gpus 1 (one GPU) runs the NCCL path as a group of one rank.
# There, first of all (a few minutes):                   bench/gpu.sh --check
#   the GPU path's first run (issue 18): the binary must load libtorch's CUDA backend
#   (RUST_LOG=debug says "CUDA backend loaded"), then --gpus 1 on the tiny model and 2,000 rows: a
#   plain job on the GPU and the same as an NCCL group of one rank through the kit's plugin.
# Here, to check everything but the GPU itself:          bench/gpu.sh --cpu-smoke
#   runs the same steps with the kit's binary and tokenizer on a tiny model, 300 rows, CPU, the
#   dev venv's python, nothing recorded (the kit must be prepared first).
# Python: /opt/torch/.venv/bin/python3 when it exists (the GPU image's torch), else python3, or
#   BENCH_PY.
#   runs txcat with LD_LIBRARY_PATH pointing at that machine's torch/lib, prints the table plus GPU
#   memory peak and MFU (6 x params x real tokens/s / peak bf16 FLOP/s by GPU name), appends it to
#   bench/RESULTS.md there, and copies the table and JSON reports to $OUT when $OUT is set.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
KIT="$REPO/.dev/gpu-kit"

if [ "${1:-}" = --prepare ]; then
  # shellcheck source=../scripts/lib.sh
  source "$REPO/scripts/lib.sh"
  setup_test
  (cd "$REPO" && cargo build --locked --release --bin txcat)
  rm -rf "$KIT" && mkdir -p "$KIT/tokenizer" "$KIT/wheels"
  # Debug info makes the release binary ~100 MB; a call may carry 64 MiB, so ship it stripped.
  objcopy --strip-debug "$REPO/target/release/txcat" "$KIT/txcat"
  plugin="$(build_nccl_plugin)" && objcopy --strip-debug "$plugin" "$KIT/libtxcat_nccl.so" \
    || echo "bench/gpu.sh: no NCCL plugin in the kit: --gpus N will fail" >&2
  tok="$(minilm_dir)"
  for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    cp "$tok/$f" "$KIT/tokenizer/"
  done
  # Same versions as the dev venv, where the references are tested.
  pins=()
  for pkg in datasets dill multiprocess; do
    pins+=("$pkg==$("$TXCAT_PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")")
  done
  "$TXCAT_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/wheels" "${pins[@]}"
  # datasets needs pyarrow>=24. The GPU image (2026-11) is expected to have it; a fallback wheel
  # (~46 MB, installed there only if datasets fails to import) is carried with
  # BENCH_KIT_PYARROW=1 -- it brings the kit close to the 64 MiB a call may carry.
  [ "${BENCH_KIT_PYARROW:-0}" = 1 ] && mkdir -p "$KIT/fallback" && "$TXCAT_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/fallback" "pyarrow==$("$TXCAT_PY" -c "import importlib.metadata as m; print(m.version('pyarrow'))")"
  du -sh "$KIT" >&2
  echo "prepared $KIT; on the GPU machine run bench/gpu.sh with .dev/gpu-kit carried along" >&2
  exit 0
fi

rows=50000 epochs=1 batch=32 impls="txcat,recipe,tuned" model=base smoke=0 gpus=0 check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) smoke=1; rows=300; model=tiny; shift ;;
    --model) model="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --impls) impls="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --check) check=1; gpus=1; model=tiny; rows=2000; shift ;;
    *) echo "bench/gpu.sh: unknown option '$1' (see the header of bench/gpu.sh)" >&2; exit 2 ;;
  esac
done
[ -d "$KIT" ] || { echo "bench/gpu.sh: $KIT missing; run bench/gpu.sh --prepare on the dev machine and carry .dev/gpu-kit" >&2; exit 2; }
start=$(date +%s)
for f in txcat tokenizer/tokenizer.json; do
  [ -e "$KIT/$f" ] || { echo "bench/gpu.sh: $KIT/$f missing; rerun bench/gpu.sh --prepare" >&2; exit 2; }
done
if [ "$smoke" = 1 ]; then
  # shellcheck source=../scripts/lib.sh
  source "$REPO/scripts/lib.sh"
  setup_test
  set -euo pipefail
  PY="${BENCH_PY:-$TXCAT_PY}"
  # The wheels are for the GPU image's Python 3.12: check they are whole, do not install them.
  for w in "$KIT"/wheels/*.whl; do "$PY" -m zipfile -t "$w" >/dev/null; done
  ls "$KIT"/wheels/datasets-*.whl "$KIT"/wheels/dill-*.whl "$KIT"/wheels/multiprocess-*.whl >/dev/null
  export CUDA_VISIBLE_DEVICES=""
else
  if [ -n "${BENCH_PY:-}" ]; then PY="$BENCH_PY"
  elif [ -x /opt/torch/.venv/bin/python3 ]; then PY=/opt/torch/.venv/bin/python3
  else PY=python3
  fi
  "$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
  if ! "$PY" -c 'import datasets' 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/bench-site "$KIT"/wheels/*.whl
    export PYTHONPATH="/tmp/bench-site${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c 'import datasets' 2>/dev/null && ls "$KIT"/fallback/pyarrow-*.whl >/dev/null 2>&1; then
      echo "bench/gpu.sh: datasets does not import with this image's pyarrow; installing the carried one" >&2
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/bench-site "$KIT"/fallback/pyarrow-*.whl
    fi
  fi
fi
echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
"$PY" -c 'import datasets, pandas, pyarrow, accelerate, sklearn, transformers as t; print("transformers", t.__version__, "datasets", datasets.__version__, "pyarrow", pyarrow.__version__)'
torch_lib="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export BENCH_PY="$PY" TXCAT_BIN="$KIT/txcat" BENCH_TOKENIZER_DIR="$KIT/tokenizer"
"$TXCAT_BIN" --version >/dev/null 2>&1 || "$TXCAT_BIN" --help >/dev/null || {
  echo "bench/gpu.sh: $TXCAT_BIN does not start with libtorch from $torch_lib" >&2; exit 2; }
# Three runs in 8 minutes: each implementation gets at most 150 s.
export BENCH_TIMEOUT="${BENCH_TIMEOUT:-150}"
[ "$smoke" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [ "$check" = 1 ]; then
  backend="$(RUST_LOG=debug "$TXCAT_BIN" --help 2>&1 | grep "CUDA backend" || true)"
  echo "$backend"
  grep -q "CUDA backend loaded" <<<"$backend" || {
    echo "bench/gpu.sh --check: the binary did not load libtorch_cuda.so (see the line above; docs/container.md)" >&2; exit 1; }
fi
if [ "$gpus" -gt 0 ]; then
  [ -f "$KIT/libtxcat_nccl.so" ] || { echo "bench/gpu.sh: $KIT/libtxcat_nccl.so missing; rerun bench/gpu.sh --prepare" >&2; exit 2; }
  visible="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
  [ "$visible" -ge "$gpus" ] || { echo "bench/gpu.sh: --gpus $gpus but $visible GPU(s) visible" >&2; exit 2; }
  model_dir="$REPO/bench/out/models/$model"
  [ -f "$model_dir/model.safetensors" ] || "$PY" "$BENCH_DIR/make_model.py" "$model" "$model_dir" --tokenizer-from "$BENCH_TOKENIZER_DIR" >&2
  table="$REPO/bench/out/gpu-scaling-$(date -u +%Y%m%d-%H%M%S).md"
  mkdir -p "$(dirname "$table")"
  rc=0
  TXCAT_NCCL_PLUGIN="$KIT/libtxcat_nccl.so" "$PY" "$BENCH_DIR/scaling/scaling.py" --txcat "$TXCAT_BIN" \
    --model "$model_dir" --gpus "$gpus" --rows "$rows" --epochs "$epochs" --batch "$batch" --rounds 1 \
    | tee "$table" || rc=$?
  [ -n "${OUT:-}" ] && cp "$table" "$OUT/" || true
  echo "bench/gpu.sh: done in $(( $(date +%s) - start )) s" >&2
  exit "$rc"
fi

run_dir="$REPO/bench/out/gpu-$(date -u +%Y%m%d-%H%M%S)"
extra=()
if [ "$smoke" = 1 ]; then
  run_dir="$REPO/bench/out/gpu-smoke"
  extra=(--no-record)
fi
"$BENCH_DIR/run" --model "$model" --rows "$rows" --epochs "$epochs" --batch-size "$batch" --lr 5e-5 \
  --threads "$(nproc)" --impls "$impls" --out "$run_dir" "${extra[@]}" \
  --note "GPU run (bench/gpu.sh): distilbert-base-sized random model, throughput only; accuracy after $epochs epoch(s) of a random-init model is not meaningful."
echo "bench/gpu.sh: done in $(( $(date +%s) - start )) s" >&2
if [ -n "${OUT:-}" ]; then
  cp "$run_dir/table.md" "$OUT/" 2>/dev/null || true
  for f in recipe.json tuned.json txcat.log recipe.log tuned.log; do
    [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$OUT/" || true
  done
  [ -f "$run_dir/txcat/output/data/metrics.json" ] && cp "$run_dir/txcat/output/data/metrics.json" "$OUT/txcat-metrics.json" || true
  [ -f "$run_dir/txcat/output/data/run_summary.json" ] && cp "$run_dir/txcat/output/data/run_summary.json" "$OUT/txcat-run_summary.json" || true
  cp "$REPO/bench/RESULTS.md" "$OUT/RESULTS.md" 2>/dev/null || true
fi
