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

#include "ember/kernels/dnnl_kernels.h"
#include "ember/quant.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;

constexpr DLDataType kF32{kDLFloat, 32, 1};
constexpr DLDataType kS8{kDLInt, 8, 1};

DLTensor Dl(void* data, DLDataType dtype, std::vector<int64_t>& shape) {
  DLTensor t{};
  t.data = data;
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = dtype;
  t.shape = shape.data();
  return t;
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
                      Case{{5}, 1, 1, true, false, false, false}));    // degenerate K = N = 1

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
  std::vector<int8_t> w{1, 64, -2, 3};
  std::vector<int64_t> shape{2, 2}, s_shape{2};
  DLTensor ta = Dl(a.data(), kF32, shape), tw = Dl(w.data(), kS8, shape),
           ts = Dl(s.data(), kF32, s_shape), tout = Dl(out.data(), kF32, shape);
  auto call = [&] {
    (*fn)(&ta, &tw, &ts, &ts, &ta, 0.5, int64_t{1}, int64_t{0}, int64_t{0}, int64_t{0},
          int64_t{3}, 0.0, 0.0, &tout);
  };
#if defined(__x86_64__)
  if (!(__builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni"))) {
    try {
      call();
      FAIL() << "64 was accepted";
    } catch (const ffi::Error& err) {
      EXPECT_NE(std::string(err.message()).find("within [-63, 63]"), std::string::npos)
          << err.message();
    }
    return;
  }
#endif
  EXPECT_NO_THROW(call());
}

}  // namespace
}  // namespace ember::kernels
