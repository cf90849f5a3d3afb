#include "ember/model.h"

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include <omp.h>

#include "ember/artifact.h"
#include "ember/batch_plan.h"
#include "ember/cuda.h"
#include "ember/device_transfer.h"
#include "ember/kernels/dnnl_kernels.h"
#include "ember/parallel.h"

namespace ember::runtime {
namespace {

namespace ffi = tvm::ffi;

// Relax VM allocator kind 2 = pooled: intermediate buffers are reused across calls.
constexpr int kVmPooledAllocator = 2;

// Lets TVM see caller-owned memory as an ffi::Tensor without copying or taking ownership.
struct BorrowedMemory {
  void* data;
  void AllocData(DLTensor* tensor) { tensor->data = data; }
  void FreeData(DLTensor* /*tensor*/) {}
};

Status FromTvmError(const std::string& what, const ffi::Error& err) {
  return Status::RuntimeError(what + ": " + err.kind() + ": " + err.message());
}

bool IsAligned(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % kTensorAlignmentBytes == 0;
}

std::string DescribeSpecs(const std::vector<TensorSpec>& specs) {
  std::string out;
  for (const auto& spec : specs) out += (out.empty() ? "" : ", ") + spec.ToString();
  return out;
}

// Lanes a request may be split across: one per OpenMP thread (EMBER_NUM_THREADS), unless
// EMBER_SPLIT_BATCHES=0 (read once). Each lane runs single-threaded, so lanes never
// oversubscribe cores. Measured on 2 cores at 32 rows as 2 x 16: 4-7% faster for the digits
// models, 2-4% for MobileNet and the BERT layer, neutral for ResNet-18. A lane's VM holds its
// own activation memory, so a split model uses up to lanes x the memory of one.
int MaxLanes() {
  static const bool enabled = [] {
    const char* env = std::getenv("EMBER_SPLIT_BATCHES");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return enabled ? omp_get_max_threads() : 1;
}

// Test aid: EMBER_TEST_DEVICE_COPIES=1 (read at each Load) runs CPU artifacts through the
// device-copy path of CUDA artifacts with the CPU as the "device", so that machines without a GPU
// test that path (staging, copies in and out, padding) end to end.
bool TestDeviceCopies() {
  const char* env = std::getenv("EMBER_TEST_DEVICE_COPIES");
  return env != nullptr && std::strcmp(env, "1") == 0;
}

using BufferKey = std::pair<int64_t, size_t>;  // (bucket, input or output index)

// One VM instance with its functions and staging buffers. A VM is not thread-safe: a lane is
// used by one thread at a time (the Run mutex, then the lane's own OpenMP thread).
struct Lane {
  std::optional<ffi::Module> vm;
  std::map<int64_t, ffi::Function> functions;  // bucket (or 0 without buckets) -> VM function
  // Staging buffers for padded/split/unaligned inputs, per (bucket, input index); reused.
  std::map<BufferKey, AlignedBuffer> staging;
  // Device artifacts only (CUDA): input tensors on the device and host copies of the outputs,
  // per (bucket, index); reused.
  std::map<BufferKey, ffi::Tensor> device_inputs;
  std::map<BufferKey, AlignedBuffer> output_staging;

  static Result<void*> Buffer(std::map<BufferKey, AlignedBuffer>& buffers, BufferKey key,
                              size_t nbytes) {
    auto it = buffers.find(key);
    if (it == buffers.end()) {
      EMBER_ASSIGN_OR_RETURN(AlignedBuffer buffer, AllocateAligned(nbytes));
      it = buffers.emplace(key, std::move(buffer)).first;
    }
    return it->second.get();
  }
  Result<void*> Staging(int64_t bucket, size_t input, size_t nbytes) {
    return Buffer(staging, {bucket, input}, nbytes);
  }
  Result<void*> OutputStaging(int64_t bucket, size_t output, size_t nbytes) {
    return Buffer(output_staging, {bucket, output}, nbytes);
  }
  Result<ffi::Tensor> DeviceInput(const DeviceTransfer& transfer, int64_t bucket, size_t input,
                                  const std::vector<int64_t>& shape, DLDataType dtype) {
    auto it = device_inputs.find({bucket, input});
    if (it == device_inputs.end()) {
      EMBER_ASSIGN_OR_RETURN(ffi::Tensor tensor, transfer.Empty(shape, dtype));
      it = device_inputs.emplace(BufferKey{bucket, input}, std::move(tensor)).first;
    }
    return it->second;
  }
};

}  // namespace

struct Model::Impl {
  std::string dir;
  Manifest manifest;
  std::optional<ffi::Module> library;  // set by Load(); the VMs keep functions from it alive
  std::vector<std::unique_ptr<Lane>> lanes;  // lanes[0] from Load(), more on first parallel run
  std::mutex run_mutex;  // guards lanes and their use
  // Where the VMs keep tensors. CPU: inputs are passed in place and outputs read in place. Any
  // other device (CUDA): `transfer` copies inputs there and outputs back to host memory.
  DLDevice device{kDLCPU, 0};
  std::optional<DeviceTransfer> transfer;

  Status SetUpDevice();
  Result<std::unique_ptr<Lane>> NewLane();
  Result<std::vector<ffi::Tensor>> Invoke(Lane& lane, int64_t bucket, std::vector<ffi::Tensor> args);
  Status RunChunk(Lane& lane, const std::vector<TensorView>& inputs, const Chunk& chunk,
                  int64_t total_rows, const std::vector<OutputBuffer>& outputs);
  Status RunSerial(Lane& lane, const std::vector<TensorView>& inputs, int64_t rows,
                   const std::vector<OutputBuffer>& outputs);
  Status RunLanes(const std::vector<std::vector<Chunk>>& plan, const std::vector<TensorView>& inputs,
                  int64_t rows, const std::vector<OutputBuffer>& outputs);
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const Manifest& Model::manifest() const { return impl_->manifest; }
const std::string& Model::artifact_dir() const { return impl_->dir; }

Result<std::unique_ptr<Model>> Model::Load(const std::string& artifact_dir) {
  kernels::RegisterDnnlKernels();  // before the VM resolves the ember.dnnl.* calls it makes
  auto impl = std::make_unique<Impl>();
  impl->dir = artifact_dir;
  EMBER_ASSIGN_OR_RETURN(impl->manifest, OpenArtifact(artifact_dir));
  // Before the library loads: its CUDA kernels load through TVM's CUDA runtime.
  EMBER_RETURN_IF_ERROR(impl->SetUpDevice());
  const std::string so_path = JoinPath(artifact_dir, impl->manifest.library);
  // Load a private, re-hashed copy: exactly the verified bytes, never a stale library the loader
  // already holds under the same path (e.g. an artifact recompiled in place).
  EMBER_ASSIGN_OR_RETURN(auto copy, PrivateLibraryCopy::Create(so_path, impl->manifest.library_sha256));
  try {
    impl->library = ffi::Module::LoadFromFile(copy->path());
    // TVM's parallel loops join oneDNN's OpenMP pool rather than starting a second pool.
    Result<bool> shared_pool = UseSharedThreadPool(copy->path());
    if (!shared_pool.ok()) return shared_pool.status();
  } catch (const ffi::Error& err) {
    return FromTvmError("loading '" + so_path + "' failed", err);
  }
  EMBER_ASSIGN_OR_RETURN(std::unique_ptr<Lane> lane, impl->NewLane());
  impl->lanes.push_back(std::move(lane));
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

Status Model::Impl::SetUpDevice() {
  if (manifest.target_kind == "cuda") {
    // OpenArtifact has checked that a GPU can run the code; this picks the same one.
    EMBER_ASSIGN_OR_RETURN(int ordinal, cuda::SelectDevice(*manifest.cuda, cuda::ProbeHostGpus()));
    EMBER_RETURN_IF_ERROR(cuda::LoadTvmCudaRuntime());
    device = DLDevice{kDLCUDA, ordinal};
  } else if (!TestDeviceCopies()) {
    return Status::Ok();
  }
  EMBER_ASSIGN_OR_RETURN(DeviceTransfer created, DeviceTransfer::Create(device));
  transfer.emplace(std::move(created));
  return Status::Ok();
}

Result<std::unique_ptr<Lane>> Model::Impl::NewLane() {
  const std::string so_path = JoinPath(dir, manifest.library);
  auto lane = std::make_unique<Lane>();
  try {
    auto load_exec = (*library)->GetFunction("vm_load_executable");
    if (!load_exec.has_value()) {
      return Status::RuntimeError("'" + so_path + "' is not a Relax VM executable");
    }
    lane->vm = (*load_exec)().cast<ffi::Module>();
    auto init = (*lane->vm)->GetFunction("vm_initialization");
    if (!init.has_value()) return Status::RuntimeError("VM has no vm_initialization");
    if (device.device_type == kDLCPU) {
      (*init)(static_cast<int>(kDLCPU), 0, kVmPooledAllocator);
    } else {  // the device first (where constants and tensors live), then the host
      (*init)(static_cast<int>(device.device_type), device.device_id, kVmPooledAllocator,
              static_cast<int>(kDLCPU), 0, kVmPooledAllocator);
    }
    std::vector<int64_t> buckets = manifest.batch_sizes;
    if (buckets.empty()) buckets.push_back(0);
    for (int64_t bucket : buckets) {
      const std::string name = manifest.FunctionName(bucket);
      auto fn = (*lane->vm)->GetFunction(name);
      if (!fn.has_value()) {
        return Status::RuntimeError("library '" + so_path + "' has no function '" + name +
                                    "' listed by the manifest; the artifact is inconsistent");
      }
      lane->functions.emplace(bucket, *fn);
    }
  } catch (const ffi::Error& err) {
    return FromTvmError("creating a VM for '" + so_path + "' failed", err);
  }
  return lane;
}

Result<std::pair<std::vector<TensorView>, int64_t>> Model::ValidateInputs(
    const NamedTensorViews& inputs) const {
  return runtime::ValidateInputs(impl_->manifest.inputs, inputs);
}

Result<std::pair<std::vector<TensorView>, int64_t>> ValidateInputs(
    const std::vector<TensorSpec>& specs, const NamedTensorViews& inputs) {
  std::vector<const TensorView*> ordered(specs.size(), nullptr);
  for (const auto& [name, view] : inputs) {
    auto it = std::find_if(specs.begin(), specs.end(),
                           [&](const TensorSpec& s) { return s.name == name; });
    if (it == specs.end()) {
      return Status::InvalidArgument("unknown input '" + name + "'; the model's inputs are: " +
                                     DescribeSpecs(specs));
    }
    const size_t index = static_cast<size_t>(it - specs.begin());
    if (ordered[index] != nullptr) return Status::InvalidArgument("input '" + name + "' given twice");
    ordered[index] = &view;
  }
  int64_t rows = -1;
  std::string rows_from;
  std::vector<TensorView> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    if (ordered[i] == nullptr) {
      return Status::InvalidArgument("missing input '" + spec.name + "' (expected " +
                                     spec.ToString() + ")");
    }
    const TensorView& view = *ordered[i];
    if (!SameDType(view.dtype, spec.dtype)) {
      return Status::InvalidArgument("input '" + spec.name + "': expected dtype " +
                                     DTypeName(spec.dtype) + ", got " + DTypeName(view.dtype));
    }
    if (view.shape.size() != spec.shape.size()) {
      return Status::InvalidArgument(
          "input '" + spec.name + "': expected rank " + std::to_string(spec.shape.size()) +
          " with shape " + ShapeToString(spec.shape) + ", got rank " +
          std::to_string(view.shape.size()) + " with shape " + ShapeToString(view.shape));
    }
    for (size_t d = 0; d < spec.shape.size(); ++d) {
      if (static_cast<int>(d) == spec.batch_axis) continue;
      if (view.shape[d] != spec.shape[d]) {
        return Status::InvalidArgument(
            "input '" + spec.name + "': dimension " + std::to_string(d) + " must be " +
            std::to_string(spec.shape[d]) + ", got " + std::to_string(view.shape[d]) +
            " (expected shape " + ShapeToString(spec.shape) + ", got " +
            ShapeToString(view.shape) + ")");
      }
    }
    if (spec.has_batch_axis()) {
      const int64_t n = view.shape[static_cast<size_t>(spec.batch_axis)];
      if (rows >= 0 && n != rows) {
        return Status::InvalidArgument("inputs disagree on the batch size: '" + rows_from +
                                       "' has " + std::to_string(rows) + " rows, '" + spec.name +
                                       "' has " + std::to_string(n));
      }
      rows = n;
      rows_from = spec.name;
    }
    if (view.data == nullptr && view.nbytes() > 0) {
      return Status::InvalidArgument("input '" + spec.name + "' has no data");
    }
    out.push_back(view);
  }
  return std::make_pair(std::move(out), rows < 0 ? int64_t{0} : rows);
}

Result<std::vector<ffi::Tensor>> Model::Impl::Invoke(Lane& lane, int64_t bucket,
                                                     std::vector<ffi::Tensor> args) {
  std::vector<ffi::AnyView> packed(args.begin(), args.end());
  ffi::Any result;
  try {
    lane.functions.at(bucket).CallPacked(packed.data(), static_cast<int32_t>(packed.size()), &result);
  } catch (const ffi::Error& err) {
    return FromTvmError("running '" + manifest.model_name + "' (" + manifest.FunctionName(bucket) +
                            ") failed",
                        err);
  }
  std::vector<ffi::Tensor> outs;
  if (auto single = result.try_cast<ffi::Tensor>()) {
    outs.push_back(*single);
  } else if (auto tuple = result.try_cast<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *tuple) {
      auto tensor = item.try_cast<ffi::Tensor>();
      if (!tensor.has_value()) return Status::RuntimeError("model returned a non-tensor output");
      outs.push_back(*tensor);
    }
  } else {
    return Status::RuntimeError("model returned an unsupported value: " + result.GetTypeKey());
  }
  if (outs.size() != manifest.outputs.size()) {
    return Status::RuntimeError("model returned " + std::to_string(outs.size()) +
                                " outputs, the manifest declares " +
                                std::to_string(manifest.outputs.size()));
  }
  return outs;
}

Status Model::Impl::RunChunk(Lane& lane, const std::vector<TensorView>& inputs, const Chunk& chunk,
                             int64_t total_rows, const std::vector<OutputBuffer>& outputs) {
  const int64_t offset = chunk.offset, rows = chunk.rows, bucket = chunk.bucket;
  std::vector<ffi::Tensor> args;
  args.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorSpec& spec = manifest.inputs[i];
    const TensorView& view = inputs[i];
    std::vector<int64_t> shape = spec.ShapeWithBatch(bucket);
    const bool whole = !spec.has_batch_axis() || (offset == 0 && rows == total_rows && rows == bucket);
    void* data = const_cast<void*>(view.data);  // TVM takes non-const; inputs are never written
    // Copied to a device from any address; passed to CPU code in place only when aligned.
    if (!whole || (!transfer.has_value() && !IsAligned(view.data))) {
      const size_t nbytes = static_cast<size_t>(NumElements(shape)) * DTypeBytes(spec.dtype);
      EMBER_ASSIGN_OR_RETURN(data, lane.Staging(bucket, i, nbytes));
      if (spec.has_batch_axis()) {
        CopyRows(view, spec.batch_axis, offset, data, shape, 0, rows);
        // Zero the padding rows: the staging buffer still holds an earlier call's rows.
        ZeroRows(data, spec.dtype, shape, spec.batch_axis, rows, bucket - rows);
      } else {
        std::memcpy(data, view.data, view.nbytes());
      }
    }
    if (transfer.has_value()) {
      EMBER_ASSIGN_OR_RETURN(ffi::Tensor on_device, lane.DeviceInput(*transfer, bucket, i, shape, spec.dtype));
      const size_t nbytes = static_cast<size_t>(NumElements(shape)) * DTypeBytes(spec.dtype);
      EMBER_RETURN_IF_ERROR(transfer->CopyIn(data, nbytes, on_device));
      args.push_back(std::move(on_device));
      continue;
    }
    args.push_back(ffi::Tensor::FromNDAlloc(BorrowedMemory{data}, ffi::ShapeView(shape.data(), shape.size()),
                                            spec.dtype, DLDevice{kDLCPU, 0}));
  }
  EMBER_ASSIGN_OR_RETURN(std::vector<ffi::Tensor> results, Invoke(lane, bucket, std::move(args)));
  for (size_t i = 0; i < results.size(); ++i) {
    const TensorSpec& spec = manifest.outputs[i];
    const ffi::Tensor& result = results[i];
    std::vector<int64_t> got(result.shape().begin(), result.shape().end());
    if (got != spec.ShapeWithBatch(bucket) || !SameDType(result.dtype(), spec.dtype) ||
        result.device().device_type != device.device_type ||
        result.device().device_id != device.device_id || !result.IsContiguous()) {
      return Status::RuntimeError("output '" + spec.name + "' came back as " +
                                  DTypeName(result.dtype()) + ShapeToString(got) + " on device " +
                                  std::to_string(result.device().device_type) + ":" +
                                  std::to_string(result.device().device_id) +
                                  ", the manifest declares " + spec.ToString());
    }
    const void* host = static_cast<const char*>(result.data_ptr()) + result.byte_offset();
    if (transfer.has_value()) {  // to host memory first; rows are then copied out as for CPU
      if (!spec.has_batch_axis() && offset != 0) continue;  // copied with the first chunk
      const size_t nbytes = static_cast<size_t>(NumElements(got)) * DTypeBytes(spec.dtype);
      EMBER_ASSIGN_OR_RETURN(void* staged, lane.OutputStaging(bucket, i, nbytes));
      EMBER_RETURN_IF_ERROR(transfer->CopyOut(result, staged, nbytes));
      host = staged;
    }
    TensorView src{host, spec.dtype, got};
    const OutputBuffer& dst = outputs[i];
    if (spec.has_batch_axis()) {
      CopyRows(src, spec.batch_axis, 0, dst.data, dst.shape, offset, rows);
    } else if (offset == 0) {
      std::memcpy(dst.data, src.data, src.nbytes());
    }
  }
  return Status::Ok();
}

Result<std::vector<HostTensor>> Model::Run(const NamedTensorViews& inputs) {
  EMBER_ASSIGN_OR_RETURN(auto validated, ValidateInputs(inputs));
  const std::vector<TensorView>& views = validated.first;
  const int64_t rows = validated.second;
  const Manifest& m = impl_->manifest;

  std::vector<HostTensor> outputs;
  std::vector<OutputBuffer> buffers;
  outputs.reserve(m.outputs.size());
  for (const TensorSpec& spec : m.outputs) {
    EMBER_ASSIGN_OR_RETURN(HostTensor out, HostTensor::Allocate(spec.dtype, spec.ShapeWithBatch(rows)));
    buffers.push_back(OutputBuffer{out.data(), out.shape()});
    outputs.push_back(std::move(out));
  }
  std::lock_guard<std::mutex> lock(impl_->run_mutex);
  // A GPU runs a bucket as one launch sequence: no splitting across CPU lanes there.
  const int max_lanes = impl_->device.device_type == kDLCPU ? MaxLanes() : 1;
  const auto plan = m.has_batch_axis() ? PlanLanes(rows, m.batch_sizes, max_lanes)
                                       : std::vector<std::vector<Chunk>>(1);
  if (plan.size() == 1) {
    EMBER_RETURN_IF_ERROR(impl_->RunSerial(*impl_->lanes[0], views, rows, buffers));
  } else {
    EMBER_RETURN_IF_ERROR(impl_->RunLanes(plan, views, rows, buffers));
  }
  return outputs;
}

Status Model::Impl::RunSerial(Lane& lane, const std::vector<TensorView>& inputs, int64_t rows,
                              const std::vector<OutputBuffer>& outputs) {
  if (!manifest.has_batch_axis()) return RunChunk(lane, inputs, Chunk{}, 0, outputs);
  for (const Chunk& chunk : SerialChunks(0, rows, manifest.batch_sizes)) {
    EMBER_RETURN_IF_ERROR(RunChunk(lane, inputs, chunk, rows, outputs));
  }
  return Status::Ok();
}

// An executor is a lane of its own, outside the Model's run mutex.
class VmExecutor final : public Executor {
 public:
  VmExecutor(Model::Impl* model, std::unique_ptr<Lane> lane) : model_(model), lane_(std::move(lane)) {}
  Status Run(const std::vector<TensorView>& inputs, int64_t rows,
             const std::vector<OutputBuffer>& outputs) override {
    return model_->RunSerial(*lane_, inputs, rows, outputs);
  }

 private:
  Model::Impl* model_;
  std::unique_ptr<Lane> lane_;
};

Result<std::unique_ptr<Executor>> Model::NewExecutor() {
  EMBER_ASSIGN_OR_RETURN(std::unique_ptr<Lane> lane, impl_->NewLane());
  return std::unique_ptr<Executor>(std::make_unique<VmExecutor>(impl_.get(), std::move(lane)));
}

// Runs each lane's chunks on its own VM and OpenMP thread, single-threaded inside (nested
// parallel regions run serially), so lanes x 1 thread never exceeds the pool. Lanes write
// disjoint rows of `outputs`. Called with run_mutex held.
Status Model::Impl::RunLanes(const std::vector<std::vector<Chunk>>& plan,
                             const std::vector<TensorView>& inputs, int64_t rows,
                             const std::vector<OutputBuffer>& outputs) {
  while (lanes.size() < plan.size()) {
    EMBER_ASSIGN_OR_RETURN(std::unique_ptr<Lane> lane, NewLane());
    lanes.push_back(std::move(lane));
  }
  const int count = static_cast<int>(plan.size());
  std::vector<Status> statuses(plan.size());
#pragma omp parallel for schedule(static, 1) num_threads(count)
  for (int i = 0; i < count; ++i) {
    omp_set_num_threads(1);  // this lane's kernels (oneDNN, TVM loops) size themselves for one
    try {
      for (const Chunk& chunk : plan[static_cast<size_t>(i)]) {
        statuses[static_cast<size_t>(i)] = RunChunk(*lanes[static_cast<size_t>(i)], inputs, chunk,
                                                    rows, outputs);
        if (!statuses[static_cast<size_t>(i)].ok()) break;
      }
    } catch (const std::exception& err) {  // nothing may escape an OpenMP region
      statuses[static_cast<size_t>(i)] = Status::Internal(std::string("lane failed: ") + err.what());
    }
  }
  for (const Status& status : statuses) EMBER_RETURN_IF_ERROR(status);
  return Status::Ok();
}

}  // namespace ember::runtime
