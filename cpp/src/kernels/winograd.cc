#include "ember/kernels/winograd.h"

#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include <cmath>
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
#include <type_traits>
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
constexpr const char* kNameQ8 = "ember.dnnl.conv2d_wino_q8";

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

// The offsets of tile (img, ty, tx): `inputs` its 16 input offsets, else its 4 output offsets
// (each transform needs one set; the other stays zero).
TileOffsets OffsetsAt(const Geometry& g, int64_t img, int64_t ty, int64_t tx, bool inputs) {
  TileOffsets o{};
  if (inputs) {
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t y = 2 * ty - 1 + i;
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t x = 2 * tx - 1 + j;
        o.in[i * 4 + j] = y >= 0 && y < g.h && x >= 0 && x < g.w ? ((img * g.h + y) * g.w + x) * g.c : -1;
      }
    }
    return o;
  }
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t y = 2 * ty + i, x = 2 * tx + j;
      o.out[i * 2 + j] = y < g.h && x < g.w ? ((img * g.h + y) * g.w + x) * g.k : -1;
    }
  }
  return o;
}

// Tiles first, first + 1, ... in order, with their input (or output) offsets: one division per
// walk instead of three per tile.
class TileWalk {
 public:
  TileWalk(const Geometry& g, int64_t first, bool inputs)
      : g_(g), inputs_(inputs), img_(first / (g.th * g.tw)), ty_(first / g.tw % g.th),
        tx_(first % g.tw) {}

  TileOffsets Next() {
    const TileOffsets o = OffsetsAt(g_, img_, ty_, tx_, inputs_);
    if (++tx_ == g_.tw) {
      tx_ = 0;
      if (++ty_ == g_.th) ty_ = 0, ++img_;
    }
    return o;
  }

 private:
  const Geometry& g_;
  bool inputs_;
  int64_t img_, ty_, tx_;
};

// What follows the GEMMs: bias, residual, then the activation as a clamp to [lo, hi] (ReLU:
// [0, inf); clip: [alpha, beta]; none: no clamp, so that NaNs pass as they would in oneDNN).
struct Epilogue {
  const float* bias;      // [K] or null
  const float* residual;  // like the output, or null
  bool clamp;
  float lo, hi;
};

// V[e][t][c] = (B^T d B)[e], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], for channels
// [c_begin, c_end); `v` points at tile t's row of plane 0, planes `plane` elements apart. Float
// for conv2d_wino; uint8 in, int16 out for conv2d_wino_q8 (summed in int: |V| <= 1020, exact).
template <typename In, typename Out>
void InputTilePortable(const In* x, const TileOffsets& o, int64_t c_begin, int64_t c_end, Out* v,
                       int64_t plane) {
  using Sum = std::conditional_t<std::is_floating_point_v<Out>, Out, int>;
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    Sum d[4][4], r[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        d[i][j] = o.in[i * 4 + j] >= 0 ? static_cast<Sum>(x[o.in[i * 4 + j] + ch]) : Sum{0};
      }
    }
    for (int j = 0; j < 4; ++j) {
      r[0][j] = d[0][j] - d[2][j];
      r[1][j] = d[1][j] + d[2][j];
      r[2][j] = d[2][j] - d[1][j];
      r[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; ++i) {
      Out* out = v + i * 4 * plane + ch;
      out[0] = static_cast<Out>(r[i][0] - r[i][2]);
      out[plane] = static_cast<Out>(r[i][1] + r[i][2]);
      out[2 * plane] = static_cast<Out>(r[i][2] - r[i][1]);
      out[3 * plane] = static_cast<Out>(r[i][1] - r[i][3]);
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

bool HasAvx2Fma() {
#if defined(__x86_64__)
  static const bool avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2_fma;
#else
  return false;
#endif
}

// Input transform of tiles [first, first + count) into V (planes g.PlaneV(count) apart).
void InputTransform(const Geometry& g, const float* x, int64_t first, int64_t count, float* v) {
  const int64_t plane = g.PlaneV(count);
  const int64_t count8 = HasAvx() ? g.c / 8 * 8 : 0;
  TileWalk walk(g, first, true);
  for (int64_t t = 0; t < count; ++t) {
    const TileOffsets o = walk.Next();
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
  TileWalk walk(g, first, false);
  for (int64_t t = 0; t < count; ++t) {
    const TileOffsets o = walk.Next();
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

// --- The 16 GEMMs of a thin conv (C <= 32, K a multiple of 16) with ember's own AVX2 kernel. ---
//
// oneDNN's batched matmul pays per plane more than a thin plane's products cost: on the digits
// CNN's 16 -> 32 conv at batch 32 it took about half of the kernel's time, a third of that in its
// drivers. M[e] = V[e] U[e] here is T tiles x 16 output channels at a time, 2T accumulators,
// over all C (U's 16-column panel, C x 64 bytes, stays in L1 while the tiles stream past).
#if defined(__x86_64__)
// 6 tiles: the accumulators are named, not an array: GCC 12 kept an array of them in registers
// and also stored each to the stack on every iteration (measured 1.35x slower than oneDNN).
__attribute__((target("avx2,fma"))) inline void GemmTile6F32Avx2(const float* v, int64_t c,
                                                                 const float* u, int64_t k,
                                                                 float* m) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0;
  const float* v0 = v;
  const float* v3 = v + 3 * c;
  for (int64_t ci = 0; ci < c; ++ci) {
    const __m256 u0 = _mm256_loadu_ps(u + ci * k), u1 = _mm256_loadu_ps(u + ci * k + 8);
    __m256 x = _mm256_broadcast_ss(v0 + ci);
    a0 = _mm256_fmadd_ps(x, u0, a0);
    b0 = _mm256_fmadd_ps(x, u1, b0);
    x = _mm256_broadcast_ss(v0 + c + ci);
    a1 = _mm256_fmadd_ps(x, u0, a1);
    b1 = _mm256_fmadd_ps(x, u1, b1);
    x = _mm256_broadcast_ss(v0 + 2 * c + ci);
    a2 = _mm256_fmadd_ps(x, u0, a2);
    b2 = _mm256_fmadd_ps(x, u1, b2);
    x = _mm256_broadcast_ss(v3 + ci);
    a3 = _mm256_fmadd_ps(x, u0, a3);
    b3 = _mm256_fmadd_ps(x, u1, b3);
    x = _mm256_broadcast_ss(v3 + c + ci);
    a4 = _mm256_fmadd_ps(x, u0, a4);
    b4 = _mm256_fmadd_ps(x, u1, b4);
    x = _mm256_broadcast_ss(v3 + 2 * c + ci);
    a5 = _mm256_fmadd_ps(x, u0, a5);
    b5 = _mm256_fmadd_ps(x, u1, b5);
  }
  const __m256 rows[6][2] = {{a0, b0}, {a1, b1}, {a2, b2}, {a3, b3}, {a4, b4}, {a5, b5}};
  for (int i = 0; i < 6; ++i) {
    _mm256_storeu_ps(m + i * k, rows[i][0]);
    _mm256_storeu_ps(m + i * k + 8, rows[i][1]);
  }
}

// 1 to 5 tiles: the rest of a block (its time hardly counts).
template <int T>
__attribute__((target("avx2,fma"))) inline void GemmTileF32Avx2(const float* v, int64_t c,
                                                                const float* u, int64_t k,
                                                                float* m) {
  __m256 acc[T][2];
  for (int i = 0; i < T; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t ci = 0; ci < c; ++ci) {
    const __m256 u0 = _mm256_loadu_ps(u + ci * k), u1 = _mm256_loadu_ps(u + ci * k + 8);
    for (int i = 0; i < T; ++i) {
      const __m256 vb = _mm256_broadcast_ss(v + i * c + ci);
      acc[i][0] = _mm256_fmadd_ps(vb, u0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(vb, u1, acc[i][1]);
    }
  }
  for (int i = 0; i < T; ++i) {
    _mm256_storeu_ps(m + i * k, acc[i][0]);
    _mm256_storeu_ps(m + i * k + 8, acc[i][1]);
  }
}

// M[e][t][:] = V[e][t][:] U[e] for the 16 planes e and `tiles` tiles: V rows of C floats, planes
// plane_v apart; U [16][C][K] plain; M rows of K floats, planes plane_m apart.
__attribute__((target("avx2,fma"))) void GemmThinF32Avx2(const float* v, int64_t plane_v,
                                                        const float* u, int64_t c, int64_t k,
                                                        int64_t tiles, float* m, int64_t plane_m) {
  constexpr int kTiles = 6;  // 12 accumulators + 2 U + 1 broadcast: 15 of 16 ymm registers
  for (int64_t e = 0; e < 16; ++e) {
    const float* ve = v + e * plane_v;
    const float* ue = u + e * c * k;
    float* me = m + e * plane_m;
    for (int64_t kb = 0; kb < k; kb += 16) {
      int64_t t = 0;
      for (; t + kTiles <= tiles; t += kTiles) {
        GemmTile6F32Avx2(ve + t * c, c, ue + kb, k, me + t * k + kb);
      }
      const float* vt = ve + t * c;
      float* mt = me + t * k + kb;
      switch (tiles - t) {
        case 5: GemmTileF32Avx2<5>(vt, c, ue + kb, k, mt); break;
        case 4: GemmTileF32Avx2<4>(vt, c, ue + kb, k, mt); break;
        case 3: GemmTileF32Avx2<3>(vt, c, ue + kb, k, mt); break;
        case 2: GemmTileF32Avx2<2>(vt, c, ue + kb, k, mt); break;
        case 1: GemmTileF32Avx2<1>(vt, c, ue + kb, k, mt); break;
        default: break;
      }
    }
  }
}
#endif

// Whether a conv's 16 GEMMs run on GemmThinF32Avx2 rather than oneDNN's batched matmul. Measured
// against it, interleaved in one process (2 threads): 0.63-0.88x the conv's time for 16-24 input
// channels or few tiles (C/K 16/32 at 512 tiles: 0.86; 24/32 at 196: 0.78; 32/32 at 16: 0.63),
// level for 32 channels at 512-1024 tiles (0.94-0.99), 1.05x for 48 -> 64: oneDNN's blocking wins
// once the panels are wide.
bool UsesThinGemm(const Geometry& g) {
  constexpr int64_t kThinChannels = 32;
  return HasAvx2Fma() && g.c <= kThinChannels && g.k % 16 == 0;
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
  std::shared_ptr<const std::vector<float>> thin_u;  // instead of `gemms` where UsesThinGemm:
                                                     // U, [16][C][K] plain
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
  // U per weight id for the thin GEMM, plain: no oneDNN memory or reorder needed.
  std::map<int64_t, std::shared_ptr<const std::vector<float>>> thin;
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

// U [16][C][K] of `w`: int8 weights (conv2d_wino_w8) are dequantized first.
std::vector<float> TransformedWeights(const Weights& w, const Geometry& g) {
  if (w.scales == nullptr) return TransformWeights(static_cast<const float*>(w.data), g.c, g.k);
  const auto* w8 = static_cast<const int8_t*>(w.data);  // OHWI: w * scales[k]
  std::vector<float> dequantized(static_cast<size_t>(g.k * 9 * g.c));
  for (size_t i = 0; i < dequantized.size(); ++i) {
    dequantized[i] = static_cast<float>(w8[i]) * w.scales[i / static_cast<size_t>(9 * g.c)];
  }
  return TransformWeights(dequantized.data(), g.c, g.k);
}

// U of weight `weight_id` for the thin GEMM, computed once. Called with the cache's lock held.
std::shared_ptr<const std::vector<float>> ThinWeights(int64_t weight_id, const Weights& w,
                                                      const Geometry& g) {
  auto& u = Cache().thin[weight_id];
  if (!u) u = std::make_shared<const std::vector<float>>(TransformedWeights(w, g));
  return u;
}

// U of weight `weight_id` in `packed_md`: transformed from `w` and reordered once per layout.
// Called with the cache's exclusive lock held.
std::shared_ptr<memory> PackedWeights(int64_t weight_id, const Weights& w, const Geometry& g,
                                      const memory::desc& packed_md) {
  auto& layouts = Cache().packed[weight_id];
  for (const auto& [md, mem] : layouts) {
    if (md == packed_md) return mem;
  }
  std::vector<float> u = TransformedWeights(w, g);
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

// A new plan: blocking, GEMM primitives and prepacked U. Called with the cache's lock held.
std::unique_ptr<const Plan> BuildPlan(const PlanKey& key, const Geometry& g, const Weights& w) {
  auto plan = std::make_unique<Plan>();
  plan->g = g;
  plan->threads = static_cast<int>(key.threads);
  plan->block = BlockTiles(g.tiles, g.c, g.k, plan->threads);
  plan->blocks = (g.tiles + plan->block - 1) / plan->block;
  const int64_t tail = g.tiles - (plan->blocks - 1) * plan->block;
  if (UsesThinGemm(g)) {
    plan->thin_u = ThinWeights(key.weight_id, w, g);
  } else {
    plan->gemms.push_back(MakeGemm(g, plan->block, key.weight_id, w));
    if (tail != plan->block) plan->gemms.push_back(MakeGemm(g, tail, key.weight_id, w));
  }
  plan->v_floats = static_cast<size_t>(16 * g.PlaneV(plan->block));
  plan->m_floats = static_cast<size_t>(16 * g.PlaneM(plan->block));
  for (const Gemm& gemm : plan->gemms) {
    plan->scratch_bytes = std::max(plan->scratch_bytes, gemm.scratchpad_md.get_size());
  }
  return plan;
}

// The plan cached in `plans` under `key`; on a miss, built by `build` with `mutex` held
// exclusively (misses are rare: the first call per shape) and kept for the process's life.
template <typename Map, typename Build>
const typename Map::mapped_type::element_type& CachedPlan(std::shared_mutex& mutex, Map& plans,
                                                          const PlanKey& key, const Build& build) {
  {
    std::shared_lock<std::shared_mutex> lock(mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
  }
  std::unique_lock<std::shared_mutex> lock(mutex);
  auto it = plans.find(key);
  if (it != plans.end()) return *it->second;
  return *plans.emplace(key, build()).first->second;
}

const Plan& GetPlan(const PlanKey& key, const Geometry& g, const Weights& w) {
  return CachedPlan(Cache().mutex, Cache().plans, key, [&] { return BuildPlan(key, g, w); });
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
  auto* v = static_cast<float*>(Aligned(s.v, plan.v_floats * sizeof(float)));
  auto* m = static_cast<float*>(Aligned(s.m, plan.m_floats * sizeof(float)));
#if defined(__x86_64__)
  if (plan.thin_u) {
    InputTransform(g, x, first, count, v);
    GemmThinF32Avx2(v, g.PlaneV(count), plan.thin_u->data(), g.c, g.k, count, m, g.PlaneM(count));
    OutputTransform(g, m, first, count, ep, y);
    return;
  }
#endif
  const Gemm& gemm = plan.gemms[count == plan.block ? 0 : 1];
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

// Runs fn(b) for blocks b in [0, blocks) on `threads` OpenMP threads (in order on the calling
// thread for 1). Exceptions must not leave an OpenMP region: the first is kept and rethrown.
template <typename Fn>
void ForEachBlock(int threads, int64_t blocks, const Fn& fn) {
  if (threads == 1) {
    for (int64_t b = 0; b < blocks; ++b) fn(b);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) {
    try {
      fn(b);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

void Run(const Plan& plan, const float* x, const Epilogue& ep, float* y) {
  ForEachBlock(plan.threads, plan.blocks, [&](int64_t b) { RunBlock(plan, b, x, ep, y); });
}

// --- Static int8: ember.dnnl.conv2d_wino_q8, an exact integer Winograd. ---
//
// With d the uint8 input and g the int8 weights, V = B^T d B fits in int16 ([-510, 1020]) and so
// does U' = G' g G'^T with G' = 2 G = [2 0 0; 1 1 1; 1 -1 1; 0 0 2] (integers, |U'| <= 9 * 128).
// M = V x U' is summed in int32 by vpmaddwd, two channels at a time: 16 multiply-adds per
// instruction, as many as int8's vpmaddubsw + vpmaddwd pair gives, on 2.25x fewer products than a
// direct conv. Y = A^T M A is then 4 (d * g) exactly: int32 sums wrap, but the final value fits
// (|4 (d * g)| <= 4 * 9 * C * 255 * 128 < 2^31 for C <= kQ8MaxChannels), so no sum saturates
// and no bit is lost, unlike int8 convs on CPUs without VNNI, whose int16 sums saturate.
// out = Y * a_scale * w_scales[k] / 4, then the float epilogue.

constexpr int64_t kQ8MaxChannels = 1024;
constexpr int64_t kQ8Nr = 16;    // output channels per GEMM panel: two ymm of int32
constexpr int64_t kQ8Mr = 6;     // tiles per GEMM micro-tile
constexpr int64_t kQ8PadV = 32;  // int16s between V's planes (a cache line, see kPlanePad)
constexpr int64_t kQ8PadM = 16;  // int32s between M's planes

// Channels padded for the GEMM: C to pairs, K to whole panels (the padding is zeros).
int64_t PairedChannels(int64_t c) { return (c + 1) / 2 * 2; }
int64_t PanelChannels(int64_t k) { return (k + kQ8Nr - 1) / kQ8Nr * kQ8Nr; }

// U' packed per element e and panel of 16 output channels as [C/2][16][2]: channel pairs
// interleaved, so that one 32-byte load is 8 output channels x 2 input channels for vpmaddwd.
std::vector<int16_t> TransformWeightsQ8(const int8_t* w, int64_t c_count, int64_t k_count) {
  const int64_t cp = PairedChannels(c_count), kp = PanelChannels(k_count);
  std::vector<int16_t> u(static_cast<size_t>(16 * cp * kp), 0);
  for (int64_t k = 0; k < k_count; ++k) {
    for (int64_t c = 0; c < c_count; ++c) {
      int g[3][3], gg[4][3];
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) g[i][j] = w[((k * 3 + i) * 3 + j) * c_count + c];
      }
      for (int j = 0; j < 3; ++j) {
        gg[0][j] = 2 * g[0][j];
        gg[1][j] = g[0][j] + g[1][j] + g[2][j];
        gg[2][j] = g[0][j] - g[1][j] + g[2][j];
        gg[3][j] = 2 * g[2][j];
      }
      for (int i = 0; i < 4; ++i) {
        const int row[4] = {2 * gg[i][0], gg[i][0] + gg[i][1] + gg[i][2],
                            gg[i][0] - gg[i][1] + gg[i][2], 2 * gg[i][2]};
        for (int j = 0; j < 4; ++j) {
          const int64_t at = (i * 4 + j) * cp * kp + k / kQ8Nr * cp * kQ8Nr + c / 2 * 2 * kQ8Nr +
                             k % kQ8Nr * 2 + c % 2;
          u[static_cast<size_t>(at)] = static_cast<int16_t>(row[j]);
        }
      }
    }
  }
  return u;
}

// Y = A^T m A in wrapping int32 (see above), scaled per channel, + epilogue, for output channels
// [k_begin, k_end).
void OutputTileQ8Portable(const int32_t* m, int64_t plane, const TileOffsets& o, int64_t k_begin,
                          int64_t k_end, const float* scales, const Epilogue& ep, float* y) {
  auto at = [&](int64_t e, int64_t ch) { return static_cast<uint32_t>(m[e * plane + ch]); };
  for (int64_t ch = k_begin; ch < k_end; ++ch) {
    uint32_t s[2][4];
    for (int j = 0; j < 4; ++j) {
      s[0][j] = at(j, ch) + at(4 + j, ch) + at(8 + j, ch);
      s[1][j] = at(4 + j, ch) - at(8 + j, ch) - at(12 + j, ch);
    }
    for (int i = 0; i < 2; ++i) {
      const uint32_t out[2] = {s[i][0] + s[i][1] + s[i][2], s[i][1] - s[i][2] - s[i][3]};
      for (int j = 0; j < 2; ++j) {
        const int64_t to = o.out[i * 2 + j];
        if (to < 0) continue;
        const auto value = static_cast<float>(static_cast<int32_t>(out[j])) * scales[ch];
        y[to + ch] = Finish(value, ch, to + ch, ep);
      }
    }
  }
}

// M[t][k] for `rows` tiles and one panel of 16 output channels, over `pairs` channel pairs.
void GemmTileQ8Portable(const int16_t* v, int64_t v_stride, const int16_t* u, int64_t pairs,
                        int64_t rows, int32_t* m, int64_t m_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t acc[kQ8Nr] = {};
    for (int64_t p = 0; p < pairs; ++p) {
      const int32_t a0 = v[r * v_stride + 2 * p], a1 = v[r * v_stride + 2 * p + 1];
      for (int64_t j = 0; j < kQ8Nr; ++j) {
        acc[j] += static_cast<uint32_t>(a0 * u[(p * kQ8Nr + j) * 2] + a1 * u[(p * kQ8Nr + j) * 2 + 1]);
      }
    }
    for (int64_t j = 0; j < kQ8Nr; ++j) m[r * m_stride + j] = static_cast<int32_t>(acc[j]);
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void InputTileQ8Avx2(const uint8_t* x, const TileOffsets& o,
                                                     int64_t count16, int16_t* v, int64_t plane) {
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t ch = 0; ch < count16; ch += 16) {
    __m256i d[4][4], r[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        const int64_t at = o.in[i * 4 + j];
        d[i][j] = at >= 0 ? _mm256_cvtepu8_epi16(
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + at + ch)))
                          : zero;
      }
    }
    for (int j = 0; j < 4; ++j) {
      r[0][j] = _mm256_sub_epi16(d[0][j], d[2][j]);
      r[1][j] = _mm256_add_epi16(d[1][j], d[2][j]);
      r[2][j] = _mm256_sub_epi16(d[2][j], d[1][j]);
      r[3][j] = _mm256_sub_epi16(d[1][j], d[3][j]);
    }
    for (int i = 0; i < 4; ++i) {  // (lambdas would not inherit the target attribute)
      int16_t* out = v + i * 4 * plane + ch;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_sub_epi16(r[i][0], r[i][2]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + plane), _mm256_add_epi16(r[i][1], r[i][2]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * plane),
                          _mm256_sub_epi16(r[i][2], r[i][1]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 3 * plane),
                          _mm256_sub_epi16(r[i][1], r[i][3]));
    }
  }
}

__attribute__((target("avx2"))) void OutputTileQ8Avx2(const int32_t* m, int64_t plane,
                                                      const TileOffsets& o, int64_t count8,
                                                      const float* scales, const Epilogue& ep,
                                                      float* y) {
  const __m256 lo = _mm256_set1_ps(ep.lo), hi = _mm256_set1_ps(ep.hi);
  for (int64_t ch = 0; ch < count8; ch += 8) {
    __m256i s[2][4];
    for (int j = 0; j < 4; ++j) {  // elements j, 4 + j, 8 + j, 12 + j: column j of the 4x4 M
      const int32_t* mj = m + j * plane + ch;
      const __m256i m0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mj));
      const __m256i m1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mj + 4 * plane));
      const __m256i m2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mj + 8 * plane));
      const __m256i m3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mj + 12 * plane));
      s[0][j] = _mm256_add_epi32(_mm256_add_epi32(m0, m1), m2);
      s[1][j] = _mm256_sub_epi32(_mm256_sub_epi32(m1, m2), m3);
    }
    const __m256 scale = _mm256_loadu_ps(scales + ch);
    const __m256 b = ep.bias != nullptr ? _mm256_loadu_ps(ep.bias + ch) : _mm256_setzero_ps();
    for (int i = 0; i < 2; ++i) {
      const __m256i out[2] = {_mm256_add_epi32(_mm256_add_epi32(s[i][0], s[i][1]), s[i][2]),
                              _mm256_sub_epi32(_mm256_sub_epi32(s[i][1], s[i][2]), s[i][3])};
      for (int j = 0; j < 2; ++j) {
        const int64_t at = o.out[i * 2 + j];
        if (at < 0) continue;
        __m256 value = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(out[j]), scale), b);
        if (ep.residual != nullptr) value = _mm256_add_ps(value, _mm256_loadu_ps(ep.residual + at + ch));
        if (ep.clamp) value = _mm256_min_ps(_mm256_max_ps(value, lo), hi);
        _mm256_storeu_ps(y + at + ch, value);
      }
    }
  }
}

// M[t][k] for kQ8Mr (6) tiles and one panel of 16 output channels: per channel pair, two loads
// of U', a broadcast of each tile's pair and two vpmaddwd per tile into twelve int32
// accumulators (ymm0-11). In assembly because GCC 12 compiles the intrinsics with a register copy
// per accumulator and iteration (and cannot hold 12 accumulators without spilling): 4-tile
// intrinsics ran 1.2x slower than this loop's 4-tile form, which ran 1.1-1.15x slower than this
// 6-tile one (conv2d_wino_q8 against conv2d_q8, interleaved).
static_assert(kQ8Mr == 6 && kQ8Nr == 16, "GemmTileQ8Avx2 is written for 6 x 16 tiles");
__attribute__((target("avx2"))) inline void GemmTileQ8Avx2(const int16_t* v, int64_t v_stride,
                                                           const int16_t* u, int64_t pairs,
                                                           int32_t* m, int64_t m_stride) {
  const int16_t* va = v;
  const int16_t* vb = v + 3 * v_stride;
  const int16_t* u_end = u + pairs * 2 * kQ8Nr;  // pairs >= 1: the loop tests at its end
  const int64_t s = v_stride * 2, ms = m_stride * 4;  // bytes
  asm volatile(
      "vpxor %%xmm0, %%xmm0, %%xmm0\n\t"
      "vpxor %%xmm1, %%xmm1, %%xmm1\n\t"
      "vpxor %%xmm2, %%xmm2, %%xmm2\n\t"
      "vpxor %%xmm3, %%xmm3, %%xmm3\n\t"
      "vpxor %%xmm4, %%xmm4, %%xmm4\n\t"
      "vpxor %%xmm5, %%xmm5, %%xmm5\n\t"
      "vpxor %%xmm6, %%xmm6, %%xmm6\n\t"
      "vpxor %%xmm7, %%xmm7, %%xmm7\n\t"
      "vpxor %%xmm8, %%xmm8, %%xmm8\n\t"
      "vpxor %%xmm9, %%xmm9, %%xmm9\n\t"
      "vpxor %%xmm10, %%xmm10, %%xmm10\n\t"
      "vpxor %%xmm11, %%xmm11, %%xmm11\n\t"
      "1:\n\t"
      "vmovdqu (%[u]), %%ymm12\n\t"
      "vmovdqu 32(%[u]), %%ymm13\n\t"
#define ROW(ADDR, A, B)                           \
      "vpbroadcastd " ADDR ", %%ymm14\n\t"        \
      "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"    \
      "vpaddd %%ymm15, %%" A ", %%" A "\n\t"      \
      "vpmaddwd %%ymm13, %%ymm14, %%ymm14\n\t"    \
      "vpaddd %%ymm14, %%" B ", %%" B "\n\t"
      ROW("(%[va])", "ymm0", "ymm1")
      ROW("(%[va],%[s],1)", "ymm2", "ymm3")
      ROW("(%[va],%[s],2)", "ymm4", "ymm5")
      ROW("(%[vb])", "ymm6", "ymm7")
      ROW("(%[vb],%[s],1)", "ymm8", "ymm9")
      ROW("(%[vb],%[s],2)", "ymm10", "ymm11")
#undef ROW
      "add $64, %[u]\n\t"
      "add $4, %[va]\n\t"
      "add $4, %[vb]\n\t"
      "cmp %[u_end], %[u]\n\t"
      "jne 1b\n\t"
      "vmovdqu %%ymm0, (%[m])\n\t"
      "vmovdqu %%ymm1, 32(%[m])\n\t"
      "vmovdqu %%ymm2, (%[m],%[ms],1)\n\t"
      "vmovdqu %%ymm3, 32(%[m],%[ms],1)\n\t"
      "vmovdqu %%ymm4, (%[m],%[ms],2)\n\t"
      "vmovdqu %%ymm5, 32(%[m],%[ms],2)\n\t"
      "lea (%[m],%[ms],2), %[m]\n\t"
      "add %[ms], %[m]\n\t"
      "vmovdqu %%ymm6, (%[m])\n\t"
      "vmovdqu %%ymm7, 32(%[m])\n\t"
      "vmovdqu %%ymm8, (%[m],%[ms],1)\n\t"
      "vmovdqu %%ymm9, 32(%[m],%[ms],1)\n\t"
      "vmovdqu %%ymm10, (%[m],%[ms],2)\n\t"
      "vmovdqu %%ymm11, 32(%[m],%[ms],2)\n\t"
      : [u] "+r"(u), [va] "+r"(va), [vb] "+r"(vb), [m] "+r"(m)
      : [s] "r"(s), [u_end] "r"(u_end), [ms] "r"(ms)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
}


// M = V x U' for `rows` tiles (a multiple of kQ8Mr) of one block. Per element e, tiles go in
// chunks whose V rows (16 KiB) stay in L1 while every panel of U' passes over them.
__attribute__((target("avx2"))) void GemmQ8Avx2(const int16_t* v, int64_t plane_v, const int16_t* u,
                                                int64_t cp, int64_t kp, int64_t rows, int32_t* m,
                                                int64_t plane_m) {
  const int64_t pairs = cp / 2, panels = kp / kQ8Nr;
  const int64_t chunk = std::max<int64_t>(16384 / (2 * cp) / kQ8Mr, 1) * kQ8Mr;
  for (int64_t e = 0; e < 16; ++e) {
    const int16_t* ve = v + e * plane_v;
    int32_t* me = m + e * plane_m;
    for (int64_t t0 = 0; t0 < rows; t0 += chunk) {
      const int64_t t1 = std::min(rows, t0 + chunk);
      for (int64_t panel = 0; panel < panels; ++panel) {
        const int16_t* up = u + (e * kp + panel * kQ8Nr) * cp;
        for (int64_t t = t0; t < t1; t += kQ8Mr) {
          GemmTileQ8Avx2(ve + t * cp, cp, up, pairs, me + t * kp + panel * kQ8Nr, kp);
        }
      }
    }
  }
}
#endif

bool HasAvx2() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

struct Q8Plan {
  Geometry g{};
  int threads = 1;
  int64_t block = 0, blocks = 0;
  int64_t cp = 0, kp = 0;  // C and K padded (PairedChannels, PanelChannels)
  std::shared_ptr<const std::vector<int16_t>> u;  // TransformWeightsQ8, shared per weight id
  int64_t PlaneV(int64_t count) const { return count * cp + kQ8PadV; }
  int64_t PlaneM(int64_t count) const { return count * kp + kQ8PadM; }
};

// Transforms, multiplies and finishes block `b` of the quantized input `x` on the calling thread.
void RunBlockQ8(const Q8Plan& plan, int64_t b, const uint8_t* x, const float* scales,
                const Epilogue& ep, float* y) {
  ThreadScratch& s = Scratch();
  const Geometry& g = plan.g;
  const bool avx2 = HasAvx2();
  const int64_t first = b * plan.block, count = std::min(plan.block, g.tiles - first);
  // With AVX2 the GEMM runs whole micro-tiles: V gets zero rows up to a multiple of kQ8Mr.
  const int64_t rows = avx2 ? (count + kQ8Mr - 1) / kQ8Mr * kQ8Mr : count;
  const int64_t plane_v = plan.PlaneV(rows), plane_m = plan.PlaneM(rows);
  auto* v = static_cast<int16_t*>(Aligned(s.v, static_cast<size_t>(16 * plane_v) * sizeof(int16_t)));
  auto* m = static_cast<int32_t*>(Aligned(s.m, static_cast<size_t>(16 * plane_m) * sizeof(int32_t)));

  const int64_t count16 = avx2 ? g.c / 16 * 16 : 0;
  TileWalk in_walk(g, first, true);
  for (int64_t t = 0; t < count; ++t) {
    const TileOffsets o = in_walk.Next();
    int16_t* vt = v + t * plan.cp;
#if defined(__x86_64__)
    if (count16 > 0) InputTileQ8Avx2(x, o, count16, vt, plane_v);
#endif
    InputTilePortable(x, o, count16, g.c, vt, plane_v);
    if (plan.cp != g.c) {
      for (int64_t e = 0; e < 16; ++e) vt[e * plane_v + g.c] = 0;  // the pad channel
    }
  }
  for (int64_t e = 0; e < 16 && rows > count; ++e) {
    std::fill_n(v + e * plane_v + count * plan.cp, (rows - count) * plan.cp, int16_t{0});
  }

  const int16_t* u = plan.u->data();
#if defined(__x86_64__)
  if (avx2) {
    GemmQ8Avx2(v, plane_v, u, plan.cp, plan.kp, rows, m, plane_m);
  }
#endif
  if (!avx2) {
    for (int64_t e = 0; e < 16; ++e) {
      for (int64_t panel = 0; panel < plan.kp / kQ8Nr; ++panel) {
        GemmTileQ8Portable(v + e * plane_v, plan.cp, u + (e * plan.kp + panel * kQ8Nr) * plan.cp,
                           plan.cp / 2, rows, m + e * plane_m + panel * kQ8Nr, plan.kp);
      }
    }
  }

  const int64_t count8 = avx2 ? g.k / 8 * 8 : 0;
  TileWalk out_walk(g, first, false);
  for (int64_t t = 0; t < count; ++t) {
    const TileOffsets o = out_walk.Next();
    const int32_t* mt = m + t * plan.kp;
#if defined(__x86_64__)
    if (count8 > 0) OutputTileQ8Avx2(mt, plane_m, o, count8, scales, ep, y);
#endif
    OutputTileQ8Portable(mt, plane_m, o, count8, g.k, scales, ep, y);
  }
}

struct Q8Cache {
  std::shared_mutex mutex;  // shared for lookups, exclusive for building
  std::unordered_map<PlanKey, std::unique_ptr<const Q8Plan>, PlanKeyHash> plans;
  std::map<int64_t, std::shared_ptr<const std::vector<int16_t>>> weights;  // U' per weight id
};

Q8Cache& CacheQ8() {
  static Q8Cache cache;
  return cache;
}

const Q8Plan& GetPlanQ8(const PlanKey& key, const Geometry& g, const int8_t* w) {
  Q8Cache& cache = CacheQ8();
  return CachedPlan(cache.mutex, cache.plans, key, [&] {
    auto plan = std::make_unique<Q8Plan>();
    plan->g = g;
    plan->threads = static_cast<int>(key.threads);
    // Whole micro-tiles per block: only the last block's GEMM runs padding rows.
    plan->block = (BlockTiles(g.tiles, g.c, g.k, plan->threads) + kQ8Mr - 1) / kQ8Mr * kQ8Mr;
    plan->blocks = (g.tiles + plan->block - 1) / plan->block;
    plan->cp = PairedChannels(g.c);
    plan->kp = PanelChannels(g.k);
    auto& u = cache.weights[key.weight_id];
    if (!u) u = std::make_shared<const std::vector<int16_t>>(TransformWeightsQ8(w, g.c, g.k));
    plan->u = u;
    return std::unique_ptr<const Q8Plan>(std::move(plan));
  });
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

// The checks every Winograd entry point makes: a 3x3 'same' conv (`ints`: strides, pads,
// dilations, groups, as ParseConvArgs orders them) on NHWC tensors of consistent shapes. Returns
// the conv's geometry.
Geometry CheckedGeometry(const char* name, const int64_t* ints, const DLTensor* x, const DLTensor* w,
                         const DLTensor* w_scales, const DLTensor* bias, const DLTensor* residual,
                         const DLTensor* out) {
  for (int i = 0; i < 9; ++i) {
    if (ints[i] != 1) {
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
  if (DataOf<void>(x) == DataOf<void>(out)) {
    TVM_FFI_THROW(ValueError) << name << ": the output must not alias the input";
  }
  return Geometry{n, h, wd, c, k, (h + 1) / 2, (wd + 1) / 2, n * ((h + 1) / 2) * ((wd + 1) / 2)};
}

Epilogue EpilogueOf(const char* name, int64_t activation, float alpha, float beta,
                    const DLTensor* bias, const DLTensor* residual) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  Epilogue ep{bias ? DataOf(bias) : nullptr, residual ? DataOf(residual) : nullptr, true, -kInf, kInf};
  switch (static_cast<Activation>(activation)) {
    case Activation::kNone: ep.clamp = false; break;
    case Activation::kRelu: ep.lo = 0.f; break;
    case Activation::kClip: ep.lo = alpha; ep.hi = beta; break;
    default:
      TVM_FFI_THROW(ValueError) << name << ": activation code " << activation
                                << " is not supported (none, ReLU and clip are)";
  }
  return ep;
}

// The threads a call runs on: inside a parallel region (a batch-splitting lane) nested regions
// run serially, so one.
int CallThreads() { return omp_in_parallel() ? 1 : std::max(omp_get_max_threads(), 1); }

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
  const Geometry g = CheckedGeometry(name, parsed.ints.data(), x, w, w_scales, parsed.bias,
                                     parsed.residual, out);
  const Epilogue ep =
      EpilogueOf(name, parsed.ints[11], parsed.alpha, parsed.beta, parsed.bias, parsed.residual);
  const int64_t weight_id = parsed.ints[12];
  try {
    const Plan& plan = GetPlan(PlanKey{weight_id, g.n, g.h, g.w, g.c, g.k, CallThreads()}, g,
                               Weights{DataOf<void>(w), w_scales ? DataOf(w_scales) : nullptr});
    Run(plan, DataOf(x), ep, DataOf(out));
  } catch (const dnnl::error& err) {
    TVM_FFI_THROW(RuntimeError) << name << ": oneDNN error " << static_cast<int>(err.status)
                                << ": " << err.what();
  }
}

void Conv2dWino(ffi::PackedArgs args, ffi::Any* /*rv*/) { Conv2dWinoCommon(args, false); }
void Conv2dWinoW8(ffi::PackedArgs args, ffi::Any* /*rv*/) { Conv2dWinoCommon(args, true); }

// ember.dnnl.conv2d_wino_q8(x, w[K,3,3,C] int8, w_scales[K], bias, residual, stride_h, stride_w,
//   pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w, groups, has_bias,
//   has_residual, activation, weight_id, a_unsigned, a_scale, alpha, beta, out):
// ember.dnnl.conv2d_q8's arguments, for a 3x3 'same' conv in NHWC with uint8 activations
// (a_unsigned = 1) and C <= kQ8MaxChannels. `x` is quantized with a_scale (quant::QuantizeU8,
// zero point 0), convolved exactly in integers (see above), then out = a_scale * w_scales[k] *
// (qx * w) + bias, residual and activation, as conv2d_q8 computes it. Any int8 weight is exact
// here, including those outside the [-64, 64] that conv2d_q8 needs on CPUs without VNNI.
void Conv2dWinoQ8(ffi::PackedArgs args, ffi::Any* /*rv*/) {
  const char* name = kNameQ8;
  if (args.size() != 23) TVM_FFI_THROW(ValueError) << name << ": expects 23 arguments";
  const DLTensor* x = TensorArg(args, 0, name);
  const DLTensor* w = TensorArg(args, 1, name, kDLInt, 8);
  const DLTensor* w_scales = TensorArg(args, 2, name);
  const DLTensor* out = TensorArg(args, 22, name);
  std::array<int64_t, 14> ints{};  // ParseConvArgs' 13, then a_unsigned
  for (size_t i = 0; i < ints.size(); ++i) ints[i] = args[5 + static_cast<int>(i)].cast<int64_t>();
  const DLTensor* bias = ints[9] != 0 ? TensorArg(args, 3, name) : nullptr;
  const DLTensor* residual = ints[10] != 0 ? TensorArg(args, 4, name) : nullptr;
  const auto a_scale = static_cast<float>(args[19].cast<double>());
  const auto alpha = static_cast<float>(args[20].cast<double>());
  const auto beta = static_cast<float>(args[21].cast<double>());
  const Geometry g = CheckedGeometry(name, ints.data(), x, w, w_scales, bias, residual, out);
  const Epilogue ep = EpilogueOf(name, ints[11], alpha, beta, bias, residual);
  if (ints[13] != 1) TVM_FFI_THROW(ValueError) << name << ": needs unsigned (uint8) activations";
  if (!(a_scale > 0) || !std::isfinite(a_scale)) {
    TVM_FFI_THROW(ValueError) << name << ": a_scale must be finite and > 0, got " << a_scale;
  }
  if (g.c > kQ8MaxChannels) {
    TVM_FFI_THROW(ValueError) << name << ": at most " << kQ8MaxChannels
                              << " input channels (int32 sums would overflow), got " << g.c;
  }
  const Q8Plan& plan = GetPlanQ8(PlanKey{ints[12], g.n, g.h, g.w, g.c, g.k, CallThreads()}, g,
                                 DataOf<int8_t>(w));
  thread_local std::vector<float> scales;  // a_scale * w_scales[k] / 4 (Y is 4x the conv)
  scales.resize(static_cast<size_t>(g.k));
  const float* w_scale = DataOf(w_scales);
  for (int64_t k = 0; k < g.k; ++k) scales[static_cast<size_t>(k)] = a_scale * w_scale[k] * 0.25f;
  const size_t count = static_cast<size_t>(g.n * g.h * g.w * g.c);
  auto* quantized = static_cast<uint8_t*>(ThreadQuantized(count));
  QuantizeActivation(DataOf(x), count, a_scale, true, quantized);
  // Named outside the lambda: in it, `scales` would be each OpenMP thread's own thread_local.
  const float* scale_data = scales.data();
  float* y = DataOf(out);
  ForEachBlock(plan.threads, plan.blocks, [&](int64_t b) {
    RunBlockQ8(plan, b, quantized, scale_data, ep, y);
  });
}

}  // namespace

void RegisterWinogradKernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    tvm::ffi::reflection::GlobalDef()
        .def_packed(kName, Conv2dWino)
        .def_packed(kNameW8, Conv2dWinoW8)
        .def_packed(kNameQ8, Conv2dWinoQ8);
  });
}

size_t WinogradCachedPlans() {
  size_t count = 0;
  {
    std::shared_lock<std::shared_mutex> lock(Cache().mutex);
    count += Cache().plans.size();
  }
  std::shared_lock<std::shared_mutex> lock(CacheQ8().mutex);
  return count + CacheQ8().plans.size();
}

bool WinogradUsesAvx() { return HasAvx(); }

bool WinogradUsesThinGemm(int64_t c, int64_t k) {
  Geometry g{};
  g.c = c;
  g.k = k;
  return UsesThinGemm(g);
}

}  // namespace ember::kernels
