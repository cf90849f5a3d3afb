// Model: a verified artifact loaded into the TVM runtime, run on host tensors with batch buckets.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/executor.h"
#include "ember/manifest.h"
#include "ember/status.h"
#include "ember/tensor.h"

namespace ember::runtime {

// Thread-safety: Load() may be called from any thread. Run() is safe to call concurrently but
// serializes callers on an internal mutex because a TVM VM instance is not thread-safe. Within
// one call, rows may be split across parallel lanes, each with its own VM (see Run); serving
// many callers in parallel is the Engine's job.
class Model {
 public:
  // Verifies checksums and host compatibility (OpenArtifact), and only then loads the compiled
  // library and creates one VM instance. Blocks for the duration of the load.
  static Result<std::unique_ptr<Model>> Load(const std::string& artifact_dir);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Manifest& manifest() const;
  const std::string& artifact_dir() const;

  // Runs the model on `inputs` (every manifest input exactly once, by name, C-contiguous host
  // memory that stays valid during the call). n rows run on the smallest bucket >= n (zero-padded,
  // outputs sliced back to n rows) and are split across runs when n exceeds the largest bucket.
  // With more than one OpenMP thread, the rows are split across parallel single-threaded lanes
  // when that pads no more than one run would (PlanLanes; EMBER_SPLIT_BATCHES=0 turns it off).
  // Inputs that exactly fill a bucket and are 64-byte aligned are passed to TVM without a copy.
  // Returns one owned tensor per manifest output, in manifest order.
  Result<std::vector<HostTensor>> Run(const NamedTensorViews& inputs);

  // Validates inputs against the manifest (see runtime::ValidateInputs).
  Result<std::pair<std::vector<TensorView>, int64_t>> ValidateInputs(
      const NamedTensorViews& inputs) const;

  // A new VM instance of this model with its own staging buffers, independent of Run() and of
  // other executors. The Model must outlive it. Blocks while the VM is created.
  Result<std::unique_ptr<Executor>> NewExecutor();

 private:
  friend class VmExecutor;
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ember::runtime
