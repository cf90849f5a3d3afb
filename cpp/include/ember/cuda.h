// CUDA artifacts in the core: what an artifact's GPU code needs (its manifest's "device" entry),
// what this machine's driver and GPUs offer, and loading TVM's CUDA runtime. CPU artifacts never
// reach any of it: the driver is probed and the CUDA libraries are loaded only for a CUDA artifact.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ember/status.h"

namespace ember::cuda {

// A CUDA compute capability: sm_86 is {8, 6}.
struct ComputeCapability {
  int major = 0;
  int minor = 0;

  int Number() const { return major * 10 + minor; }  // 86
  std::string Sm() const { return "sm_" + std::to_string(Number()); }
  friend bool operator==(ComputeCapability a, ComputeCapability b) {
    return a.major == b.major && a.minor == b.minor;
  }
  friend bool operator<(ComputeCapability a, ComputeCapability b) { return a.Number() < b.Number(); }
};

// Parses "<prefix><number>" ("sm_86" with prefix "sm_", "compute_86" with "compute_"); the last
// digit is the minor version. nullopt when malformed.
std::optional<ComputeCapability> ParseArch(const std::string& text, const std::string& prefix);

// CUDA versions as the driver API encodes them: "13.5" <-> 13050. nullopt when malformed.
std::optional<int> ParseCudaVersion(const std::string& text);
std::string CudaVersionString(int version);

// The oldest driver TVM's CUDA runtime works with: it links the CUDA 13 runtime (libcudart.so.13).
constexpr int kMinDriverVersion = 13000;
constexpr const char* kCudaRuntimeLibrary = "libcudart.so.13";

// A CUDA artifact's GPU code (manifest "device"): cubins run on GPUs of the same major version
// and an equal or higher minor; PTX is compiled by the driver for any GPU at least as new, which
// needs a driver at least as new as the CUDA that produced it.
struct Requirements {
  ComputeCapability arch;               // compiled for: the oldest GPU it supports
  std::vector<ComputeCapability> sass;  // the cubins in the library
  std::optional<ComputeCapability> ptx;
  int cuda_version = 0;  // of the nvcc that built it, e.g. 13050
};

struct Gpu {
  std::string name;
  ComputeCapability capability;
};

// What this machine offers. `error` is non-empty when no GPU can be used at all, and says why.
struct HostGpus {
  std::string error;
  int driver_version = 0;  // the newest CUDA version the driver supports, e.g. 13000
  std::vector<Gpu> gpus;   // CUDA device ordinals in order (after CUDA_VISIBLE_DEVICES)
};

// Probes this machine once per process (later calls return the first answer): loads the NVIDIA
// driver library libcuda.so.1, initializes it and lists the GPUs with their compute capability.
// Thread-safe. The driver library stays loaded (TVM's CUDA runtime uses it).
const HostGpus& ProbeHostGpus();

// The ordinal of the first GPU in `host` that can run code with `requirements`; otherwise
// Incompatible: "needs an NVIDIA GPU (sm_80 or newer); none found: <why, per GPU>". Pure.
Result<int> SelectDevice(const Requirements& requirements, const HostGpus& host);

// Loads TVM's CUDA runtime (libtvm_runtime_cuda.so, beside the loaded libtvm_runtime.so) once per
// process, after the CUDA runtime library it links: found by the dynamic loader's search, else
// in the nvidia-cuda-runtime wheel next to the tvm package, $CUDA_HOME/lib64 or
// /usr/local/cuda/lib64. Incompatible (with what to install) when either cannot load.
// Thread-safe; the libraries stay loaded for the life of the process.
Status LoadTvmCudaRuntime();

}  // namespace ember::cuda
