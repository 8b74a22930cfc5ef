// A small C ABI over libtorch's c10d (TCPStore, PrefixStore, ProcessGroupGloo and, through the
// plugin of csrc/nccl_plugin.cpp, ProcessGroupNCCL), for src/train/distributed. tch 0.24 binds no
// c10d.
//
// Invariants: every entry point catches every C++ exception and returns it as a malloc'ed string
// (NULL on success) that the caller frees with free(); tensors arrive as the
// `at::Tensor*` that tch's C_tensor pointers are; collectives block until done (or timed out).
// Gloo's own types appear only to create the transport device: Debian's libgloo-dev headers are
// older than the Gloo compiled into libtorch_cpu, so nothing here depends on Gloo's layouts.

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "guarded.h"

using txcat_shim::guarded;

struct txcat_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct txcat_group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

namespace {

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case 1:
      return c10d::ReduceOp(c10d::ReduceOp::MAX);
    case 2:
      return c10d::ReduceOp(c10d::ReduceOp::MIN);
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  if (!work->wait()) {
    throw std::runtime_error("collective did not complete");
  }
}

}  // namespace

extern "C" {

char* txcat_c10d_tcp_store_new(const char* host, uint16_t port, int is_server, int world_size,
                               int64_t timeout_ms, txcat_store** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new txcat_store{store};
  });
}

char* txcat_c10d_prefix_store_new(const char* prefix, const txcat_store* base,
                                  txcat_store** out) {
  return guarded([&] {
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), base->store);
    *out = new txcat_store{store};
  });
}

void txcat_c10d_store_free(txcat_store* store) { delete store; }

char* txcat_c10d_store_set(txcat_store* store, const char* key, const uint8_t* value,
                           size_t len) {
  return guarded([&] {
    std::vector<uint8_t> bytes(value, value + len);
    store->store->set(std::string(key), bytes);
  });
}

// Blocks until `key` exists (up to the store's timeout); the value is malloc'ed into *value.
char* txcat_c10d_store_get(txcat_store* store, const char* key, uint8_t** value, size_t* len) {
  return guarded([&] {
    auto bytes = store->store->get(std::string(key));
    *len = bytes.size();
    *value = static_cast<uint8_t*>(std::malloc(bytes.size() == 0 ? 1 : bytes.size()));
    if (*value == nullptr) {
      throw std::bad_alloc();
    }
    std::memcpy(*value, bytes.data(), bytes.size());
  });
}

void txcat_c10d_free_bytes(uint8_t* bytes) { std::free(bytes); }

// Gloo over TCP. The device binds to `iface` when given (GLOO_SOCKET_IFNAME), else to the address
// `hostname` resolves to when given, else to this machine's hostname (falling back to loopback).
char* txcat_c10d_gloo_new(const txcat_store* store, int rank, int size, const char* hostname,
                          const char* iface, int64_t timeout_ms, txcat_group** out) {
  return guarded([&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    if (iface != nullptr && iface[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else if (hostname != nullptr && hostname[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, opts);
    *out = new txcat_group{pg};
  });
}

// ProcessGroupNCCL from the plugin at `plugin` (a path): loaded on first use and kept loaded.
char* txcat_c10d_nccl_new(const char* plugin, const txcat_store* store, int rank, int size,
                          int64_t timeout_ms, txcat_group** out) {
  return guarded([&] {
    void* lib = dlopen(plugin, RTLD_NOW | RTLD_GLOBAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      throw std::runtime_error(std::string("cannot load the NCCL plugin: ") +
                               (why == nullptr ? plugin : why));
    }
    using New = char* (*)(const c10::intrusive_ptr<c10d::Store>*, int, int, int64_t,
                          c10d::Backend**);
    auto make = reinterpret_cast<New>(dlsym(lib, "txcat_nccl_backend_new"));
    if (make == nullptr) {
      throw std::runtime_error(std::string(plugin) + " has no txcat_nccl_backend_new");
    }
    c10d::Backend* raw = nullptr;
    if (char* err = make(&store->store, rank, size, timeout_ms, &raw)) {
      std::string message(err);
      std::free(err);
      throw std::runtime_error(message);
    }
    *out = new txcat_group{c10::intrusive_ptr<c10d::Backend>::reclaim(raw)};
  });
}

void txcat_c10d_group_free(txcat_group* group) { delete group; }

char* txcat_c10d_allreduce(txcat_group* group, at::Tensor* tensor, int op) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    wait(group->backend->allreduce(tensors, opts));
  });
}

char* txcat_c10d_broadcast(txcat_group* group, at::Tensor* tensor, int root) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(group->backend->broadcast(tensors, opts));
  });
}

char* txcat_c10d_barrier(txcat_group* group) {
  return guarded([&] { wait(group->backend->barrier()); });
}

// Gathers `input` from every rank into `output`, a contiguous tensor of world_size * numel
// elements of input's kind: rank r's tensor lands in output's r-th chunk.
char* txcat_c10d_allgather(txcat_group* group, at::Tensor* input, at::Tensor* output) {
  return guarded([&] {
    int64_t world = group->backend->getSize();
    TORCH_CHECK(output->numel() == input->numel() * world,
                "allgather output holds ", output->numel(), " elements, expected ",
                input->numel() * world);
    std::vector<at::Tensor> inputs{input->contiguous().view({-1})};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int64_t r = 0; r < world; ++r) {
      outputs[0].push_back(at::empty_like(inputs[0]));
    }
    wait(group->backend->allgather(outputs, inputs));
    output->view({-1}).copy_(at::cat(outputs[0], 0));
  });
}

int txcat_c10d_rank(const txcat_group* group) { return group->backend->getRank(); }
int txcat_c10d_size(const txcat_group* group) { return group->backend->getSize(); }

}  // extern "C"
