// What the ember.dnnl.* packed functions (dnnl_kernels.cc, winograd.cc) share: one definition of
// what a valid tensor argument is and of the conv kernels' argument list, so that every kernel
// refuses bad arguments with the same errors, and the static int8 kernels' activation
// quantization. Internal to the kernels.
#pragma once

#include <dlpack/dlpack.h>
#include <tvm/ffi/function.h>

#include <array>
#include <cstddef>
#include <cstdint>

namespace ember::kernels {

// Argument i as a contiguous CPU tensor of `bits`-bit `code` (float32 by default); throws a
// TypeError (wrong kind, device or dtype) or ValueError (strided) naming `kernel` otherwise.
const DLTensor* TensorArg(const tvm::ffi::PackedArgs& args, int i, const char* kernel,
                          DLDataTypeCode code = kDLFloat, int bits = 32);

// The argument list of ember.dnnl.conv2d (and conv2d_wino), and of their weight-only forms
// (conv2d_w8, conv2d_wino_w8: int8 weights, then their float scales):
//   x, w, [w_scales,] bias, residual, stride_h, stride_w, pad_top, pad_left, pad_bottom,
//   pad_right, dilation_h, dilation_w, groups, has_bias, has_residual, activation, weight_id,
//   alpha, beta, out
// bias and residual are null unless has_bias / has_residual. Shapes are the kernel's to check.
struct ConvArgs {
  const DLTensor* x = nullptr;
  const DLTensor* w = nullptr;
  const DLTensor* w_scales = nullptr;  // weight-only forms only
  const DLTensor* bias = nullptr;
  const DLTensor* residual = nullptr;
  const DLTensor* out = nullptr;
  // stride h/w, pad top/left/bottom/right, dilation h/w, groups, has_bias, has_residual,
  // activation, weight_id
  std::array<int64_t, 13> ints{};
  float alpha = 0, beta = 0;
};

ConvArgs ParseConvArgs(const tvm::ffi::PackedArgs& args, const char* kernel, bool weight_only);

// A per-thread buffer of at least `nbytes` for an int8 kernel's quantized activation, grown
// (only) as needed.
void* ThreadQuantized(size_t nbytes);

// Quantizes `count` floats with `scale` and `zero_point` into uint8 (`is_unsigned`) or int8 at
// `dst`, split across the OpenMP threads the kernel will use (serial inside a parallel region).
void QuantizeActivation(const float* src, size_t count, float scale, bool is_unsigned, void* dst,
                        int32_t zero_point = 0);

}  // namespace ember::kernels
