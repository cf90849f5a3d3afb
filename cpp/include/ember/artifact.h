// Opening an artifact directory safely: checksums first, then compatibility, and only then may
// the caller load the compiled library (which is executable code).
#pragma once

#include <set>
#include <string>

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
};

// Reads the running host once (arch, CPU flags) plus the runtime versions this core was built with.
const HostInfo& CurrentHost();
// Parses a /proc/cpuinfo text into its feature flags (exposed for tests).
std::set<std::string> ParseCpuFeatures(const std::string& cpuinfo_text);

// Verifies sha256 of every file listed in <dir>/checksums.json and returns the verified names;
// the manifest must be among them. A mismatch or missing file is an error naming the file.
Result<std::set<std::string>> VerifyChecksums(const std::string& dir);

// Refuses an artifact whose target the host cannot run, with the reason.
Status CheckCompatibility(const Manifest& manifest, const HostInfo& host);

// VerifyChecksums + ParseManifest + CheckCompatibility, in that order.
Result<Manifest> OpenArtifact(const std::string& dir, const HostInfo& host = CurrentHost());

std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace ember
