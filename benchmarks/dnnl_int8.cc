// int8 vs fp32 in oneDNN (the kernel library ember dispatches to), on the shapes of the sample
// models at batch 32: ResNet-18's 3x3 convs and the BERT layer's matmuls. It answers whether
// int8 kernels can make a model >= 1.5x faster than fp32 on this CPU before the quantizer is
// built on them. Medians of 5 runs after one warm-up run; OMP_NUM_THREADS sets the threads.
//
//   cmake -S . -B build/bench -DEMBER_BUILD_BENCHMARKS=ON -DEMBER_BUILD_PYTHON=OFF && \
//     cmake --build build/bench --target dnnl_int8 && OMP_NUM_THREADS=2 build/bench/dnnl_int8
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

using namespace dnnl;  // NOLINT(google-build-using-namespace): a standalone benchmark
using tag = memory::format_tag;
using dt = memory::data_type;
engine eng(engine::kind::cpu, 0);
stream strm(eng);
double time_ms(primitive& p, std::unordered_map<int, memory>& args, int reps) {
  p.execute(strm, args); strm.wait();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto a = std::chrono::steady_clock::now();
    p.execute(strm, args); strm.wait();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
double conv(dt src_dt, dt wei_dt, dt dst_dt, int n, int c, int hw, int oc, int k, int reps, bool scales) {
  memory::dims src{n, c, hw, hw}, wei{oc, c, k, k}, dst{n, oc, hw, hw}, bias{oc};
  auto src_md = memory::desc(src, src_dt, tag::any);
  auto wei_md = memory::desc(wei, wei_dt, tag::any);
  auto dst_md = memory::desc(dst, dst_dt, tag::any);
  auto bias_md = memory::desc(bias, dt::f32, tag::a);
  primitive_attr attr;
  if (scales) { attr.set_scales_mask(DNNL_ARG_SRC, 0); attr.set_scales_mask(DNNL_ARG_WEIGHTS, 1); }
  post_ops po; po.append_eltwise(algorithm::eltwise_relu, 0, 0); attr.set_post_ops(po);
  auto pd = convolution_forward::primitive_desc(eng, prop_kind::forward_inference, algorithm::convolution_direct,
      src_md, wei_md, bias_md, dst_md, {1, 1}, {k / 2, k / 2}, {k / 2, k / 2}, attr);
  memory s(pd.src_desc(), eng), w(pd.weights_desc(), eng), d(pd.dst_desc(), eng), b(bias_md, eng);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, d}, {DNNL_ARG_BIAS, b}};
  memory ss, ws;
  if (scales) {
    ss = memory({{1}, dt::f32, tag::a}, eng); ws = memory({{oc}, dt::f32, tag::a}, eng);
    std::fill((float*)ss.get_data_handle(), (float*)ss.get_data_handle() + 1, 0.05f);
    std::fill((float*)ws.get_data_handle(), (float*)ws.get_data_handle() + oc, 0.01f);
    args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC] = ss; args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS] = ws;
  }
  auto p = convolution_forward(pd);
  std::printf("   impl %s\n", pd.impl_info_str());
  return time_ms(p, args, reps);
}
double mm_bench(dt a_dt, dt b_dt, dt c_dt, int m, int k, int n, int reps, bool scales) {
  auto a_md = memory::desc({m, k}, a_dt, tag::ab);
  auto b_md = memory::desc({k, n}, b_dt, tag::any);
  auto c_md = memory::desc({m, n}, c_dt, tag::ab);
  primitive_attr attr;
  if (scales) { attr.set_scales_mask(DNNL_ARG_SRC, 0); attr.set_scales_mask(DNNL_ARG_WEIGHTS, 2); }
  auto pd = matmul::primitive_desc(eng, a_md, b_md, c_md, attr);
  memory a(pd.src_desc(), eng), b(pd.weights_desc(), eng), c(pd.dst_desc(), eng);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
  memory ss, ws;
  if (scales) {
    ss = memory({{1}, dt::f32, tag::a}, eng); ws = memory({{n}, dt::f32, tag::a}, eng);
    std::fill((float*)ss.get_data_handle(), (float*)ss.get_data_handle() + 1, 0.05f);
    std::fill((float*)ws.get_data_handle(), (float*)ws.get_data_handle() + n, 0.01f);
    args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC] = ss; args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS] = ws;
  }
  auto p = dnnl::matmul(pd);
  std::printf("   impl %s\n", pd.impl_info_str());
  return time_ms(p, args, reps);
}
int main() {
  struct C { int c, hw; } convs[] = {{64, 56}, {128, 28}, {256, 14}, {512, 7}};
  for (auto cv : convs) {
    double f = conv(dt::f32, dt::f32, dt::f32, 32, cv.c, cv.hw, cv.c, 3, 5, false);
    double q = conv(dt::u8, dt::s8, dt::f32, 32, cv.c, cv.hw, cv.c, 3, 5, true);
    double q8 = conv(dt::u8, dt::s8, dt::u8, 32, cv.c, cv.hw, cv.c, 3, 5, true);
    std::printf("conv %dch %dx%d b32: f32 %.1f ms, u8s8->f32 %.1f ms (%.2fx), u8s8->u8 %.1f ms (%.2fx)\n", cv.c, cv.hw, cv.hw, f, q, f / q, q8, f / q8);
  }
  struct M { int m, k, n; } mms[] = {{4096, 768, 768}, {4096, 768, 3072}, {4096, 3072, 768}};
  for (auto mm : mms) {
    double f = mm_bench(dt::f32, dt::f32, dt::f32, mm.m, mm.k, mm.n, 5, false);
    double q = mm_bench(dt::u8, dt::s8, dt::f32, mm.m, mm.k, mm.n, 5, true);
    double qs = mm_bench(dt::s8, dt::s8, dt::f32, mm.m, mm.k, mm.n, 5, true);
    std::printf("matmul %dx%dx%d: f32 %.1f ms, u8s8 %.1f ms (%.2fx), s8s8 %.1f ms (%.2fx)\n", mm.m, mm.k, mm.n, f, q, f / q, qs, f / qs);
  }
}
