// Executor: one independent instance of a model's runtime state (a VM), driven by one thread at a
// time. The engine gives each lane its own; Model::Run keeps its own for direct calls.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ember/status.h"
#include "ember/tensor.h"

namespace ember::runtime {

using NamedTensorViews = std::vector<std::pair<std::string, TensorView>>;

// Where one output is written: C-contiguous host memory of `shape`.
struct OutputBuffer {
  void* data = nullptr;
  std::vector<int64_t> shape;
};

// Checks `inputs` against `specs` (every spec exactly once by name, dtype, rank, every dimension
// but the batch axis, one row count) and returns them in spec order plus the row count (0 when
// no input has a batch axis). Errors are InvalidArgument and name the input and what was expected.
Result<std::pair<std::vector<TensorView>, int64_t>> ValidateInputs(
    const std::vector<TensorSpec>& specs, const NamedTensorViews& inputs);

// Thread-compatible, not thread-safe: one thread at a time (a TVM VM is not thread-safe).
class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `rows` rows of validated `inputs` (spec order) and writes each output, shaped with
  // `rows` on its batch axis, to `outputs` (spec order). Inputs whose rows exactly fill a bucket
  // and are 64-byte aligned reach the compiled code without a copy. For a CUDA artifact inputs
  // are copied into GPU tensors and outputs back to host memory; both buffers stay host memory.
  virtual Status Run(const std::vector<TensorView>& inputs, int64_t rows,
                     const std::vector<OutputBuffer>& outputs) = 0;
};

}  // namespace ember::runtime
