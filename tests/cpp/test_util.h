// Helpers shared by the core's tests: temporary directories, file I/O, a valid manifest to derive
// variants from, and Status assertions.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <system_error>
#include <utility>

#include "ember/status.h"

namespace ember::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ember_test_XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed for " << pattern;
      return;
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // <path>/<name>
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `contents` to `path` (binary, truncating); a failure fails the current test.
inline void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) ADD_FAILURE() << "cannot write " << path;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ADD_FAILURE() << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Returns `text` with its only occurrence of `from` replaced by `to`; a missing or repeated `from`
// fails the current test, so an edit that no longer applies cannot silently test nothing.
inline std::string ReplaceOnce(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "'" << from << "' not found in:\n" << text;
    return text;
  }
  if (text.find(from, at + 1) != std::string::npos) {
    ADD_FAILURE() << "'" << from << "' occurs more than once in:\n" << text;
  }
  return text.replace(at, from.size(), to);
}

// A valid manifest as the compiler writes it (extra fields included, which the core ignores):
// two batched inputs (batch axis 0 and 1), a batched and a static output, buckets 1, 4, 8, an
// x86_64 target needing avx2 and fma, built with the made-up versions kTestTvmVersion and
// kTestTvmFfiVersion. Tests derive invalid variants from it with ReplaceOnce.
constexpr const char* kTestTvmVersion = "0.0.test";
constexpr const char* kTestTvmFfiVersion = "0.0.ffi-test";
inline std::string ValidManifestJson() {
  return R"({
  "format_version": 1,
  "model_name": "digits_mlp",
  "source": {"sha256": "00", "opset": 17, "producer": "test"},
  "inputs": [
    {"name": "x", "dtype": "float32", "shape": [-1, 64], "batch_axis": 0},
    {"name": "mask", "dtype": "bool", "shape": [4, -1], "batch_axis": 1}
  ],
  "outputs": [
    {"name": "logits", "dtype": "float32", "shape": [-1, 10], "batch_axis": 0},
    {"name": "scale", "dtype": "float64", "shape": [], "batch_axis": -1}
  ],
  "batch_sizes": [1, 4, 8],
  "library": "model.so",
  "target": {
    "name": "x86-64-v3",
    "kind": "llvm",
    "arch": "x86_64",
    "tvm": {"kind": "llvm", "mcpu": "haswell"},
    "required_cpu_features": ["avx2", "fma"]
  },
  "precision": "fp32",
  "tuning": null,
  "versions": {"ember": "0.1.0", "tvm": "0.0.test", "tvm_ffi": "0.0.ffi-test"},
  "compile_seconds": 1.5
}
)";
}

// Succeeds when `status` has `code` and its message contains every one of `fragments`.
template <typename... Fragments>
::testing::AssertionResult IsError(const Status& status, StatusCode code,
                                   const Fragments&... fragments) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected " << StatusCodeName(code) << ", got " << status.ToString();
  }
  for (const std::string& fragment : std::initializer_list<std::string>{fragments...}) {
    if (status.message().find(fragment) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "message of " << status.ToString() << " lacks '" << fragment << "'";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace ember::testing

// Unwraps an ok Result into `lhs`, or fails the current test with the Result's status.
#define EMBER_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  EMBER_ASSERT_OK_AND_ASSIGN_IMPL_(EMBER_CONCAT_(ember_test_result_, __LINE__), lhs, expr)
#define EMBER_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();      \
  lhs = std::move(tmp).value()

// Expects an ok Status, printing it otherwise.
#define EMBER_EXPECT_OK(expr)                                                \
  do {                                                                       \
    const ::ember::Status ember_test_status_ = (expr);                       \
    EXPECT_TRUE(ember_test_status_.ok()) << ember_test_status_.ToString();   \
  } while (0)
