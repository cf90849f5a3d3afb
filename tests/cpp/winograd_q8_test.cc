// ember.dnnl.conv2d_wino_q8 (static int8 Winograd F(2x2,3x3) in int16/int32) against the exact
// integer reference: x quantized by quant::QuantizeU8Ref, a direct conv summed in int64, then
// out = float(sum) * (a_scale * w_scales[k]) + bias + residual and the activation, in float as
// the kernel finishes it. The integer part is exact, so the only difference allowed is float
// rounding in the finish: 1e-6 of the magnitudes summed. Covered: channel counts off the SIMD
// widths (the portable tails, C odd: the pad channel), tile counts off the 6-tile micro-tile, odd
// H and W, full-range int8 weights with saturated activations, the channel limit (1024, where
// the int32 sums come closest to overflowing), agreement with ember.dnnl.conv2d_q8 (oneDNN's
// direct int8 conv) on 7-bit weights, concurrent calls inside a parallel region, and refusals.
#include <gtest/gtest.h>
#include <omp.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "dnnl_test_util.h"
#include "ember/kernels/dnnl_kernels.h"
#include "ember/kernels/winograd.h"
#include "ember/quant.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;
using testing::Dl;
using testing::kF32;
using testing::kS8;

struct Q8Case {
  int64_t n, h, w, c, k;
  bool bias, residual;
  Activation act;
  int weight_max;  // weights uniform in [-weight_max, weight_max]; 127: the full [-128, 127]
};

constexpr float kAlpha = -0.5f, kBeta = 2.0f;  // the clip activation's bounds

// One conv's data and its reference output.
struct Q8Conv {
  Q8Case t;
  float a_scale = 0.02f;
  std::vector<float> x, scales, bias, residual, want, magnitude;
  std::vector<int8_t> w;

  // x_value >= 0: every activation is x_value and every weight -128 (the worst case for sums).
  Q8Conv(const Q8Case& c, uint32_t seed, float x_value = -1.0f) : t(c) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> activation(-0.5f, 6.0f);  // some saturate at 255
    std::uniform_int_distribution<int> code(c.weight_max == 127 ? -128 : -c.weight_max, c.weight_max);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(static_cast<size_t>(c.n * c.h * c.w * c.c));
    w.resize(static_cast<size_t>(c.k * 9 * c.c));
    scales.resize(static_cast<size_t>(c.k));
    bias.resize(static_cast<size_t>(c.k));
    residual.resize(static_cast<size_t>(c.n * c.h * c.w * c.k));
    for (float& v : x) v = x_value >= 0 ? x_value : activation(rng);
    for (int8_t& v : w) v = static_cast<int8_t>(x_value >= 0 ? -128 : code(rng));
    for (size_t k = 0; k < scales.size(); ++k) scales[k] = 1e-3f * static_cast<float>(1 + k % 5);
    for (float& v : bias) v = normal(rng);
    for (float& v : residual) v = normal(rng);

    std::vector<uint8_t> q(x.size());
    quant::QuantizeU8Ref(x.data(), x.size(), {a_scale, 0}, q.data());
    want.resize(residual.size());
    magnitude.resize(residual.size());
    for (int64_t b = 0; b < c.n; ++b) {
      for (int64_t y = 0; y < c.h; ++y) {
        for (int64_t xo = 0; xo < c.w; ++xo) {
          for (int64_t o = 0; o < c.k; ++o) {
            int64_t sum = 0;
            for (int64_t ky = 0; ky < 3; ++ky) {
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t iy = y - 1 + ky, ix = xo - 1 + kx;
                if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                for (int64_t ci = 0; ci < c.c; ++ci) {
                  sum += int64_t{q[static_cast<size_t>(((b * c.h + iy) * c.w + ix) * c.c + ci)]} *
                         w[static_cast<size_t>(((o * 3 + ky) * 3 + kx) * c.c + ci)];
                }
              }
            }
            const size_t at = static_cast<size_t>(((b * c.h + y) * c.w + xo) * c.k + o);
            float value = static_cast<float>(sum) * (a_scale * scales[static_cast<size_t>(o)]);
            magnitude[at] = std::fabs(value);
            if (c.bias) value += bias[static_cast<size_t>(o)], magnitude[at] += std::fabs(bias[static_cast<size_t>(o)]);
            if (c.residual) value += residual[at], magnitude[at] += std::fabs(residual[at]);
            if (c.act == Activation::kRelu) value = std::max(value, 0.0f);
            if (c.act == Activation::kClip) value = std::min(std::max(value, kAlpha), kBeta);
            want[at] = value;
          }
        }
      }
    }
  }

  // Runs `kernel` (ember.dnnl.conv2d_wino_q8 or conv2d_q8) into a fresh output.
  std::vector<float> Run(const char* kernel, int64_t weight_id, int64_t a_unsigned = 1) {
    auto fn = ffi::Function::GetGlobal(kernel);
    EXPECT_TRUE(fn.has_value()) << kernel;
    std::vector<float> out(residual.size(), std::numeric_limits<float>::quiet_NaN());
    std::vector<int64_t> x_shape{t.n, t.h, t.w, t.c}, w_shape{t.k, 3, 3, t.c}, k_shape{t.k},
        out_shape{t.n, t.h, t.w, t.k};
    DLTensor tx = Dl(x.data(), kF32, x_shape), tw = Dl(w.data(), kS8, w_shape),
             ts = Dl(scales.data(), kF32, k_shape), tb = Dl(bias.data(), kF32, k_shape),
             tr = Dl(residual.data(), kF32, out_shape), tout = Dl(out.data(), kF32, out_shape);
    const int64_t one = 1;
    (*fn)(&tx, &tw, &ts, &tb, &tr, one, one, one, one, one, one, one, one, one, int64_t{t.bias},
          int64_t{t.residual}, static_cast<int64_t>(t.act), weight_id, a_unsigned,
          static_cast<double>(a_scale), static_cast<double>(kAlpha), static_cast<double>(kBeta),
          &tout);
    return out;
  }

  void ExpectMatches(const std::vector<float>& got, const char* what) const {
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-6 * magnitude[i] + 1e-6) << what << " at " << i;
    }
  }
};

int64_t IdOf(const Q8Case& t) { return 950000 + t.n * 100000 + t.h * 1000 + t.w * 10 + t.c * 7 + t.k; }

class WinogradQ8Test : public ::testing::TestWithParam<Q8Case> {};

TEST_P(WinogradQ8Test, MatchesTheExactIntegerReference) {
  RegisterDnnlKernels();
  const Q8Case t = GetParam();
  Q8Conv conv(t, static_cast<uint32_t>(IdOf(t)));
  conv.ExpectMatches(conv.Run("ember.dnnl.conv2d_wino_q8", IdOf(t)), "wino_q8");
  conv.ExpectMatches(conv.Run("ember.dnnl.conv2d_wino_q8", IdOf(t)), "wino_q8, cached plan");
  if (t.weight_max <= 63) {  // what oneDNN's int8 conv runs exactly on CPUs without VNNI
    conv.ExpectMatches(conv.Run("ember.dnnl.conv2d_q8", IdOf(t) + 1), "conv2d_q8");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, WinogradQ8Test,
    ::testing::Values(
        // tiles 2 x 5 x 4 = 40 (not a multiple of 6); C 20, K 12: off the 16 / 8 SIMD widths
        Q8Case{2, 9, 7, 20, 12, true, true, Activation::kRelu, 63},
        Q8Case{1, 4, 4, 3, 5, false, false, Activation::kNone, 63},  // C odd: the pad channel
        Q8Case{2, 6, 7, 33, 17, true, false, Activation::kClip, 63},
        Q8Case{3, 12, 12, 64, 48, true, true, Activation::kRelu, 63},  // several blocks
        Q8Case{1, 1, 1, 16, 16, true, false, Activation::kNone, 63},   // one pixel: all padding
        Q8Case{2, 10, 10, 32, 40, true, true, Activation::kNone, 127}),  // full-range weights
    [](const ::testing::TestParamInfo<Q8Case>& param) {
      const Q8Case& q = param.param;
      return "n" + std::to_string(q.n) + "_" + std::to_string(q.h) + "x" + std::to_string(q.w) +
             "_c" + std::to_string(q.c) + "_k" + std::to_string(q.k) + "_w" +
             std::to_string(q.weight_max);
    });

// 1024 channels of saturated activations (255) times weights of -128 (the argument sets both): |4 x the conv| reaches
// 4 * 9 * 1024 * 255 * 128 = 1.2e9 of int32's 2.1e9, still exact.
TEST(WinogradQ8, ExactAtTheChannelLimit) {
  RegisterDnnlKernels();
  const Q8Case t{1, 3, 3, 1024, 16, false, false, Activation::kNone, 127};
  Q8Conv conv(t, 5, 100.0f);
  conv.ExpectMatches(conv.Run("ember.dnnl.conv2d_wino_q8", 959001), "wino_q8");
}

TEST(WinogradQ8, RunsConcurrentlyInsideAParallelRegion) {
  RegisterDnnlKernels();
  const Q8Case t{2, 8, 8, 24, 24, true, true, Activation::kRelu, 63};
  Q8Conv conv(t, 11);
  int failures = 0;
#pragma omp parallel num_threads(2) reduction(+ : failures)
  for (int rep = 0; rep < 3; ++rep) {
    const std::vector<float> got = conv.Run("ember.dnnl.conv2d_wino_q8", 959002);
    for (size_t i = 0; i < got.size(); ++i) {
      failures += std::fabs(got[i] - conv.want[i]) > 1e-6 * conv.magnitude[i] + 1e-6 ? 1 : 0;
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(WinogradQ8, RefusesWhatItDoesNotCover) {
  RegisterDnnlKernels();
  const char* kName = "ember.dnnl.conv2d_wino_q8";
  Q8Conv conv(Q8Case{1, 4, 4, 8, 8, true, false, Activation::kRelu, 63}, 3);
  EXPECT_NO_THROW(conv.Run(kName, 959003));
  try {
    conv.Run(kName, 959003, /*a_unsigned=*/0);
    ADD_FAILURE() << "signed activations were accepted";
  } catch (const ffi::Error& err) {
    EXPECT_NE(std::string(err.what()).find("uint8"), std::string::npos) << err.what();
  }
  conv.a_scale = 0.0f;
  EXPECT_THROW(conv.Run(kName, 959003), ffi::Error);
  Q8Conv wide(Q8Case{1, 2, 2, 1026, 8, false, false, Activation::kNone, 63}, 4);
  try {
    wide.Run(kName, 959004);
    ADD_FAILURE() << "1026 input channels were accepted";
  } catch (const ffi::Error& err) {
    EXPECT_NE(std::string(err.what()).find("1024"), std::string::npos) << err.what();
  }
}

}  // namespace
}  // namespace ember::kernels
