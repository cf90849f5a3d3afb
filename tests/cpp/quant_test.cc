// The int8 reference kernels against hand-computed ONNX semantics, and the fast variants against
// the reference with an error budget of zero: every code and every float must be identical.
#include "ember/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace ember::quant {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<int> S8(const std::vector<float>& x, QuantParams p) {
  std::vector<int8_t> q(x.size());
  QuantizeS8Ref(x.data(), x.size(), p, q.data());
  return {q.begin(), q.end()};
}

std::vector<int> U8(const std::vector<float>& x, QuantParams p) {
  std::vector<uint8_t> q(x.size());
  QuantizeU8Ref(x.data(), x.size(), p, q.data());
  return {q.begin(), q.end()};
}

TEST(QuantRef, RoundsHalfToEvenBeforeAddingTheZeroPoint) {
  EXPECT_EQ(S8({0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 0.49f, 0.51f}, {1.0f, 0}),
            (std::vector<int>{0, 2, 2, 0, -2, -2, 0, 1}));
  // round(0.5) + 1 = 1, not round(1.5) = 2: ONNX adds the zero point after rounding.
  EXPECT_EQ(S8({0.5f, 1.5f}, {1.0f, 1}), (std::vector<int>{1, 3}));
  EXPECT_EQ(U8({0.5f, 2.5f}, {1.0f, 128}), (std::vector<int>{128, 130}));
}

TEST(QuantRef, DividesByTheScaleLikeOnnx) {
  // Division, as ONNX specifies: x * (1 / scale) rounds differently for some inputs. In float,
  // 0.3 / 0.1 = 3, 12.7 / 0.1 = 127 and 1 / 0.4 = 2.5 exactly (a tie: to even, 2).
  EXPECT_EQ(S8({0.3f, -0.3f, 12.7f}, {0.1f, 0}), (std::vector<int>{3, -3, 127}));
  EXPECT_EQ(S8({1.0f}, {0.4f, 0}), (std::vector<int>{2}));  // 2.5 -> 2 (half to even)
}

TEST(QuantRef, SaturatesAndMapsNaNToTheZeroPoint) {
  const QuantParams p{0.5f, 3};
  EXPECT_EQ(S8({1000.0f, -1000.0f, kInf, -kInf, kNaN, 3e38f}, p),
            (std::vector<int>{127, -128, 127, -128, 3, 127}));
  EXPECT_EQ(U8({1000.0f, -1000.0f, kInf, -kInf, kNaN}, {0.5f, 10}),
            (std::vector<int>{255, 0, 255, 0, 10}));
}

TEST(QuantRef, DequantizeIsExactAndRoundTripsWithinHalfAScale) {
  const QuantParams p{0.25f, -3};
  const std::vector<int8_t> q{-128, -3, 0, 127};
  std::vector<float> x(q.size());
  DequantizeS8Ref(q.data(), q.size(), p, x.data());
  EXPECT_EQ(x, (std::vector<float>{-31.25f, 0.0f, 0.75f, 32.5f}));

  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-31.0f, 32.0f);
  std::vector<float> values(1000);
  for (float& v : values) v = dist(rng);
  std::vector<int8_t> codes(values.size());
  std::vector<float> back(values.size());
  QuantizeS8Ref(values.data(), values.size(), p, codes.data());
  DequantizeS8Ref(codes.data(), codes.size(), p, back.data());
  for (size_t i = 0; i < values.size(); ++i) ASSERT_LE(std::fabs(back[i] - values[i]), 0.125f) << values[i];
}

TEST(QuantParamsTest, SymmetricS8UsesAbsMaxOver127) {
  auto p = SymmetricS8Params(2.54f);
  ASSERT_TRUE(p.ok());
  EXPECT_FLOAT_EQ(p.value().scale, 0.02f);
  EXPECT_EQ(p.value().zero_point, 0);
  EXPECT_EQ(S8({2.54f, -2.54f}, p.value()), (std::vector<int>{127, -127}));
  EXPECT_EQ(SymmetricS8Params(0.0f).value().scale, 1.0f);
  EXPECT_EQ(SymmetricS8Params(kNaN).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SymmetricS8Params(-1.0f).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SymmetricS8Params(kInf).status().code(), StatusCode::kInvalidArgument);
}

TEST(QuantParamsTest, AffineU8IncludesZeroExactly) {
  auto p = AffineU8Params(-1.0f, 3.0f);
  ASSERT_TRUE(p.ok());
  EXPECT_FLOAT_EQ(p.value().scale, 4.0f / 255.0f);
  EXPECT_EQ(p.value().zero_point, 64);  // round(1 / (4/255)) = round(63.75)
  std::vector<float> zero{0.0f};
  uint8_t code = 0;
  QuantizeU8Ref(zero.data(), 1, p.value(), &code);
  float back = -1;
  DequantizeU8Ref(&code, 1, p.value(), &back);
  EXPECT_EQ(back, 0.0f);
  // A range above zero is widened down to it; a degenerate one gets scale 1.
  EXPECT_EQ(AffineU8Params(2.0f, 5.1f).value().zero_point, 0);
  EXPECT_FLOAT_EQ(AffineU8Params(2.0f, 5.1f).value().scale, 0.02f);
  EXPECT_EQ(AffineU8Params(0.0f, 0.0f).value().scale, 1.0f);
  EXPECT_EQ(AffineU8Params(-2.0f, -1.0f).value().zero_point, 255);
  EXPECT_EQ(AffineU8Params(1.0f, 0.0f).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(AffineU8Params(-kInf, 0.0f).status().code(), StatusCode::kInvalidArgument);
}

TEST(QuantRef, PerChannelWeightsUseTheirOwnScale) {
  const std::vector<float> w{1.0f, -2.0f, 0.5f,  // channel 0: absmax 2
                             0.0f, 0.0f, 0.0f,   // channel 1: all zero
                             10.0f, -5.0f, 2.5f};
  std::vector<float> absmax(3);
  ChannelAbsMaxRef(w.data(), 3, 3, absmax.data());
  EXPECT_EQ(absmax, (std::vector<float>{2.0f, 0.0f, 10.0f}));
  std::vector<float> scales;
  for (float m : absmax) scales.push_back(SymmetricS8Params(m).value().scale);
  std::vector<int8_t> q(9);
  QuantizePerChannelS8Ref(w.data(), 3, 3, scales.data(), q.data());
  EXPECT_EQ(std::vector<int>(q.begin(), q.end()),
            (std::vector<int>{64, -127, 32, 0, 0, 0, 127, -64, 32}));  // 63.5 -> 64, 31.75 -> 32
}

TEST(QuantRef, MatmulU8S8AccumulatesExactlyInInt32) {
  // a = [[1, 2], [3, 4]] with zero point 1 -> [[0, 1], [2, 3]]; b = [[1, -2], [3, 4]].
  const std::vector<uint8_t> a{1, 2, 3, 4};
  const std::vector<int8_t> b{1, -2, 3, 4};
  std::vector<int32_t> c(4);
  ASSERT_TRUE(MatmulU8S8S32Ref(a.data(), 1, b.data(), 2, 2, 2, c.data()).ok());
  EXPECT_EQ(c, (std::vector<int32_t>{3, 4, 11, 8}));

  // The extremes at the largest exact K: 255 * -128 * K stays within int32.
  const size_t k = kMaxExactK;
  std::vector<uint8_t> big_a(k, 255);
  std::vector<int8_t> big_b(k, -128);
  int32_t out = 0;
  ASSERT_TRUE(MatmulU8S8S32Ref(big_a.data(), 0, big_b.data(), 1, k, 1, &out).ok());
  EXPECT_EQ(out, -int64_t{255} * 128 * static_cast<int64_t>(k));
  big_a.push_back(255);
  big_b.push_back(-128);
  EXPECT_EQ(MatmulU8S8S32Ref(big_a.data(), 0, big_b.data(), 1, k + 1, 1, &out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(MatmulU8S8S32Ref(a.data(), 300, b.data(), 2, 2, 2, c.data()).code(),
            StatusCode::kInvalidArgument);
}

// Values that probe every rule: halves, saturation, NaN, infinities, denormals, huge, random.
std::vector<float> Probes(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> wide(-300.0f * scale, 300.0f * scale);
  std::uniform_int_distribution<int> half(-300, 300);
  const float specials[] = {kNaN, kInf, -kInf, 0.0f, -0.0f, 1e-40f, -1e-40f, 3e38f, -3e38f};
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    switch (i % 4) {
      case 0: x[i] = wide(rng); break;
      case 1: x[i] = (static_cast<float>(half(rng)) + 0.5f) * scale; break;  // exact .5 ties
      case 2: x[i] = specials[(i / 4) % (sizeof(specials) / sizeof(specials[0]))]; break;
      default: x[i] = static_cast<float>(half(rng)) * scale; break;
    }
  }
  return x;
}

TEST(QuantFast, MatchesTheReferenceBitForBitAtEveryLengthAndAlignment) {
  const QuantParams params[] = {{0.5f, 0}, {0.0370f, -7}, {3.0f, 11}, {1e-3f, 0}};
  const QuantParams uparams[] = {{0.5f, 0}, {0.0370f, 128}, {3.0f, 255}, {1e-3f, 3}};
  for (size_t p = 0; p < 4; ++p) {
    for (size_t n = 0; n <= 67; ++n) {
      for (size_t offset = 0; offset < 3; ++offset) {  // unaligned starts
        SCOPED_TRACE(testing::Message() << "params " << p << " n " << n << " offset " << offset);
        std::vector<float> storage = Probes(n + offset, params[p].scale, static_cast<uint32_t>(n));
        const float* x = storage.data() + offset;
        std::vector<int8_t> want_s8(n + 1), got_s8(n + 1);
        QuantizeS8Ref(x, n, params[p], want_s8.data());
        QuantizeS8(x, n, params[p], got_s8.data());
        ASSERT_EQ(want_s8, got_s8);
        std::vector<uint8_t> want_u8(n + 1), got_u8(n + 1);
        QuantizeU8Ref(x, n, uparams[p], want_u8.data());
        QuantizeU8(x, n, uparams[p], got_u8.data());
        ASSERT_EQ(want_u8, got_u8);

        std::vector<float> want_f(n + 1, -1), got_f(n + 1, -1);
        DequantizeS8Ref(want_s8.data(), n, params[p], want_f.data());
        DequantizeS8(want_s8.data(), n, params[p], got_f.data());
        ASSERT_EQ(0, std::memcmp(want_f.data(), got_f.data(), want_f.size() * sizeof(float)));
        DequantizeU8Ref(want_u8.data(), n, uparams[p], want_f.data());
        DequantizeU8(want_u8.data(), n, uparams[p], got_f.data());
        ASSERT_EQ(0, std::memcmp(want_f.data(), got_f.data(), want_f.size() * sizeof(float)));
      }
    }
  }
}

TEST(QuantFast, UsesAvx2WhereTheCpuHasIt) {
#if defined(__x86_64__)
  EXPECT_STREQ(QuantKernelIsa(), __builtin_cpu_supports("avx2") ? "avx2" : "ref");
#else
  EXPECT_STREQ(QuantKernelIsa(), "ref");
#endif
}

}  // namespace
}  // namespace ember::quant
