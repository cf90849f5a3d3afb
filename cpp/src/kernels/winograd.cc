#include "ember/kernels/winograd.h"

#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include <cstdint>
#include <cstring>
#include <dnnl.hpp>
#include <omp.h>
#include <algorithm>
#include <array>
#include <exception>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "ember/kernels/dnnl_kernels.h"
#include "kernel_args.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;
using dnnl::memory;
constexpr auto kF32 = memory::data_type::f32;
constexpr const char* kName = "ember.dnnl.conv2d_wino";
constexpr const char* kNameW8 = "ember.dnnl.conv2d_wino_w8";

// Floats added to each of the 16 planes of V and M. Planes a multiple of 4 KiB apart put the 16
// stores (loads) of one tile's transform in one L1 set, which thrashes it: padding them by a
// cache line made the input transform 1.5x faster (benchmarks/winograd_conv.cc --plane-pad 0).
constexpr int64_t kPlanePad = 16;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::matmul::primitive_desc MatmulDesc(const memory::desc& src, const memory::desc& weights,
                                        const memory::desc& dst, const dnnl::primitive_attr& attr) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::matmul::primitive_desc(Engine(), src, weights, dst, attr);
#else  // oneDNN 2.x (the aarch64 cross build): from an op descriptor
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), attr, Engine());
#endif
}

// --- Geometry and the transforms. ---

struct Geometry {
  int64_t n, h, w, c, k;
  int64_t th, tw, tiles;  // th x tw tiles per image, `tiles` in all
  int64_t PlaneV(int64_t count) const { return count * c + kPlanePad; }
  int64_t PlaneM(int64_t count) const { return count * k + kPlanePad; }
};

// The 16 input offsets of a tile's 4x4 patch at (2 ty - 1, 2 tx - 1), -1 where outside the image
// (zero padding), and its 4 output offsets at (2 ty, 2 tx), -1 past the last row or column.
struct TileOffsets {
  std::array<int64_t, 16> in;
  std::array<int64_t, 4> out;
};

TileOffsets OffsetsOf(const Geometry& g, int64_t tile) {
  const int64_t img = tile / (g.th * g.tw), ty = tile / g.tw % g.th, tx = tile % g.tw;
  TileOffsets o{};
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 4; ++j) {
      const int64_t y = 2 * ty - 1 + i, x = 2 * tx - 1 + j;
      o.in[i * 4 + j] = y >= 0 && y < g.h && x >= 0 && x < g.w ? ((img * g.h + y) * g.w + x) * g.c : -1;
    }
  }
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t y = 2 * ty + i, x = 2 * tx + j;
      o.out[i * 2 + j] = y < g.h && x < g.w ? ((img * g.h + y) * g.w + x) * g.k : -1;
    }
  }
  return o;
}

// What follows the GEMMs: bias, residual, then the activation as a clamp to [lo, hi] (ReLU:
// [0, inf); clip: [alpha, beta]; none: no clamp, so that NaNs pass as they would in oneDNN).
struct Epilogue {
  const float* bias;      // [K] or null
  const float* residual;  // like the output, or null
  bool clamp;
  float lo, hi;
};

// V[e][t][c] = (B^T d B)[e], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], for channels
// [c_begin, c_end); `v` points at tile t's row of plane 0, planes `plane` floats apart.
void InputTilePortable(const float* x, const TileOffsets& o, int64_t c_begin, int64_t c_end,
                       float* v, int64_t plane) {
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    float d[4][4], r[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) d[i][j] = o.in[i * 4 + j] >= 0 ? x[o.in[i * 4 + j] + ch] : 0.f;
    }
    for (int j = 0; j < 4; ++j) {
      r[0][j] = d[0][j] - d[2][j];
      r[1][j] = d[1][j] + d[2][j];
      r[2][j] = d[2][j] - d[1][j];
      r[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; ++i) {
      float* out = v + i * 4 * plane + ch;
      out[0] = r[i][0] - r[i][2];
      out[plane] = r[i][1] + r[i][2];
      out[2 * plane] = r[i][2] - r[i][1];
      out[3 * plane] = r[i][1] - r[i][3];
    }
  }
}

float Finish(float value, int64_t ch, int64_t at, const Epilogue& ep) {
  if (ep.bias != nullptr) value += ep.bias[ch];
  if (ep.residual != nullptr) value += ep.residual[at];
  return ep.clamp ? std::min(std::max(value, ep.lo), ep.hi) : value;
}

// Y = A^T m A (A^T = [1 1 1 0; 0 1 -1 -1]) + epilogue, for output channels [k_begin, k_end); `m`
// points at tile t's row of plane 0.
void OutputTilePortable(const float* m, int64_t plane, const TileOffsets& o, int64_t k_begin,
                        int64_t k_end, const Epilogue& ep, float* y) {
  for (int64_t ch = k_begin; ch < k_end; ++ch) {
    float s[2][4];
    for (int j = 0; j < 4; ++j) {
      const float m0 = m[j * plane + ch], m1 = m[(4 + j) * plane + ch];
      const float m2 = m[(8 + j) * plane + ch], m3 = m[(12 + j) * plane + ch];
      s[0][j] = m0 + m1 + m2;
      s[1][j] = m1 - m2 - m3;
    }
    for (int i = 0; i < 2; ++i) {
      const float out[2] = {s[i][0] + s[i][1] + s[i][2], s[i][1] - s[i][2] - s[i][3]};
      for (int j = 0; j < 2; ++j) {
        const int64_t at = o.out[i * 2 + j];
        if (at >= 0) y[at + ch] = Finish(out[j], ch, at + ch, ep);
      }
    }
  }
}

#if defined(__x86_64__)
// The same transforms 8 channels at a time, for channels [0, count8) (a multiple of 8). Built for
// AVX whatever the core's baseline ISA; called only where the CPU has it (WinogradUsesAvx).
__attribute__((target("avx"))) void InputTileAvx(const float* x, const TileOffsets& o,
                                                 int64_t count8, float* v, int64_t plane) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t ch = 0; ch < count8; ch += 8) {
    __m256 d[4][4], r[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        const int64_t at = o.in[i * 4 + j];
        d[i][j] = at >= 0 ? _mm256_loadu_ps(x + at + ch) : zero;
      }
    }
    for (int j = 0; j < 4; ++j) {
      r[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
      r[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
      r[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
      r[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
    }
    for (int i = 0; i < 4; ++i) {
      float* out = v + i * 4 * plane + ch;
      _mm256_storeu_ps(out, _mm256_sub_ps(r[i][0], r[i][2]));
      _mm256_storeu_ps(out + plane, _mm256_add_ps(r[i][1], r[i][2]));
      _mm256_storeu_ps(out + 2 * plane, _mm256_sub_ps(r[i][2], r[i][1]));
      _mm256_storeu_ps(out + 3 * plane, _mm256_sub_ps(r[i][1], r[i][3]));
    }
  }
}

__attribute__((target("avx"))) void OutputTileAvx(const float* m, int64_t plane,
                                                  const TileOffsets& o, int64_t count8,
                                                  const Epilogue& ep, float* y) {
  const __m256 lo = _mm256_set1_ps(ep.lo), hi = _mm256_set1_ps(ep.hi);
  for (int64_t ch = 0; ch < count8; ch += 8) {
    __m256 s[2][4];
    for (int j = 0; j < 4; ++j) {
      const __m256 m0 = _mm256_loadu_ps(m + j * plane + ch);
      const __m256 m1 = _mm256_loadu_ps(m + (4 + j) * plane + ch);
      const __m256 m2 = _mm256_loadu_ps(m + (8 + j) * plane + ch);
      const __m256 m3 = _mm256_loadu_ps(m + (12 + j) * plane + ch);
      s[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
      s[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
    }
    const __m256 b = ep.bias != nullptr ? _mm256_loadu_ps(ep.bias + ch) : _mm256_setzero_ps();
    for (int i = 0; i < 2; ++i) {
      const __m256 out[2] = {_mm256_add_ps(_mm256_add_ps(s[i][0], s[i][1]), s[i][2]),
                             _mm256_sub_ps(_mm256_sub_ps(s[i][1], s[i][2]), s[i][3])};
      for (int j = 0; j < 2; ++j) {
        const int64_t at = o.out[i * 2 + j];
        if (at < 0) continue;
        __m256 value = _mm256_add_ps(out[j], b);
        if (ep.residual != nullptr) value = _mm256_add_ps(value, _mm256_loadu_ps(ep.residual + at + ch));
        if (ep.clamp) value = _mm256_min_ps(_mm256_max_ps(value, lo), hi);
        _mm256_storeu_ps(y + at + ch, value);
      }
    }
  }
}
#endif

bool HasAvx() {
#if defined(__x86_64__)
  static const bool avx = __builtin_cpu_supports("avx");
  return avx;
#else
  return false;
#endif
}

// Input transform of tiles [first, first + count) into V (planes g.PlaneV(count) apart).
void InputTransform(const Geometry& g, const float* x, int64_t first, int64_t count, float* v) {
  const int64_t plane = g.PlaneV(count);
  const int64_t count8 = HasAvx() ? g.c / 8 * 8 : 0;
  for (int64_t t = 0; t < count; ++t) {
    const TileOffsets o = OffsetsOf(g, first + t);
    float* vt = v + t * g.c;
#if defined(__x86_64__)
    if (count8 > 0) InputTileAvx(x, o, count8, vt, plane);
#endif
    InputTilePortable(x, o, count8, g.c, vt, plane);
  }
}

// Output transform of tiles [first, first + count) from M (planes g.PlaneM(count) apart).
void OutputTransform(const Geometry& g, const float* m, int64_t first, int64_t count,
                     const Epilogue& ep, float* y) {
  const int64_t plane = g.PlaneM(count);
  const int64_t count8 = HasAvx() ? g.k / 8 * 8 : 0;
  for (int64_t t = 0; t < count; ++t) {
    const TileOffsets o = OffsetsOf(g, first + t);
    const float* mt = m + t * g.k;
#if defined(__x86_64__)
    if (count8 > 0) OutputTileAvx(mt, plane, o, count8, ep, y);
#endif
    OutputTilePortable(mt, plane, o, count8, g.k, ep, y);
  }
}

// U[e][c][k] = (G g G^T)[e] of each 3x3 filter g = w[k, :, :, c] (OHWI),
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
std::vector<float> TransformWeights(const float* w, int64_t c_count, int64_t k_count) {
  std::vector<float> u(static_cast<size_t>(16 * c_count * k_count));
  for (int64_t k = 0; k < k_count; ++k) {
    for (int64_t c = 0; c < c_count; ++c) {
      float g[3][3], gg[4][3];
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) g[i][j] = w[((k * 3 + i) * 3 + j) * c_count + c];
      }
      for (int j = 0; j < 3; ++j) {
        gg[0][j] = g[0][j];
        gg[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
        gg[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
        gg[3][j] = g[2][j];
      }
      for (int i = 0; i < 4; ++i) {
        const float row[4] = {gg[i][0], 0.5f * (gg[i][0] + gg[i][1] + gg[i][2]),
                              0.5f * (gg[i][0] - gg[i][1] + gg[i][2]), gg[i][2]};
        for (int j = 0; j < 4; ++j) u[static_cast<size_t>(((i * 4 + j) * c_count + c) * k_count + k)] = row[j];
      }
    }
  }
  return u;
}

// --- Plans: the GEMM primitives of one conv shape, cached. ---

// Tiles per block: the tiles split evenly into blocks of at most 256 tiles (fewer for many
// channels: 32768 / (C + K), at least 64), and into a multiple of `threads` blocks so that every
// thread gets the same work. The best block sizes of benchmarks/winograd_conv.cc --sweep on
// ResNet-18's shapes: 256 tiles for 64 channels, 64-128 for 128-256 (blocks of about 1 MiB of V
// and M, the L2 of a core), and one block per thread for a batch-1 image.
int64_t BlockTiles(int64_t tiles, int64_t c, int64_t k, int threads) {
  const int64_t max_tiles = std::clamp<int64_t>(32768 / (c + k), 64, 256);
  const int64_t per_thread = ((tiles + max_tiles - 1) / max_tiles + threads - 1) / threads;
  const int64_t blocks = std::max<int64_t>(per_thread, 1) * threads;
  return std::max<int64_t>((tiles + blocks - 1) / blocks, 1);
}

struct Gemm {
  dnnl::primitive primitive;
  memory::desc src_md, weights_md, dst_md, scratchpad_md;
  std::shared_ptr<memory> weights;  // U, prepacked for this primitive
};

struct Plan {
  Geometry g{};
  int threads = 1;
  int64_t block = 0, blocks = 0;
  std::vector<Gemm> gemms;  // [0]: `block` tiles; [1]: the last block's, when it is shorter
  size_t v_floats = 0, m_floats = 0, scratch_bytes = 0;  // per-thread scratch
};

struct PlanKey {
  int64_t weight_id, n, h, w, c, k, threads;
  bool operator==(const PlanKey& o) const {
    return weight_id == o.weight_id && n == o.n && h == o.h && w == o.w && c == o.c && k == o.k &&
           threads == o.threads;
  }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : {key.weight_id, key.n, key.h, key.w, key.c, key.k, key.threads}) {
      h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
    }
    return static_cast<size_t>(h);
  }
};

struct WinogradCache {
  std::shared_mutex mutex;  // shared for lookups, exclusive for building
  std::unordered_map<PlanKey, std::unique_ptr<const Plan>, PlanKeyHash> plans;
  // Transformed weights per weight id and packed layout, shared by the plans of every batch size.
  std::map<int64_t, std::vector<std::pair<memory::desc, std::shared_ptr<memory>>>> packed;
};

WinogradCache& Cache() {
  static WinogradCache cache;
  return cache;
}

// RAII: the calling thread's OpenMP regions (and so oneDNN's) use `threads` threads while alive.
class OmpThreads {
 public:
  explicit OmpThreads(int threads) : saved_(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

// A conv's OHWI weights as the kernel got them: float32, or int8 with per-output-channel scales
// (ember.dnnl.conv2d_wino_w8), dequantized only when U is first computed.
struct Weights {
  const void* data;
  const float* scales;  // nullptr: `data` is float32
};

// U of weight `weight_id` in `packed_md`: transformed from `w` and reordered once per layout.
// Called with the cache's exclusive lock held.
std::shared_ptr<memory> PackedWeights(int64_t weight_id, const Weights& w, const Geometry& g,
                                      const memory::desc& packed_md) {
  auto& layouts = Cache().packed[weight_id];
  for (const auto& [md, mem] : layouts) {
    if (md == packed_md) return mem;
  }
  std::vector<float> dequantized;
  const float* w_float = static_cast<const float*>(w.data);
  if (w.scales != nullptr) {  // int8 OHWI: w * scales[k], once per weight id
    const auto* w8 = static_cast<const int8_t*>(w.data);
    dequantized.resize(static_cast<size_t>(g.k * 9 * g.c));
    for (size_t i = 0; i < dequantized.size(); ++i) {
      dequantized[i] = static_cast<float>(w8[i]) * w.scales[i / static_cast<size_t>(9 * g.c)];
    }
    w_float = dequantized.data();
  }
  std::vector<float> u = TransformWeights(w_float, g.c, g.k);
  auto packed = std::make_shared<memory>(packed_md, Engine());
  memory plain(memory::desc({16, g.c, g.k}, kF32, memory::format_tag::abc), Engine(), u.data());
  dnnl::stream stream(Engine());
  dnnl::reorder(plain, *packed).execute(stream, plain, *packed);
  stream.wait();
  layouts.emplace_back(packed_md, packed);
  return packed;
}

// A single-threaded batched matmul [16, tiles, C] x [16, C, K] -> [16, tiles, K] over planes
// padded by kPlanePad, its weights prepacked.
Gemm MakeGemm(const Geometry& g, int64_t tiles, int64_t weight_id, const Weights& w) {
  const OmpThreads serial(1);  // built for (and run on) one thread: the blocks are the parallelism
  Gemm gemm;
  gemm.src_md = memory::desc({16, tiles, g.c}, kF32, {g.PlaneV(tiles), g.c, 1});
  gemm.dst_md = memory::desc({16, tiles, g.k}, kF32, {g.PlaneM(tiles), g.k, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto pd = MatmulDesc(gemm.src_md, memory::desc({16, g.c, g.k}, kF32, memory::format_tag::any),
                             gemm.dst_md, attr);
  gemm.weights_md = pd.weights_desc();
  gemm.scratchpad_md = pd.scratchpad_desc();
  gemm.primitive = dnnl::matmul(pd);
  gemm.weights = PackedWeights(weight_id, w, g, gemm.weights_md);
  return gemm;
}

const Plan& GetPlan(const PlanKey& key, const Geometry& g, const Weights& w) {
  WinogradCache& cache = Cache();
  {
    std::shared_lock<std::shared_mutex> lock(cache.mutex);
    auto it = cache.plans.find(key);
    if (it != cache.plans.end()) return *it->second;
  }
  std::unique_lock<std::shared_mutex> lock(cache.mutex);
  auto it = cache.plans.find(key);
  if (it != cache.plans.end()) return *it->second;
  auto plan = std::make_unique<Plan>();
  plan->g = g;
  plan->threads = static_cast<int>(key.threads);
  plan->block = BlockTiles(g.tiles, g.c, g.k, plan->threads);
  plan->blocks = (g.tiles + plan->block - 1) / plan->block;
  const int64_t tail = g.tiles - (plan->blocks - 1) * plan->block;
  plan->gemms.push_back(MakeGemm(g, plan->block, key.weight_id, w));
  if (tail != plan->block) plan->gemms.push_back(MakeGemm(g, tail, key.weight_id, w));
  plan->v_floats = static_cast<size_t>(16 * g.PlaneV(plan->block));
  plan->m_floats = static_cast<size_t>(16 * g.PlaneM(plan->block));
  for (const Gemm& gemm : plan->gemms) {
    plan->scratch_bytes = std::max(plan->scratch_bytes, gemm.scratchpad_md.get_size());
  }
  return *cache.plans.emplace(key, std::move(plan)).first->second;
}

// --- Per-thread scratch: V, M, the matmul's scratchpad and argument sets, reused by every call.

// A 64-byte aligned view of at least `bytes` bytes of `buffer`, grown (only) as needed.
void* Aligned(std::vector<char>& buffer, size_t bytes) {
  if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
  const auto at = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - at % 64) % 64);
}

struct ThreadScratch {
  std::vector<char> v, m, scratchpad;
  std::unordered_map<const Gemm*, std::unordered_map<int, memory>> args;  // per primitive
  dnnl::stream stream{Engine()};
};

ThreadScratch& Scratch() {
  thread_local ThreadScratch scratch;
  return scratch;
}

// Transforms, multiplies and finishes block `b` on the calling thread.
void RunBlock(const Plan& plan, int64_t b, const float* x, const Epilogue& ep, float* y) {
  ThreadScratch& s = Scratch();
  const Geometry& g = plan.g;
  const int64_t first = b * plan.block, count = std::min(plan.block, g.tiles - first);
  const Gemm& gemm = plan.gemms[count == plan.block ? 0 : 1];
  auto* v = static_cast<float*>(Aligned(s.v, plan.v_floats * sizeof(float)));
  auto* m = static_cast<float*>(Aligned(s.m, plan.m_floats * sizeof(float)));
  void* scratchpad = Aligned(s.scratchpad, plan.scratch_bytes);
  auto it = s.args.find(&gemm);
  if (it == s.args.end()) {  // once per thread and primitive
    std::unordered_map<int, memory> args;
    args.emplace(DNNL_ARG_SRC, memory(gemm.src_md, Engine(), DNNL_MEMORY_NONE));
    args.emplace(DNNL_ARG_WEIGHTS, *gemm.weights);
    args.emplace(DNNL_ARG_DST, memory(gemm.dst_md, Engine(), DNNL_MEMORY_NONE));
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(gemm.scratchpad_md, Engine(), DNNL_MEMORY_NONE));
    it = s.args.emplace(&gemm, std::move(args)).first;
  }
  auto& args = it->second;
  args.at(DNNL_ARG_SRC).set_data_handle(v);
  args.at(DNNL_ARG_DST).set_data_handle(m);
  args.at(DNNL_ARG_SCRATCHPAD).set_data_handle(scratchpad);
  InputTransform(g, x, first, count, v);
  gemm.primitive.execute(s.stream, args);
  s.stream.wait();
  OutputTransform(g, m, first, count, ep, y);
}

void Run(const Plan& plan, const float* x, const Epilogue& ep, float* y) {
  if (plan.threads == 1) {
    for (int64_t b = 0; b < plan.blocks; ++b) RunBlock(plan, b, x, ep, y);
    return;
  }
  // Exceptions must not leave an OpenMP region: the first one is kept and rethrown after it.
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel for schedule(static) num_threads(plan.threads)
  for (int64_t b = 0; b < plan.blocks; ++b) {
    try {
      RunBlock(plan, b, x, ep, y);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// --- The packed function. ---

template <typename T = float>
T* DataOf(const DLTensor* t) {
  return reinterpret_cast<T*>(static_cast<char*>(t->data) + t->byte_offset);
}

bool ShapeIs(const DLTensor* t, std::initializer_list<int64_t> shape) {
  if (t->ndim != static_cast<int>(shape.size())) return false;
  return std::equal(shape.begin(), shape.end(), t->shape);
}

// ember.dnnl.conv2d_wino(x[N,H,W,C], w[K,3,3,C], bias[K], residual[N,H,W,K], stride_h, stride_w,
//   pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w, groups, has_bias,
//   has_residual, activation, weight_id, alpha, beta, out[N,H,W,K]): ember.dnnl.conv2d's
// arguments; strides, dilations, groups 1 and pads 1, NHWC only.
//
// ember.dnnl.conv2d_wino_w8(x, w[K,3,3,C] int8, w_scales[K], bias, ... as above ..., out):
// weight-only int8 (ember.dnnl.conv2d_w8's arguments); the weights are dequantized once, when
// their transform U is computed, so a call runs exactly as the float kernel does.
void Conv2dWinoCommon(const ffi::PackedArgs& args, bool weight_only) {
  const char* name = weight_only ? kNameW8 : kName;
  const ConvArgs parsed = ParseConvArgs(args, name, weight_only);
  const DLTensor *x = parsed.x, *w = parsed.w, *w_scales = parsed.w_scales, *out = parsed.out;
  const DLTensor *bias = parsed.bias, *residual = parsed.residual;
  const int64_t activation = parsed.ints[11], weight_id = parsed.ints[12];
  for (int i = 0; i < 9; ++i) {  // strides, pads, dilations, groups
    if (parsed.ints[static_cast<size_t>(i)] != 1) {
      TVM_FFI_THROW(ValueError) << name << ": only stride 1, pad 1, dilation 1 and groups 1 "
                                << "(a 3x3 'same' conv) are supported";
    }
  }
  if (x->ndim != 4 || out->ndim != 4) {
    TVM_FFI_THROW(ValueError) << name << ": expects NHWC (4-d) input and output";
  }
  const int64_t n = x->shape[0], h = x->shape[1], wd = x->shape[2], c = x->shape[3];
  if (w->ndim != 4 || w->shape[1] != 3 || w->shape[2] != 3 || w->shape[3] != c) {
    TVM_FFI_THROW(ValueError) << name << ": expects OHWI weights [K, 3, 3, " << c << "]";
  }
  const int64_t k = w->shape[0];
  if (w_scales != nullptr && !ShapeIs(w_scales, {k})) {
    TVM_FFI_THROW(ValueError) << name << ": w_scales must be [" << k << "]";
  }
  if (!ShapeIs(out, {n, h, wd, k})) {
    TVM_FFI_THROW(ValueError) << name << ": output must be [" << n << ", " << h << ", " << wd
                              << ", " << k << "]";
  }
  if (n < 1 || h < 1 || wd < 1 || c < 1 || k < 1) {
    TVM_FFI_THROW(ValueError) << name << ": empty tensors are not supported";
  }
  if (bias != nullptr && !ShapeIs(bias, {k})) {
    TVM_FFI_THROW(ValueError) << name << ": bias must be [" << k << "]";
  }
  if (residual != nullptr && !ShapeIs(residual, {n, h, wd, k})) {
    TVM_FFI_THROW(ValueError) << name << ": residual must be shaped like the output";
  }
  if (DataOf(x) == DataOf(out)) {
    TVM_FFI_THROW(ValueError) << name << ": the output must not alias the input";
  }
  constexpr float kInf = std::numeric_limits<float>::infinity();
  Epilogue ep{bias ? DataOf(bias) : nullptr, residual ? DataOf(residual) : nullptr, true, -kInf, kInf};
  switch (static_cast<Activation>(activation)) {
    case Activation::kNone: ep.clamp = false; break;
    case Activation::kRelu: ep.lo = 0.f; break;
    case Activation::kClip: ep.lo = parsed.alpha; ep.hi = parsed.beta; break;
    default:
      TVM_FFI_THROW(ValueError) << name << ": activation code " << activation
                                << " is not supported (none, ReLU and clip are)";
  }

  const Geometry g{n, h, wd, c, k, (h + 1) / 2, (wd + 1) / 2, n * ((h + 1) / 2) * ((wd + 1) / 2)};
  // Inside a parallel region (a batch-splitting lane) nested regions run serially: one thread.
  const int threads = omp_in_parallel() ? 1 : std::max(omp_get_max_threads(), 1);
  try {
    const Plan& plan = GetPlan(PlanKey{weight_id, n, h, wd, c, k, threads}, g,
                                Weights{DataOf<void>(w), w_scales ? DataOf(w_scales) : nullptr});
    Run(plan, DataOf(x), ep, DataOf(out));
  } catch (const dnnl::error& err) {
    TVM_FFI_THROW(RuntimeError) << name << ": oneDNN error " << static_cast<int>(err.status)
                                << ": " << err.what();
  }
}

void Conv2dWino(ffi::PackedArgs args, ffi::Any* /*rv*/) { Conv2dWinoCommon(args, false); }
void Conv2dWinoW8(ffi::PackedArgs args, ffi::Any* /*rv*/) { Conv2dWinoCommon(args, true); }

}  // namespace

void RegisterWinogradKernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    tvm::ffi::reflection::GlobalDef()
        .def_packed(kName, Conv2dWino)
        .def_packed(kNameW8, Conv2dWinoW8);
  });
}

size_t WinogradCachedPlans() {
  std::shared_lock<std::shared_mutex> lock(Cache().mutex);
  return Cache().plans.size();
}

bool WinogradUsesAvx() { return HasAvx(); }

}  // namespace ember::kernels
