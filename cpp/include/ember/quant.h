// int8 quantization kernels: scalar *Ref functions are the oracle that defines the semantics;
// the unsuffixed functions are the fast variants (AVX2 on x86-64 CPUs that have it, otherwise the
// reference), tested to give bit-identical results.
//
// Semantics follow ONNX QuantizeLinear / DequantizeLinear:
//   q = saturate(round_half_to_even(x / scale) + zero_point)      (division, not x * (1/scale))
//   x = (q - zero_point) * scale
// with two definitions ONNX leaves open: NaN quantizes to zero_point (the code of 0.0), and
// +-infinity saturates to the type's limits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ember/status.h"

namespace ember::quant {

struct QuantParams {
  float scale = 1.0f;      // > 0 and finite
  int32_t zero_point = 0;  // within the quantized type's range
};

// Symmetric int8 parameters for values in [-absmax, absmax]: scale = absmax / 127, zero point 0
// (codes -127..127, so that negation is exact). absmax 0 gives scale 1 (every value is 0).
// InvalidArgument for a negative or non-finite absmax.
Result<QuantParams> SymmetricS8Params(float absmax);

// Affine uint8 parameters for values in [min, max], widened to include 0 so that 0.0 is exact:
// scale = (max - min) / 255, zero_point = round_half_to_even(-min / scale). min = max = 0 gives
// scale 1, zero point 0. InvalidArgument for non-finite bounds or min > max.
Result<QuantParams> AffineU8Params(float min, float max);

// The reference kernels. n may be 0; pointers need no alignment. Thread-safe (pure functions).
void QuantizeS8Ref(const float* x, size_t n, QuantParams params, int8_t* q);
void QuantizeU8Ref(const float* x, size_t n, QuantParams params, uint8_t* q);
void DequantizeS8Ref(const int8_t* q, size_t n, QuantParams params, float* x);
void DequantizeU8Ref(const uint8_t* q, size_t n, QuantParams params, float* x);

// Per-output-channel weights: w is [channels, inner] row-major; channel c uses scales[c] and
// zero point 0 (symmetric int8).
void ChannelAbsMaxRef(const float* w, size_t channels, size_t inner, float* absmax);
void QuantizePerChannelS8Ref(const float* w, size_t channels, size_t inner, const float* scales,
                             int8_t* q);

// The int8 matmul oracle: c[m][n] = sum_k (a[m][k] - a_zero_point) * b[k][n], with uint8
// activations a [M, K] and symmetric int8 weights b [K, N], accumulated exactly in int32 (the
// form x86 int8 instructions compute). InvalidArgument when K is so large that int32 could
// overflow (K > kMaxExactK).
constexpr size_t kMaxExactK = 65536;  // 255 * 128 * 65536 < 2^31
Status MatmulU8S8S32Ref(const uint8_t* a, int32_t a_zero_point, const int8_t* b, size_t m,
                        size_t k, size_t n, int32_t* c);

// The fast variants: same results as the reference, bit for bit.
void QuantizeS8(const float* x, size_t n, QuantParams params, int8_t* q);
void QuantizeU8(const float* x, size_t n, QuantParams params, uint8_t* q);
void DequantizeS8(const int8_t* q, size_t n, QuantParams params, float* x);
void DequantizeU8(const uint8_t* q, size_t n, QuantParams params, float* x);

// Which implementation the fast variants use on this CPU: "avx2" or "ref".
const char* QuantKernelIsa();

}  // namespace ember::quant
