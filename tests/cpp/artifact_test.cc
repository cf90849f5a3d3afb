#include "ember/artifact.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ember/sha256.h"
#include "test_util.h"

namespace ember {
namespace {

using ::ember::testing::IsError;
using ::ember::testing::kTestTvmFfiVersion;
using ::ember::testing::kTestTvmVersion;
using ::ember::testing::ReadFile;
using ::ember::testing::ReplaceOnce;
using ::ember::testing::TempDir;
using ::ember::testing::ValidManifestJson;
using ::ember::testing::WriteFile;

// A host that can run ValidManifestJson(): x86_64 with avx2 and fma, and the same versions.
HostInfo MatchingHost() {
  HostInfo host;
  host.arch = "x86_64";
  host.cpu_features = {"sse2", "avx", "avx2", "fma", "bmi2"};
  host.tvm_version = kTestTvmVersion;
  host.tvm_ffi_version = kTestTvmFfiVersion;
  return host;
}

// Bytes standing in for a compiled library, with NULs and high bytes in them.
std::string FakeLibraryBytes() {
  std::string bytes = "\x7f" "ELF fake model library";
  for (int i = 0; i < 300; ++i) bytes.push_back(static_cast<char>(i * 7 % 256));
  return bytes;
}

// checksums.json covering `names` (files in `dir`), with digests computed by Sha256File.
void WriteChecksums(const TempDir& dir, const std::set<std::string>& names) {
  std::string files;
  for (const std::string& name : names) {
    const Result<std::string> digest = Sha256File(dir.File(name));
    ASSERT_TRUE(digest.ok()) << digest.status().ToString();
    files += std::string(files.empty() ? "" : ",\n") + "    \"" + name + "\": \"" +
             digest.value() + "\"";
  }
  WriteFile(dir.File(kChecksumsFile),
            "{\n  \"algorithm\": \"sha256\",\n  \"files\": {\n" + files + "\n  }\n}\n");
}

// A complete, valid artifact: manifest.json, model.so and checksums.json covering both.
class ArtifactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_.File(kManifestFile), ValidManifestJson());
    WriteFile(dir_.File("model.so"), FakeLibraryBytes());
    WriteChecksums(dir_, {kManifestFile, "model.so"});
  }

  TempDir dir_;
};

TEST_F(ArtifactTest, OpensWhenEverythingMatches) {
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest manifest, OpenArtifact(dir_.path(), MatchingHost()));
  EXPECT_EQ(manifest.model_name, "digits_mlp");
  EXPECT_EQ(manifest.library, "model.so");
  EXPECT_EQ(manifest.batch_sizes, (std::vector<int64_t>{1, 4, 8}));
  // A trailing slash on the directory is fine too.
  EXPECT_TRUE(OpenArtifact(dir_.path() + "/", MatchingHost()).ok());
}

TEST_F(ArtifactTest, VerifyChecksumsReturnsTheVerifiedFilesAndHashes) {
  EMBER_ASSERT_OK_AND_ASSIGN(const auto verified, VerifyChecksums(dir_.path()));
  ASSERT_EQ(verified.size(), 2u);
  EXPECT_EQ(verified.at("manifest.json"), Sha256File(dir_.File("manifest.json")).value());
  EXPECT_EQ(verified.at("model.so"), Sha256File(dir_.File("model.so")).value());
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest manifest, OpenArtifact(dir_.path(), MatchingHost()));
  EXPECT_EQ(manifest.library_sha256, verified.at("model.so"));
}

TEST_F(ArtifactTest, PrivateCopyHoldsExactlyTheVerifiedBytesAndIsRemoved) {
  const std::string sha = Sha256File(dir_.File("model.so")).value();
  std::string copy_path;
  {
    EMBER_ASSERT_OK_AND_ASSIGN(auto copy, PrivateLibraryCopy::Create(dir_.File("model.so"), sha));
    copy_path = copy->path();
    EXPECT_NE(copy_path, dir_.File("model.so"));
    EXPECT_EQ(ReadFile(copy_path), ReadFile(dir_.File("model.so")));
  }
  EXPECT_FALSE(Sha256File(copy_path).ok());  // removed with its directory
}

TEST_F(ArtifactTest, PrivateCopyRefusesBytesThatChangedAfterVerification) {
  const std::string sha = Sha256File(dir_.File("model.so")).value();
  WriteFile(dir_.File("model.so"), ReadFile(dir_.File("model.so")) + "tampered");
  EXPECT_TRUE(IsError(PrivateLibraryCopy::Create(dir_.File("model.so"), sha).status(),
                      StatusCode::kIntegrityError, "changed after it was verified"));
}

TEST_F(ArtifactTest, OneFlippedByteInTheLibraryIsAnIntegrityError) {
  std::string bytes = ReadFile(dir_.File("model.so"));
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x01);
  WriteFile(dir_.File("model.so"), bytes);
  const Status status = OpenArtifact(dir_.path(), MatchingHost()).status();
  EXPECT_TRUE(IsError(status, StatusCode::kIntegrityError, "checksum mismatch for 'model.so'",
                      dir_.path(), Sha256File(dir_.File("model.so")).value()));
}

TEST_F(ArtifactTest, AnEditedManifestIsAnIntegrityError) {
  WriteFile(dir_.File(kManifestFile),
            ReplaceOnce(ValidManifestJson(), "\"digits_mlp\"", "\"digits_mlq\""));
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "checksum mismatch for 'manifest.json'"));
}

TEST_F(ArtifactTest, IntegrityIsCheckedBeforeCompatibility) {
  WriteFile(dir_.File("model.so"), FakeLibraryBytes() + "appended");
  HostInfo other = MatchingHost();
  other.arch = "aarch64";
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), other).status(), StatusCode::kIntegrityError,
                      "'model.so'"));
}

TEST_F(ArtifactTest, MissingChecksumsIsNotFound) {
  ASSERT_EQ(std::remove(dir_.File(kChecksumsFile).c_str()), 0);
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(), StatusCode::kNotFound,
                      "is not an ember artifact", "checksums.json is missing"));
}

TEST_F(ArtifactTest, LibraryNotListedInChecksumsIsAnIntegrityError) {
  WriteChecksums(dir_, {kManifestFile});
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "does not cover the library 'model.so'"));
}

TEST_F(ArtifactTest, ManifestNotListedInChecksumsIsAnIntegrityError) {
  WriteChecksums(dir_, {"model.so"});
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "does not cover manifest.json"));
}

TEST_F(ArtifactTest, ListedFileThatIsMissingIsAnErrorNamingIt) {
  ASSERT_EQ(std::remove(dir_.File("model.so").c_str()), 0);
  const Status status = OpenArtifact(dir_.path(), MatchingHost()).status();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("model.so"), std::string::npos) << status.ToString();
}

TEST_F(ArtifactTest, CorruptChecksumsIsAnIntegrityError) {
  WriteFile(dir_.File(kChecksumsFile), "{\"files\": {");
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "checksums.json", "is corrupt"));
  WriteFile(dir_.File(kChecksumsFile), "[]");
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "is corrupt"));
  WriteFile(dir_.File(kChecksumsFile), R"({"algorithm": "sha256"})");
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "has no 'files' table"));
  WriteFile(dir_.File(kChecksumsFile), R"({"files": {"manifest.json": 5}})");
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "has an invalid entry"));
}

TEST_F(ArtifactTest, ChecksumEntriesOutsideTheDirectoryAreRefused) {
  // The outside file exists and its digest is right: the name alone must be refused.
  const std::string digest = Sha256File(dir_.File("model.so")).value();
  for (const std::string& name : {std::string("../model.so"), dir_.File("model.so")}) {
    SCOPED_TRACE(name);
    WriteFile(dir_.File(kChecksumsFile),
              "{\"files\": {\"" + name + "\": \"" + digest + "\"}}");
    EXPECT_TRUE(IsError(VerifyChecksums(dir_.path()).status(), StatusCode::kIntegrityError,
                        "has an invalid entry"));
  }
}

TEST_F(ArtifactTest, LibraryOutsideTheDirectoryIsRefused) {
  WriteFile(dir_.File(kManifestFile),
            ReplaceOnce(ValidManifestJson(), "\"model.so\"", "\"../model.so\""));
  WriteChecksums(dir_, {kManifestFile, "model.so"});
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kIntegrityError, "'../model.so'"));
}

TEST_F(ArtifactTest, InvalidButChecksummedManifestIsInvalidArgument) {
  WriteFile(dir_.File(kManifestFile),
            ReplaceOnce(ValidManifestJson(), "[1, 4, 8]", "[8, 4, 1]"));
  WriteChecksums(dir_, {kManifestFile, "model.so"});
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), MatchingHost()).status(),
                      StatusCode::kInvalidArgument, "'batch_sizes'"));
}

TEST_F(ArtifactTest, IncompatibleHostIsRefusedAfterVerification) {
  HostInfo other = MatchingHost();
  other.tvm_version = "9.9.9";
  EXPECT_TRUE(IsError(OpenArtifact(dir_.path(), other).status(), StatusCode::kIncompatible,
                      "TVM 0.0.test", "TVM 9.9.9"));
}

// Several engines may open artifacts at once: OpenArtifact and CurrentHost share no mutable state
// (the ThreadSanitizer build checks this).
TEST_F(ArtifactTest, ConcurrentOpensAllSucceed) {
  constexpr int kThreads = 8;
  std::vector<int> ok(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t, &ok] {
      HostInfo host = CurrentHost();
      host.arch = "x86_64";
      host.cpu_features = {"avx2", "fma"};
      host.tvm_version = kTestTvmVersion;
      host.tvm_ffi_version = kTestTvmFfiVersion;
      for (int i = 0; i < 5; ++i) {
        const Result<Manifest> manifest = OpenArtifact(dir_.path(), host);
        if (manifest.ok() && manifest.value().model_name == "digits_mlp") ++ok[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ok, std::vector<int>(kThreads, 5));
}

TEST(OpenArtifactTest, NonexistentDirectoryIsNotFound) {
  TempDir dir;
  const std::string missing = dir.File("no-such-artifact");
  EXPECT_TRUE(IsError(OpenArtifact(missing, MatchingHost()).status(), StatusCode::kNotFound,
                      "'" + missing + "' does not exist"));
  EXPECT_TRUE(IsError(VerifyChecksums(missing).status(), StatusCode::kNotFound, missing));
}

TEST(OpenArtifactTest, AFileInsteadOfADirectoryIsNotFound) {
  TempDir dir;
  WriteFile(dir.File("model.so"), FakeLibraryBytes());
  EXPECT_TRUE(IsError(OpenArtifact(dir.File("model.so"), MatchingHost()).status(),
                      StatusCode::kNotFound, "does not exist"));
}

// --- CheckCompatibility ---

class CompatibilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Result<Manifest> parsed = ParseManifest(ValidManifestJson());
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    manifest_ = parsed.value();
  }

  Manifest manifest_;
};

TEST_F(CompatibilityTest, MatchingHostIsAccepted) {
  EMBER_EXPECT_OK(CheckCompatibility(manifest_, MatchingHost()));
}

TEST_F(CompatibilityTest, WrongArchIsRefused) {
  HostInfo host = MatchingHost();
  host.arch = "aarch64";
  EXPECT_TRUE(IsError(CheckCompatibility(manifest_, host), StatusCode::kIncompatible,
                      "artifact 'digits_mlp' (target x86-64-v3)",
                      "compiled for x86_64 but this host is aarch64"));
}

TEST_F(CompatibilityTest, MissingCpuFeaturesAreListed) {
  HostInfo host = MatchingHost();
  host.cpu_features = {"sse2", "avx"};
  EXPECT_TRUE(IsError(CheckCompatibility(manifest_, host), StatusCode::kIncompatible,
                      "needs CPU features this host lacks: avx2, fma"));
  host.cpu_features = {"sse2", "avx", "avx2"};
  const Status only_fma = CheckCompatibility(manifest_, host);
  EXPECT_TRUE(IsError(only_fma, StatusCode::kIncompatible, "lacks: fma;"));
  EXPECT_EQ(only_fma.message().find("avx2"), std::string::npos) << only_fma.ToString();
}

TEST_F(CompatibilityTest, DifferentTvmVersionsAreRefused) {
  HostInfo host = MatchingHost();
  host.tvm_version = "0.27.0";
  EXPECT_TRUE(IsError(CheckCompatibility(manifest_, host), StatusCode::kIncompatible,
                      "built with TVM 0.0.test / tvm-ffi 0.0.ffi-test",
                      "this runtime has TVM 0.27.0 / tvm-ffi 0.0.ffi-test", "recompile"));
  host = MatchingHost();
  host.tvm_ffi_version = "0.1.14";
  EXPECT_TRUE(IsError(CheckCompatibility(manifest_, host), StatusCode::kIncompatible,
                      "this runtime has TVM 0.0.test / tvm-ffi 0.1.14"));
}

TEST_F(CompatibilityTest, NonLlvmKindIsRefused) {
  manifest_.target_kind = "cuda";
  EXPECT_TRUE(IsError(CheckCompatibility(manifest_, MatchingHost()), StatusCode::kIncompatible,
                      "compiled for device kind 'cuda'"));
}

TEST_F(CompatibilityTest, NoRequiredFeaturesNeedsNone) {
  manifest_.required_cpu_features.clear();
  HostInfo host = MatchingHost();
  host.cpu_features.clear();
  EMBER_EXPECT_OK(CheckCompatibility(manifest_, host));
}

// --- Host description ---

TEST(CpuFeaturesTest, ParsesX86Flags) {
  const std::string cpuinfo =
      "processor\t: 0\n"
      "vendor_id\t: GenuineIntel\n"
      "model name\t: Intel(R) Xeon(R) CPU\n"
      "flags\t\t: fpu vme sse2 avx avx2 fma avx512f\n"
      "bugs\t\t: spectre_v1 spectre_v2\n"
      "\n"
      "processor\t: 1\n"
      "flags\t\t: fpu vme sse2 avx avx2 fma avx512f\n";
  EXPECT_EQ(ParseCpuFeatures(cpuinfo),
            (std::set<std::string>{"fpu", "vme", "sse2", "avx", "avx2", "fma", "avx512f"}));
}

TEST(CpuFeaturesTest, ParsesArmFeatures) {
  const std::string cpuinfo =
      "processor\t: 0\n"
      "BogoMIPS\t: 50.00\n"
      "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve\n"
      "CPU implementer\t: 0x41\n"
      "CPU part\t: 0xd0c\n";
  EXPECT_EQ(ParseCpuFeatures(cpuinfo),
            (std::set<std::string>{"fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2",
                                   "crc32", "atomics", "fphp", "asimdhp", "sve"}));
}

TEST(CpuFeaturesTest, NoFlagsLineGivesNoFeatures) {
  EXPECT_TRUE(ParseCpuFeatures("").empty());
  EXPECT_TRUE(ParseCpuFeatures("processor\t: 0\nmodel name\t: flags are elsewhere\n").empty());
}

TEST(CurrentHostTest, DescribesThisMachine) {
  const HostInfo& host = CurrentHost();
  EXPECT_EQ(&host, &CurrentHost());  // computed once
  EXPECT_FALSE(host.arch.empty());
  EXPECT_FALSE(host.tvm_version.empty());
  EXPECT_FALSE(host.tvm_ffi_version.empty());
  if (host.arch == "x86_64") {
    EXPECT_EQ(host.cpu_features.count("sse2"), 1u) << "x86_64 always has sse2";
  }
}

TEST(JoinPathTest, AddsOneSeparator) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
}

}  // namespace
}  // namespace ember
