# syntax=docker/dockerfile:1
#
# txcat training image for SageMaker (`docker run IMAGE train`) and local runs. docs/container.md has the
# full story; in short:
#
#   docker build -t txcat .                                   # compile in the image, torch from PyPI
#   docker build -t txcat --build-context txcat-bin=dist \    # or inject a host-built binary (dist/txcat)
#                        --build-context torch-site=SITE .    # and/or the host's torch site-packages
#   docker build ... --build-arg TXCAT_VARIANT=cpu            # CPU-only image (~0.5 GB of libraries)
#   docker build ... --build-context model=DIR --build-arg MODEL_NAME=distilbert-base-uncased
#
# Stages: torch-site (the torch wheel's site-packages) -> txcat-bin (the release binary) -> collect
# (binary + only the libraries it loads, laid out under /out) -> runtime (BASE_IMAGE + /out, one layer).
# Any of the stages named torch-site, txcat-bin and model can be replaced by a --build-context of the same
# name (BuildKit and buildah/podman both let a named context override a stage); the replaced stage is
# then skipped.

# Runtime base: needs glibc >= the builder's and libstdc++ (Debian 12 or newer).
ARG BASE_IMAGE=debian:bookworm-slim
# Build tools: cargo + a C++ compiler (torch-sys compiles a small C++ shim) + python3 for pip.
ARG BUILDER_IMAGE=rust:1.95-bookworm
# tch =0.24.0 binds libtorch 2.11.0 exactly: change both together.
ARG TORCH_VERSION=2.11.0
# Empty: pip's configured index (PyPI's torch 2.11.0 is built for CUDA 13.0, NVIDIA driver >= 580). For
# older drivers pass the address of PyTorch's own CUDA 12.6 index, or of its CPU-only index.
ARG TORCH_INDEX_URL=

# ---- torch-site: site-packages holding torch/{include,lib} and nvidia/*/lib --------------------------
FROM ${BUILDER_IMAGE} AS torch-pip
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
# Behind a TLS-intercepting proxy: --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt
# (used by pip and cargo only; secrets never end up in a layer).
RUN --mount=type=secret,id=ca-bundle \
    apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/pip \
 && if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && /opt/pip/bin/pip install --no-cache-dir --no-compile --target /opt/torch-site \
      ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"} "torch==${TORCH_VERSION}" \
 && test -f /opt/torch-site/torch/lib/libtorch_cpu.so \
 && mkdir -p /opt/torch-site/nvidia

# Only what the build and the runtime need (not triton, sympy, ...).
FROM scratch AS torch-site
COPY --from=torch-pip /opt/torch-site/torch/include /torch/include
COPY --from=torch-pip /opt/torch-site/torch/lib /torch/lib
# nvidia/ is empty for CPU builds of torch.
COPY --from=torch-pip /opt/torch-site/nvidia /nvidia

# ---- txcat-bin: /txcat, the release binary ---------------------------------------------------------
FROM ${BUILDER_IMAGE} AS txcat-build
# libgloo-dev: Gloo's headers for the c10d shim (csrc/c10d_shim.cpp); the wheel has Gloo's code only.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgloo-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# LIBTORCH: torch-sys compiles and links against the wheel. TXCAT_EXTRA_RPATH: build.rs adds the
# runtime library folder as an rpath, so the binary also runs without LD_LIBRARY_PATH.
RUN --mount=type=bind,from=torch-site,target=/opt/torch-site \
    --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export CARGO_HTTP_CAINFO=/run/secrets/ca-bundle; fi \
 && LIBTORCH=/opt/torch-site/torch LIBTORCH_CXX11_ABI=1 TXCAT_EXTRA_RPATH=/opt/txcat/lib \
    cargo build --release --locked --bin txcat \
 && mkdir -p /dist && cp target/release/txcat /dist/txcat

FROM scratch AS txcat-bin
COPY --from=txcat-build /dist/txcat /txcat

# ---- nccl-plugin: /dist/libtxcat_nccl.so, ProcessGroupNCCL for multi-GPU jobs ----------------------
# csrc/nccl_plugin.cpp, compiled by scripts/lib.sh build_nccl_plugin against the same wheel (it needs
# two CUDA header packages from PyPI). It links libtorch_cuda.so, so txcat loads it only on GPU jobs.
# A CPU wheel has no NCCL: /dist stays empty and such an image reduces through Gloo.
FROM torch-pip AS nccl-plugin
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY csrc csrc
COPY scripts/lib.sh scripts/lib.sh
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && mkdir -p /dist \
 && bash -c 'export LIBTORCH=/opt/torch-site/torch LIBTORCH_CXX11_ABI=1 TXCAT_EXTRA_RPATH=/opt/txcat/lib \
      TXCAT_PY=/opt/pip/bin/python TXCAT_CACHE=/tmp/txcat-cache; source scripts/lib.sh; \
      if plugin="$(build_nccl_plugin)"; then cp "$plugin" /dist/; fi'

# ---- model: optional pretrained folder to bake in (override with --build-context model=DIR) --------
FROM scratch AS model

# ---- collect: /out = everything the runtime image adds to BASE_IMAGE --------------------------------
FROM ${BUILDER_IMAGE} AS collect
# cuda: the full CUDA closure (~3 GB). cpu: CUDA libraries replaced by empty stand-ins (~0.5 GB).
ARG TXCAT_VARIANT=cuda
# Libraries opened with dlopen() that ldd can't see; see scripts/container/dlopen-libs.txt.
ARG DLOPEN_GROUPS=cudnn,nvrtc
# With --build-context model=DIR: the name under /opt/models, i.e. the model_name that resolves to it.
ARG MODEL_NAME=
COPY scripts/container/assemble scripts/container/collect-libs scripts/container/dlopen-libs.txt /opt/txcat-build/
COPY --from=txcat-bin /txcat /opt/txcat-build/txcat
COPY --from=nccl-plugin /dist/ /opt/txcat-build/nccl/
RUN --mount=type=bind,from=torch-site,target=/opt/torch-site \
    --mount=type=bind,from=model,target=/opt/model-in \
    if [ "$TXCAT_VARIANT" = cpu ] && ! command -v cc >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev; \
    fi \
 && /opt/txcat-build/assemble --site /opt/torch-site --binary /opt/txcat-build/txcat --out /out \
      --variant "$TXCAT_VARIANT" --groups "$DLOPEN_GROUPS" --model /opt/model-in --model-name "$MODEL_NAME" \
      --nccl-plugin /opt/txcat-build/nccl/libtxcat_nccl.so

# ---- runtime ----------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# One layer: with storage drivers that copy every layer (vfs) each extra layer would cost gigabytes.
COPY --from=collect /out/ /
# LD_LIBRARY_PATH: a binary built elsewhere (the txcat-bin context) has no rpath to /opt/txcat/lib.
# TXCAT_MODEL_HOME: model_name=<name> resolves to /opt/models/<name> (MODEL_NAME above).
# TXCAT_NCCL_PLUGIN: where assemble put ProcessGroupNCCL's plugin (cuda variant; absent on cpu).
# NVIDIA_*: ask the NVIDIA container runtime for the GPUs and the compute driver libraries, as the
# nvidia/cuda images do (SageMaker GPU hosts use that runtime).
ENV LD_LIBRARY_PATH=/opt/txcat/lib \
    TXCAT_MODEL_HOME=/opt/models \
    TXCAT_NCCL_PLUGIN=/opt/txcat/lib/libtxcat_nccl.so \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /
# `serve` (endpoints, batch transform) listens on SAGEMAKER_BIND_TO_PORT; the label tells
# SageMaker hosting that the image honours it, 8080 is the default it uses otherwise.
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
EXPOSE 8080
# Exec form: txcat is PID 1 and receives SageMaker's SIGTERM itself (no shell in between).
ENTRYPOINT ["txcat"]
CMD ["train"]
