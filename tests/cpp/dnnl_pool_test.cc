// ember.dnnl.max_pool2d against a scalar reference in every layout (NCHW, NHWC, NCHW8c), with
// pads (ignored, as ONNX's -inf), ceil_mode-sized outputs, and its refusals.
#include <gtest/gtest.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "dnnl_test_util.h"
#include "ember/kernels/dnnl_kernels.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;

using testing::Blocked;
using testing::Dl;
using testing::kF32;
using testing::Nhwc;

enum Layout : int64_t { kNchw = 0, kNhwc = 1, kNchw8c = 2 };

struct PoolCase {
  int64_t n, c, h, w;
  int64_t pool, stride, pad;  // same for both axes, pads on every side
  int64_t out_h, out_w;       // what the compiler asks for (larger than floor: ceil_mode)
};

int64_t Index(Layout layout, int64_t n, int64_t y, int64_t x, int64_t c, int64_t h, int64_t w,
              int64_t channels) {
  if (layout == kNhwc) return Nhwc(n, y, x, c, h, w, channels);
  if (layout == kNchw8c) return Blocked(n, y, x, c, h, w, channels);
  return ((n * channels + c) * h + y) * w + x;
}

std::vector<int64_t> Shape(Layout layout, int64_t n, int64_t c, int64_t h, int64_t w) {
  if (layout == kNhwc) return {n, h, w, c};
  if (layout == kNchw8c) return {n, c / 8, h, w, 8};
  return {n, c, h, w};
}

class MaxPoolTest : public ::testing::TestWithParam<std::tuple<PoolCase, Layout>> {};

TEST_P(MaxPoolTest, MatchesTheReference) {
  const auto [t, layout] = GetParam();
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.max_pool2d");
  ASSERT_TRUE(fn.has_value());
  std::vector<int64_t> in_shape = Shape(layout, t.n, t.c, t.h, t.w);
  std::vector<int64_t> out_shape = Shape(layout, t.n, t.c, t.out_h, t.out_w);
  std::vector<float> x(static_cast<size_t>(t.n * t.c * t.h * t.w));
  std::vector<float> out(static_cast<size_t>(t.n * t.c * t.out_h * t.out_w), NAN);
  std::mt19937 rng(static_cast<uint32_t>(x.size()));
  std::normal_distribution<float> normal(-3.0f, 1.0f);  // mostly negative: a pad read as 0 shows
  for (float& v : x) v = normal(rng);
  DLTensor tx = Dl(x.data(), kF32, in_shape), tout = Dl(out.data(), kF32, out_shape);
  (*fn)(&tx, static_cast<int64_t>(layout), t.pool, t.pool, t.stride, t.stride, t.pad, t.pad, t.pad,
        t.pad, &tout);
  for (int64_t n = 0; n < t.n; ++n) {
    for (int64_t c = 0; c < t.c; ++c) {
      for (int64_t oy = 0; oy < t.out_h; ++oy) {
        for (int64_t ox = 0; ox < t.out_w; ++ox) {
          float want = -INFINITY;
          for (int64_t ky = 0; ky < t.pool; ++ky) {
            for (int64_t kx = 0; kx < t.pool; ++kx) {
              const int64_t y = oy * t.stride - t.pad + ky, xx = ox * t.stride - t.pad + kx;
              if (y < 0 || y >= t.h || xx < 0 || xx >= t.w) continue;
              want = std::max(want, x[static_cast<size_t>(Index(layout, n, y, xx, c, t.h, t.w, t.c))]);
            }
          }
          ASSERT_EQ(out[static_cast<size_t>(Index(layout, n, oy, ox, c, t.out_h, t.out_w, t.c))], want)
              << "n " << n << " c " << c << " y " << oy << " x " << ox;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MaxPoolTest,
    ::testing::Combine(
        ::testing::Values(PoolCase{32, 32, 8, 8, 2, 2, 0, 4, 4},        // the digits CNN
                          PoolCase{2, 16, 28, 28, 3, 2, 1, 14, 14},     // ResNet's stem pool
                          PoolCase{3, 8, 7, 9, 2, 2, 0, 3, 4},          // odd sizes: floor
                          PoolCase{3, 8, 7, 9, 2, 2, 0, 4, 5},          // the same, ceil_mode
                          PoolCase{2, 24, 10, 10, 3, 3, 1, 4, 4},       // ceil_mode with pads
                          PoolCase{1, 8, 5, 5, 5, 1, 2, 5, 5},          // windows mostly pads
                          PoolCase{4, 64, 56, 56, 3, 2, 1, 28, 28}),    // big: runs in parallel
        ::testing::Values(kNchw, kNhwc, kNchw8c)));

TEST(MaxPool, RefusesBadLayoutsShapesAndWindows) {
  RegisterDnnlKernels();
  auto fn = ffi::Function::GetGlobal("ember.dnnl.max_pool2d");
  ASSERT_TRUE(fn.has_value());
  std::vector<float> x(2 * 8 * 6 * 6), out(2 * 8 * 3 * 3);
  std::vector<int64_t> nhwc{2, 6, 6, 8}, out_nhwc{2, 3, 3, 8}, too_big{2, 5, 5, 8},
      other_c{2, 3, 3, 16};
  DLTensor tx = Dl(x.data(), kF32, nhwc), tout = Dl(out.data(), kF32, out_nhwc),
           big = Dl(out.data(), kF32, too_big), wrong_c = Dl(out.data(), kF32, other_c);
  auto message = [&](int64_t layout, int64_t pool, int64_t stride, DLTensor* o) -> std::string {
    try {
      (*fn)(&tx, layout, pool, pool, stride, stride, 0, 0, 0, 0, o);
    } catch (const ffi::Error& err) {
      return err.message();
    }
    return "";
  };
  EXPECT_EQ(message(kNhwc, 2, 2, &tout), "");
  EXPECT_NE(message(3, 2, 2, &tout).find("layout must be"), std::string::npos);
  EXPECT_NE(message(kNchw8c, 2, 2, &tout).find("5-d"), std::string::npos);
  EXPECT_NE(message(kNhwc, 0, 2, &tout).find(">= 1"), std::string::npos);
  EXPECT_NE(message(kNhwc, 2, 2, &big).find("does not fit"), std::string::npos);
  EXPECT_NE(message(kNhwc, 2, 2, &wrong_c).find("channels"), std::string::npos);
}

}  // namespace
}  // namespace ember::kernels
