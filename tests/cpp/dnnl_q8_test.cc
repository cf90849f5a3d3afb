// ember.dnnl.matmul_q8 against the int8 reference: activations quantized by quant::*Ref, an
// exact integer matmul, then the same dequantization, bias, residual and ReLU in float.
#include <gtest/gtest.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "dnnl_test_util.h"
#include "ember/kernels/dnnl_kernels.h"
#include "ember/quant.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;

using testing::Blocked;
using testing::Dl;
using testing::kF32;
using testing::kS8;
using testing::Nhwc;

// Runs `call`, which must throw an ffi::Error whose message contains `expected`.
template <typename Call>
void ExpectRefusal(const Call& call, const char* expected) {
  try {
    call();
    ADD_FAILURE() << "accepted; expected a refusal mentioning \"" << expected << "\"";
  } catch (const ffi::Error& err) {
    EXPECT_NE(std::string(err.message()).find(expected), std::string::npos) << err.message();
  }
}

struct Case {
  std::vector<int64_t> lead;  // a's dims before K (folded into M)
  int64_t k, n;
  bool a_unsigned, bias, residual, relu;
};

class MatmulQ8Test : public ::testing::TestWithParam<Case> {};

TEST_P(MatmulQ8Test, MatchesTheReference) {
  const Case c = GetParam();
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.matmul_q8");
  ASSERT_TRUE(fn.has_value());
  int64_t m = 1;
  for (int64_t d : c.lead) m *= d;
  std::mt19937 rng(static_cast<uint32_t>(m * 131 + c.k * 7 + c.n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // 7-bit weights, which every x86 CPU runs exactly (see RefusesWeightsThatWouldSaturate).
  std::uniform_int_distribution<int> code(-63, 63);

  std::vector<float> a(static_cast<size_t>(m * c.k)), bias(static_cast<size_t>(c.n)),
      residual(static_cast<size_t>(m * c.n)), scales(static_cast<size_t>(c.n)),
      out(static_cast<size_t>(m * c.n), -1.0f);
  for (float& v : a) v = c.a_unsigned ? std::fabs(normal(rng)) : normal(rng);
  for (float& v : bias) v = normal(rng);
  for (float& v : residual) v = normal(rng);
  for (size_t j = 0; j < scales.size(); ++j) scales[j] = 0.001f * static_cast<float>(1 + j % 7);
  std::vector<int8_t> b(static_cast<size_t>(c.k * c.n));
  for (int8_t& v : b) v = static_cast<int8_t>(code(rng));
  const float a_scale = c.a_unsigned ? 4.0f / 255.0f : 4.0f / 127.0f;

  std::vector<int64_t> a_shape = c.lead, b_shape{c.k, c.n}, s_shape{c.n}, out_shape = c.lead;
  a_shape.push_back(c.k);
  out_shape.push_back(c.n);
  std::vector<int64_t> res_shape = out_shape;
  DLTensor ta = Dl(a.data(), kF32, a_shape), tb = Dl(b.data(), kS8, b_shape),
           ts = Dl(scales.data(), kF32, s_shape), tbias = Dl(bias.data(), kF32, s_shape),
           tres = Dl(residual.data(), kF32, res_shape), tout = Dl(out.data(), kF32, out_shape);
  (*fn)(&ta, &tb, &ts, &tbias, &tres, static_cast<double>(a_scale), int64_t{c.a_unsigned},
        int64_t{c.bias}, int64_t{c.residual}, int64_t{c.relu ? 1 : 0},
        int64_t{9000 + c.k * 1000 + c.n}, 0.0, 0.0, &tout);

  // The reference: quantize, integer matmul, dequantize, epilogue.
  std::vector<int32_t> qa(a.size());
  if (c.a_unsigned) {
    std::vector<uint8_t> q(a.size());
    quant::QuantizeU8Ref(a.data(), a.size(), {a_scale, 0}, q.data());
    qa.assign(q.begin(), q.end());
  } else {
    std::vector<int8_t> q(a.size());
    quant::QuantizeS8Ref(a.data(), a.size(), {a_scale, 0}, q.data());
    qa.assign(q.begin(), q.end());
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      int32_t acc = 0;
      for (int64_t p = 0; p < c.k; ++p) acc += qa[i * c.k + p] * b[p * c.n + j];
      float want = static_cast<float>(acc) * a_scale * scales[j];
      if (c.bias) want += bias[j];
      if (c.residual) want += residual[i * c.n + j];
      if (c.relu) want = std::max(want, 0.0f);
      const float got = out[i * c.n + j];
      ASSERT_NEAR(got, want, 1e-5f + 1e-5f * std::fabs(want)) << "row " << i << " col " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulQ8Test,
    ::testing::Values(Case{{1}, 64, 128, true, true, false, true},    // the digits MLP's first layer
                      Case{{37}, 129, 33, false, true, false, false},  // odd sizes, signed
                      Case{{2, 3}, 16, 8, true, false, true, false},   // folded batch, residual
                      Case{{64}, 768, 96, false, true, true, true},    // BERT-like, everything on
                      Case{{5}, 1, 1, true, false, false, false},      // degenerate K = N = 1
                      // 147,000 activation values: quantized in parallel chunks
                      Case{{2100}, 70, 24, false, true, false, false}));

TEST(MatmulQ8, RefusesFloatWeightsAndABadScale) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.matmul_q8");
  ASSERT_TRUE(fn.has_value());
  std::vector<float> a(4, 1.0f), wf(4, 1.0f), s(2, 1.0f), out(4);
  std::vector<int8_t> w(4, 1);
  std::vector<int64_t> shape{2, 2}, s_shape{2};
  DLTensor ta = Dl(a.data(), kF32, shape), twf = Dl(wf.data(), kF32, shape),
           tw = Dl(w.data(), kS8, shape), ts = Dl(s.data(), kF32, s_shape),
           tout = Dl(out.data(), kF32, shape);
  EXPECT_THROW((*fn)(&ta, &twf, &ts, &ts, &ta, 0.5, int64_t{1}, int64_t{0}, int64_t{0}, int64_t{0},
                     int64_t{1}, 0.0, 0.0, &tout),
               ffi::Error);
  EXPECT_THROW((*fn)(&ta, &tw, &ts, &ts, &ta, 0.0, int64_t{1}, int64_t{0}, int64_t{0}, int64_t{0},
                     int64_t{2}, 0.0, 0.0, &tout),
               ffi::Error);
}

TEST(MatmulQ8, RefusesWeightsThatWouldSaturateOnCpusWithoutVnni) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.matmul_q8");
  ASSERT_TRUE(fn.has_value());
  std::vector<float> a(4, 1.0f), s(2, 1.0f), out(4);
  std::vector<int8_t> w{1, 65, -2, 3};
  std::vector<int64_t> shape{2, 2}, s_shape{2};
  DLTensor ta = Dl(a.data(), kF32, shape), tw = Dl(w.data(), kS8, shape),
           ts = Dl(s.data(), kF32, s_shape), tout = Dl(out.data(), kF32, shape);
  auto call = [&] {
    (*fn)(&ta, &tw, &ts, &ts, &ta, 0.5, int64_t{1}, int64_t{0}, int64_t{0}, int64_t{0},
          int64_t{3}, 0.0, 0.0, &tout);
  };
#if defined(__x86_64__)
  if (!(__builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni"))) {
    ExpectRefusal(call, "within [-64, 64]");  // 65
    return;
  }
#endif
  EXPECT_NO_THROW(call());
}

// Asymmetric activations (ONNX Runtime's quantizer: uint8 with a zero point near 128 for signed
// values): out = a_scale * b_scales[n] * ((qa - zp) x b) + bias, exactly as the integer reference.
TEST(MatmulQ8, ActivationsWithAZeroPointMatchTheReference) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.matmul_q8");
  ASSERT_TRUE(fn.has_value());
  constexpr int64_t kM = 9, kK = 70, kN = 24;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(-64, 64);
  struct Variant {
    bool a_unsigned, bias;
    int32_t zero;
  };
  for (const Variant v : {Variant{true, true, 128}, Variant{true, false, 37}, Variant{false, true, -20}}) {
    std::vector<float> a(kM * kK), bias(kN), scales(kN), out(kM * kN, -1.0f);
    for (float& x : a) x = 1.5f * normal(rng);
    for (float& x : bias) x = normal(rng);
    for (size_t j = 0; j < scales.size(); ++j) scales[j] = 0.001f * static_cast<float>(1 + j % 7);
    std::vector<int8_t> b(kK * kN);
    for (int8_t& x : b) x = static_cast<int8_t>(code(rng));
    const float a_scale = 6.0f / 255.0f;
    std::vector<int64_t> a_shape{kM, kK}, b_shape{kK, kN}, s_shape{kN}, out_shape{kM, kN};
    DLTensor ta = Dl(a.data(), kF32, a_shape), tb = Dl(b.data(), kS8, b_shape),
             ts = Dl(scales.data(), kF32, s_shape), tbias = Dl(bias.data(), kF32, s_shape),
             tout = Dl(out.data(), kF32, out_shape);
    for (int round = 0; round < 2; ++round) {  // the second call reuses the cached column sums
      (*fn)(&ta, &tb, &ts, &tbias, &ta, static_cast<double>(a_scale), int64_t{v.a_unsigned},
            int64_t{v.bias}, int64_t{0}, int64_t{0}, int64_t{5100 + v.zero}, 0.0, 0.0,
            int64_t{v.zero}, &tout);
      std::vector<int32_t> qa(a.size());
      if (v.a_unsigned) {
        std::vector<uint8_t> q(a.size());
        quant::QuantizeU8Ref(a.data(), a.size(), {a_scale, v.zero}, q.data());
        qa.assign(q.begin(), q.end());
      } else {
        std::vector<int8_t> q(a.size());
        quant::QuantizeS8Ref(a.data(), a.size(), {a_scale, v.zero}, q.data());
        qa.assign(q.begin(), q.end());
      }
      for (int64_t i = 0; i < kM; ++i) {
        for (int64_t j = 0; j < kN; ++j) {
          int32_t acc = 0;
          for (int64_t p = 0; p < kK; ++p) acc += (qa[i * kK + p] - v.zero) * b[p * kN + j];
          float want = static_cast<float>(acc) * a_scale * scales[j];
          if (v.bias) want += bias[j];
          ASSERT_NEAR(out[i * kN + j], want, 1e-4f + 1e-5f * std::fabs(want))
              << "zero point " << v.zero << " row " << i << " col " << j;
        }
      }
    }
  }
}

TEST(MatmulQ8, RefusesAZeroPointOutsideTheActivationType) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.matmul_q8");
  ASSERT_TRUE(fn.has_value());
  std::vector<float> a(4, 1.0f), s(2, 1.0f), out(4);
  std::vector<int8_t> w{1, 2, -2, 3};
  std::vector<int64_t> shape{2, 2}, s_shape{2};
  DLTensor ta = Dl(a.data(), kF32, shape), tw = Dl(w.data(), kS8, shape),
           ts = Dl(s.data(), kF32, s_shape), tout = Dl(out.data(), kF32, shape);
  ExpectRefusal(
      [&] {  // zero point 128 for int8 activations
        (*fn)(&ta, &tw, &ts, &ts, &ta, 0.5, int64_t{0}, int64_t{0}, int64_t{0}, int64_t{0},
              int64_t{5099}, 0.0, 0.0, int64_t{128}, &tout);
      },
      "outside [-128, 127]");
}

// The widest weights accepted without VNNI (|w| = 64, ONNX Runtime's reduce_range) against the
// largest activations: every u8 x s8 pair sums to +-2 * 255 * 64 = +-32640, the edge of int16,
// so a kernel that saturated or rounded would miss the exact integer result.
TEST(MatmulQ8, SixtyFourBitWeightsAtFullScaleActivationsAreExact) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.matmul_q8");
  ASSERT_TRUE(fn.has_value());
  constexpr int64_t kM = 3, kK = 64, kN = 16;
  for (const bool a_unsigned : {true, false}) {
    const float a_scale = a_unsigned ? 1.0f / 255.0f : 1.0f / 127.0f;
    std::vector<float> a(kM * kK), scales(kN, 1.0f), out(kM * kN, -1.0f);
    for (int64_t i = 0; i < kM; ++i) {  // row 0: all +max; row 1: all -max (signed); row 2: mixed
      for (int64_t p = 0; p < kK; ++p) {
        const float sign = a_unsigned || i == 0 ? 1.0f : (i == 1 ? -1.0f : (p % 2 != 0 ? -1.0f : 1.0f));
        a[i * kK + p] = sign;  // quantizes to +-255 (unsigned) or +-127 (signed)
      }
    }
    std::vector<int8_t> b(kK * kN);
    for (int64_t p = 0; p < kK; ++p) {
      for (int64_t j = 0; j < kN; ++j) {  // columns: all 64, all -64, or alternating
        const int pattern = static_cast<int>(j % 3);
        b[p * kN + j] = static_cast<int8_t>(pattern == 0 ? 64 : (pattern == 1 ? -64 : (p % 2 != 0 ? -64 : 64)));
      }
    }
    std::vector<int64_t> a_shape{kM, kK}, b_shape{kK, kN}, s_shape{kN}, out_shape{kM, kN};
    DLTensor ta = Dl(a.data(), kF32, a_shape), tb = Dl(b.data(), kS8, b_shape),
             ts = Dl(scales.data(), kF32, s_shape), tout = Dl(out.data(), kF32, out_shape);
    (*fn)(&ta, &tb, &ts, &ts, &ta, static_cast<double>(a_scale), int64_t{a_unsigned}, int64_t{0},
          int64_t{0}, int64_t{0}, int64_t{a_unsigned ? 4101 : 4102}, 0.0, 0.0, &tout);
    const int32_t q = a_unsigned ? 255 : 127;
    for (int64_t i = 0; i < kM; ++i) {
      for (int64_t j = 0; j < kN; ++j) {
        int64_t acc = 0;
        for (int64_t p = 0; p < kK; ++p) {
          acc += static_cast<int64_t>(a[i * kK + p] > 0 ? q : -q) * b[p * kN + j];
        }
        const float want = static_cast<float>(acc) * a_scale;
        ASSERT_NEAR(out[i * kN + j], want, 1e-6f * std::fabs(want) + 1e-6f)
            << (a_unsigned ? "u8" : "s8") << " row " << i << " col " << j;
      }
    }
  }
}

struct ConvCase {
  int64_t n, h, w, c, o, k, stride, pad, dilation, groups;
  bool a_unsigned, blocked, bias, residual, relu;
};

class Conv2dQ8Test : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dQ8Test, MatchesTheReference) {
  const ConvCase t = GetParam();
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.conv2d_q8");
  ASSERT_TRUE(fn.has_value());
  const int64_t span = t.dilation * (t.k - 1) + 1;
  const int64_t oh = (t.h + 2 * t.pad - span) / t.stride + 1, ow = (t.w + 2 * t.pad - span) / t.stride + 1;
  const int64_t cg = t.c / t.groups, og = t.o / t.groups;
  auto index = t.blocked ? Blocked : Nhwc;
  std::mt19937 rng(static_cast<uint32_t>(t.c * 31 + t.o + t.groups));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(-63, 63);
  std::vector<float> x(static_cast<size_t>(t.n * t.h * t.w * t.c)), scales(static_cast<size_t>(t.o)),
      bias(static_cast<size_t>(t.o)), residual(static_cast<size_t>(t.n * oh * ow * t.o)),
      out(residual.size(), -7.0f);
  for (float& v : x) v = t.a_unsigned ? std::fabs(normal(rng)) : normal(rng);
  for (float& v : bias) v = normal(rng);
  for (float& v : residual) v = normal(rng);
  for (size_t j = 0; j < scales.size(); ++j) scales[j] = 0.002f * static_cast<float>(1 + j % 5);
  std::vector<int8_t> w(static_cast<size_t>(t.o * t.k * t.k * cg));  // OHWI
  for (int8_t& v : w) v = static_cast<int8_t>(code(rng));
  const float a_scale = t.a_unsigned ? 4.0f / 255.0f : 4.0f / 127.0f;

  std::vector<int64_t> x_shape = t.blocked ? std::vector<int64_t>{t.n, t.c / 8, t.h, t.w, 8}
                                           : std::vector<int64_t>{t.n, t.h, t.w, t.c};
  std::vector<int64_t> out_shape = t.blocked ? std::vector<int64_t>{t.n, t.o / 8, oh, ow, 8}
                                             : std::vector<int64_t>{t.n, oh, ow, t.o};
  std::vector<int64_t> w_shape{t.o, t.k, t.k, cg}, s_shape{t.o};
  DLTensor tx = Dl(x.data(), kF32, x_shape), tw = Dl(w.data(), kS8, w_shape),
           ts = Dl(scales.data(), kF32, s_shape), tb = Dl(bias.data(), kF32, s_shape),
           tr = Dl(residual.data(), kF32, out_shape), tout = Dl(out.data(), kF32, out_shape);
  (*fn)(&tx, &tw, &ts, &tb, &tr, t.stride, t.stride, t.pad, t.pad, t.pad, t.pad, t.dilation,
        t.dilation, t.groups, int64_t{t.bias}, int64_t{t.residual}, int64_t{t.relu ? 1 : 0},
        int64_t{777000 + t.c * 100 + t.o * 10 + t.groups}, int64_t{t.a_unsigned},
        static_cast<double>(a_scale), 0.0, 0.0, &tout);

  // x's memory holds the activation in its own layout; quantization is elementwise.
  std::vector<int32_t> qx(x.size());
  if (t.a_unsigned) {
    std::vector<uint8_t> q(x.size());
    quant::QuantizeU8Ref(x.data(), x.size(), {a_scale, 0}, q.data());
    qx.assign(q.begin(), q.end());
  } else {
    std::vector<int8_t> q(x.size());
    quant::QuantizeS8Ref(x.data(), x.size(), {a_scale, 0}, q.data());
    qx.assign(q.begin(), q.end());
  }
  for (int64_t b = 0; b < t.n; ++b) {
    for (int64_t y = 0; y < oh; ++y) {
      for (int64_t xo = 0; xo < ow; ++xo) {
        for (int64_t oc = 0; oc < t.o; ++oc) {
          const int64_t g = oc / og;
          int32_t acc = 0;
          for (int64_t ky = 0; ky < t.k; ++ky) {
            for (int64_t kx = 0; kx < t.k; ++kx) {
              const int64_t iy = y * t.stride - t.pad + ky * t.dilation;
              const int64_t ix = xo * t.stride - t.pad + kx * t.dilation;
              if (iy < 0 || iy >= t.h || ix < 0 || ix >= t.w) continue;
              for (int64_t ci = 0; ci < cg; ++ci) {
                acc += qx[static_cast<size_t>(index(b, iy, ix, g * cg + ci, t.h, t.w, t.c))] *
                       w[static_cast<size_t>(((oc * t.k + ky) * t.k + kx) * cg + ci)];
              }
            }
          }
          const size_t at = static_cast<size_t>(index(b, y, xo, oc, oh, ow, t.o));
          float want = static_cast<float>(acc) * a_scale * scales[static_cast<size_t>(oc)];
          if (t.bias) want += bias[static_cast<size_t>(oc)];
          if (t.residual) want += residual[at];
          if (t.relu) want = std::max(want, 0.0f);
          ASSERT_NEAR(out[at], want, 1e-5f + 1e-5f * std::fabs(want))
              << "n " << b << " y " << y << " x " << xo << " o " << oc;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dQ8Test,
    ::testing::Values(
        ConvCase{2, 7, 7, 16, 8, 3, 1, 1, 1, 1, true, false, true, false, true},     // 3x3 NHWC
        ConvCase{1, 9, 8, 8, 16, 3, 2, 1, 1, 1, true, false, true, true, false},     // stride 2
        ConvCase{1, 8, 8, 16, 16, 3, 1, 2, 2, 2, true, false, false, false, true},   // dilated, 2 groups
        ConvCase{2, 6, 6, 16, 16, 1, 1, 0, 1, 1, true, false, true, true, true},     // 1x1
        ConvCase{1, 8, 8, 16, 16, 3, 1, 1, 1, 16, true, false, true, false, true},   // depthwise
        // 153,600 activation values: quantized in parallel chunks
        ConvCase{4, 40, 40, 24, 16, 3, 1, 1, 1, 1, true, false, true, true, true}));

// Runs conv2d_q8 (a 1x1 kernel, stride 1, no padding, no bias: ones throughout) with these
// shapes, `a_unsigned` and weight id, and expects a refusal mentioning `expected`.
void ExpectConv2dQ8Refusal(std::vector<int64_t> x_shape, std::vector<int64_t> w_shape,
                           std::vector<int64_t> out_shape, int64_t weight_id, int64_t a_unsigned,
                           const char* expected) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.conv2d_q8");
  ASSERT_TRUE(fn.has_value());
  auto count = [](const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  };
  std::vector<float> x(count(x_shape), 1.0f), s(static_cast<size_t>(w_shape[0]), 0.01f),
      out(count(out_shape));
  std::vector<int8_t> w(count(w_shape), 1);
  std::vector<int64_t> s_shape{w_shape[0]};
  DLTensor tx = Dl(x.data(), kF32, x_shape), tw = Dl(w.data(), kS8, w_shape),
           ts = Dl(s.data(), kF32, s_shape), tout = Dl(out.data(), kF32, out_shape);
  ExpectRefusal(
      [&] {
        (*fn)(&tx, &tw, &ts, &ts, &tx, 1, 1, 0, 0, 0, 0, 1, 1, 1, int64_t{0}, int64_t{0},
              int64_t{0}, weight_id, a_unsigned, 0.5, 0.0, 0.0, &tout);
      },
      expected);
}

// oneDNN has no optimized uint8 kernel for nChw8c activations: the kernel refuses rather than
// run its reference implementation (300x slower on the digits CNN); the compiler uses NHWC.
TEST(Conv2dQ8, RefusesLayoutsWithoutAnOptimizedInt8Kernel) {
  ExpectConv2dQ8Refusal({2, 2, 6, 6, 8}, {16, 1, 1, 16}, {2, 2, 6, 6, 8}, /*weight_id=*/6,
                        /*a_unsigned=*/1, "no optimized int8 kernel");
}

TEST(Conv2dQ8, RefusesSignedActivations) {
  ExpectConv2dQ8Refusal({1, 1, 2, 8}, {2, 1, 1, 8}, {1, 1, 2, 2}, /*weight_id=*/5,
                        /*a_unsigned=*/0, "unsigned");
}

// As MatmulQ8.SixtyFourBitWeights...: a 3x3 conv whose every input quantizes to 255, against
// output channels of all 64, all -64 and alternating weights.
TEST(Conv2dQ8, SixtyFourBitWeightsAtFullScaleActivationsAreExact) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.conv2d_q8");
  ASSERT_TRUE(fn.has_value());
  constexpr int64_t kH = 5, kC = 32, kO = 16, kK = 3, kOut = kH - kK + 1;
  std::vector<float> x(kH * kH * kC, 1.0f), s(kO, 1.0f), out(kOut * kOut * kO, -1.0f);
  std::vector<int8_t> w(kO * kK * kK * kC);  // OHWI
  for (int64_t o = 0; o < kO; ++o) {
    for (int64_t i = 0; i < kK * kK * kC; ++i) {
      const int pattern = static_cast<int>(o % 3);
      w[o * kK * kK * kC + i] = static_cast<int8_t>(pattern == 0 ? 64 : (pattern == 1 ? -64 : (i % 2 != 0 ? -64 : 64)));
    }
  }
  std::vector<int64_t> x_shape{1, kH, kH, kC}, w_shape{kO, kK, kK, kC}, s_shape{kO},
      o_shape{1, kOut, kOut, kO};
  DLTensor tx = Dl(x.data(), kF32, x_shape), tw = Dl(w.data(), kS8, w_shape),
           ts = Dl(s.data(), kF32, s_shape), tout = Dl(out.data(), kF32, o_shape);
  const float a_scale = 1.0f / 255.0f;
  (*fn)(&tx, &tw, &ts, &ts, &tx, 1, 1, 0, 0, 0, 0, 1, 1, 1, int64_t{0}, int64_t{0}, int64_t{0},
        int64_t{4103}, int64_t{1}, static_cast<double>(a_scale), 0.0, 0.0, &tout);
  for (int64_t at = 0; at < kOut * kOut; ++at) {
    for (int64_t o = 0; o < kO; ++o) {
      int64_t acc = 0;
      for (int64_t i = 0; i < kK * kK * kC; ++i) acc += 255 * w[o * kK * kK * kC + i];
      const float want = static_cast<float>(acc) * a_scale;
      ASSERT_NEAR(out[at * kO + o], want, 1e-6f * std::fabs(want) + 1e-6f) << "pixel " << at << " o " << o;
    }
  }
}

}  // namespace
}  // namespace ember::kernels
