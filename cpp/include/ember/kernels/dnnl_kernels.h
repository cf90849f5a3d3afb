// oneDNN-backed kernels that the compiler's dispatch pass calls through R.call_dps_packed:
// conv2d (NHWC or NCHW8c activations, OHWI weights, grouped, dilated) and matmul (constant or
// runtime right operand, batched with broadcasting), each with fused bias, residual add and
// activation post-ops.
//
// Argument conventions (packed, DPS: the output tensor is the last argument) are documented at
// each kernel in dnnl_kernels.cc and mirrored by python/ember/compiler/dispatch.py.
//
// Thread-safety: kernels may run concurrently from several threads. Primitives and prepacked
// weights are built once per (weight id, shapes, attributes) and cached under a mutex; execution
// uses a per-thread stream and scratchpad.
#pragma once

#include <cstddef>

namespace ember::kernels {

// Registers the ember.dnnl.* global functions with tvm-ffi. Idempotent and thread-safe; must run
// before a VM that calls them is created.
void RegisterDnnlKernels();

// Primitives (with their prepacked weights) currently cached.
size_t DnnlCachedPrimitives();

// Activation codes shared with the compiler.
enum class Activation : int {
  kNone = 0,
  kRelu = 1,
  kGeluErf = 2,
  kGeluTanh = 3,
  kClip = 4,  // clamp to [alpha, beta], e.g. ReLU6
  kSigmoid = 5,
  kTanh = 6,
};

}  // namespace ember::kernels
