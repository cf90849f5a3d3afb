// The artifact manifest (manifest.json): what an artifact is, parsed and validated.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ember/cuda.h"
#include "ember/status.h"
#include "ember/tensor.h"

namespace ember {

constexpr int kManifestFormatVersion = 1;

struct Manifest {
  int format_version = 0;
  std::string model_name;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  // Compiled batch buckets, ascending. Empty: the model has no batch axis and runs its declared
  // shapes only.
  std::vector<int64_t> batch_sizes;
  std::string library;  // file name of the compiled Relax executable, relative to the artifact
  std::string target_name;
  std::string target_kind;  // TVM target kind: "llvm", "cuda", ...
  std::string target_arch;  // "x86_64", "aarch64", ...
  std::vector<std::string> required_cpu_features;  // /proc/cpuinfo flag names
  // CUDA artifacts (target kind "cuda") only: the GPU code the library holds ("device").
  std::optional<cuda::Requirements> cuda;
  std::string ember_version;
  std::string tvm_version;
  std::string tvm_ffi_version;
  // Not part of manifest.json: the library's sha256 from checksums.json, set by OpenArtifact.
  std::string library_sha256;

  bool has_batch_axis() const { return !batch_sizes.empty(); }
  // Name of the VM function compiled for `batch` rows ("main_b8"), or "main" without buckets.
  std::string FunctionName(int64_t batch) const;
};

// Parses and validates manifest JSON text; errors name the offending field.
Result<Manifest> ParseManifest(const std::string& json_text);
Result<std::string> ReadTextFile(const std::string& path);

}  // namespace ember
