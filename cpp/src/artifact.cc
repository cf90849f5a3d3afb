#include "ember/artifact.h"

#include <sys/stat.h>
#include <sys/utsname.h>
#include <tvm/ffi/extra/json.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "ember/sha256.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

#ifndef EMBER_TVM_VERSION
#error "EMBER_TVM_VERSION must be defined by the build"
#endif
#ifndef EMBER_TVM_FFI_VERSION
#error "EMBER_TVM_FFI_VERSION must be defined by the build"
#endif

namespace ember {
namespace {

namespace json = tvm::ffi::json;

bool IsSafeRelativeName(const std::string& name) {
  return !name.empty() && name.front() != '/' && name.find("..") == std::string::npos;
}

}  // namespace

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::set<std::string> ParseCpuFeatures(const std::string& cpuinfo_text) {
  std::set<std::string> features;
  std::istringstream lines(cpuinfo_text);
  std::string line;
  while (std::getline(lines, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    if (key != "flags" && key != "Features") continue;
    std::istringstream words(line.substr(colon + 1));
    std::string word;
    while (words >> word) features.insert(word);
    break;  // every core lists the same flags
  }
  return features;
}

#if defined(__aarch64__)
namespace {

// The ISA extensions an aarch64 artifact may require (python/ember/compiler/targets.py), named as
// /proc/cpuinfo names them, from the kernel's hardware capability bits: the same facts, and the
// right ones where /proc/cpuinfo is not the running CPU's (under qemu-aarch64 it is the host's).
void AddHwcapFeatures(std::set<std::string>& features) {
  const unsigned long hwcap = getauxval(AT_HWCAP);
  const unsigned long hwcap2 = getauxval(AT_HWCAP2);
  const struct {
    unsigned long word, bit;
    const char* name;
  } caps[] = {
      {hwcap, HWCAP_FP, "fp"},          {hwcap, HWCAP_ASIMD, "asimd"},
      {hwcap, HWCAP_FPHP, "fphp"},      {hwcap, HWCAP_ASIMDHP, "asimdhp"},
      {hwcap, HWCAP_ASIMDDP, "asimddp"}, {hwcap, HWCAP_SVE, "sve"},
      {hwcap2, HWCAP2_SVE2, "sve2"},    {hwcap2, HWCAP2_I8MM, "i8mm"},
      {hwcap2, HWCAP2_BF16, "bf16"},
  };
  for (const auto& cap : caps) {
    if (cap.word & cap.bit) features.insert(cap.name);
  }
}

}  // namespace
#endif

const HostInfo& CurrentHost() {
  static const HostInfo host = [] {
    HostInfo info;
    struct utsname name {};
    if (uname(&name) == 0) info.arch = name.machine;
    auto cpuinfo = ReadTextFile("/proc/cpuinfo");
    if (cpuinfo.ok()) info.cpu_features = ParseCpuFeatures(cpuinfo.value());
#if defined(__aarch64__)
    AddHwcapFeatures(info.cpu_features);
#endif
    info.tvm_version = EMBER_TVM_VERSION;
    info.tvm_ffi_version = EMBER_TVM_FFI_VERSION;
    return info;
  }();
  return host;
}

Result<std::map<std::string, std::string>> VerifyChecksums(const std::string& dir) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotFound("artifact directory '" + dir + "' does not exist");
  }
  auto text = ReadTextFile(JoinPath(dir, kChecksumsFile));
  if (!text.ok()) {
    return Status::NotFound("'" + dir + "' is not an ember artifact: " + kChecksumsFile +
                            " is missing");
  }
  tvm::ffi::String error;
  json::Value parsed = json::Parse(text.value(), &error);
  auto root = parsed.try_cast<json::Object>();
  if (!error.empty() || !root.has_value()) {
    return Status::IntegrityError(std::string(kChecksumsFile) + " in '" + dir + "' is corrupt");
  }
  auto files_it = root->find(tvm::ffi::String("files"));
  std::optional<json::Object> files;
  if (files_it != root->end()) files = (*files_it).second.try_cast<json::Object>();
  if (!files.has_value()) {
    return Status::IntegrityError(std::string(kChecksumsFile) + " in '" + dir +
                                  "' has no 'files' table");
  }
  std::map<std::string, std::string> verified;
  for (const auto& kv : *files) {
    auto name = kv.first.try_cast<tvm::ffi::String>();
    auto expected = kv.second.try_cast<tvm::ffi::String>();
    if (!name.has_value() || !expected.has_value() || !IsSafeRelativeName(std::string(*name))) {
      return Status::IntegrityError(std::string(kChecksumsFile) + " in '" + dir +
                                    "' has an invalid entry");
    }
    const std::string file(*name);
    EMBER_ASSIGN_OR_RETURN(std::string actual, Sha256File(JoinPath(dir, file)));
    if (actual != std::string(*expected)) {
      return Status::IntegrityError("checksum mismatch for '" + file + "' in artifact '" + dir +
                                    "': expected sha256 " + std::string(*expected) + ", got " +
                                    actual + "; the artifact was modified or corrupted after it "
                                    "was built and will not be loaded");
    }
    verified.emplace(file, actual);
  }
  if (verified.count(kManifestFile) == 0) {
    return Status::IntegrityError(std::string(kChecksumsFile) + " does not cover " + kManifestFile);
  }
  return verified;
}

Status CheckCompatibility(const Manifest& manifest, const HostInfo& host) {
  const std::string where = "artifact '" + manifest.model_name + "' (target " +
                            manifest.target_name + ")";
  const bool is_cuda = manifest.target_kind == "cuda";
  if (manifest.target_kind != "llvm" && !is_cuda) {
    return Status::Incompatible(where + " was compiled for device kind '" + manifest.target_kind +
                                "', which this runtime cannot run on this host");
  }
  if (is_cuda && !manifest.cuda.has_value()) {
    return Status::Incompatible(where + " was compiled for device kind 'cuda' but does not say "
                                "which GPU code it holds; recompile it with this ember");
  }
  if (manifest.target_arch != host.arch) {
    return Status::Incompatible(where + " was compiled for " + manifest.target_arch +
                                " but this host is " + host.arch);
  }
  std::vector<std::string> missing;
  for (const auto& feature : manifest.required_cpu_features) {
    if (host.cpu_features.count(feature) == 0) missing.push_back(feature);
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& f : missing) list += (list.empty() ? "" : ", ") + f;
    return Status::Incompatible(where + " needs CPU features this host lacks: " + list +
                                "; recompile it for this machine (target 'cpu')");
  }
  if (manifest.tvm_version != host.tvm_version || manifest.tvm_ffi_version != host.tvm_ffi_version) {
    return Status::Incompatible(where + " was built with TVM " + manifest.tvm_version +
                                " / tvm-ffi " + manifest.tvm_ffi_version + " but this runtime has TVM " +
                                host.tvm_version + " / tvm-ffi " + host.tvm_ffi_version +
                                "; recompile it with this ember");
  }
  if (is_cuda) {  // last: the only check that asks the driver
    Result<int> device = cuda::SelectDevice(*manifest.cuda, host.gpus());
    if (!device.ok()) return Status::Incompatible(where + " " + device.status().message());
  }
  return Status::Ok();
}

Result<Manifest> OpenArtifact(const std::string& dir, const HostInfo& host) {
  // The library name comes from the manifest, which is trusted only once its checksum matched:
  // verify every listed file first, then parse, then require that the library was listed.
  EMBER_ASSIGN_OR_RETURN(auto verified, VerifyChecksums(dir));
  EMBER_ASSIGN_OR_RETURN(std::string text, ReadTextFile(JoinPath(dir, kManifestFile)));
  EMBER_ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(text));
  if (!IsSafeRelativeName(manifest.library) || verified.count(manifest.library) == 0) {
    return Status::IntegrityError(std::string(kChecksumsFile) + " does not cover the library '" +
                                  manifest.library + "' named by the manifest");
  }
  manifest.library_sha256 = verified.at(manifest.library);
  EMBER_RETURN_IF_ERROR(CheckCompatibility(manifest, host));
  return manifest;
}

Result<std::unique_ptr<PrivateLibraryCopy>> PrivateLibraryCopy::Create(
    const std::string& source, const std::string& expected_sha256) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/ember-XXXXXX";
  std::vector<char> dir_buffer(pattern.begin(), pattern.end());
  dir_buffer.push_back('\0');
  if (mkdtemp(dir_buffer.data()) == nullptr) {  // mode 0700: private to this user
    return Status::RuntimeError("cannot create a private directory for '" + source + "': " +
                                std::strerror(errno));
  }
  const std::string dir(dir_buffer.data());
  std::unique_ptr<PrivateLibraryCopy> copy(new PrivateLibraryCopy(dir, dir + "/model.so"));
  std::ifstream in(source, std::ios::binary);
  if (!in) return Status::NotFound("cannot open '" + source + "'");
  std::ofstream out(copy->path_, std::ios::binary | std::ios::trunc);
  if (!out) return Status::RuntimeError("cannot write '" + copy->path_ + "'");
  Sha256 hasher;
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const std::streamsize got = in.gcount();
    if (got <= 0) break;
    hasher.Update(chunk.data(), static_cast<size_t>(got));
    out.write(chunk.data(), got);
  }
  out.close();
  if (in.bad() || !out) return Status::RuntimeError("copying '" + source + "' failed");
  const std::string actual = hasher.HexDigest();
  if (actual != expected_sha256) {
    return Status::IntegrityError("'" + source + "' changed after it was verified (sha256 " +
                                  actual + ", expected " + expected_sha256 + "); not loading it");
  }
  return copy;
}

PrivateLibraryCopy::~PrivateLibraryCopy() {
  std::remove(path_.c_str());
  rmdir(dir_.c_str());
}

}  // namespace ember
