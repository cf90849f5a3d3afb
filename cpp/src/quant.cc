#include "ember/quant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ember::quant {
namespace {

// One value, exactly as ONNX QuantizeLinear defines it (see quant.h). The clamp happens in float,
// where x / scale may be huge or infinite, before the conversion to an integer.
template <typename Q>
inline Q QuantizeOne(float x, QuantParams params) {
  if (std::isnan(x)) return static_cast<Q>(params.zero_point);
  constexpr float kLow = static_cast<float>(std::numeric_limits<Q>::min());
  constexpr float kHigh = static_cast<float>(std::numeric_limits<Q>::max());
  float v = std::nearbyint(x / params.scale) + static_cast<float>(params.zero_point);
  v = std::min(std::max(v, kLow), kHigh);
  return static_cast<Q>(static_cast<int32_t>(v));
}

template <typename Q>
void QuantizeRef(const float* x, size_t n, QuantParams params, Q* q) {
  for (size_t i = 0; i < n; ++i) q[i] = QuantizeOne<Q>(x[i], params);
}

template <typename Q>
void DequantizeRef(const Q* q, size_t n, QuantParams params, float* x) {
  for (size_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(static_cast<int32_t>(q[i]) - params.zero_point) * params.scale;
  }
}

#if defined(__x86_64__)
// Eight values per step; the tail (< 8) goes through the reference, so results are identical.
// round_ps(TO_NEAREST_INT) is round-half-to-even like nearbyint in the default rounding mode, and
// div_ps is IEEE division like the scalar `/`.
template <bool kUnsigned>
__attribute__((target("avx2"))) void QuantizeAvx2(const float* x, size_t n, QuantParams params,
                                                  void* out) {
  const __m256 scale = _mm256_set1_ps(params.scale);
  const __m256 zero_point = _mm256_set1_ps(static_cast<float>(params.zero_point));
  const __m256 low = _mm256_set1_ps(kUnsigned ? 0.0f : -128.0f);
  const __m256 high = _mm256_set1_ps(kUnsigned ? 255.0f : 127.0f);
  auto* q = static_cast<uint8_t*>(out);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    __m256 r = _mm256_round_ps(_mm256_div_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zero_point), low), high);
    r = _mm256_blendv_ps(r, zero_point, is_nan);
    const __m256i ints = _mm256_cvtps_epi32(r);  // exact: r is an integer within the type
    const __m128i halves = _mm_packs_epi32(_mm256_castsi256_si128(ints), _mm256_extracti128_si256(ints, 1));
    const __m128i bytes = kUnsigned ? _mm_packus_epi16(halves, halves) : _mm_packs_epi16(halves, halves);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), bytes);
  }
  if (kUnsigned) {
    QuantizeRef(x + i, n - i, params, q + i);
  } else {
    QuantizeRef(x + i, n - i, params, reinterpret_cast<int8_t*>(q + i));
  }
}

template <bool kUnsigned>
__attribute__((target("avx2"))) void DequantizeAvx2(const void* in, size_t n, QuantParams params,
                                                    float* x) {
  const __m256 scale = _mm256_set1_ps(params.scale);
  const __m256i zero_point = _mm256_set1_epi32(params.zero_point);
  const auto* q = static_cast<const uint8_t*>(in);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
    const __m256i ints = kUnsigned ? _mm256_cvtepu8_epi32(bytes) : _mm256_cvtepi8_epi32(bytes);
    const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(ints, zero_point));
    _mm256_storeu_ps(x + i, _mm256_mul_ps(v, scale));
  }
  if (kUnsigned) {
    DequantizeRef(q + i, n - i, params, x + i);
  } else {
    DequantizeRef(reinterpret_cast<const int8_t*>(q + i), n - i, params, x + i);
  }
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#else
bool HasAvx2() { return false; }
#endif

}  // namespace

Result<QuantParams> SymmetricS8Params(float absmax) {
  if (!std::isfinite(absmax) || absmax < 0) {
    return Status::InvalidArgument("absmax must be finite and >= 0, got " + std::to_string(absmax));
  }
  if (absmax == 0) return QuantParams{1.0f, 0};
  return QuantParams{absmax / 127.0f, 0};
}

Result<QuantParams> AffineU8Params(float min, float max) {
  if (!std::isfinite(min) || !std::isfinite(max) || min > max) {
    return Status::InvalidArgument("need finite min <= max, got [" + std::to_string(min) + ", " +
                                   std::to_string(max) + "]");
  }
  min = std::min(min, 0.0f);
  max = std::max(max, 0.0f);
  const float scale = (max - min) / 255.0f;
  if (!(scale > 0)) return QuantParams{1.0f, 0};
  const float zero_point = std::min(std::max(std::nearbyint(-min / scale), 0.0f), 255.0f);
  return QuantParams{scale, static_cast<int32_t>(zero_point)};
}

void QuantizeS8Ref(const float* x, size_t n, QuantParams params, int8_t* q) { QuantizeRef(x, n, params, q); }
void QuantizeU8Ref(const float* x, size_t n, QuantParams params, uint8_t* q) { QuantizeRef(x, n, params, q); }
void DequantizeS8Ref(const int8_t* q, size_t n, QuantParams params, float* x) { DequantizeRef(q, n, params, x); }
void DequantizeU8Ref(const uint8_t* q, size_t n, QuantParams params, float* x) { DequantizeRef(q, n, params, x); }

void ChannelAbsMaxRef(const float* w, size_t channels, size_t inner, float* absmax) {
  for (size_t c = 0; c < channels; ++c) {
    float m = 0;
    for (size_t i = 0; i < inner; ++i) m = std::max(m, std::fabs(w[c * inner + i]));
    absmax[c] = m;
  }
}

void QuantizePerChannelS8Ref(const float* w, size_t channels, size_t inner, const float* scales,
                             int8_t* q) {
  for (size_t c = 0; c < channels; ++c) {
    QuantizeRef(w + c * inner, inner, QuantParams{scales[c], 0}, q + c * inner);
  }
}

Status MatmulU8S8S32Ref(const uint8_t* a, int32_t a_zero_point, const int8_t* b, size_t m,
                        size_t k, size_t n, int32_t* c) {
  if (k > kMaxExactK) {
    return Status::InvalidArgument("K = " + std::to_string(k) + " could overflow int32 accumulation "
                                   "(at most " + std::to_string(kMaxExactK) + ")");
  }
  if (a_zero_point < 0 || a_zero_point > 255) {
    return Status::InvalidArgument("a_zero_point must be in [0, 255], got " + std::to_string(a_zero_point));
  }
  for (size_t i = 0; i < m; ++i) {
    for (size_t j = 0; j < n; ++j) {
      int32_t sum = 0;
      for (size_t p = 0; p < k; ++p) {
        sum += (static_cast<int32_t>(a[i * k + p]) - a_zero_point) * static_cast<int32_t>(b[p * n + j]);
      }
      c[i * n + j] = sum;
    }
  }
  return Status::Ok();
}

void QuantizeS8(const float* x, size_t n, QuantParams params, int8_t* q) {
#if defined(__x86_64__)
  if (HasAvx2()) return QuantizeAvx2<false>(x, n, params, q);
#endif
  QuantizeS8Ref(x, n, params, q);
}

void QuantizeU8(const float* x, size_t n, QuantParams params, uint8_t* q) {
#if defined(__x86_64__)
  if (HasAvx2()) return QuantizeAvx2<true>(x, n, params, q);
#endif
  QuantizeU8Ref(x, n, params, q);
}

void DequantizeS8(const int8_t* q, size_t n, QuantParams params, float* x) {
#if defined(__x86_64__)
  if (HasAvx2()) return DequantizeAvx2<false>(q, n, params, x);
#endif
  DequantizeS8Ref(q, n, params, x);
}

void DequantizeU8(const uint8_t* q, size_t n, QuantParams params, float* x) {
#if defined(__x86_64__)
  if (HasAvx2()) return DequantizeAvx2<true>(q, n, params, x);
#endif
  DequantizeU8Ref(q, n, params, x);
}

const char* QuantKernelIsa() { return HasAvx2() ? "avx2" : "ref"; }

}  // namespace ember::quant
