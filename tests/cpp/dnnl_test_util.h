// Helpers shared by the oneDNN kernel tests: DLTensor views over test vectors and the index of an
// element in the NHWC and NCHW8c activation layouts.
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <vector>

namespace ember::kernels::testing {

constexpr DLDataType kF32{kDLFloat, 32, 1};
constexpr DLDataType kS8{kDLInt, 8, 1};

// A CPU DLTensor over `data` with `shape` (which must outlive it).
inline DLTensor Dl(void* data, DLDataType dtype, std::vector<int64_t>& shape) {
  DLTensor t{};
  t.data = data;
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = dtype;
  t.shape = shape.data();
  return t;
}

// Element (n, y, x, c) of an NHWC [N, H, W, C] tensor.
inline int64_t Nhwc(int64_t n, int64_t y, int64_t x, int64_t c, int64_t h, int64_t w,
                    int64_t channels) {
  return ((n * h + y) * w + x) * channels + c;
}

// Element (n, y, x, c) of an NCHW8c [N, C/8, H, W, 8] tensor.
inline int64_t Blocked(int64_t n, int64_t y, int64_t x, int64_t c, int64_t h, int64_t w,
                       int64_t channels) {
  return (((n * (channels / 8) + c / 8) * h + y) * w + x) * 8 + c % 8;
}

}  // namespace ember::kernels::testing
