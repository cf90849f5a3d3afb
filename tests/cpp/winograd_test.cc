// ember.dnnl.conv2d_wino (Winograd F(2x2,3x3)) against a naive double-precision conv and against
// ember.dnnl.conv2d (oneDNN's direct conv) on the same arguments: odd H and W (tiles cut at the
// edges), channel counts that are not multiples of 8 (the portable tail of the AVX transforms),
// batch 1 and 3, with and without bias, residual and each supported activation; run on the
// OpenMP pool and inside a parallel region (a batch-splitting lane); and its refusals.
//
// Error budget: |out - reference| <= 2e-5 * S, where S = sum |x| |w| over the output's receptive
// field + |bias| + |residual| is the scale of what was summed. fp32 accumulation alone gives
// errors of a few 1e-7 S; Winograd's transforms sum up to 16 terms before and after the GEMM, which
// adds about one order of magnitude (benchmarks/winograd_conv.cc measures 1e-6 relative to the
// output's max on ResNet-18's shapes). Against ember.dnnl.conv2d the same budget applies twice.
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

#include "ember/kernels/dnnl_kernels.h"
#include "ember/kernels/winograd.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;

constexpr DLDataType kF32{kDLFloat, 32, 1};
constexpr double kBudget = 2e-5;

DLTensor Dl(void* data, std::vector<int64_t>& shape) {
  DLTensor t{};
  t.data = data;
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = kF32;
  t.shape = shape.data();
  return t;
}

struct WinoCase {
  int64_t n, h, w, c, k;
  bool bias, residual;
  Activation act;
};

// One conv's data: NHWC input and residual, OHWI weights, the reference output and its scale.
struct Conv {
  WinoCase t;
  std::vector<float> x, w, bias, residual;
  std::vector<double> want, scale;

  explicit Conv(const WinoCase& c, uint32_t seed) : t(c) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(static_cast<size_t>(c.n * c.h * c.w * c.c));
    w.resize(static_cast<size_t>(c.k * 9 * c.c));
    bias.resize(static_cast<size_t>(c.k));
    residual.resize(static_cast<size_t>(c.n * c.h * c.w * c.k));
    for (float& v : x) v = normal(rng);
    for (float& v : w) v = normal(rng) * 0.3f;
    for (float& v : bias) v = normal(rng);
    for (float& v : residual) v = normal(rng);
    want.resize(residual.size());
    scale.resize(residual.size());
    for (int64_t b = 0; b < c.n; ++b) {
      for (int64_t y = 0; y < c.h; ++y) {
        for (int64_t xo = 0; xo < c.w; ++xo) {
          for (int64_t o = 0; o < c.k; ++o) {
            double acc = 0, mag = 0;
            for (int64_t ky = 0; ky < 3; ++ky) {
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t iy = y - 1 + ky, ix = xo - 1 + kx;
                if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                for (int64_t ci = 0; ci < c.c; ++ci) {
                  const double p = static_cast<double>(x[static_cast<size_t>(((b * c.h + iy) * c.w + ix) * c.c + ci)]) *
                                   w[static_cast<size_t>(((o * 3 + ky) * 3 + kx) * c.c + ci)];
                  acc += p;
                  mag += std::fabs(p);
                }
              }
            }
            const size_t at = static_cast<size_t>(((b * c.h + y) * c.w + xo) * c.k + o);
            if (c.bias) acc += bias[static_cast<size_t>(o)], mag += std::fabs(bias[static_cast<size_t>(o)]);
            if (c.residual) acc += residual[at], mag += std::fabs(residual[at]);
            if (c.act == Activation::kRelu) acc = std::max(acc, 0.0);
            if (c.act == Activation::kClip) acc = std::min(std::max(acc, -0.5), 2.0);
            want[at] = acc;
            scale[at] = mag;
          }
        }
      }
    }
  }

  // Runs `kernel` (ember.dnnl.conv2d or conv2d_wino) into a fresh output.
  std::vector<float> Run(const char* kernel, int64_t weight_id) {
    auto fn = ffi::Function::GetGlobal(kernel);
    EXPECT_TRUE(fn.has_value()) << kernel;
    std::vector<float> out(residual.size(), std::numeric_limits<float>::quiet_NaN());
    std::vector<int64_t> x_shape{t.n, t.h, t.w, t.c}, w_shape{t.k, 3, 3, t.c}, b_shape{t.k},
        out_shape{t.n, t.h, t.w, t.k};
    DLTensor tx = Dl(x.data(), x_shape), tw = Dl(w.data(), w_shape), tb = Dl(bias.data(), b_shape),
             tr = Dl(residual.data(), out_shape), tout = Dl(out.data(), out_shape);
    const int64_t one = 1;
    (*fn)(&tx, &tw, &tb, &tr, one, one, one, one, one, one, one, one, one, int64_t{t.bias},
          int64_t{t.residual}, static_cast<int64_t>(t.act), weight_id, -0.5, 2.0, &tout);
    return out;
  }
};

int64_t IdOf(const WinoCase& t) { return 930000 + t.n * 100000 + t.h * 1000 + t.w * 10 + t.c * 7 + t.k; }

class WinogradTest : public ::testing::TestWithParam<WinoCase> {};

TEST(Winograd, ThinConvsUseTheOwnGemmWhereTheCpuHasAvx2) {
  if (!WinogradUsesAvx()) GTEST_SKIP() << "no AVX on this CPU";
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) GTEST_SKIP() << "no AVX2";
#endif
  EXPECT_TRUE(WinogradUsesThinGemm(16, 32));  // the digits CNN's conv
  EXPECT_TRUE(WinogradUsesThinGemm(32, 48));
  EXPECT_FALSE(WinogradUsesThinGemm(33, 48));  // wider: oneDNN's matmul
  EXPECT_FALSE(WinogradUsesThinGemm(16, 24));  // K not a multiple of 16
}

TEST_P(WinogradTest, MatchesTheReferenceAndTheDirectConv) {
  const WinoCase t = GetParam();
  RegisterDnnlKernels();
  Conv conv(t, static_cast<uint32_t>(t.c * 31 + t.k + t.h));
  const std::vector<float> wino = conv.Run("ember.dnnl.conv2d_wino", IdOf(t));
  const std::vector<float> direct = conv.Run("ember.dnnl.conv2d", IdOf(t));
  double worst = 0;  // largest error / scale seen, for the log
  for (size_t i = 0; i < wino.size(); ++i) {
    const double budget = kBudget * conv.scale[i] + 1e-6;
    ASSERT_NEAR(wino[i], conv.want[i], budget) << "at " << i;
    ASSERT_NEAR(wino[i], direct[i], 2 * budget) << "at " << i;
    worst = std::max(worst, std::fabs(wino[i] - conv.want[i]) / (conv.scale[i] + 1e-30));
  }
  std::printf("max |error| / scale = %.2e (budget %.0e; AVX transforms: %s; thin GEMM: %s)\n",
              worst, kBudget, WinogradUsesAvx() ? "yes" : "no",
              WinogradUsesThinGemm(t.c, t.k) ? "yes" : "no");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, WinogradTest,
    ::testing::Values(
        WinoCase{1, 7, 5, 3, 5, true, false, Activation::kRelu},        // tiny, odd, no AVX lanes
        WinoCase{3, 9, 11, 13, 10, true, true, Activation::kRelu},     // odd H, W; C, K % 8 != 0
        WinoCase{1, 8, 8, 16, 24, false, false, Activation::kNone},    // even, multiples of 8
        WinoCase{3, 15, 13, 20, 9, false, true, Activation::kClip},    // AVX + tails, clip
        WinoCase{2, 1, 1, 8, 8, true, true, Activation::kRelu},        // one pixel: one cut tile
        WinoCase{1, 2, 3, 9, 17, true, false, Activation::kNone},      // smaller than a tile's input
        WinoCase{1, 30, 30, 64, 64, true, true, Activation::kRelu},    // several blocks per thread
        WinoCase{3, 14, 14, 64, 72, true, false, Activation::kRelu},   // K != C, last block shorter
        WinoCase{1, 7, 7, 128, 128, false, true, Activation::kNone},   // ResNet-like, batch 1
        // C <= 32 and K % 16 == 0: the thin GEMM (GemmThinF32Avx2) instead of oneDNN's matmul
        WinoCase{32, 8, 8, 16, 32, true, false, Activation::kRelu},    // the digits CNN, 512 tiles
        WinoCase{3, 9, 7, 5, 16, true, true, Activation::kClip},       // 60 tiles: tails of 6
        WinoCase{2, 10, 10, 32, 48, false, true, Activation::kNone},   // the widest thin C
        WinoCase{2, 10, 10, 33, 48, true, false, Activation::kRelu}),  // one more: oneDNN again
    [](const ::testing::TestParamInfo<WinoCase>& param) {
      const WinoCase& c = param.param;
      return "n" + std::to_string(c.n) + "_" + std::to_string(c.h) + "x" + std::to_string(c.w) +
             "_c" + std::to_string(c.c) + "_k" + std::to_string(c.k) + (c.bias ? "_bias" : "") +
             (c.residual ? "_res" : "") + "_act" + std::to_string(static_cast<int>(c.act));
    });

TEST(Winograd, PlansAreCachedPerShapeAndThreadCount) {
  RegisterDnnlKernels();
  const WinoCase t{2, 6, 6, 8, 8, true, false, Activation::kRelu};
  Conv conv(t, 7);
  const int64_t id = 987654321;
  conv.Run("ember.dnnl.conv2d_wino", id);
  const size_t plans = WinogradCachedPlans();
  conv.Run("ember.dnnl.conv2d_wino", id);  // the same call: no new plan
  EXPECT_EQ(WinogradCachedPlans(), plans);
  Conv other({3, 6, 6, 8, 8, true, false, Activation::kRelu}, 7);  // another batch size: one more
  other.w = conv.w;
  other.Run("ember.dnnl.conv2d_wino", id);
  EXPECT_EQ(WinogradCachedPlans(), plans + 1);
}

// As a batch-splitting lane runs it: concurrently from the threads of a parallel region, each
// call single-threaded inside and with its own scratch, on one shared plan cache.
TEST(Winograd, RunsConcurrentlyInsideAParallelRegion) {
  RegisterDnnlKernels();
  const WinoCase t{2, 13, 11, 24, 16, true, true, Activation::kRelu};
  const int lanes = 4;
  std::vector<Conv> convs;
  for (int l = 0; l < lanes; ++l) convs.emplace_back(t, 100 + static_cast<uint32_t>(l));
  std::vector<std::vector<float>> outs(lanes);
  for (int round = 0; round < 3; ++round) {
#pragma omp parallel for num_threads(lanes) schedule(static, 1)
    for (int l = 0; l < lanes; ++l) outs[l] = convs[l].Run("ember.dnnl.conv2d_wino", 555000 + l);
    for (int l = 0; l < lanes; ++l) {
      for (size_t i = 0; i < outs[l].size(); ++i) {
        ASSERT_NEAR(outs[l][i], convs[l].want[i], kBudget * convs[l].scale[i] + 1e-6)
            << "lane " << l << " at " << i;
      }
    }
  }
}

// Weight-only int8 (conv2d_wino_w8): int8 OHWI weights with per-output-channel scales, against
// ember.dnnl.conv2d on the dequantized float weights and ember.dnnl.conv2d_w8 (oneDNN's direct
// conv on the same int8 weights), within twice the budget. Two scale sets on the same int8
// weights must not share a prepack: the compiler's weight id covers the scales.
TEST(Winograd, WeightOnlyInt8MatchesTheReferenceAndTheDirectConv) {
  RegisterDnnlKernels();
  const WinoCase t{2, 9, 7, 20, 12, true, true, Activation::kRelu};
  Conv conv(t, 77);
  std::vector<int8_t> w8(conv.w.size());
  std::vector<float> scales(static_cast<size_t>(t.k));
  const size_t per_k = static_cast<size_t>(9 * t.c);
  for (size_t k = 0; k < scales.size(); ++k) {
    float absmax = 0;
    for (size_t i = 0; i < per_k; ++i) absmax = std::max(absmax, std::fabs(conv.w[k * per_k + i]));
    scales[k] = absmax / 127.0f;
    for (size_t i = 0; i < per_k; ++i) {
      w8[k * per_k + i] = static_cast<int8_t>(std::lrint(conv.w[k * per_k + i] / scales[k]));
      conv.w[k * per_k + i] = static_cast<float>(w8[k * per_k + i]) * scales[k];
    }
  }
  // oneDNN's direct conv on the dequantized float weights (tested against the double-precision
  // reference above) is the reference here.
  const std::vector<float> want_float = conv.Run("ember.dnnl.conv2d", 771);

  auto run_w8 = [&](const char* kernel, const std::vector<float>& s, int64_t id) {
    auto fn = ffi::Function::GetGlobal(kernel);
    EXPECT_TRUE(fn.has_value()) << kernel;
    std::vector<float> out(conv.residual.size(), std::numeric_limits<float>::quiet_NaN());
    std::vector<float> scales_copy = s;
    std::vector<int64_t> x_shape{t.n, t.h, t.w, t.c}, w_shape{t.k, 3, 3, t.c}, k_shape{t.k},
        out_shape{t.n, t.h, t.w, t.k};
    DLTensor tx = Dl(conv.x.data(), x_shape), tw = Dl(w8.data(), w_shape),
             ts = Dl(scales_copy.data(), k_shape), tb = Dl(conv.bias.data(), k_shape),
             tr = Dl(conv.residual.data(), out_shape), tout = Dl(out.data(), out_shape);
    tw.dtype = DLDataType{kDLInt, 8, 1};
    const int64_t one = 1;
    (*fn)(&tx, &tw, &ts, &tb, &tr, one, one, one, one, one, one, one, one, one, int64_t{1},
          int64_t{1}, static_cast<int64_t>(t.act), id, 0.0, 0.0, &tout);
    return out;
  };
  const std::vector<float> wino = run_w8("ember.dnnl.conv2d_wino_w8", scales, 772);
  const std::vector<float> direct = run_w8("ember.dnnl.conv2d_w8", scales, 773);
  for (size_t i = 0; i < wino.size(); ++i) {
    const double budget = kBudget * conv.scale[i] + 1e-6;  // scale: of the float weights, ~equal
    ASSERT_NEAR(wino[i], want_float[i], 2 * budget) << "at " << i;
    ASSERT_NEAR(wino[i], direct[i], 2 * budget) << "at " << i;
  }
  // Doubled scales under another id: the outputs change (no stale prepack reused).
  std::vector<float> doubled = scales;
  for (float& v : doubled) v *= 2;
  const std::vector<float> wino2 = run_w8("ember.dnnl.conv2d_wino_w8", doubled, 774);
  const std::vector<float> direct2 = run_w8("ember.dnnl.conv2d_w8", doubled, 775);
  size_t differ = 0;
  for (size_t i = 0; i < wino2.size(); ++i) {
    ASSERT_NEAR(wino2[i], direct2[i], 4 * (kBudget * conv.scale[i] + 1e-6)) << "at " << i;
    differ += std::fabs(wino2[i] - wino[i]) > 1e-3 ? 1 : 0;
  }
  EXPECT_GT(differ, wino.size() / 4);
}

TEST(Winograd, RefusesWhatItDoesNotCover) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.conv2d_wino");
  ASSERT_TRUE(fn.has_value());
  std::vector<float> x(2 * 4 * 4 * 8, 1.0f), w(8 * 3 * 3 * 8, 1.0f), w5(8 * 5 * 5 * 8, 1.0f),
      b(8, 0.0f), out(x.size()), out2(2 * 2 * 2 * 8);
  std::vector<int64_t> xs{2, 4, 4, 8}, ws{8, 3, 3, 8}, w5s{8, 5, 5, 8}, bs{8}, o2s{2, 2, 2, 8},
      blocked{2, 1, 4, 4, 8};
  DLTensor tx = Dl(x.data(), xs), tw = Dl(w.data(), ws), tw5 = Dl(w5.data(), w5s),
           tb = Dl(b.data(), bs), tout = Dl(out.data(), xs), tout2 = Dl(out2.data(), o2s),
           tx8 = Dl(x.data(), blocked), tout8 = Dl(out.data(), blocked);
  const int64_t one = 1, zero = 0, relu = 1;
  auto call = [&](DLTensor* xi, DLTensor* wi, DLTensor* o, int64_t stride, int64_t pad,
                  int64_t dilation, int64_t groups, int64_t act) {
    (*fn)(xi, wi, &tb, xi, stride, stride, pad, pad, pad, pad, dilation, dilation, groups, one,
          zero, act, int64_t{424242}, 0.0, 0.0, o);
  };
  call(&tx, &tw, &tout, 1, 1, 1, 1, relu);  // the covered case runs
  EXPECT_THROW(call(&tx, &tw, &tout2, 2, 1, 1, 1, relu), ffi::Error);   // stride 2
  EXPECT_THROW(call(&tx, &tw, &tout, 1, 2, 2, 1, relu), ffi::Error);    // dilation 2
  EXPECT_THROW(call(&tx, &tw, &tout, 1, 1, 1, 2, relu), ffi::Error);    // groups 2
  EXPECT_THROW(call(&tx, &tw5, &tout, 1, 1, 1, 1, relu), ffi::Error);   // 5x5 kernel
  EXPECT_THROW(call(&tx8, &tw, &tout8, 1, 1, 1, 1, relu), ffi::Error);  // NCHW8c
  EXPECT_THROW(call(&tx, &tw, &tout, 1, 1, 1, 1, static_cast<int64_t>(Activation::kGeluErf)),
               ffi::Error);
  EXPECT_THROW(call(&tx, &tw, &tx, 1, 1, 1, 1, relu), ffi::Error);  // output aliases input
  try {
    call(&tx, &tw, &tout2, 2, 1, 1, 1, relu);
  } catch (const ffi::Error& err) {
    EXPECT_NE(std::string(err.what()).find("ember.dnnl.conv2d_wino"), std::string::npos) << err.what();
  }
}

}  // namespace
}  // namespace ember::kernels
