#include "ember/kernels/dnnl_kernels.h"

#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <omp.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "ember/kernels/winograd.h"
#include "ember/quant.h"
#include "kernel_args.h"

namespace ember::kernels {
namespace {

namespace ffi = tvm::ffi;
using dnnl::memory;
using Dims = memory::dims;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;
constexpr int64_t kBlock = 8;  // channel block of the NCHW8c activation layout

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// --- oneDNN 2.x compatibility. x86 builds use oneDNN 3 (the onednn-devel-cpu-gomp wheel); the
// aarch64 cross build links Debian's oneDNN 2.6 (libdnnl-dev:arm64), whose API differs in how a
// primitive descriptor is made (2.x: from an op descriptor), in append_eltwise (2.x: a leading
// scale), in how scales reach a primitive (2.x: output scales fixed in the attribute; 3.x:
// per-argument scales given at execution) and in memory::desc's accessors. With these shims the
// float kernels (conv2d, matmul) and their weight-only int8 forms (conv2d_w8, matmul_w8: the
// scales apply once, in the prepacking reorder) share one code path. The static int8 kernels pass
// scales at execution, which 2.x cannot: they refuse there (see MatmulQ8 and Conv2dQ8).
// Residual adds are a binary post-op with 3.x; with 2.x the residual is copied into dst and added
// by a sum post-op, because 2.6's gemm-based NHWC convs (what aarch64 gets) apply binary post-ops
// wrongly (measured under qemu: errors of 40-80% of the output's scale; with sum, within 4e-7 of
// ONNX Runtime).
#if DNNL_VERSION_MAJOR >= 3
constexpr bool kResidualBySum = false;

void AppendEltwise(dnnl::post_ops& ops, dnnl::algorithm alg, float alpha, float beta) {
  ops.append_eltwise(alg, alpha, beta);
}

Dims DimsOf(const memory::desc& md) { return md.get_dims(); }

dnnl::convolution_forward::primitive_desc ConvPrimitiveDesc(
    const memory::desc& src, const memory::desc& weights, const memory::desc& bias,
    const memory::desc& dst, const Dims& strides, const Dims& dilates, const Dims& pad_l,
    const Dims& pad_r, const dnnl::primitive_attr& attr) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
      weights, bias, dst, strides, dilates, pad_l, pad_r, attr);
}

dnnl::matmul::primitive_desc MatmulPrimitiveDesc(const memory::desc& src,
                                                 const memory::desc& weights,
                                                 const memory::desc& bias, const memory::desc& dst,
                                                 const dnnl::primitive_attr& attr) {
  return dnnl::matmul::primitive_desc(Engine(), src, weights, bias, dst, attr);
}

dnnl::softmax_forward::primitive_desc SoftmaxPrimitiveDesc(const memory::desc& md, int axis,
                                                           const dnnl::primitive_attr& attr) {
  return dnnl::softmax_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_inference,
                                               dnnl::algorithm::softmax_accurate, md, md, axis,
                                               attr);
}

dnnl::pooling_forward::primitive_desc MaxPoolPrimitiveDesc(const memory::desc& src,
                                                           const memory::desc& dst,
                                                           const Dims& strides, const Dims& kernel,
                                                           const Dims& pad_l, const Dims& pad_r,
                                                           const dnnl::primitive_attr& attr) {
  return dnnl::pooling_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, src, dst,
      strides, kernel, /*dilation=*/{0, 0}, pad_l, pad_r, attr);
}

// Reorders src (src_md) into dst (dst_md), multiplying by `count` scales along the axes in `mask`.
void ScaledReorder(memory& src, const memory::desc& src_md, memory& dst,
                   const memory::desc& dst_md, const float* scales, int64_t count, int mask,
                   dnnl::stream& stream) {
  dnnl::primitive_attr attr;
  attr.set_scales_mask(DNNL_ARG_SRC, mask);
  const auto pd = dnnl::reorder::primitive_desc(Engine(), src_md, Engine(), dst_md, attr);
  memory scale_mem(memory::desc({count}, kF32, Tag::a), Engine(), const_cast<float*>(scales));
  dnnl::reorder(pd).execute(stream, {{DNNL_ARG_SRC, src},
                                     {DNNL_ARG_DST, dst},
                                     {DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, scale_mem}});
}
#else
constexpr bool kResidualBySum = true;

void AppendEltwise(dnnl::post_ops& ops, dnnl::algorithm alg, float alpha, float beta) {
  ops.append_eltwise(1.0f, alg, alpha, beta);
}

Dims DimsOf(const memory::desc& md) { return md.dims(); }

dnnl::convolution_forward::primitive_desc ConvPrimitiveDesc(
    const memory::desc& src, const memory::desc& weights, const memory::desc& bias,
    const memory::desc& dst, const Dims& strides, const Dims& dilates, const Dims& pad_l,
    const Dims& pad_r, const dnnl::primitive_attr& attr) {
  const dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, weights, bias,
      dst, strides, dilates, pad_l, pad_r);
  return dnnl::convolution_forward::primitive_desc(desc, attr, Engine());
}

dnnl::matmul::primitive_desc MatmulPrimitiveDesc(const memory::desc& src,
                                                 const memory::desc& weights,
                                                 const memory::desc& bias, const memory::desc& dst,
                                                 const dnnl::primitive_attr& attr) {
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, bias, dst), attr, Engine());
}

dnnl::softmax_forward::primitive_desc SoftmaxPrimitiveDesc(const memory::desc& md, int axis,
                                                           const dnnl::primitive_attr& attr) {
  const dnnl::softmax_forward::desc desc(dnnl::prop_kind::forward_inference, md, axis);
  return dnnl::softmax_forward::primitive_desc(desc, attr, Engine());
}

dnnl::pooling_forward::primitive_desc MaxPoolPrimitiveDesc(const memory::desc& src,
                                                           const memory::desc& dst,
                                                           const Dims& strides, const Dims& kernel,
                                                           const Dims& pad_l, const Dims& pad_r,
                                                           const dnnl::primitive_attr& attr) {
  const dnnl::pooling_forward::desc desc(dnnl::prop_kind::forward_inference,
                                         dnnl::algorithm::pooling_max, src, dst, strides, kernel,
                                         pad_l, pad_r);
  return dnnl::pooling_forward::primitive_desc(desc, attr, Engine());
}

void ScaledReorder(memory& src, const memory::desc& src_md, memory& dst,
                   const memory::desc& dst_md, const float* scales, int64_t count, int mask,
                   dnnl::stream& stream) {
  dnnl::primitive_attr attr;
  attr.set_output_scales(mask, std::vector<float>(scales, scales + count));
  const auto pd = dnnl::reorder::primitive_desc(Engine(), src_md, Engine(), dst_md, attr);
  dnnl::reorder(pd).execute(stream, src, dst);
}
#endif

// Primitives use user-managed scratchpads taken from a per-thread buffer, so that concurrent
// executions of one cached primitive never share scratch memory.
void* ThreadScratchpad(size_t nbytes) {
  thread_local std::vector<char> buffer;
  if (buffer.size() < nbytes) buffer.resize(nbytes);
  return buffer.data();
}

}  // namespace

const DLTensor* TensorArg(const ffi::PackedArgs& args, int i, const char* kernel,
                          DLDataTypeCode code, int bits) {
  const DLTensor* t = args[i].cast<DLTensor*>();  // throws TypeError for a non-tensor
  if (t->device.device_type != kDLCPU || t->dtype.code != code || t->dtype.bits != bits ||
      t->dtype.lanes != 1) {
    TVM_FFI_THROW(TypeError) << kernel << ": argument " << i << " must be a CPU tensor of dtype "
                             << (code == kDLFloat ? "float" : "int") << bits;
  }
  if (t->strides != nullptr) {
    int64_t expected = 1;
    for (int d = t->ndim - 1; d >= 0; --d) {
      if (t->shape[d] != 1 && t->strides[d] != expected) {
        TVM_FFI_THROW(ValueError) << kernel << ": argument " << i << " must be contiguous";
      }
      expected *= t->shape[d];
    }
  }
  return t;
}

ConvArgs ParseConvArgs(const ffi::PackedArgs& args, const char* kernel, bool weight_only) {
  const int shift = weight_only ? 1 : 0;  // w8: the scales follow the weights
  if (args.size() != 20 + shift) {
    TVM_FFI_THROW(ValueError) << kernel << ": expects " << 20 + shift << " arguments";
  }
  ConvArgs a;
  a.x = TensorArg(args, 0, kernel);
  a.w = weight_only ? TensorArg(args, 1, kernel, kDLInt, 8) : TensorArg(args, 1, kernel);
  if (weight_only) a.w_scales = TensorArg(args, 2, kernel);
  a.out = TensorArg(args, 19 + shift, kernel);
  for (size_t i = 0; i < a.ints.size(); ++i) {
    a.ints[i] = args[4 + shift + static_cast<int>(i)].cast<int64_t>();
  }
  if (a.ints[9] != 0) a.bias = TensorArg(args, 2 + shift, kernel);
  if (a.ints[10] != 0) a.residual = TensorArg(args, 3 + shift, kernel);
  a.alpha = static_cast<float>(args[17 + shift].cast<double>());
  a.beta = static_cast<float>(args[18 + shift].cast<double>());
  return a;
}

// Per-thread buffer for an int8 kernel's quantized activation.
void* ThreadQuantized(size_t nbytes) {
  thread_local std::vector<char> buffer;
  if (buffer.size() < nbytes) buffer.resize(nbytes);
  return buffer.data();
}

// Quantizes an int8 kernel's activation on every OpenMP thread the kernel itself will use: done
// serially, the pass over a large activation (ResNet-18's 56x56x64 at batch 32: 6.4M values) took
// a tenth of its conv's time on one core while the other cores waited.
void QuantizeActivation(const float* src, size_t count, float scale, bool is_unsigned, void* dst,
                        int32_t zero_point) {
  const quant::QuantParams params{scale, zero_point};
  auto run = [&](size_t begin, size_t end) {
    if (is_unsigned) {
      quant::QuantizeU8(src + begin, end - begin, params, static_cast<uint8_t*>(dst) + begin);
    } else {
      quant::QuantizeS8(src + begin, end - begin, params, static_cast<int8_t*>(dst) + begin);
    }
  };
  constexpr size_t kChunk = size_t{1} << 16;  // values per task: well above a task's overhead
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || count < 2 * kChunk) {
    run(0, count);
    return;
  }
  const auto chunks = static_cast<int64_t>((count + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < chunks; ++i) {
    const size_t begin = static_cast<size_t>(i) * kChunk;
    run(begin, std::min(count, begin + kChunk));
  }
}

namespace {

void* DataOf(const DLTensor* t) { return static_cast<char*>(t->data) + t->byte_offset; }

Dims ShapeOf(const DLTensor* t) { return Dims(t->shape, t->shape + t->ndim); }

Dims RowMajorStrides(const Dims& dims) {
  Dims strides(dims.size(), 1);
  for (size_t d = dims.size(); d-- > 1;) strides[d - 1] = strides[d] * dims[d];
  return strides;
}

memory::desc PlainDesc(const Dims& dims) { return memory::desc(dims, kF32, RowMajorStrides(dims)); }

dnnl::post_ops MakePostOps(bool has_residual, const memory::desc& residual_md, int activation,
                           float alpha, float beta) {
  dnnl::post_ops ops;
  if (has_residual && kResidualBySum) ops.append_sum();
  if (has_residual && !kResidualBySum) ops.append_binary(dnnl::algorithm::binary_add, residual_md);
  using dnnl::algorithm;
  switch (static_cast<Activation>(activation)) {
    case Activation::kNone: break;
    case Activation::kRelu: AppendEltwise(ops, algorithm::eltwise_relu, 0.f, 0.f); break;
    case Activation::kGeluErf: AppendEltwise(ops, algorithm::eltwise_gelu_erf, 0.f, 0.f); break;
    case Activation::kGeluTanh: AppendEltwise(ops, algorithm::eltwise_gelu_tanh, 0.f, 0.f); break;
    case Activation::kClip: AppendEltwise(ops, algorithm::eltwise_clip, alpha, beta); break;
    case Activation::kSigmoid: AppendEltwise(ops, algorithm::eltwise_logistic, 0.f, 0.f); break;
    case Activation::kTanh: AppendEltwise(ops, algorithm::eltwise_tanh, 0.f, 0.f); break;
    default: TVM_FFI_THROW(ValueError) << "unknown activation code " << activation;
  }
  return ops;
}

dnnl::primitive_attr MakeAttr(const dnnl::post_ops& ops) {
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A built primitive plus, for constant weights, the weights reordered once into its layout.
struct CachedPrimitive {
  dnnl::primitive primitive;
  memory::desc src_md, weights_md, bias_md, dst_md, residual_md, scratchpad_md;
  std::shared_ptr<memory> packed_weights;  // null when the weights are a runtime input
  bool has_bias = false;
  bool has_residual = false;
  memory::desc weight_scales_md;  // int8 kernels: per-tensor source and per-channel weight scales
  bool has_scales = false;
  std::vector<int32_t> column_sums;  // matmul_q8 with a source zero point: sum over K of b[k, n]
};

// Identifies a primitive: the kernel, the weight's content id, the threads it is built for (a
// batch-splitting lane runs kernels single-threaded) and every shape and attribute that shapes
// it. Fixed-size so that a lookup on the hot path allocates nothing.
struct PrimitiveKey {
  static constexpr size_t kMaxFields = 48;
  int kernel = 0;
  int threads = omp_get_max_threads();
  int64_t weight_id = 0;
  std::array<int64_t, kMaxFields> fields{};
  size_t size = 0;

  void Add(int64_t value) {
    if (size == kMaxFields) TVM_FFI_THROW(InternalError) << "primitive key too long";
    fields[size++] = value;
  }
  void Add(const Dims& dims) {
    for (int64_t d : dims) Add(d);
  }
  void Add(std::initializer_list<int64_t> values) {
    for (int64_t v : values) Add(v);
  }
  bool operator==(const PrimitiveKey& other) const {
    return kernel == other.kernel && threads == other.threads && weight_id == other.weight_id &&
           size == other.size &&
           std::equal(fields.begin(), fields.begin() + size, other.fields.begin());
  }
};

struct PrimitiveKeyHash {
  size_t operator()(const PrimitiveKey& key) const {
    uint64_t h = 1469598103934665603ull ^ static_cast<uint64_t>(key.kernel);
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(static_cast<uint64_t>(key.threads));
    mix(static_cast<uint64_t>(key.weight_id));
    for (size_t i = 0; i < key.size; ++i) mix(static_cast<uint64_t>(key.fields[i]));
    return static_cast<size_t>(h);
  }
};

struct KernelCache {
  std::shared_mutex mutex;  // shared for lookups, exclusive for inserts
  std::unordered_map<PrimitiveKey, std::unique_ptr<const CachedPrimitive>, PrimitiveKeyHash>
      primitives;
  // Prepacked weights shared by every primitive (e.g. each batch bucket) wanting the same layout:
  // weight id -> (layout, packed memory).
  std::map<int64_t, std::vector<std::pair<memory::desc, std::shared_ptr<memory>>>> packed;
};

KernelCache& Cache() {
  static KernelCache cache;
  return cache;
}

// Returns the cached entry for `key`, building it on a miss. Entries are never evicted, so the
// returned pointer stays valid for the life of the process. Building happens under the exclusive
// lock: misses are rare (first call per shape) and building twice would repeat a weight reorder.
template <typename Build>
const CachedPrimitive& GetOrBuild(const PrimitiveKey& key, Build&& build) {
  KernelCache& cache = Cache();
  {
    std::shared_lock<std::shared_mutex> lock(cache.mutex);
    auto it = cache.primitives.find(key);
    if (it != cache.primitives.end()) return *it->second;
  }
  std::unique_lock<std::shared_mutex> lock(cache.mutex);
  auto it = cache.primitives.find(key);
  if (it == cache.primitives.end()) {
    it = cache.primitives.emplace(key, std::make_unique<const CachedPrimitive>(build())).first;
  }
  return *it->second;
}

// Reorders constant weights from their plain layout into `packed_md`, once per weight and layout.
// Weight-only int8 weights (s8 `user_md`) are dequantized by the same reorder, multiplied by
// `scales` along the axes in `scale_mask`: the float weights exist once, packed, never per call.
// Called with the cache's exclusive lock held.
std::shared_ptr<memory> PackWeights(int64_t weight_id, const memory::desc& user_md, void* data,
                                    const memory::desc& packed_md, const float* scales = nullptr,
                                    int scale_mask = 0) {
  auto& layouts = Cache().packed[weight_id];
  for (const auto& [md, mem] : layouts) {
    if (md == packed_md) return mem;
  }
  auto packed = std::make_shared<memory>(packed_md, Engine());
  memory user(user_md, Engine(), data);
  dnnl::stream stream(Engine());
  if (scales == nullptr) {
    dnnl::reorder(user, *packed).execute(stream, user, *packed);
  } else {
    const Dims dims = DimsOf(user_md);
    int64_t count = 1;
    for (size_t axis = 0; axis < dims.size(); ++axis) {
      if (scale_mask & (1 << axis)) count *= dims[axis];
    }
    ScaledReorder(user, user_md, *packed, packed_md, scales, count, scale_mask, stream);
  }
  stream.wait();
  layouts.emplace_back(packed_md, packed);
  return packed;
}

// Per-thread argument sets, one per primitive: memory objects are created once and only their
// data handles change per call, so executing allocates nothing.
constexpr int kResidualArg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;

std::unordered_map<int, memory>& ThreadArgs(const CachedPrimitive& p) {
  thread_local std::unordered_map<const CachedPrimitive*, std::unordered_map<int, memory>> sets;
  auto it = sets.find(&p);
  if (it != sets.end()) return it->second;
  std::unordered_map<int, memory> args;
  args.emplace(DNNL_ARG_SRC, memory(p.src_md, Engine(), DNNL_MEMORY_NONE));
  args.emplace(DNNL_ARG_DST, memory(p.dst_md, Engine(), DNNL_MEMORY_NONE));
  args.emplace(DNNL_ARG_WEIGHTS, p.packed_weights ? *p.packed_weights
                                                  : memory(p.weights_md, Engine(), DNNL_MEMORY_NONE));
  if (p.has_bias) args.emplace(DNNL_ARG_BIAS, memory(p.bias_md, Engine(), DNNL_MEMORY_NONE));
  if (p.has_residual && !kResidualBySum) {
    args.emplace(kResidualArg, memory(p.residual_md, Engine(), DNNL_MEMORY_NONE));
  }
  if (p.scratchpad_md.get_size() > 0) {
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(p.scratchpad_md, Engine(), DNNL_MEMORY_NONE));
  }
#if DNNL_VERSION_MAJOR >= 3  // only the int8 kernels have scales, and they refuse on 2.x
  if (p.has_scales) {
    args.emplace(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC,
                 memory(memory::desc({1}, kF32, Tag::a), Engine(), DNNL_MEMORY_NONE));
    args.emplace(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS,
                 memory(p.weight_scales_md, Engine(), DNNL_MEMORY_NONE));
  }
#endif
  return sets.emplace(&p, std::move(args)).first->second;
}

// The dequantization scales of an int8 primitive's execution.
struct Scales {
  const float* src = nullptr;      // one value
  const float* weights = nullptr;  // one per output channel
};

// Runs `p` on the given buffers (weights: null when prepacked; bias/residual: null when absent;
// scales: only for int8 primitives).
void Execute(const CachedPrimitive& p, const void* src, const void* weights, const void* bias,
             const void* residual, void* dst, Scales scales = {}) {
  auto& args = ThreadArgs(p);
  auto set = [&args](int arg, const void* data) {
    args.at(arg).set_data_handle(const_cast<void*>(data));
  };
  set(DNNL_ARG_SRC, src);
  set(DNNL_ARG_DST, dst);
  if (!p.packed_weights) set(DNNL_ARG_WEIGHTS, weights);
  if (p.has_bias) set(DNNL_ARG_BIAS, bias);
  if (p.has_residual && !kResidualBySum) set(kResidualArg, residual);
  if (p.has_residual && kResidualBySum && residual != dst) {
    std::memcpy(dst, residual, p.dst_md.get_size());  // the sum post-op adds onto dst
  }
#if DNNL_VERSION_MAJOR >= 3
  if (p.has_scales) {
    set(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, scales.src);
    set(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, scales.weights);
  }
#else
  (void)scales;
#endif
  const size_t scratch_bytes = p.scratchpad_md.get_size();
  if (scratch_bytes > 0) set(DNNL_ARG_SCRATCHPAD, ThreadScratchpad(scratch_bytes));
  p.primitive.execute(ThreadStream(), args);
  ThreadStream().wait();
}

// Primitives below this many FLOPs are built for and run on the calling thread alone: waking
// the pool's other threads costs more than splitting the work saves (a 1x64x128 matmul is ~1 us
// of work). EMBER_DNNL_SERIAL_MAX_FLOPS overrides it (read once; 0 disables).
double SerialMaxFlops() {
  static const double flops = [] {
    const char* env = std::getenv("EMBER_DNNL_SERIAL_MAX_FLOPS");
    return env != nullptr ? std::atof(env) : 5e5;
  }();
  return flops;
}

// While alive, makes the calling thread's OpenMP regions (and so oneDNN's) single-threaded when
// the primitive is small. Construct it before the PrimitiveKey, which records the thread count.
class SerialIfSmall {
 public:
  explicit SerialIfSmall(double flops)
      : saved_(flops < SerialMaxFlops() && !omp_in_parallel() ? omp_get_max_threads() : 0) {
    if (saved_ > 1) omp_set_num_threads(1);
  }
  ~SerialIfSmall() {
    if (saved_ > 1) omp_set_num_threads(saved_);
  }
  SerialIfSmall(const SerialIfSmall&) = delete;
  SerialIfSmall& operator=(const SerialIfSmall&) = delete;

 private:
  int saved_;
};

template <typename Fn>
void Guarded(const char* kernel, Fn&& fn) {
  try {
    fn();
  } catch (const dnnl::error& err) {
    TVM_FFI_THROW(RuntimeError) << kernel << ": oneDNN error " << static_cast<int>(err.status)
                                << ": " << err.what();
  }
}

// A conv's logical dims in oneDNN's order, whatever the activation layout (NHWC: [N,H,W,C];
// NCHW8c: [N,C/8,H,W,8]), from its input, OHWI weights and output; the layout checked.
struct ConvGeometry {
  int64_t n, c, h, wd, o, kh, kw, oh, ow;
  bool blocked;
  Tag act_tag;
};

ConvGeometry ConvGeometryOf(const DLTensor* x, const DLTensor* w, const DLTensor* out,
                            const char* kernel) {
  const bool blocked = x->ndim == 5;
  if (blocked ? (out->ndim != 5 || x->shape[4] != kBlock || out->shape[4] != kBlock)
              : (x->ndim != 4 || out->ndim != 4)) {
    TVM_FFI_THROW(ValueError) << kernel
                              << ": expects NHWC (4-d) or NCHW8c (5-d) input and output, alike";
  }
  if (w->ndim != 4) TVM_FFI_THROW(ValueError) << kernel << ": expects 4-d OHWI weights";
  return ConvGeometry{x->shape[0],
                      blocked ? x->shape[1] * kBlock : x->shape[3],
                      blocked ? x->shape[2] : x->shape[1],
                      blocked ? x->shape[3] : x->shape[2],
                      w->shape[0],
                      w->shape[1],
                      w->shape[2],
                      blocked ? out->shape[2] : out->shape[1],
                      blocked ? out->shape[3] : out->shape[2],
                      blocked,
                      blocked ? Tag::nChw8c : Tag::nhwc};
}

// ember.dnnl.conv2d(x, w[O,KH,KW,C/groups], bias[O], residual, stride_h, stride_w, pad_top,
//   pad_left, pad_bottom, pad_right, dilation_h, dilation_w, groups, has_bias, has_residual,
//   activation, weight_id, alpha, beta, out)
// Activations (x, residual, out) are either all NHWC (4-d: [N,H,W,C]) or all NCHW8c (5-d:
// [N,C/8,H,W,8], oneDNN's nChw8c), the blocked layout its depthwise and 1x1 kernels run fastest
// on. Weights are constants: prepacked once per weight_id (a content hash from the compiler).
//
// ember.dnnl.conv2d_w8(x, w[O,KH,KW,C/groups] int8, w_scales[O], bias, ... as above ..., out)
// Weight-only int8: the artifact holds int8 weights and per-output-channel scales; the one-time
// prepack dequantizes them into the float primitive's layout (see PackWeights).
void Conv2dCommon(const ffi::PackedArgs& args, bool weight_only) {
  const char* kName = weight_only ? "ember.dnnl.conv2d_w8" : "ember.dnnl.conv2d";
  const ConvArgs parsed = ParseConvArgs(args, kName, weight_only);
  const DLTensor *x = parsed.x, *w = parsed.w, *w_scales = parsed.w_scales, *out = parsed.out;
  const DLTensor *bias = parsed.bias, *residual = parsed.residual;
  const auto [sh, sw, pt, pl, pb, pr, dh, dw, groups, has_bias, has_res, act, weight_id] =
      parsed.ints;
  const float alpha = parsed.alpha, beta = parsed.beta;
  const auto [n, c, h, wd, o, kh, kw, oh, ow, blocked, act_tag] = ConvGeometryOf(x, w, out, kName);
  if (weight_only && (w_scales->ndim != 1 || w_scales->shape[0] != o)) {
    TVM_FFI_THROW(ValueError) << kName << ": w_scales must be [" << o << "]";
  }

  const SerialIfSmall serial(2.0 * static_cast<double>(n * o * oh * ow) *
                             static_cast<double>(c / groups * kh * kw));
  PrimitiveKey key;
  key.kernel = weight_only ? 4 : 0;
  key.weight_id = weight_id;
  key.Add({n, h, wd, c, o, kh, kw, oh, ow, sh, sw, pt, pl, pb, pr, dh, dw, groups, has_bias, has_res,
           act, static_cast<int64_t>(alpha * 1e6), static_cast<int64_t>(beta * 1e6), blocked});
  Guarded(kName, [&] {
    const CachedPrimitive& prim = GetOrBuild(key, [&] {
      CachedPrimitive p;
      p.has_bias = has_bias != 0;
      p.has_residual = has_res != 0;
      p.src_md = memory::desc({n, c, h, wd}, kF32, act_tag);
      p.dst_md = memory::desc({n, o, oh, ow}, kF32, act_tag);
      memory::desc user_w;
      Dims w_dims;
      const auto user_type = weight_only ? memory::data_type::s8 : kF32;
      int scale_mask = 1 << 0;  // per output channel
      if (groups == 1) {
        w_dims = {o, c, kh, kw};
        user_w = memory::desc(w_dims, user_type, Tag::ohwi);
      } else {
        w_dims = {groups, o / groups, c / groups, kh, kw};
        user_w = memory::desc(w_dims, user_type, Tag::gohwi);
        scale_mask = (1 << 0) | (1 << 1);  // (group, output channel in group)
      }
      p.bias_md = has_bias ? memory::desc({o}, kF32, Tag::a) : memory::desc();
      p.residual_md = p.dst_md;
      auto attr = MakeAttr(MakePostOps(has_res != 0, p.residual_md, static_cast<int>(act), alpha, beta));
      auto pd = ConvPrimitiveDesc(p.src_md, memory::desc(w_dims, kF32, Tag::any), p.bias_md,
                                  p.dst_md, {sh, sw}, {dh - 1, dw - 1}, {pt, pl}, {pb, pr}, attr);
      p.weights_md = pd.weights_desc();
      p.scratchpad_md = pd.scratchpad_desc();
      p.primitive = dnnl::convolution_forward(pd);
      p.packed_weights = PackWeights(
          weight_id, user_w, DataOf(w), p.weights_md,
          weight_only ? static_cast<const float*>(DataOf(w_scales)) : nullptr, scale_mask);
      return p;
    });
    Execute(prim, DataOf(x), nullptr, bias ? DataOf(bias) : nullptr,
            residual ? DataOf(residual) : nullptr, DataOf(out));
  });
}

void Conv2d(ffi::PackedArgs args, ffi::Any* /*rv*/) { Conv2dCommon(args, false); }
void Conv2dW8(ffi::PackedArgs args, ffi::Any* /*rv*/) { Conv2dCommon(args, true); }

// ember.dnnl.matmul(a[..., M, K], b[..., K, N], bias[N], residual[..., M, N],
//   b_is_constant, has_bias, has_residual, activation, weight_id, alpha, beta, out[..., M, N])
// Leading (batch) dims broadcast as in numpy. A constant 2-d `b` is prepacked once per weight_id
// and `a`'s leading dims are folded into M.
//
// ember.dnnl.matmul_w8(a, b[K, N] int8, b_scales[N], bias, ... as above ..., out)
// Weight-only int8 of a constant 2-d `b`: dequantized (per column) by its one-time prepack.
void MatmulCommon(const ffi::PackedArgs& args, bool weight_only) {
  const char* kName = weight_only ? "ember.dnnl.matmul_w8" : "ember.dnnl.matmul";
  const int shift = weight_only ? 1 : 0;  // w8: the scales follow the weights
  if (args.size() != 12 + shift) {
    TVM_FFI_THROW(ValueError) << kName << ": expects " << 12 + shift << " arguments";
  }
  const DLTensor* a = TensorArg(args, 0, kName);
  const DLTensor* b = weight_only ? TensorArg(args, 1, kName, kDLInt, 8) : TensorArg(args, 1, kName);
  const DLTensor* b_scales = weight_only ? TensorArg(args, 2, kName) : nullptr;
  const DLTensor* out = TensorArg(args, 11 + shift, kName);
  const int64_t b_const = args[4 + shift].cast<int64_t>(), has_bias = args[5 + shift].cast<int64_t>();
  const int64_t has_res = args[6 + shift].cast<int64_t>(), act = args[7 + shift].cast<int64_t>();
  const int64_t weight_id = args[8 + shift].cast<int64_t>();
  const auto alpha = static_cast<float>(args[9 + shift].cast<double>());
  const auto beta = static_cast<float>(args[10 + shift].cast<double>());
  const DLTensor* bias = has_bias ? TensorArg(args, 2 + shift, kName) : nullptr;
  const DLTensor* residual = has_res ? TensorArg(args, 3 + shift, kName) : nullptr;
  if (weight_only && (!b_const || b->ndim != 2 || b_scales->ndim != 1 ||
                      b_scales->shape[0] != b->shape[1])) {
    TVM_FFI_THROW(ValueError) << kName << ": expects constant b[K, N] and b_scales[N]";
  }
  if (a->ndim < 2 || b->ndim < 2 || out->ndim < 2) {
    TVM_FFI_THROW(ValueError) << kName << ": operands must have rank >= 2";
  }
  const int64_t k = a->shape[a->ndim - 1];
  const int64_t n = b->shape[b->ndim - 1];
  const bool fold_batch = b_const && b->ndim == 2;

  Dims a_dims, b_dims, out_dims;
  if (fold_batch) {
    int64_t m = 1;
    for (int d = 0; d < a->ndim - 1; ++d) m *= a->shape[d];
    a_dims = {m, k};
    b_dims = {k, n};
    out_dims = {m, n};
  } else {
    const size_t rank = static_cast<size_t>(out->ndim);
    auto pad = [rank](const DLTensor* t) {
      Dims dims(rank - static_cast<size_t>(t->ndim), 1);
      dims.insert(dims.end(), t->shape, t->shape + t->ndim);
      return dims;
    };
    a_dims = pad(a);
    b_dims = pad(b);
    out_dims = ShapeOf(out);
  }
  double flops = 2.0 * static_cast<double>(k);
  for (int64_t d : out_dims) flops *= static_cast<double>(d);
  const SerialIfSmall serial(flops);
  PrimitiveKey key;
  key.kernel = weight_only ? 5 : 1;
  key.weight_id = b_const ? weight_id : 0;
  key.Add(static_cast<int64_t>(a_dims.size()));
  key.Add(a_dims);
  key.Add(b_dims);
  key.Add({b_const, has_bias, has_res, act, static_cast<int64_t>(alpha * 1e6),
           static_cast<int64_t>(beta * 1e6)});
  Guarded(kName, [&] {
    const CachedPrimitive& prim = GetOrBuild(key, [&] {
      CachedPrimitive p;
      p.has_bias = has_bias != 0;
      p.has_residual = has_res != 0;
      p.src_md = PlainDesc(a_dims);
      p.dst_md = PlainDesc(out_dims);
      p.residual_md = p.dst_md;
      if (has_bias) {
        Dims bias_dims(out_dims.size(), 1);
        bias_dims.back() = n;
        p.bias_md = PlainDesc(bias_dims);
      }
      auto attr = MakeAttr(MakePostOps(has_res != 0, p.residual_md, static_cast<int>(act), alpha, beta));
      // Constant 2-d weights are repacked with a padded row pitch when N is a multiple of 256
      // floats: a 4 KiB-multiple pitch makes gemm's column loads alias in the L1/L2 sets
      // (measured on Zen 3: 128x768x3072 ran at 75 GFLOP/s, 768-wide at 125).
      memory::desc wanted_w = PlainDesc(b_dims);
      if (b_const && b_dims.size() == 2 && b_dims[1] % 256 == 0) {
        wanted_w = memory::desc(b_dims, kF32, Dims{b_dims[1] + 16, 1});
      } else if (b_const) {
        wanted_w = memory::desc(b_dims, kF32, Tag::any);
      }
      auto pd = MatmulPrimitiveDesc(p.src_md, wanted_w, p.bias_md, p.dst_md, attr);
      p.weights_md = pd.weights_desc();
      p.scratchpad_md = pd.scratchpad_desc();
      p.primitive = dnnl::matmul(pd);
      if (weight_only) {
        p.packed_weights =
            PackWeights(weight_id, memory::desc(b_dims, memory::data_type::s8, Tag::ab), DataOf(b),
                        p.weights_md, static_cast<const float*>(DataOf(b_scales)), 1 << 1);
      } else if (b_const) {
        p.packed_weights = PackWeights(weight_id, PlainDesc(b_dims), DataOf(b), p.weights_md);
      }
      return p;
    });
    Execute(prim, DataOf(a), DataOf(b), bias ? DataOf(bias) : nullptr,
            residual ? DataOf(residual) : nullptr, DataOf(out));
  });
}

void Matmul(ffi::PackedArgs args, ffi::Any* /*rv*/) { MatmulCommon(args, false); }
void MatmulW8(ffi::PackedArgs args, ffi::Any* /*rv*/) { MatmulCommon(args, true); }

#if DNNL_VERSION_MAJOR >= 3
// x86 CPUs without VNNI multiply u8 x s8 pairs into saturating int16 sums (vpmaddubsw): with
// |w| <= 64 a pair stays within 2 * 255 * 64 = 32640 (int16 holds [-32768, 32767]), but 65 can
// overflow with activations near 255. Weights must then fit [-64, 64], the range ONNX Runtime's
// reduce_range gives them for the same reason (ember's own quantizer uses [-63, 63]).
bool Int8NeedsSevenBitWeights() {
#if defined(__x86_64__)
  static const bool needs = !(__builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni"));
  return needs;
#else
  return false;
#endif
}

constexpr int kSevenBitMax = 64;

// Refuses int8 weights that would saturate on this CPU (see Int8NeedsSevenBitWeights).
void CheckSevenBitWeights(const DLTensor* w, const char* kernel) {
  if (!Int8NeedsSevenBitWeights()) return;
  size_t count = 1;
  for (int d = 0; d < w->ndim; ++d) count *= static_cast<size_t>(w->shape[d]);
  const auto* values = static_cast<const int8_t*>(DataOf(w));
  if (!std::all_of(values, values + count,
                   [](int8_t v) { return v >= -kSevenBitMax && v <= kSevenBitMax; })) {
    TVM_FFI_THROW(ValueError) << kernel << ": int8 weights must be within [-64, 64] on CPUs "
                              << "without VNNI (u8 x s8 products saturate in int16 otherwise)";
  }
}

// ember.dnnl.matmul_q8(a[..., M, K], b[K, N] int8, b_scales[N], bias[N], residual[..., M, N],
//   a_scale, a_unsigned, has_bias, has_residual, activation, weight_id, alpha, beta,
//   [a_zero_point,] out[..., M, N])
// Static int8: `a` (float32) is quantized with the calibrated a_scale and a_zero_point (0 when
// omitted, as artifacts built before it was added call it; uint8 when a_unsigned, else int8) by
// quant::Quantize*, then multiplied with the constant per-output-channel int8 weights `b` in int32
// and dequantized in the same primitive: out = a_scale * b_scales[n] * ((qa - zp) x b) + bias,
// then residual and activation. The zero point's share, zp * sum_k b[k, n], is taken off through
// the bias (column sums cached with the primitive). The weights are prepacked once per
// weight_id; `a`'s leading dims fold into M. On CPUs without VNNI, weights outside [-64, 64] are
// refused (see Int8NeedsSevenBitWeights).
void MatmulQ8(ffi::PackedArgs args, ffi::Any* /*rv*/) {
  constexpr const char* kName = "ember.dnnl.matmul_q8";
  if (args.size() != 14 && args.size() != 15) {
    TVM_FFI_THROW(ValueError) << kName << ": expects 15 arguments (or 14 without a_zero_point)";
  }
  const DLTensor* a = TensorArg(args, 0, kName);
  const DLTensor* b = TensorArg(args, 1, kName, kDLInt, 8);
  const DLTensor* b_scales = TensorArg(args, 2, kName);
  const int out_index = static_cast<int>(args.size()) - 1;
  const DLTensor* out = TensorArg(args, out_index, kName);
  const int64_t a_zero = args.size() == 15 ? args[13].cast<int64_t>() : 0;
  const float a_scale = static_cast<float>(args[5].cast<double>());
  const int64_t a_unsigned = args[6].cast<int64_t>(), has_bias = args[7].cast<int64_t>();
  const int64_t has_res = args[8].cast<int64_t>(), act = args[9].cast<int64_t>();
  const int64_t weight_id = args[10].cast<int64_t>();
  const auto alpha = static_cast<float>(args[11].cast<double>());
  const auto beta = static_cast<float>(args[12].cast<double>());
  const DLTensor* bias = has_bias ? TensorArg(args, 3, kName) : nullptr;
  const DLTensor* residual = has_res ? TensorArg(args, 4, kName) : nullptr;
  if (a->ndim < 2 || b->ndim != 2 || out->ndim != a->ndim) {
    TVM_FFI_THROW(ValueError) << kName << ": expects a[..., M, K], b[K, N] and out[..., M, N]";
  }
  const int64_t k = a->shape[a->ndim - 1], n = b->shape[1];
  if (b->shape[0] != k || b_scales->ndim != 1 || b_scales->shape[0] != n) {
    TVM_FFI_THROW(ValueError) << kName << ": b must be [K, N] with K = " << k
                              << " and b_scales [N]";
  }
  if (!(a_scale > 0) || !std::isfinite(a_scale)) {
    TVM_FFI_THROW(ValueError) << kName << ": a_scale must be finite and > 0, got " << a_scale;
  }
  const int64_t zero_min = a_unsigned ? 0 : -128, zero_max = a_unsigned ? 255 : 127;
  if (a_zero < zero_min || a_zero > zero_max) {
    TVM_FFI_THROW(ValueError) << kName << ": a_zero_point " << a_zero << " is outside ["
                              << zero_min << ", " << zero_max << "] of the "
                              << (a_unsigned ? "uint8" : "int8") << " activation";
  }
  int64_t m = 1;
  for (int d = 0; d < a->ndim - 1; ++d) m *= a->shape[d];
  const SerialIfSmall serial(2.0 * static_cast<double>(m) * static_cast<double>(k * n));
  const auto src_type = a_unsigned ? memory::data_type::u8 : memory::data_type::s8;
  const bool primitive_bias = has_bias != 0 || a_zero != 0;  // the zero point's share goes there
  PrimitiveKey key;
  key.kernel = 2;
  key.weight_id = weight_id;
  key.Add({m, k, n, a_unsigned, has_bias, has_res, act, static_cast<int64_t>(alpha * 1e6),
           static_cast<int64_t>(beta * 1e6), a_zero != 0 ? 1 : 0});
  Guarded(kName, [&] {
    const CachedPrimitive& prim = GetOrBuild(key, [&] {
      CachedPrimitive p;
      p.has_bias = primitive_bias;
      p.has_residual = has_res != 0;
      p.has_scales = true;
      p.src_md = memory::desc({m, k}, src_type, Tag::ab);
      p.dst_md = PlainDesc({m, n});
      p.residual_md = p.dst_md;
      p.weight_scales_md = memory::desc({n}, kF32, Tag::a);
      if (primitive_bias) p.bias_md = PlainDesc({1, n});
      auto attr = MakeAttr(MakePostOps(has_res != 0, p.residual_md, static_cast<int>(act), alpha, beta));
      attr.set_scales_mask(DNNL_ARG_SRC, 0);
      attr.set_scales_mask(DNNL_ARG_WEIGHTS, 1 << 1);  // per column n of b[K, N]
      auto pd = dnnl::matmul::primitive_desc(
          Engine(), p.src_md, memory::desc({k, n}, memory::data_type::s8, Tag::any), p.bias_md,
          p.dst_md, attr);
      CheckSevenBitWeights(b, kName);
      p.weights_md = pd.weights_desc();
      p.scratchpad_md = pd.scratchpad_desc();
      p.primitive = dnnl::matmul(pd);
      p.packed_weights = PackWeights(weight_id, memory::desc({k, n}, memory::data_type::s8, Tag::ab),
                                     DataOf(b), p.weights_md);
      if (a_zero != 0) {
        const auto* w = static_cast<const int8_t*>(DataOf(b));
        p.column_sums.assign(static_cast<size_t>(n), 0);
        for (int64_t row = 0; row < k; ++row) {
          for (int64_t col = 0; col < n; ++col) p.column_sums[static_cast<size_t>(col)] += w[row * n + col];
        }
      }
      return p;
    });
    const size_t count = static_cast<size_t>(m * k);
    void* quantized = ThreadQuantized(count);
    QuantizeActivation(static_cast<const float*>(DataOf(a)), count, a_scale, a_unsigned != 0,
                       quantized, static_cast<int32_t>(a_zero));
    const auto* scales = static_cast<const float*>(DataOf(b_scales));
    const void* bias_data = bias ? DataOf(bias) : nullptr;
    if (a_zero != 0) {  // bias - a_scale * b_scales[n] * zp * sum_k b[k, n], per call (N values)
      thread_local std::vector<float> shifted;
      shifted.resize(static_cast<size_t>(n));
      const auto* given = static_cast<const float*>(bias_data);
      for (int64_t col = 0; col < n; ++col) {
        const auto c = static_cast<size_t>(col);
        const double share = static_cast<double>(a_scale) * scales[c] * static_cast<double>(a_zero) *
                             prim.column_sums[c];
        shifted[c] = static_cast<float>((given != nullptr ? given[c] : 0.0) - share);
      }
      bias_data = shifted.data();
    }
    Execute(prim, quantized, nullptr, bias_data, residual ? DataOf(residual) : nullptr, DataOf(out),
            Scales{&a_scale, scales});
  });
}

// ember.dnnl.conv2d_q8(x, w[O,KH,KW,C/groups] int8, w_scales[O], bias[O], residual, stride_h,
//   stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w, groups, has_bias,
//   has_residual, activation, weight_id, a_unsigned, a_scale, alpha, beta, out)
// Static int8 conv2d: as ember.dnnl.conv2d (NHWC or NCHW8c float activations), with `x` quantized
// to uint8 by quant::QuantizeU8 with a_scale (zero point 0) and constant per-output-channel int8
// weights; out = a_scale * w_scales[o] * (qx * w) + bias, then residual and activation.
// Activations must be unsigned (a_unsigned = 1): oneDNN's int8 convs without VNNI halve the
// weights for signed inputs, which loses exactness (measured: off by ~40 accumulator units).
// Weights outside [-64, 64] are refused on CPUs without VNNI, and so are convs oneDNN would run
// on its reference implementation (uint8 in NCHW8c, for one): the compiler uses NHWC for them.
void Conv2dQ8(ffi::PackedArgs args, ffi::Any* /*rv*/) {
  constexpr const char* kName = "ember.dnnl.conv2d_q8";
  if (args.size() != 23) TVM_FFI_THROW(ValueError) << kName << ": expects 23 arguments";
  const DLTensor* x = TensorArg(args, 0, kName);
  const DLTensor* w = TensorArg(args, 1, kName, kDLInt, 8);
  const DLTensor* w_scales = TensorArg(args, 2, kName);
  const DLTensor* out = TensorArg(args, 22, kName);
  int64_t ints[14];
  for (int i = 0; i < 14; ++i) ints[i] = args[5 + i].cast<int64_t>();
  const auto [sh, sw, pt, pl, pb, pr, dh, dw, groups, has_bias, has_res, act, weight_id, a_unsigned] =
      std::tuple{ints[0], ints[1], ints[2], ints[3], ints[4], ints[5], ints[6], ints[7], ints[8],
                 ints[9], ints[10], ints[11], ints[12], ints[13]};
  const auto a_scale = static_cast<float>(args[19].cast<double>());
  const auto alpha = static_cast<float>(args[20].cast<double>());
  const auto beta = static_cast<float>(args[21].cast<double>());
  const DLTensor* bias = has_bias ? TensorArg(args, 3, kName) : nullptr;
  const DLTensor* residual = has_res ? TensorArg(args, 4, kName) : nullptr;
  const auto [n, c, h, wd, o, kh, kw, oh, ow, blocked, act_tag] = ConvGeometryOf(x, w, out, kName);
  if (!(a_scale > 0) || !std::isfinite(a_scale)) {
    TVM_FFI_THROW(ValueError) << kName << ": a_scale must be finite and > 0, got " << a_scale;
  }
  if (a_unsigned != 1) {
    TVM_FFI_THROW(ValueError) << kName << ": needs unsigned (uint8) activations";
  }
  if (w_scales->ndim != 1 || w_scales->shape[0] != o) {
    TVM_FFI_THROW(ValueError) << kName << ": w_scales must be [" << o << "]";
  }
  const auto src_type = memory::data_type::u8;

  const SerialIfSmall serial(2.0 * static_cast<double>(n * o * oh * ow) *
                             static_cast<double>(c / groups * kh * kw));
  PrimitiveKey key;
  key.kernel = 3;
  key.weight_id = weight_id;
  key.Add({n, h, wd, c, o, kh, kw, oh, ow, sh, sw, pt, pl, pb, pr, dh, dw, groups, has_bias, has_res,
           act, static_cast<int64_t>(alpha * 1e6), static_cast<int64_t>(beta * 1e6), blocked,
           a_unsigned});
  Guarded(kName, [&] {
    const CachedPrimitive& prim = GetOrBuild(key, [&] {
      CheckSevenBitWeights(w, kName);
      CachedPrimitive p;
      p.has_bias = has_bias != 0;
      p.has_residual = has_res != 0;
      p.has_scales = true;
      p.src_md = memory::desc({n, c, h, wd}, src_type, act_tag);
      p.dst_md = memory::desc({n, o, oh, ow}, kF32, act_tag);
      p.weight_scales_md = memory::desc({o}, kF32, Tag::a);
      Dims w_dims;
      memory::desc user_w;
      int scale_mask = 1 << 0;  // per output channel
      if (groups == 1) {
        w_dims = {o, c, kh, kw};
        user_w = memory::desc(w_dims, memory::data_type::s8, Tag::ohwi);
      } else {
        w_dims = {groups, o / groups, c / groups, kh, kw};
        user_w = memory::desc(w_dims, memory::data_type::s8, Tag::gohwi);
        scale_mask = (1 << 0) | (1 << 1);  // (group, output channel in group)
      }
      p.bias_md = has_bias ? memory::desc({o}, kF32, Tag::a) : memory::desc();
      p.residual_md = p.dst_md;
      auto attr = MakeAttr(MakePostOps(has_res != 0, p.residual_md, static_cast<int>(act), alpha, beta));
      attr.set_scales_mask(DNNL_ARG_SRC, 0);
      attr.set_scales_mask(DNNL_ARG_WEIGHTS, scale_mask);
      auto pd = dnnl::convolution_forward::primitive_desc(
          Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
          p.src_md, memory::desc(w_dims, memory::data_type::s8, Tag::any), p.bias_md, p.dst_md,
          {sh, sw}, {dh - 1, dw - 1}, {pt, pl}, {pb, pr}, attr);
      const std::string impl = pd.impl_info_str();
      if (impl.rfind("ref", 0) == 0) {  // e.g. uint8 in nChw8c: orders of magnitude slower
        TVM_FFI_THROW(ValueError) << kName << ": oneDNN has no optimized int8 kernel for this conv ("
                                  << (blocked ? "NCHW8c" : "NHWC") << ", " << c << "->" << o
                                  << " channels, groups " << groups << "); it would run on '"
                                  << impl << "'";
      }
      p.weights_md = pd.weights_desc();
      p.scratchpad_md = pd.scratchpad_desc();
      p.primitive = dnnl::convolution_forward(pd);
      p.packed_weights = PackWeights(weight_id, user_w, DataOf(w), p.weights_md);
      return p;
    });
    size_t count = 1;
    for (int d = 0; d < x->ndim; ++d) count *= static_cast<size_t>(x->shape[d]);
    void* quantized = ThreadQuantized(count);
    QuantizeActivation(static_cast<const float*>(DataOf(x)), count, a_scale, true, quantized);
    Execute(prim, quantized, nullptr, bias ? DataOf(bias) : nullptr,
            residual ? DataOf(residual) : nullptr, DataOf(out),
            Scales{&a_scale, static_cast<const float*>(DataOf(w_scales))});
  });
}
#else
// The static int8 kernels with oneDNN 2.x (the aarch64 build): refused, see "oneDNN 2.x
// compatibility" above; the compiler does not emit them for such targets.
void RefuseStaticInt8(const char* kernel) {
  TVM_FFI_THROW(RuntimeError) << kernel << ": static int8 kernels need oneDNN 3, and this runtime "
                              << "was built with oneDNN " << DNNL_VERSION_MAJOR << "."
                              << DNNL_VERSION_MINOR << "; compile the model with precision "
                              << "'fp32' or 'int8-weight' for this target";
}

void MatmulQ8(ffi::PackedArgs /*args*/, ffi::Any* /*rv*/) { RefuseStaticInt8("ember.dnnl.matmul_q8"); }
void Conv2dQ8(ffi::PackedArgs /*args*/, ffi::Any* /*rv*/) { RefuseStaticInt8("ember.dnnl.conv2d_q8"); }
#endif

}  // namespace

// ember.dnnl.softmax(x, axis, out): softmax along `axis` of a contiguous float32 tensor of 1-6
// dims, by oneDNN's vectorized, parallel softmax_accurate (max-subtracted). On BERT's
// 32x12x128x128 attention scores it takes 4 ms on 2 cores where TVM's default schedule took 21.
void Softmax(ffi::PackedArgs args, ffi::Any* /*rv*/) {
  constexpr const char* kName = "ember.dnnl.softmax";
  if (args.size() != 3) TVM_FFI_THROW(ValueError) << kName << ": expects 3 arguments";
  const DLTensor* x = TensorArg(args, 0, kName);
  const DLTensor* out = TensorArg(args, 2, kName);
  const int ndim = x->ndim;
  if (ndim < 1 || ndim > 6) {
    TVM_FFI_THROW(ValueError) << kName << ": expects 1 to 6 dims, got " << ndim;
  }
  bool same_shape = out->ndim == ndim;
  for (int d = 0; same_shape && d < ndim; ++d) same_shape = x->shape[d] == out->shape[d];
  if (!same_shape) TVM_FFI_THROW(ValueError) << kName << ": out must have x's shape";
  int64_t axis = args[1].cast<int64_t>();
  if (axis < -ndim || axis >= ndim) {
    TVM_FFI_THROW(ValueError) << kName << ": axis " << axis << " is out of range for " << ndim
                              << " dims";
  }
  if (axis < 0) axis += ndim;
  const Dims dims(x->shape, x->shape + ndim);
  double elements = 1;
  for (int64_t dim : dims) elements *= static_cast<double>(dim);
  const SerialIfSmall serial(5.0 * elements);  // ~5 flops per element (max, exp, sum, divide)
  PrimitiveKey key;
  key.kernel = 6;
  key.Add(ndim);
  key.Add(axis);
  for (int64_t dim : dims) key.Add(dim);
  Guarded(kName, [&] {
    const CachedPrimitive& prim = GetOrBuild(key, [&] {
      static constexpr Tag kPlain[] = {Tag::a, Tag::ab, Tag::abc, Tag::abcd, Tag::abcde, Tag::abcdef};
      CachedPrimitive p;
      p.src_md = memory::desc(dims, kF32, kPlain[ndim - 1]);
      p.dst_md = p.src_md;
      const auto pd = SoftmaxPrimitiveDesc(p.src_md, static_cast<int>(axis), MakeAttr({}));
      p.scratchpad_md = pd.scratchpad_desc();
      p.primitive = dnnl::softmax_forward(pd);
      return p;
    });
    Execute(prim, DataOf(x), nullptr, nullptr, nullptr, DataOf(out));
  });
}

// ember.dnnl.max_pool2d(x, layout, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left,
//   pad_bottom, pad_right, out): max pooling of a float32 tensor in `layout` (0: NCHW, 1: NHWC,
//   2: NCHW8c, the layouts ember's convs leave), padding ignored (as ONNX's -inf). The output's
//   spatial size may exceed what the pads give (ceil_mode): the bottom/right pads then grow to
//   fit, which adds no values, since every window still starts inside the input or its pads.
//   TVM's default schedule took 54 us on the digits CNN's 32x8x8x32 (oneDNN: 11 us) and 14 ms on
//   ResNet-18's 32x112x112x64 (oneDNN: 12 ms, memory-bound).
void MaxPool2d(ffi::PackedArgs args, ffi::Any* /*rv*/) {
  constexpr const char* kName = "ember.dnnl.max_pool2d";
  if (args.size() != 11) TVM_FFI_THROW(ValueError) << kName << ": expects 11 arguments";
  const DLTensor* x = TensorArg(args, 0, kName);
  const DLTensor* out = TensorArg(args, 10, kName);
  const int64_t layout = args[1].cast<int64_t>();
  std::array<int64_t, 8> p{};  // pool h/w, stride h/w, pad top/left/bottom/right
  for (size_t i = 0; i < p.size(); ++i) p[i] = args[2 + static_cast<int>(i)].cast<int64_t>();
  const int want_ndim = layout == 2 ? 5 : 4;
  if (layout < 0 || layout > 2) {
    TVM_FFI_THROW(ValueError) << kName << ": layout must be 0 (NCHW), 1 (NHWC) or 2 (NCHW8c), got "
                              << layout;
  }
  if (x->ndim != want_ndim || out->ndim != want_ndim ||
      (layout == 2 && (x->shape[4] != 8 || out->shape[4] != 8))) {
    TVM_FFI_THROW(ValueError) << kName << ": x and out must be " << want_ndim << "-d in layout "
                              << layout << (layout == 2 ? " with a last dim of 8" : "");
  }
  for (size_t i = 0; i < 4; ++i) {
    if (p[i] < 1) TVM_FFI_THROW(ValueError) << kName << ": pool sizes and strides must be >= 1";
  }
  for (size_t i = 4; i < 8; ++i) {
    if (p[i] < 0) TVM_FFI_THROW(ValueError) << kName << ": pads must be >= 0";
  }
  // Logical dims (N, C, H, W), whatever the layout.
  auto logical = [layout](const DLTensor* t) {
    if (layout == 1) return Dims{t->shape[0], t->shape[3], t->shape[1], t->shape[2]};
    if (layout == 2) return Dims{t->shape[0], t->shape[1] * 8, t->shape[2], t->shape[3]};
    return Dims{t->shape[0], t->shape[1], t->shape[2], t->shape[3]};
  };
  const Dims src_dims = logical(x), dst_dims = logical(out);
  if (src_dims[0] != dst_dims[0] || src_dims[1] != dst_dims[1]) {
    TVM_FFI_THROW(ValueError) << kName << ": out must keep x's batch and channels";
  }
  Dims pad_r = {p[6], p[7]};
  for (size_t d = 0; d < 2; ++d) {
    const int64_t in = src_dims[2 + d], size = p[d], stride = p[2 + d], pad_l = p[4 + d];
    const int64_t floor_out = (in + pad_l + pad_r[d] - size) / stride + 1;
    const int64_t want = dst_dims[2 + d];
    if (in + pad_l + pad_r[d] < size || want < floor_out || want < 1 ||
        (want - 1) * stride >= in + pad_l) {  // a last window starting past the input and its pads
      TVM_FFI_THROW(ValueError) << kName << ": an output " << (d == 0 ? "height" : "width")
                                << " of " << want << " does not fit an input of " << in
                                << " with pool " << size << ", stride " << stride << " and pads "
                                << pad_l << "/" << p[6 + d];
    }
    pad_r[d] = std::max(pad_r[d], (want - 1) * stride + size - in - pad_l);  // ceil_mode
  }
  double elements = 1;
  for (int64_t dim : dst_dims) elements *= static_cast<double>(dim);
  const SerialIfSmall serial(elements * static_cast<double>(p[0] * p[1]));  // one compare each
  PrimitiveKey key;
  key.kernel = 7;
  key.Add(layout);
  key.Add(src_dims);
  key.Add(dst_dims);
  key.Add({p[0], p[1], p[2], p[3], p[4], p[5], pad_r[0], pad_r[1]});
  Guarded(kName, [&] {
    const CachedPrimitive& prim = GetOrBuild(key, [&] {
      const Tag tag = layout == 1 ? Tag::nhwc : layout == 2 ? Tag::nChw8c : Tag::nchw;
      CachedPrimitive c;
      c.src_md = memory::desc(src_dims, kF32, tag);
      c.dst_md = memory::desc(dst_dims, kF32, tag);
      const auto pd = MaxPoolPrimitiveDesc(c.src_md, c.dst_md, {p[2], p[3]}, {p[0], p[1]},
                                           {p[4], p[5]}, pad_r, MakeAttr({}));
      c.scratchpad_md = pd.scratchpad_desc();
      c.primitive = dnnl::pooling_forward(pd);
      return c;
    });
    Execute(prim, DataOf(x), nullptr, nullptr, nullptr, DataOf(out));
  });
}

void RegisterDnnlKernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    namespace refl = tvm::ffi::reflection;
    refl::GlobalDef()
        .def_packed("ember.dnnl.conv2d", Conv2d)
        .def_packed("ember.dnnl.matmul", Matmul)
        .def_packed("ember.dnnl.conv2d_w8", Conv2dW8)
        .def_packed("ember.dnnl.matmul_w8", MatmulW8)
        .def_packed("ember.dnnl.matmul_q8", MatmulQ8)
        .def_packed("ember.dnnl.conv2d_q8", Conv2dQ8)
        .def_packed("ember.dnnl.softmax", Softmax)
        .def_packed("ember.dnnl.max_pool2d", MaxPool2d);
  });
  RegisterWinogradKernels();  // ember.dnnl.conv2d_wino (winograd.cc)
}

size_t DnnlCachedPrimitives() {
  std::shared_lock<std::shared_mutex> lock(Cache().mutex);
  return Cache().primitives.size();
}

}  // namespace ember::kernels
