#include "ember/cuda.h"

#include <dlfcn.h>
#include <link.h>
#include <tvm/ffi/function.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace ember::cuda {
namespace {

std::string DlError() {
  const char* error = dlerror();
  return error != nullptr ? error : "unknown error";
}

bool AllDigits(const std::string& text) {
  if (text.empty() || text.size() > 4) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// The driver API, restated for the few calls the probe makes (CUresult and CUdevice are ints),
// so the core needs no CUDA headers and no link-time dependency on libcuda.
using CuInit = int (*)(unsigned int);
using CuDriverGetVersion = int (*)(int*);
using CuDeviceGetCount = int (*)(int*);
using CuDeviceGet = int (*)(int*, int);
using CuDeviceGetAttribute = int (*)(int*, int, int);
using CuDeviceGetName = int (*)(char*, int, int);
using CuGetErrorString = int (*)(int, const char**);
constexpr int kAttributeComputeCapabilityMajor = 75;
constexpr int kAttributeComputeCapabilityMinor = 76;

template <typename Fn>
Fn Symbol(void* library, const char* name) {
  return reinterpret_cast<Fn>(dlsym(library, name));
}

HostGpus Probe() {
  HostGpus host;
  // Kept loaded for the life of the process: TVM's CUDA runtime needs the same driver.
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) {
    host.error = "the NVIDIA driver library libcuda.so.1 cannot be loaded (" + DlError() + ")";
    return host;
  }
  const auto init = Symbol<CuInit>(driver, "cuInit");
  const auto driver_version = Symbol<CuDriverGetVersion>(driver, "cuDriverGetVersion");
  const auto device_count = Symbol<CuDeviceGetCount>(driver, "cuDeviceGetCount");
  const auto device_get = Symbol<CuDeviceGet>(driver, "cuDeviceGet");
  const auto attribute = Symbol<CuDeviceGetAttribute>(driver, "cuDeviceGetAttribute");
  const auto name = Symbol<CuDeviceGetName>(driver, "cuDeviceGetName");
  const auto error_string = Symbol<CuGetErrorString>(driver, "cuGetErrorString");
  if (init == nullptr || driver_version == nullptr || device_count == nullptr ||
      device_get == nullptr || attribute == nullptr || name == nullptr) {
    host.error = "libcuda.so.1 lacks the CUDA driver API (cuInit, cuDeviceGet...)";
    return host;
  }
  auto describe = [&](const char* call, int code) {
    const char* text = nullptr;
    if (error_string != nullptr) error_string(code, &text);
    return std::string(call) + " failed with CUDA error " + std::to_string(code) +
           (text != nullptr ? std::string(" (") + text + ")" : std::string());
  };
  if (int rc = init(0); rc != 0) {
    host.error = describe("cuInit", rc);
    return host;
  }
  if (int rc = driver_version(&host.driver_version); rc != 0) {
    host.error = describe("cuDriverGetVersion", rc);
    return host;
  }
  int count = 0;
  if (int rc = device_count(&count); rc != 0) {
    host.error = describe("cuDeviceGetCount", rc);
    return host;
  }
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    int device = 0;
    Gpu gpu;
    char buffer[256] = {};
    if (device_get(&device, ordinal) != 0 ||
        attribute(&gpu.capability.major, kAttributeComputeCapabilityMajor, device) != 0 ||
        attribute(&gpu.capability.minor, kAttributeComputeCapabilityMinor, device) != 0) {
      host.error = "cannot read the compute capability of GPU " + std::to_string(ordinal);
      return host;
    }
    if (name(buffer, static_cast<int>(sizeof(buffer) - 1), device) == 0) gpu.name = buffer;
    host.gpus.push_back(std::move(gpu));
  }
  if (host.gpus.empty()) host.error = "the NVIDIA driver reports no GPU (CUDA_VISIBLE_DEVICES?)";
  return host;
}

// Why GPU `gpu` cannot run `req`'s code, or empty when it can.
std::string Unusable(const Requirements& req, const Gpu& gpu, int driver_version) {
  const ComputeCapability cc = gpu.capability;
  if (cc < req.arch) return "it is " + cc.Sm() + ", older than " + req.arch.Sm();
  for (const ComputeCapability& sass : req.sass) {
    if (sass.major == cc.major && sass.minor <= cc.minor) return "";  // runs the cubin
  }
  if (!req.ptx.has_value() || cc < *req.ptx) {
    std::string cubins;
    for (const auto& s : req.sass) cubins += (cubins.empty() ? "" : ", ") + s.Sm();
    return "it is " + cc.Sm() + ", and the artifact holds cubins for " + cubins +
           " only, no PTX; recompile it for cuda-" + cc.Sm();
  }
  if (driver_version < req.cuda_version) {
    return "it is " + cc.Sm() + ", for which the driver must compile the artifact's PTX, and the "
           "driver supports CUDA " + CudaVersionString(driver_version) + " but the PTX is from CUDA " +
           CudaVersionString(req.cuda_version) + "; update the NVIDIA driver or recompile the "
           "artifact for cuda-" + cc.Sm();
  }
  return "";
}

// Directory of the loaded libtvm_runtime.so, or empty.
std::string TvmLibraryDir() {
  void* handle = dlopen("libtvm_runtime.so", RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return "";
  std::string dir;
  link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr) {
    dir = map->l_name;
    const size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : dir.substr(0, slash);
  }
  dlclose(handle);  // drops only the reference taken above
  return dir;
}

// Loads libcudart.so.13 so that libtvm_runtime_cuda.so's dependency on it resolves; returns an
// empty string, or what was tried.
std::string LoadCudaRuntimeLibrary(const std::string& tvm_dir) {
  std::vector<std::string> candidates = {kCudaRuntimeLibrary};
  if (!tvm_dir.empty()) {  // site-packages/tvm/lib -> site-packages/nvidia/cu13/lib (pip wheel)
    candidates.push_back(tvm_dir + "/../../nvidia/cu13/lib/" + kCudaRuntimeLibrary);
  }
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    const char* root = std::getenv(var);
    if (root != nullptr && *root != '\0') {
      candidates.push_back(std::string(root) + "/lib64/" + kCudaRuntimeLibrary);
    }
  }
  candidates.push_back(std::string("/usr/local/cuda/lib64/") + kCudaRuntimeLibrary);
  std::string tried;
  for (const std::string& candidate : candidates) {
    // Kept loaded for the life of the process, as TVM's CUDA runtime is.
    if (dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL) != nullptr) return "";
    tried += (tried.empty() ? "" : "; ") + DlError();
  }
  return tried;
}

Status LoadOnce() {
  const std::string tvm_dir = TvmLibraryDir();
  if (tvm_dir.empty()) return Status::Internal("libtvm_runtime.so is not loaded in this process");
  const std::string library = tvm_dir + "/libtvm_runtime_cuda.so";
  if (access(library.c_str(), R_OK) != 0) {
    return Status::Incompatible("this TVM build has no CUDA runtime: " + library + " is missing");
  }
  const std::string tried = LoadCudaRuntimeLibrary(tvm_dir);
  if (!tried.empty()) {
    return Status::Incompatible(
        std::string("running CUDA artifacts needs the CUDA runtime ") + kCudaRuntimeLibrary +
        " (CUDA 13), which cannot be loaded: pip install nvidia-cuda-runtime (or "
        "'ember-runtime[cuda]'), or put a CUDA 13 toolkit's lib64 on LD_LIBRARY_PATH (" + tried + ")");
  }
  if (dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL) == nullptr) {  // kept loaded, as above
    return Status::Incompatible("TVM's CUDA runtime cannot be loaded: " + DlError());
  }
  if (!tvm::ffi::Function::GetGlobal("ffi.Module.load_from_bytes.cuda").has_value()) {
    return Status::Internal(library + " loaded but registered no CUDA module loader");
  }
  return Status::Ok();
}

}  // namespace

std::optional<ComputeCapability> ParseArch(const std::string& text, const std::string& prefix) {
  if (text.size() < prefix.size() + 2 || text.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const std::string digits = text.substr(prefix.size());
  if (!AllDigits(digits)) return std::nullopt;
  const int number = std::stoi(digits);
  return ComputeCapability{number / 10, number % 10};
}

std::optional<int> ParseCudaVersion(const std::string& text) {
  const size_t dot = text.find('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string major = text.substr(0, dot), minor = text.substr(dot + 1);
  if (!AllDigits(major) || !AllDigits(minor) || minor.size() > 2) return std::nullopt;
  return std::stoi(major) * 1000 + std::stoi(minor) * 10;
}

std::string CudaVersionString(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

const HostGpus& ProbeHostGpus() {
  static const HostGpus probed = Probe();
  return probed;
}

Result<int> SelectDevice(const Requirements& requirements, const HostGpus& host) {
  const std::string needs =
      "needs an NVIDIA GPU (" + requirements.arch.Sm() + " or newer); none found: ";
  if (!host.error.empty()) return Status::Incompatible(needs + host.error);
  if (host.driver_version < kMinDriverVersion) {
    return Status::Incompatible(
        needs + "the NVIDIA driver supports CUDA " + CudaVersionString(host.driver_version) +
        ", and ember's CUDA runtime (TVM's, built on CUDA 13) needs " +
        CudaVersionString(kMinDriverVersion) + " or newer; update the driver");
  }
  std::string reasons;
  for (size_t i = 0; i < host.gpus.size(); ++i) {
    const std::string why = Unusable(requirements, host.gpus[i], host.driver_version);
    if (why.empty()) return static_cast<int>(i);
    reasons += (reasons.empty() ? "" : "; ") + std::string("GPU ") + std::to_string(i) +
               (host.gpus[i].name.empty() ? "" : " (" + host.gpus[i].name + ")") + ": " + why;
  }
  if (reasons.empty()) reasons = "the NVIDIA driver reports no GPU";
  return Status::Incompatible(needs + reasons);
}

Status LoadTvmCudaRuntime() {
  static const Status loaded = LoadOnce();
  return loaded;
}

}  // namespace ember::cuda
