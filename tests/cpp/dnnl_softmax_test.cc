// ember.dnnl.softmax against a double-precision reference, along every axis of tensors of 1 to 4
// dims (large values included: the kernel must subtract the max), and its refusals.
#include <gtest/gtest.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>

#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "dnnl_test_util.h"
#include "ember/kernels/dnnl_kernels.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;

using testing::Dl;
using testing::kF32;

struct SoftmaxCase {
  std::vector<int64_t> shape;
  int64_t axis;  // may be negative
};

class SoftmaxTest : public ::testing::TestWithParam<SoftmaxCase> {};

TEST_P(SoftmaxTest, MatchesTheReference) {
  SoftmaxCase t = GetParam();
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.softmax");
  ASSERT_TRUE(fn.has_value());
  const int64_t ndim = static_cast<int64_t>(t.shape.size());
  const int64_t axis = t.axis < 0 ? t.axis + ndim : t.axis;
  const int64_t count = std::accumulate(t.shape.begin(), t.shape.end(), int64_t{1},
                                        [](int64_t a, int64_t b) { return a * b; });
  std::mt19937 rng(static_cast<uint32_t>(count + axis));
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(count)), out(x.size(), -1.0f);
  for (float& v : x) v = normal(rng);
  x[0] = 80.0f;  // exp(80) overflows float: only a max-subtracting softmax gets this row right
  DLTensor tx = Dl(x.data(), kF32, t.shape), tout = Dl(out.data(), kF32, t.shape);
  (*fn)(&tx, t.axis, &tout);

  int64_t inner = 1;
  for (int64_t d = axis + 1; d < ndim; ++d) inner *= t.shape[static_cast<size_t>(d)];
  const int64_t len = t.shape[static_cast<size_t>(axis)];
  const int64_t outer = count / (inner * len);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return static_cast<size_t>((o * len + k) * inner + i); };
      double max = -INFINITY, sum = 0;
      for (int64_t k = 0; k < len; ++k) max = std::max(max, static_cast<double>(x[at(k)]));
      for (int64_t k = 0; k < len; ++k) sum += std::exp(static_cast<double>(x[at(k)]) - max);
      for (int64_t k = 0; k < len; ++k) {
        const double want = std::exp(static_cast<double>(x[at(k)]) - max) / sum;
        ASSERT_NEAR(out[at(k)], want, 1e-6 + 1e-5 * want) << "outer " << o << " inner " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SoftmaxTest,
    ::testing::Values(SoftmaxCase{{7}, 0},                 // one row
                      SoftmaxCase{{5, 33}, -1},            // odd length, last axis
                      SoftmaxCase{{2, 3, 16, 16}, 3},      // attention-like
                      SoftmaxCase{{4, 9, 6}, 1},           // a middle axis
                      SoftmaxCase{{2, 3, 128, 128}, -1},   // big enough to run in parallel
                      SoftmaxCase{{3, 1}, 1}));            // a length-1 axis: all ones

TEST(Softmax, RefusesBadAxesAndShapes) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.softmax");
  ASSERT_TRUE(fn.has_value());
  std::vector<float> x(6), out(6);
  std::vector<int64_t> shape{2, 3}, other{3, 2};
  DLTensor tx = Dl(x.data(), kF32, shape), tout = Dl(out.data(), kF32, shape),
           wrong = Dl(out.data(), kF32, other);
  auto message = [&](DLTensor* o, int64_t axis) -> std::string {
    try {
      (*fn)(&tx, axis, o);
    } catch (const ffi::Error& err) {
      return err.message();
    }
    return "";
  };
  EXPECT_NE(message(&tout, 2).find("out of range"), std::string::npos);
  EXPECT_NE(message(&tout, -3).find("out of range"), std::string::npos);
  EXPECT_NE(message(&wrong, 1).find("shape"), std::string::npos);
}

}  // namespace
}  // namespace ember::kernels
