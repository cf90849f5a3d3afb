// Winograd F(2x2,3x3) against oneDNN's direct conv on ResNet-18's 3x3 stride-1 convs (issue 3).
//
// It answers whether a Winograd conv, 2.25x fewer multiplies, with its 16 GEMMs run by oneDNN's
// matmul, beats oneDNN 3.2's direct conv (brgconv, NHWC; oneDNN has no Winograd on AVX2) by
// enough to be worth a kernel: >= ~1.25x on the 56x56 and 28x28 layers at batch 32, and faster
// than ONNX Runtime there (benchmarks/winograd_vs_ort.py times ORT on the same shapes).
//
// Both convs: NHWC fp32 activations, OHWI weights prepacked once, stride 1, pad 1, bias and ReLU
// (and, with --residual, a residual add) fused. Winograd, per block of tiles (4x4 input, 2x2
// output; Lavin & Gray 2015):
//   V[e][t][c] = (B^T d B)[e]     input transform, AVX2, zero padding at the borders
//   M[e] = V[e] x U[e]            16 GEMMs [tiles, C] x [C, K]: one batched oneDNN matmul,
//                                 U[e][c][k] = (G g G^T)[e] transformed and prepacked once
//   Y = A^T M A + bias (+ residual), ReLU    output transform, AVX2
// Two ways to use the 2 cores, both timed (--mode to pick one):
//   blocks (wino-blk): OpenMP over blocks of tiles, each thread runs the transforms and a
//            single-threaded matmul on its own block (what ember.dnnl.conv2d_wino does);
//   pargemm (wino-par): blocks one after another, each transform split across threads and the
//            matmul multi-threaded.
// Block sizes: --tiles-blocks T / --tiles-pargemm T (default: DefaultTiles below, from --sweep,
// which times T = 32..1024 for both modes). --breakdown times each phase alone. --lanes 2 runs
// the batch as 2 concurrent single-threaded lanes of N/2, as ember runs batch 32 (EMBER_SPLIT_
// BATCHES). --residual adds the residual to the post-ops. --plane-pad 0 drops the padding of V's
// and M's planes (see Geometry).
//
// Each (shape, batch) times the candidates interleaved (the order rotates every round) and
// reports medians; --reps sets the rounds (default: >= 15 and ~1.5 s per candidate, at most 400).
// err is max |winograd - direct| / max |direct|; others is the share of the CPUs other processes
// used meanwhile. OMP_NUM_THREADS sets the threads.
//
//   cmake -S . -B build/bench -G Ninja -DEMBER_BUILD_BENCHMARKS=ON -DEMBER_BUILD_PYTHON=OFF
//     -DPython_EXECUTABLE=$PWD/.venv/bin/python && cmake --build build/bench --target winograd_conv
//   OMP_NUM_THREADS=2 build/bench/winograd_conv                      # batch 1 and 32
//   OMP_NUM_THREADS=2 build/bench/winograd_conv --batches 32 --lanes 2
#include <immintrin.h>
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Args = std::unordered_map<int, memory>;
constexpr auto kF32 = memory::data_type::f32;
constexpr int64_t kLanes = 8;  // floats per AVX2 vector

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// --- 64-byte aligned float buffers (RAII). ---
struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Floats = std::unique_ptr<float[], FreeDeleter>;

Floats AllocFloats(size_t count) {
  const size_t bytes = std::max<size_t>((count * sizeof(float) + 63) / 64 * 64, 64);
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return Floats(p);
}

struct Problem {
  int64_t n, h, w, c, k;
  bool residual;
  Floats x, wt, bias, res;  // NHWC input, OHWI weights, bias[K], NHWC residual

  int64_t InSize() const { return n * h * w * c; }
  int64_t OutSize() const { return n * h * w * k; }
};

Problem MakeProblem(int64_t n, int64_t hw, int64_t c, int64_t k, bool residual) {
  Problem p{n, hw, hw, c, k, residual, AllocFloats(n * hw * hw * c), AllocFloats(k * 9 * c),
            AllocFloats(k), AllocFloats(n * hw * hw * k)};
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  const float wscale = 1.f / std::sqrt(9.f * static_cast<float>(c));
  for (int64_t i = 0; i < p.InSize(); ++i) p.x[i] = uni(rng);
  for (int64_t i = 0; i < k * 9 * c; ++i) p.wt[i] = uni(rng) * wscale;
  for (int64_t i = 0; i < k; ++i) p.bias[i] = 0.1f * uni(rng);
  for (int64_t i = 0; i < p.OutSize(); ++i) p.res[i] = uni(rng);
  return p;
}

dnnl::post_ops PostOps(bool residual, const memory::desc& dst_md) {
  dnnl::post_ops ops;
  if (residual) ops.append_binary(dnnl::algorithm::binary_add, dst_md);
  ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  return ops;
}

// --- The baseline: oneDNN's direct conv, as ember.dnnl.conv2d builds it. ---
class DirectConv {
 public:
  explicit DirectConv(const Problem& p) {
    const memory::dims src{p.n, p.c, p.h, p.w}, wei{p.k, p.c, 3, 3}, dst{p.n, p.k, p.h, p.w};
    const memory::desc src_md(src, kF32, Tag::nhwc), dst_md(dst, kF32, Tag::nhwc);
    const memory::desc bias_md({p.k}, kF32, Tag::a);
    dnnl::primitive_attr attr;
    attr.set_post_ops(PostOps(p.residual, dst_md));
    const dnnl::convolution_forward::primitive_desc pd(
        Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md,
        memory::desc(wei, kF32, Tag::any), bias_md, dst_md, {1, 1}, {0, 0}, {1, 1}, {1, 1}, attr);
    impl_ = pd.impl_info_str();
    prim_ = dnnl::convolution_forward(pd);
    weights_ = memory(pd.weights_desc(), Engine());
    memory user(memory::desc(wei, kF32, Tag::ohwi), Engine(), p.wt.get());
    dnnl::reorder(user, weights_).execute(stream_, user, weights_);
    stream_.wait();
    args_ = {{DNNL_ARG_SRC, memory(src_md, Engine(), p.x.get())},
             {DNNL_ARG_WEIGHTS, weights_},
             {DNNL_ARG_BIAS, memory(bias_md, Engine(), p.bias.get())},
             {DNNL_ARG_DST, memory(dst_md, Engine(), DNNL_MEMORY_NONE)}};
    if (p.residual) {
      args_.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                    memory(dst_md, Engine(), p.res.get()));
    }
  }
  void Run(float* y) {
    args_.at(DNNL_ARG_DST).set_data_handle(y);
    prim_.execute(stream_, args_);
    stream_.wait();
  }
  const std::string& impl() const { return impl_; }

 private:
  dnnl::stream stream_{Engine()};
  dnnl::primitive prim_;
  memory weights_;
  Args args_;
  std::string impl_;
};

// --- Winograd F(2x2,3x3). ---
// U[e][c][k] = (G g G^T)[e] of weight g = w[k, :, :, c] (OHWI), G = [1 0 0; .5 .5 .5; .5 -.5 .5;
// 0 0 1].
std::vector<float> TransformWeights(const float* w, int64_t c_count, int64_t k_count) {
  std::vector<float> u(16 * c_count * k_count);
  for (int64_t k = 0; k < k_count; ++k) {
    for (int64_t c = 0; c < c_count; ++c) {
      float g[3][3], gg[4][3];
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) g[i][j] = w[((k * 3 + i) * 3 + j) * c_count + c];
      }
      for (int j = 0; j < 3; ++j) {  // G g
        gg[0][j] = g[0][j];
        gg[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
        gg[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
        gg[3][j] = g[2][j];
      }
      for (int i = 0; i < 4; ++i) {  // (G g) G^T
        const float r[4] = {gg[i][0], 0.5f * (gg[i][0] + gg[i][1] + gg[i][2]),
                            0.5f * (gg[i][0] - gg[i][1] + gg[i][2]), gg[i][2]};
        for (int j = 0; j < 4; ++j) u[((i * 4 + j) * c_count + c) * k_count + k] = r[j];
      }
    }
  }
  return u;
}

struct Geometry {
  int64_t n, h, w, c, k, th, tw, tiles;  // th x tw tiles per image, `tiles` in all
  // Floats added to each plane of V and M: with planes a multiple of 4 KiB apart, the 16 stores
  // (loads) of one tile's transform all map to one L1 set and thrash it (--plane-pad 0 shows it).
  int64_t pad;
  int64_t PlaneV(int64_t count) const { return count * c + pad; }
  int64_t PlaneM(int64_t count) const { return count * k + pad; }
};

// V[e][t][c] = (B^T d B)[e] for the `count` tiles from `first`, d the 4x4 input patch at
// (2 ty - 1, 2 tx - 1) (zero outside the image); B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
// Planes e are g.PlaneV(count) apart; only tiles [lo, hi) of the block are done (a thread's share).
void InputTransform(const Geometry& g, const float* x, int64_t first, int64_t count, int64_t lo,
                    int64_t hi, float* v) {
  const int64_t plane = g.PlaneV(count);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t tile = first + t;
    const int64_t img = tile / (g.th * g.tw), ty = tile / g.tw % g.th, tx = tile % g.tw;
    const int64_t y0 = 2 * ty - 1, x0 = 2 * tx - 1;
    bool valid[4][4];
    int64_t offset[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        const int64_t yy = y0 + i, xx = x0 + j;
        valid[i][j] = yy >= 0 && yy < g.h && xx >= 0 && xx < g.w;
        offset[i][j] = valid[i][j] ? ((img * g.h + yy) * g.w + xx) * g.c : 0;
      }
    }
    float* vt = v + t * g.c;
    for (int64_t c0 = 0; c0 < g.c; c0 += kLanes) {
      __m256 d[4][4];
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) {
          d[i][j] = valid[i][j] ? _mm256_loadu_ps(x + offset[i][j] + c0) : zero;
        }
      }
      __m256 r[4][4];  // B^T d
      for (int j = 0; j < 4; ++j) {
        r[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
        r[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
        r[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
        r[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
      }
      for (int i = 0; i < 4; ++i) {  // (B^T d) B
        float* out = vt + i * 4 * plane + c0;
        _mm256_storeu_ps(out, _mm256_sub_ps(r[i][0], r[i][2]));
        _mm256_storeu_ps(out + plane, _mm256_add_ps(r[i][1], r[i][2]));
        _mm256_storeu_ps(out + 2 * plane, _mm256_sub_ps(r[i][2], r[i][1]));
        _mm256_storeu_ps(out + 3 * plane, _mm256_sub_ps(r[i][1], r[i][3]));
      }
    }
  }
}

// Y = A^T m A + bias (+ residual), ReLU, for the `count` tiles from `first`, m read from
// M[e][t][k] (planes g.PlaneM(count) apart); A^T = [1 1 1 0; 0 1 -1 -1]. Outputs past the image's
// last row or column (odd H, W) are dropped. Tiles [lo, hi) of the block only.
void OutputTransform(const Geometry& g, const float* m, int64_t first, int64_t count, int64_t lo,
                     int64_t hi, const float* bias, const float* res, float* y) {
  const int64_t plane = g.PlaneM(count);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t tile = first + t;
    const int64_t img = tile / (g.th * g.tw), ty = tile / g.tw % g.th, tx = tile % g.tw;
    const int64_t oy = 2 * ty, ox = 2 * tx;
    const bool row1 = oy + 1 < g.h, col1 = ox + 1 < g.w;
    const int64_t base = ((img * g.h + oy) * g.w + ox) * g.k;
    const float* mt = m + t * g.k;
    for (int64_t k0 = 0; k0 < g.k; k0 += kLanes) {
      __m256 s[2][4];  // A^T m
      for (int j = 0; j < 4; ++j) {
        const __m256 m0 = _mm256_loadu_ps(mt + (0 * 4 + j) * plane + k0);
        const __m256 m1 = _mm256_loadu_ps(mt + (1 * 4 + j) * plane + k0);
        const __m256 m2 = _mm256_loadu_ps(mt + (2 * 4 + j) * plane + k0);
        const __m256 m3 = _mm256_loadu_ps(mt + (3 * 4 + j) * plane + k0);
        s[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        s[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
      }
      const __m256 b = _mm256_loadu_ps(bias + k0);
      for (int i = 0; i < 2; ++i) {
        if (i == 1 && !row1) break;
        __m256 out[2] = {_mm256_add_ps(_mm256_add_ps(s[i][0], s[i][1]), s[i][2]),
                         _mm256_sub_ps(_mm256_sub_ps(s[i][1], s[i][2]), s[i][3])};
        for (int j = 0; j < 2; ++j) {
          if (j == 1 && !col1) break;
          const int64_t at = base + (i * g.w + j) * g.k + k0;
          __m256 val = _mm256_add_ps(out[j], b);
          if (res != nullptr) val = _mm256_add_ps(val, _mm256_loadu_ps(res + at));
          _mm256_storeu_ps(y + at, _mm256_max_ps(val, zero));
        }
      }
    }
  }
}

// RAII: makes this thread's OpenMP regions (and so oneDNN's) use `threads` threads while alive.
class OmpThreads {
 public:
  explicit OmpThreads(int threads) : saved_(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

class WinogradConv {
 public:
  enum class Mode { kBlocks, kParallelGemm };

  WinogradConv(const Problem& p, Mode mode, int64_t block_tiles, int64_t plane_pad, int threads)
      : p_(p), mode_(mode), threads_(threads) {
    g_ = Geometry{p.n, p.h, p.w, p.c, p.k, (p.h + 1) / 2, (p.w + 1) / 2, 0, plane_pad};
    g_.tiles = g_.n * g_.th * g_.tw;
    if (p.c % kLanes != 0 || p.k % kLanes != 0) {
      std::fprintf(stderr, "winograd: C and K must be multiples of %lld\n", (long long)kLanes);
      std::exit(2);
    }
    // blocks: at least one block per thread, so that small problems use every core.
    block_ = std::min(block_tiles, g_.tiles);
    if (mode == Mode::kBlocks) block_ = std::min(block_, (g_.tiles + threads_ - 1) / threads_);
    const int64_t blocks = (g_.tiles + block_ - 1) / block_;
    const int64_t tail = g_.tiles - (blocks - 1) * block_;
    const int gemm_threads = mode == Mode::kBlocks ? 1 : threads_;
    u_ = TransformWeights(p.wt.get(), p.c, p.k);
    gemms_.push_back(MakeGemm(block_, gemm_threads));
    if (tail != block_) gemms_.push_back(MakeGemm(tail, gemm_threads));
    const int lanes = mode == Mode::kBlocks ? threads_ : 1;  // scratch sets
    for (int i = 0; i < lanes; ++i) {
      Lane lane;
      lane.v = AllocFloats(16 * g_.PlaneV(block_));
      lane.m = AllocFloats(16 * g_.PlaneM(block_));
      size_t scratch = 0;
      for (const Gemm& gm : gemms_) scratch = std::max(scratch, gm.scratch_md.get_size());
      lane.scratch = AllocFloats(scratch / sizeof(float) + 1);
      for (const Gemm& gm : gemms_) {
        lane.args.push_back({{DNNL_ARG_SRC, memory(gm.src_md, Engine(), lane.v.get())},
                             {DNNL_ARG_WEIGHTS, *gm.weights},
                             {DNNL_ARG_DST, memory(gm.dst_md, Engine(), lane.m.get())},
                             {DNNL_ARG_SCRATCHPAD,
                              memory(gm.scratch_md, Engine(), lane.scratch.get())}});
      }
      lanes_.push_back(std::move(lane));
    }
  }

  // Which phases Run does (--breakdown times them apart): input transform, GEMM, output transform.
  enum Phase { kInput = 1, kGemm = 2, kOutput = 4, kAll = 7 };
  void set_phases(int phases) { phases_ = phases; }

  void Run(float* y) {
    const float* res = p_.residual ? p_.res.get() : nullptr;
    const int64_t blocks = (g_.tiles + block_ - 1) / block_;
    if (mode_ == Mode::kBlocks) {
#pragma omp parallel num_threads(threads_)
      {
        Lane& lane = lanes_[omp_get_thread_num()];
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t first = b * block_, count = std::min(block_, g_.tiles - first);
          const size_t which = count == block_ ? 0 : 1;
          if (phases_ & kInput) InputTransform(g_, p_.x.get(), first, count, 0, count, lane.v.get());
          if (phases_ & kGemm) gemms_[which].prim.execute(lane.stream, lane.args[which]);
          if (phases_ & kOutput) {
            OutputTransform(g_, lane.m.get(), first, count, 0, count, p_.bias.get(), res, y);
          }
        }
      }
      return;
    }
    Lane& lane = lanes_[0];
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t first = b * block_, count = std::min(block_, g_.tiles - first);
      const size_t which = count == block_ ? 0 : 1;
#pragma omp parallel num_threads(threads_) if (phases_ & kInput)
      {
        const int64_t nt = omp_get_num_threads(), it = omp_get_thread_num();
        const int64_t lo = count * it / nt, hi = count * (it + 1) / nt;
        if (phases_ & kInput) InputTransform(g_, p_.x.get(), first, count, lo, hi, lane.v.get());
      }
      if (phases_ & kGemm) {
        gemms_[which].prim.execute(lane.stream, lane.args[which]);
        lane.stream.wait();
      }
      if (!(phases_ & kOutput)) continue;
#pragma omp parallel num_threads(threads_)
      {
        const int64_t nt = omp_get_num_threads(), it = omp_get_thread_num();
        const int64_t lo = count * it / nt, hi = count * (it + 1) / nt;
        OutputTransform(g_, lane.m.get(), first, count, lo, hi, p_.bias.get(), res, y);
      }
    }
  }

  int64_t block() const { return block_; }
  int64_t tiles() const { return g_.tiles; }
  const std::string& impl() const { return gemms_[0].impl; }

 private:
  struct Gemm {
    dnnl::matmul prim;
    memory::desc src_md, dst_md, scratch_md;
    std::shared_ptr<memory> weights;
    std::string impl;
  };
  struct Lane {
    Floats v, m, scratch;
    std::vector<Args> args;  // per Gemm
    dnnl::stream stream{Engine()};
  };

  Gemm MakeGemm(int64_t tiles, int threads) {
    const OmpThreads scope(threads);  // the primitive is built for (and its blocking fit to) this
    const memory::desc src_md({16, tiles, p_.c}, kF32, {g_.PlaneV(tiles), p_.c, 1});
    const memory::desc dst_md({16, tiles, p_.k}, kF32, {g_.PlaneM(tiles), p_.k, 1});
    const memory::desc wei_any({16, p_.c, p_.k}, kF32, Tag::any);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(Engine(), src_md, wei_any, dst_md, attr);
    Gemm gm{dnnl::matmul(pd), src_md, dst_md, pd.scratchpad_desc(), nullptr, pd.impl_info_str()};
    for (const auto& [md, mem] : packed_) {
      if (md == pd.weights_desc()) gm.weights = mem;
    }
    if (!gm.weights) {  // transformed weights, reordered once into the matmul's layout
      gm.weights = std::make_shared<memory>(pd.weights_desc(), Engine());
      memory user(memory::desc({16, p_.c, p_.k}, kF32, Tag::abc), Engine(), u_.data());
      dnnl::stream s(Engine());
      dnnl::reorder(user, *gm.weights).execute(s, user, *gm.weights);
      s.wait();
      packed_.emplace_back(pd.weights_desc(), gm.weights);
    }
    return gm;
  }

  const Problem& p_;
  Mode mode_;
  int threads_;
  int phases_ = kAll;
  Geometry g_{};
  int64_t block_ = 0;
  std::vector<float> u_;
  std::vector<std::pair<memory::desc, std::shared_ptr<memory>>> packed_;
  std::vector<Gemm> gemms_;
  std::vector<Lane> lanes_;
};

double MaxRelError(const float* a, const float* ref, int64_t count) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < count; ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - ref[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(ref[i])));
  }
  return diff / scale;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Share of all CPUs that other processes used since construction: busy time from /proc/stat minus
// this process's CPU time, over wall time x CPUs (as benchmarks/vs_onnxruntime.py's others%).
class OthersCpu {
 public:
  OthersCpu() : busy_(Busy()), own_(Own()), wall_(NowMs() / 1e3) {}
  double Fraction() const {
    const double capacity = (NowMs() / 1e3 - wall_) * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
    return capacity > 0 ? std::clamp((Busy() - busy_ - (Own() - own_)) / capacity, 0.0, 1.0) : 0.0;
  }

 private:
  static double Busy() {
    std::FILE* f = std::fopen("/proc/stat", "r");
    if (f == nullptr) return 0;
    unsigned long long v[8] = {};
    const int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                                &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    std::fclose(f);
    if (got != 8) return 0;
    return static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
           static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  static double Own() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  }
  double busy_, own_, wall_;
};

struct Candidate {
  std::string name;
  std::function<void(std::vector<Floats>&)> run;
  std::vector<Floats> out;  // one output per lane
  std::vector<double> times;
};

// Times the candidates interleaved: each round runs every candidate once, the order rotating.
void TimeInterleaved(std::vector<Candidate>& cands, int reps) {
  for (auto& c : cands) c.run(c.out);  // warm-up
  if (reps <= 0) {  // >= 15 rounds and ~1.5 s per candidate, at most 400
    double slowest = 0;
    for (auto& c : cands) {
      const double t0 = NowMs();
      c.run(c.out);
      slowest = std::max(slowest, NowMs() - t0);
    }
    reps = static_cast<int>(std::clamp(1500.0 / std::max(slowest, 1e-3), 15.0, 400.0));
  }
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < cands.size(); ++i) {
      Candidate& c = cands[(i + r) % cands.size()];
      const double t0 = NowMs();
      c.run(c.out);
      c.times.push_back(NowMs() - t0);
    }
  }
}

struct Options {
  std::vector<int64_t> batches{1, 32};
  bool residual = false;
  bool sweep = false;
  bool breakdown = false;
  int reps = 0;
  int64_t plane_pad = 16;
  int lanes = 1;
  int64_t tiles_blocks = 0, tiles_pargemm = 0;  // 0: defaults below
  std::string only;                             // "", "blocks" or "pargemm"
};

// Default tiles per block, from the --sweep runs (benchmarks/README.md). blocks: the tiles split
// evenly into blocks of at most kMaxTiles (by channels), at least one block per thread; pargemm:
// V and M (16 x tiles x (C + K) floats) within ~2 MiB.
int64_t DefaultTiles(WinogradConv::Mode mode, int64_t n, int64_t h, int64_t w, int64_t c,
                     int64_t k, int threads) {
  if (mode == WinogradConv::Mode::kParallelGemm) {
    const int64_t t = (2048 << 10) / (16 * (c + k) * static_cast<int64_t>(sizeof(float)));
    return std::clamp<int64_t>(t / 8 * 8, 16, 512);
  }
  const int64_t tiles = n * ((h + 1) / 2) * ((w + 1) / 2);
  const int64_t max_tiles = std::clamp<int64_t>(32768 / (c + k), 64, 256);
  const int64_t per_thread = ((tiles + max_tiles - 1) / max_tiles + threads - 1) / threads;
  const int64_t blocks = std::max<int64_t>(per_thread, 1) * threads;
  return (tiles + blocks - 1) / blocks;
}

std::vector<int64_t> ParseList(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p != '\0';) {
    char* end = nullptr;
    out.push_back(std::strtoll(p, &end, 10));
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p != '\0') break;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--batches") opt.batches = ParseList(next());
    else if (a == "--residual") opt.residual = true;
    else if (a == "--sweep") opt.sweep = true;
    else if (a == "--breakdown") opt.breakdown = true;
    else if (a == "--reps") opt.reps = std::atoi(next());
    else if (a == "--tiles-blocks") opt.tiles_blocks = std::atoll(next());
    else if (a == "--tiles-pargemm") opt.tiles_pargemm = std::atoll(next());
    else if (a == "--mode") opt.only = next();
    else if (a == "--plane-pad") opt.plane_pad = std::atoll(next());
    else if (a == "--lanes") opt.lanes = std::atoi(next());
    else {
      std::fprintf(stderr,
                   "usage: %s [--batches 1,32] [--residual] [--sweep] [--breakdown] [--reps R] "
                   "[--tiles-blocks T] [--tiles-pargemm T] [--mode blocks|pargemm] "
                   "[--plane-pad F] [--lanes L]\n",
                   argv[0]);
      return 2;
    }
  }
  struct Shape {
    int64_t hw, c;
  } shapes[] = {{56, 64}, {28, 128}, {14, 256}, {7, 512}};
  using Mode = WinogradConv::Mode;
  const int lanes = std::max(opt.lanes, 1);
  const int threads = lanes > 1 ? 1 : omp_get_max_threads();
  std::printf("%d lane(s) x %d thread(s), bias + %sReLU fused; ms are medians of interleaved "
              "rounds\n", lanes, threads, opt.residual ? "residual + " : "");
  if (!opt.sweep && !opt.breakdown) {
    std::printf("%-18s %5s %10s %10s %8s %10s %8s %9s %9s %7s %7s\n", "shape", "batch", "direct",
                "wino-blk", "speedup", "wino-par", "speedup", "err-blk", "err-par", "rounds",
                "others");
  }
  for (int64_t n : opt.batches) {
    if (n % lanes != 0) {
      std::fprintf(stderr, "batch %lld does not split into %d lanes\n", (long long)n, lanes);
      return 2;
    }
    for (const Shape& s : shapes) {
      // One problem (input, residual, output) per lane, each n / lanes images, same weights.
      std::vector<Problem> probs;
      for (int l = 0; l < lanes; ++l) probs.push_back(MakeProblem(n / lanes, s.hw, s.c, s.c, opt.residual));
      const Problem& p = probs[0];
      std::vector<std::unique_ptr<DirectConv>> directs;
      for (const Problem& lp : probs) directs.push_back(std::make_unique<DirectConv>(lp));
      std::vector<std::vector<std::unique_ptr<WinogradConv>>> winos;  // [config][lane]
      std::vector<Candidate> cands;
      // A candidate runs its per-lane instances concurrently, one lane per OpenMP thread (nested
      // regions inside run serially: as ember runs a batch split into single-threaded lanes).
      auto add = [&](std::string name, std::function<void(int, float*)> run_lane) {
        Candidate c{std::move(name), {}, {}, {}};
        for (int l = 0; l < lanes; ++l) c.out.push_back(AllocFloats(p.OutSize()));
        c.run = [run_lane, lanes](std::vector<Floats>& out) {
          if (lanes == 1) return run_lane(0, out[0].get());
#pragma omp parallel num_threads(lanes)
          run_lane(omp_get_thread_num(), out[omp_get_thread_num()].get());
        };
        cands.push_back(std::move(c));
      };
      add("direct", [&directs](int l, float* y) { directs[l]->Run(y); });
      std::vector<std::pair<Mode, int64_t>> configs;
      for (Mode mode : {Mode::kBlocks, Mode::kParallelGemm}) {
        if (!opt.only.empty() && opt.only != (mode == Mode::kBlocks ? "blocks" : "pargemm")) continue;
        const int64_t given = mode == Mode::kBlocks ? opt.tiles_blocks : opt.tiles_pargemm;
        const int64_t dflt = given > 0 ? given : DefaultTiles(mode, p.n, p.h, p.w, p.c, p.k, threads);
        if (opt.sweep) {
          for (int64_t t : {32, 64, 128, 256, 512, 1024}) configs.emplace_back(mode, t);
        } else {
          for (int i = 0; i < (opt.breakdown ? 4 : 1); ++i) configs.emplace_back(mode, dflt);
        }
      }
      static const char* kPhaseNames[] = {"all", "input", "gemm", "output"};
      static const int kPhases[] = {WinogradConv::kAll, WinogradConv::kInput, WinogradConv::kGemm,
                                    WinogradConv::kOutput};
      winos.reserve(configs.size());  // the candidates point at its elements
      for (size_t i = 0; i < configs.size(); ++i) {
        const auto [mode, t] = configs[i];
        winos.emplace_back();
        for (const Problem& lp : probs) {
          winos.back().push_back(std::make_unique<WinogradConv>(lp, mode, t, opt.plane_pad, threads));
          if (opt.breakdown) winos.back().back()->set_phases(kPhases[i % 4]);
        }
        std::string name = std::string(mode == Mode::kBlocks ? "blk" : "par") + "/" +
                           std::to_string(winos.back()[0]->block());
        if (opt.breakdown) name += std::string(" ") + kPhaseNames[i % 4];
        auto* lane_objs = &winos.back();
        add(name, [lane_objs](int l, float* y) { (*lane_objs)[l]->Run(y); });
      }
      const OthersCpu others;
      TimeInterleaved(cands, opt.reps);
      const double others_pct = 100 * others.Fraction();
      const double t_direct = Median(cands[0].times);
      auto error = [&](size_t i) {
        double e = 0;
        for (int l = 0; l < lanes; ++l) {
          e = std::max(e, MaxRelError(cands[i].out[l].get(), cands[0].out[l].get(), p.OutSize()));
        }
        return e;
      };
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lldx%lld %lld->%lld", (long long)s.hw, (long long)s.hw,
                    (long long)s.c, (long long)s.c);
      if (opt.sweep || opt.breakdown) {
        const double gflop = 2.0 * static_cast<double>(n * p.h * p.w * p.c * p.k * 9) / 1e9;
        const double gemm_gflop =
            2.0 * 16 * static_cast<double>(lanes * winos[0][0]->tiles() * p.c * p.k) / 1e9;
        std::printf("%-18s %5lld direct %.3f ms = %.1f GFLOP/s (%s), others %.0f%%, %zu rounds\n",
                    shape, (long long)n, t_direct, gflop / t_direct * 1e3,
                    directs[0]->impl().c_str(), others_pct, cands[0].times.size());
        for (size_t i = 1; i < cands.size(); ++i) {
          const double t = Median(cands[i].times);
          std::printf("    %-14s %9.3f ms  speedup %.2fx  GEMM-flops/t %.1f GFLOP/s",
                      cands[i].name.c_str(), t, t_direct / t, gemm_gflop / t * 1e3);
          if (!opt.breakdown || i % 4 == 1) std::printf("  err %.1e", error(i));
          std::printf("\n");
        }
        std::fflush(stdout);
        continue;
      }
      double t_mode[2] = {NAN, NAN}, err[2] = {NAN, NAN};
      for (size_t i = 1; i < cands.size(); ++i) {
        const int m = cands[i].name.rfind("blk", 0) == 0 ? 0 : 1;
        t_mode[m] = Median(cands[i].times);
        err[m] = error(i);
      }
      std::printf("%-18s %5lld %10.3f %10.3f %7.2fx %10.3f %7.2fx %9.1e %9.1e %7zu %6.0f%%\n",
                  shape, (long long)n, t_direct, t_mode[0], t_direct / t_mode[0], t_mode[1],
                  t_direct / t_mode[1], err[0], err[1], cands[0].times.size(), others_pct);
      std::fflush(stdout);
    }
  }
  return 0;
}
