// ProcessGroupNCCL as a plugin (libtxcat_nccl.so) that csrc/c10d_shim.cpp loads at run time, only
// when a job's workers are on GPUs. It links libtorch_cuda.so, which txcat's binary does not (see
// src/cuda_backend.rs): CPU jobs and servers never map the CUDA libraries, and one binary serves
// both kinds of machine. scripts/lib.sh (build_nccl_plugin) compiles it against the torch wheel's
// headers; it must come from the same wheel as the libtorch the binary runs on, since the two
// pass c10 intrusive pointers to each other.

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "guarded.h"

extern "C" {

// Constructs a ProcessGroupNCCL over `store` and hands its reference to the caller as a raw
// Backend pointer (to be reclaimed into an intrusive_ptr). NCCL communicators are created lazily,
// on the first collective, as in PyTorch.
char* txcat_nccl_backend_new(const c10::intrusive_ptr<c10d::Store>* store, int rank, int size,
                             int64_t timeout_ms, c10d::Backend** out) {
  return txcat_shim::guarded([&] {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    c10::intrusive_ptr<c10d::Backend> pg =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(*store, rank, size, opts);
    *out = pg.release();
  });
}

}  // extern "C"
