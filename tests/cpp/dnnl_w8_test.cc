// ember.dnnl.conv2d_w8 / matmul_w8 (weight-only int8) against their float kernels run on the
// dequantized weights: the one-time prepack dequantizes w * scale exactly as numpy would, so the
// outputs must be bit-identical; a naive float reference checks that both are right.
#include <gtest/gtest.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>

#include <cmath>
#include <random>
#include <vector>

#include "dnnl_test_util.h"
#include "ember/kernels/dnnl_kernels.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;

using testing::Blocked;
using testing::Dl;
using testing::kF32;
using testing::kS8;
using testing::Nhwc;

struct ConvCase {
  int64_t n, h, w, c, o, k, stride, pad, dilation, groups;
  bool blocked, bias, residual, relu;
};

class Conv2dW8Test : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dW8Test, EqualsTheFloatKernelOnDequantizedWeights) {
  const ConvCase t = GetParam();
  RegisterDnnlKernels();
  auto w8 = ffi::Function::GetGlobal("ember.dnnl.conv2d_w8");
  auto f32 = ffi::Function::GetGlobal("ember.dnnl.conv2d");
  ASSERT_TRUE(w8.has_value() && f32.has_value());
  const int64_t span = t.dilation * (t.k - 1) + 1;
  const int64_t oh = (t.h + 2 * t.pad - span) / t.stride + 1, ow = (t.w + 2 * t.pad - span) / t.stride + 1;
  const int64_t cg = t.c / t.groups, og = t.o / t.groups;
  auto index = t.blocked ? Blocked : Nhwc;
  std::mt19937 rng(static_cast<uint32_t>(t.c * 17 + t.o + t.groups * 3 + t.k));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<float> x(static_cast<size_t>(t.n * t.h * t.w * t.c)), scales(static_cast<size_t>(t.o)),
      bias(static_cast<size_t>(t.o)), residual(static_cast<size_t>(t.n * oh * ow * t.o)),
      out_w8(residual.size(), -7.0f), out_f32(residual.size(), -9.0f);
  for (float& v : x) v = normal(rng);
  for (float& v : bias) v = normal(rng);
  for (float& v : residual) v = normal(rng);
  for (size_t j = 0; j < scales.size(); ++j) scales[j] = 0.0037f * static_cast<float>(1 + j % 5);
  std::vector<int8_t> w(static_cast<size_t>(t.o * t.k * t.k * cg));  // OHWI
  for (int8_t& v : w) v = static_cast<int8_t>(code(rng));
  std::vector<float> dequantized(w.size());
  const size_t per_channel = w.size() / static_cast<size_t>(t.o);
  for (size_t i = 0; i < w.size(); ++i) {
    dequantized[i] = static_cast<float>(w[i]) * scales[i / per_channel];
  }

  std::vector<int64_t> x_shape = t.blocked ? std::vector<int64_t>{t.n, t.c / 8, t.h, t.w, 8}
                                           : std::vector<int64_t>{t.n, t.h, t.w, t.c};
  std::vector<int64_t> out_shape = t.blocked ? std::vector<int64_t>{t.n, t.o / 8, oh, ow, 8}
                                             : std::vector<int64_t>{t.n, oh, ow, t.o};
  std::vector<int64_t> w_shape{t.o, t.k, t.k, cg}, s_shape{t.o};
  DLTensor tx = Dl(x.data(), kF32, x_shape), tw = Dl(w.data(), kS8, w_shape),
           twf = Dl(dequantized.data(), kF32, w_shape), ts = Dl(scales.data(), kF32, s_shape),
           tb = Dl(bias.data(), kF32, s_shape), tr = Dl(residual.data(), kF32, out_shape),
           tout_w8 = Dl(out_w8.data(), kF32, out_shape), tout_f32 = Dl(out_f32.data(), kF32, out_shape);
  const int64_t id = 515000 + t.c * 100 + t.o * 10 + t.groups + (t.blocked ? 7 : 0);
  (*w8)(&tx, &tw, &ts, &tb, &tr, t.stride, t.stride, t.pad, t.pad, t.pad, t.pad, t.dilation,
        t.dilation, t.groups, int64_t{t.bias}, int64_t{t.residual}, int64_t{t.relu ? 1 : 0}, id,
        0.0, 0.0, &tout_w8);
  (*f32)(&tx, &twf, &tb, &tr, t.stride, t.stride, t.pad, t.pad, t.pad, t.pad, t.dilation,
         t.dilation, t.groups, int64_t{t.bias}, int64_t{t.residual}, int64_t{t.relu ? 1 : 0},
         id + 1, 0.0, 0.0, &tout_f32);

  for (int64_t b = 0; b < t.n; ++b) {
    for (int64_t y = 0; y < oh; ++y) {
      for (int64_t xo = 0; xo < ow; ++xo) {
        for (int64_t oc = 0; oc < t.o; ++oc) {
          const int64_t g = oc / og;
          double acc = 0.0;
          for (int64_t ky = 0; ky < t.k; ++ky) {
            for (int64_t kx = 0; kx < t.k; ++kx) {
              const int64_t iy = y * t.stride - t.pad + ky * t.dilation;
              const int64_t ix = xo * t.stride - t.pad + kx * t.dilation;
              if (iy < 0 || iy >= t.h || ix < 0 || ix >= t.w) continue;
              for (int64_t ci = 0; ci < cg; ++ci) {
                acc += static_cast<double>(x[static_cast<size_t>(index(b, iy, ix, g * cg + ci, t.h, t.w, t.c))]) *
                       dequantized[static_cast<size_t>(((oc * t.k + ky) * t.k + kx) * cg + ci)];
              }
            }
          }
          const size_t at = static_cast<size_t>(index(b, y, xo, oc, oh, ow, t.o));
          double want = acc;
          if (t.bias) want += bias[static_cast<size_t>(oc)];
          if (t.residual) want += residual[at];
          if (t.relu) want = std::max(want, 0.0);
          ASSERT_EQ(out_w8[at], out_f32[at]) << "n " << b << " y " << y << " x " << xo << " o " << oc;
          ASSERT_NEAR(out_w8[at], want, 1e-4 + 1e-4 * std::fabs(want));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dW8Test,
    ::testing::Values(ConvCase{2, 7, 7, 16, 8, 3, 1, 1, 1, 1, false, true, false, true},   // 3x3
                      ConvCase{1, 9, 8, 8, 16, 3, 2, 1, 1, 1, false, true, true, false},   // stride 2
                      ConvCase{1, 8, 8, 16, 16, 3, 1, 2, 2, 2, false, false, false, true}, // dilated, groups
                      ConvCase{1, 8, 8, 16, 16, 3, 1, 1, 1, 16, false, true, false, true}, // depthwise
                      ConvCase{2, 6, 6, 16, 24, 1, 1, 0, 1, 1, true, true, true, true},    // 1x1 NCHW8c
                      ConvCase{1, 7, 5, 3, 5, 3, 1, 1, 1, 1, false, true, false, false})); // odd sizes

struct MatmulCase {
  int64_t m, k, n;
  bool bias, residual, relu;
};

class MatmulW8Test : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulW8Test, EqualsTheFloatKernelOnDequantizedWeights) {
  const MatmulCase c = GetParam();
  RegisterDnnlKernels();
  auto w8 = ffi::Function::GetGlobal("ember.dnnl.matmul_w8");
  auto f32 = ffi::Function::GetGlobal("ember.dnnl.matmul");
  ASSERT_TRUE(w8.has_value() && f32.has_value());
  std::mt19937 rng(static_cast<uint32_t>(c.m * 131 + c.k * 7 + c.n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<float> a(static_cast<size_t>(c.m * c.k)), bias(static_cast<size_t>(c.n)),
      residual(static_cast<size_t>(c.m * c.n)), scales(static_cast<size_t>(c.n)),
      out_w8(residual.size(), -1.0f), out_f32(residual.size(), -2.0f);
  for (float& v : a) v = normal(rng);
  for (float& v : bias) v = normal(rng);
  for (float& v : residual) v = normal(rng);
  for (size_t j = 0; j < scales.size(); ++j) scales[j] = 0.001f * static_cast<float>(1 + j % 7);
  std::vector<int8_t> b(static_cast<size_t>(c.k * c.n));
  for (int8_t& v : b) v = static_cast<int8_t>(code(rng));
  std::vector<float> dequantized(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    dequantized[i] = static_cast<float>(b[i]) * scales[i % static_cast<size_t>(c.n)];
  }
  std::vector<int64_t> a_shape{c.m, c.k}, b_shape{c.k, c.n}, s_shape{c.n}, out_shape{c.m, c.n};
  DLTensor ta = Dl(a.data(), kF32, a_shape), tb = Dl(b.data(), kS8, b_shape),
           tbf = Dl(dequantized.data(), kF32, b_shape), ts = Dl(scales.data(), kF32, s_shape),
           tbias = Dl(bias.data(), kF32, s_shape), tres = Dl(residual.data(), kF32, out_shape),
           tout_w8 = Dl(out_w8.data(), kF32, out_shape), tout_f32 = Dl(out_f32.data(), kF32, out_shape);
  const int64_t id = 616000 + c.k * 1000 + c.n;
  (*w8)(&ta, &tb, &ts, &tbias, &tres, int64_t{1}, int64_t{c.bias}, int64_t{c.residual},
        int64_t{c.relu ? 1 : 0}, id, 0.0, 0.0, &tout_w8);
  (*f32)(&ta, &tbf, &tbias, &tres, int64_t{1}, int64_t{c.bias}, int64_t{c.residual},
         int64_t{c.relu ? 1 : 0}, id + 1, 0.0, 0.0, &tout_f32);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double want = 0.0;
      for (int64_t p = 0; p < c.k; ++p) {
        want += static_cast<double>(a[static_cast<size_t>(i * c.k + p)]) *
                dequantized[static_cast<size_t>(p * c.n + j)];
      }
      const size_t at = static_cast<size_t>(i * c.n + j);
      if (c.bias) want += bias[static_cast<size_t>(j)];
      if (c.residual) want += residual[at];
      if (c.relu) want = std::max(want, 0.0);
      ASSERT_EQ(out_w8[at], out_f32[at]) << "row " << i << " col " << j;
      ASSERT_NEAR(out_w8[at], want, 1e-4 + 1e-4 * std::fabs(want));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulW8Test,
    ::testing::Values(MatmulCase{1, 64, 128, true, false, true},  // the digits MLP's first layer
                      MatmulCase{37, 129, 33, true, false, false},  // odd sizes
                      MatmulCase{64, 768, 256, true, true, true},   // N a multiple of 256 (padded pitch)
                      MatmulCase{5, 1, 1, false, false, false}));   // degenerate K = N = 1

TEST(WeightOnlyInt8, RefusesFloatWeightsAndMismatchedScales) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.matmul_w8");
  ASSERT_TRUE(fn.has_value());
  std::vector<float> a(4, 1.0f), wf(4, 1.0f), s(2, 1.0f), out(4);
  std::vector<int8_t> w(4, 1);
  std::vector<int64_t> shape{2, 2}, s_shape{2}, bad_s_shape{1};
  DLTensor ta = Dl(a.data(), kF32, shape), twf = Dl(wf.data(), kF32, shape),
           tw = Dl(w.data(), kS8, shape), ts = Dl(s.data(), kF32, s_shape),
           tbad = Dl(s.data(), kF32, bad_s_shape), tout = Dl(out.data(), kF32, shape);
  EXPECT_THROW((*fn)(&ta, &twf, &ts, &ts, &ta, int64_t{1}, int64_t{0}, int64_t{0}, int64_t{0},
                     int64_t{1}, 0.0, 0.0, &tout),
               ffi::Error);
  EXPECT_THROW((*fn)(&ta, &tw, &tbad, &ts, &ta, int64_t{1}, int64_t{0}, int64_t{0}, int64_t{0},
                     int64_t{2}, 0.0, 0.0, &tout),
               ffi::Error);
  EXPECT_THROW((*fn)(&ta, &tw, &ts, &ts, &ta, int64_t{0}, int64_t{0}, int64_t{0}, int64_t{0},
                     int64_t{3}, 0.0, 0.0, &tout),
               ffi::Error);
}

}  // namespace
}  // namespace ember::kernels
