// A small C ABI over libtorch's dynamically quantised linear layer (quantized::linear_prepack and
// quantized::linear_dynamic, fbgemm on x86: what torch.ao's quantize_dynamic runs), for
// src/model/quantized.rs. tch 0.24 binds the quantised tensor types but not these ops, whose packed
// weights are a TorchScript custom class that only the dispatcher's boxed calls can carry.
//
// Invariants: every entry point catches every C++ exception and returns it as a malloc'ed string
// (NULL on success) that the caller frees with free(); tensors arrive and
// leave as the `at::Tensor*` that tch's C_tensor pointers are (a returned one is owned by the
// caller, as tch's own functions return them).

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "guarded.h"

using txcat_shim::guarded;

struct txcat_qlinear {
  c10::IValue packed;
};

namespace {

c10::OperatorHandle op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace

extern "C" {

// Quantises `weight` [out, in] (fp32) to int8 per output channel, symmetric (scale = max |w| /
// 127 per row), and packs it with `bias` [out] for linear_dynamic.
char* txcat_qlinear_pack(const at::Tensor* weight, const at::Tensor* bias, txcat_qlinear** out) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    auto w = weight->to(at::kFloat).contiguous();
    auto scales = (w.abs().amax({1}) / 127.0).clamp_min(1e-12).to(at::kDouble);
    auto zero_points = at::zeros({w.size(0)}, at::kLong);
    auto q = at::quantize_per_channel(w, scales, zero_points, 0, at::kQInt8);
    // A copy: the packed params keep the bias tensor itself, and the caller may empty its own.
    auto b = bias->to(at::kFloat).clone().contiguous();
    std::vector<c10::IValue> stack{q, c10::optional<at::Tensor>(b)};
    op("quantized::linear_prepack").callBoxed(&stack);
    *out = new txcat_qlinear{std::move(stack.at(0))};
  });
}

// `input` [.., in] fp32 -> [.., out] fp32: the input quantised per call (reduce_range, as fbgemm
// wants on x86), the product accumulated in int32.
char* txcat_qlinear_forward(const txcat_qlinear* layer, const at::Tensor* input, at::Tensor** out) {
  return guarded([&] {
    std::vector<c10::IValue> stack{input->contiguous(), layer->packed, true};
    op("quantized::linear_dynamic").callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
  });
}

void txcat_qlinear_free(txcat_qlinear* layer) { delete layer; }

}  // extern "C"
