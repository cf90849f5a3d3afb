// Opening an artifact directory safely: checksums first, then compatibility, and only then may
// the caller load the compiled library (which is executable code).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "ember/cuda.h"
#include "ember/manifest.h"
#include "ember/status.h"

namespace ember {

constexpr const char* kManifestFile = "manifest.json";
constexpr const char* kChecksumsFile = "checksums.json";

// What the running machine and runtime offer; compared against what an artifact requires.
struct HostInfo {
  std::string arch;                     // uname machine: "x86_64", "aarch64"
  std::set<std::string> cpu_features;  // /proc/cpuinfo "flags" (x86) or "Features" (arm)
  std::string tvm_version;
  std::string tvm_ffi_version;
  // The GPUs and driver, asked for only when a CUDA artifact is checked (CPU artifacts never
  // probe the driver). Tests substitute their own.
  std::function<const cuda::HostGpus&()> gpus = &cuda::ProbeHostGpus;
};

// Reads the running host once (arch, CPU flags) plus the runtime versions this core was built with.
const HostInfo& CurrentHost();
// Parses a /proc/cpuinfo text into its feature flags (exposed for tests).
std::set<std::string> ParseCpuFeatures(const std::string& cpuinfo_text);

// Verifies sha256 of every file listed in <dir>/checksums.json and returns name -> sha256 of the
// verified files; the manifest must be among them. A mismatch or missing file is an error naming
// the file.
Result<std::map<std::string, std::string>> VerifyChecksums(const std::string& dir);

// Refuses an artifact whose target the host cannot run, with the reason. CUDA artifacts also need
// a GPU that can run their code (cuda::SelectDevice over host.gpus()).
Status CheckCompatibility(const Manifest& manifest, const HostInfo& host);

// VerifyChecksums + ParseManifest + CheckCompatibility, in that order. Also sets
// manifest.library_sha256 from checksums.json.
Result<Manifest> OpenArtifact(const std::string& dir, const HostInfo& host = CurrentHost());

// A private copy of an artifact's library, made for loading it. The bytes are hashed while they
// are copied and the copy exists only if they match `expected_sha256`, so the code that gets
// loaded is exactly the code that was verified, even if the artifact changes afterwards; and its
// unique path keeps the dynamic loader from handing back a stale library previously loaded from
// the same artifact path. The file and its private directory are removed on destruction (a
// library already loaded from it stays mapped).
class PrivateLibraryCopy {
 public:
  static Result<std::unique_ptr<PrivateLibraryCopy>> Create(const std::string& source,
                                                             const std::string& expected_sha256);
  ~PrivateLibraryCopy();
  PrivateLibraryCopy(const PrivateLibraryCopy&) = delete;
  PrivateLibraryCopy& operator=(const PrivateLibraryCopy&) = delete;
  const std::string& path() const { return path_; }

 private:
  PrivateLibraryCopy(std::string dir, std::string path) : dir_(std::move(dir)), path_(std::move(path)) {}
  std::string dir_;
  std::string path_;
};

std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace ember
