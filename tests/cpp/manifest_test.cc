#include "ember/manifest.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.h"

namespace ember {
namespace {

using ::ember::testing::IsError;
using ::ember::testing::ReplaceOnce;
using ::ember::testing::TempDir;
using ::ember::testing::ValidManifestJson;
using ::ember::testing::WriteFile;

// The spec lines of ValidManifestJson(), so that edits can target one of them.
constexpr const char* kInputX =
    R"({"name": "x", "dtype": "float32", "shape": [-1, 64], "batch_axis": 0})";
constexpr const char* kInputMask =
    R"({"name": "mask", "dtype": "bool", "shape": [4, -1], "batch_axis": 1})";
constexpr const char* kOutputScale =
    R"({"name": "scale", "dtype": "float64", "shape": [], "batch_axis": -1})";

void ExpectSpec(const TensorSpec& spec, const std::string& name, const std::string& dtype,
                const std::vector<int64_t>& shape, int batch_axis) {
  SCOPED_TRACE(name);
  EXPECT_EQ(spec.name, name);
  EXPECT_EQ(DTypeName(spec.dtype), dtype);
  EXPECT_EQ(spec.shape, shape);
  EXPECT_EQ(spec.batch_axis, batch_axis);
}

TEST(ManifestTest, ParsesAValidManifest) {
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(ValidManifestJson()));
  EXPECT_EQ(m.format_version, kManifestFormatVersion);
  EXPECT_EQ(m.model_name, "digits_mlp");
  EXPECT_EQ(m.library, "model.so");
  EXPECT_EQ(m.batch_sizes, (std::vector<int64_t>{1, 4, 8}));
  EXPECT_TRUE(m.has_batch_axis());

  ASSERT_EQ(m.inputs.size(), 2u);
  ExpectSpec(m.inputs[0], "x", "float32", {-1, 64}, 0);
  ExpectSpec(m.inputs[1], "mask", "bool", {4, -1}, 1);
  ASSERT_EQ(m.outputs.size(), 2u);
  ExpectSpec(m.outputs[0], "logits", "float32", {-1, 10}, 0);
  ExpectSpec(m.outputs[1], "scale", "float64", {}, -1);
  EXPECT_EQ(m.inputs[1].ShapeWithBatch(8), (std::vector<int64_t>{4, 8}));

  EXPECT_EQ(m.target_name, "x86-64-v3");
  EXPECT_EQ(m.target_kind, "llvm");
  EXPECT_EQ(m.target_arch, "x86_64");
  EXPECT_EQ(m.required_cpu_features, (std::vector<std::string>{"avx2", "fma"}));
  EXPECT_EQ(m.ember_version, "0.1.0");
  EXPECT_EQ(m.tvm_version, "0.0.test");
  EXPECT_EQ(m.tvm_ffi_version, "0.0.ffi-test");

  EXPECT_EQ(m.FunctionName(8), "main_b8");
  EXPECT_EQ(m.FunctionName(1), "main_b1");
}

TEST(ManifestTest, ParsesAManifestWithoutBatchSizes) {
  std::string json = ValidManifestJson();
  json = ReplaceOnce(json, R"("batch_sizes": [1, 4, 8])", R"("batch_sizes": null)");
  json = ReplaceOnce(json, kInputX,
                     R"({"name": "x", "dtype": "float32", "shape": [1, 64], "batch_axis": -1})");
  json = ReplaceOnce(json, kInputMask,
                     R"({"name": "mask", "dtype": "bool", "shape": [4, 1], "batch_axis": -1})");
  json = ReplaceOnce(json, R"("shape": [-1, 10], "batch_axis": 0)",
                     R"("shape": [1, 10], "batch_axis": -1)");
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(json));
  EXPECT_FALSE(m.has_batch_axis());
  EXPECT_TRUE(m.batch_sizes.empty());
  EXPECT_EQ(m.FunctionName(8), "main");
  EXPECT_EQ(m.FunctionName(1), "main");
  ExpectSpec(m.inputs[0], "x", "float32", {1, 64}, -1);
}

TEST(ManifestTest, AcceptsAnEmptyFeatureList) {
  const std::string json = ReplaceOnce(ValidManifestJson(), R"(["avx2", "fma"])", "[]");
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(json));
  EXPECT_TRUE(m.required_cpu_features.empty());
}

TEST(ManifestTest, ReadTextFile) {
  TempDir dir;
  WriteFile(dir.File("manifest.json"), ValidManifestJson());
  EMBER_ASSERT_OK_AND_ASSIGN(const std::string text, ReadTextFile(dir.File("manifest.json")));
  EXPECT_EQ(text, ValidManifestJson());
  EXPECT_TRUE(IsError(ReadTextFile(dir.File("absent.json")).status(), StatusCode::kNotFound,
                      dir.File("absent.json")));
}

// --- Invalid manifests: one edit of the valid one each, with the error it must produce. ---

struct InvalidCase {
  const char* test_name;
  // The manifest is ValidManifestJson() with `from` replaced by `to` (or exactly `to` when `from`
  // is empty).
  std::string from;
  std::string to;
  StatusCode code;
  std::vector<std::string> message_fragments;
};

void PrintTo(const InvalidCase& c, std::ostream* os) { *os << c.test_name; }

class InvalidManifestTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidManifestTest, IsRejectedNamingTheField) {
  const InvalidCase& c = GetParam();
  const std::string json = c.from.empty() ? c.to : ReplaceOnce(ValidManifestJson(), c.from, c.to);
  const Result<Manifest> parsed = ParseManifest(json);
  ASSERT_FALSE(parsed.ok()) << "accepted:\n" << json;
  EXPECT_EQ(parsed.status().code(), c.code) << parsed.status().ToString();
  for (const std::string& fragment : c.message_fragments) {
    EXPECT_NE(parsed.status().message().find(fragment), std::string::npos)
        << "message lacks '" << fragment << "': " << parsed.status().ToString();
  }
}

constexpr StatusCode kInvalid = StatusCode::kInvalidArgument;

const InvalidCase kInvalidCases[] = {
    // --- JSON itself ---
    {"TruncatedJson", "", R"({"format_version": 1, "model_name": )", kInvalid, {"invalid JSON"}},
    {"EmptyText", "", "", kInvalid, {"invalid JSON"}},
    {"NotJsonAtAll", "", "format_version = 1", kInvalid, {"invalid JSON"}},
    {"TrailingGarbage", "", ValidManifestJson() + "}", kInvalid, {"invalid JSON"}},
    {"RootIsAList", "", "[1, 2]", kInvalid, {"'<root>' must be an object"}},
    // --- top-level fields ---
    {"MissingFormatVersion", R"("format_version": 1,)", "", kInvalid,
     {"missing field 'format_version'"}},
    {"FormatVersionIsAString", R"("format_version": 1,)", R"("format_version": "1",)", kInvalid,
     {"'format_version' must be an integer"}},
    {"FormatVersionIsAFloat", R"("format_version": 1,)", R"("format_version": 1.0,)", kInvalid,
     {"'format_version' must be an integer"}},
    {"FutureFormatVersion", R"("format_version": 1,)", R"("format_version": 2,)",
     StatusCode::kIncompatible, {"format version 2", "expects 1"}},
    // 2^32 + 1 must not wrap around to the supported version 1.
    {"HugeFormatVersion", R"("format_version": 1,)", R"("format_version": 4294967297,)",
     StatusCode::kIncompatible, {"format version 4294967297"}},
    {"MissingModelName", R"("model_name": "digits_mlp",)", "", kInvalid,
     {"missing field 'model_name'"}},
    {"ModelNameIsANumber", R"("model_name": "digits_mlp",)", R"("model_name": 5,)", kInvalid,
     {"'model_name' must be a string"}},
    {"MissingLibrary", R"("library": "model.so",)", "", kInvalid, {"missing field 'library'"}},
    {"LibraryIsNull", R"("library": "model.so",)", R"("library": null,)", kInvalid,
     {"'library' must be a string"}},
    // --- batch_sizes ---
    {"MissingBatchSizes", R"("batch_sizes": [1, 4, 8],)", "", kInvalid,
     {"missing field 'batch_sizes'"}},
    {"BatchSizesIsANumber", "[1, 4, 8]", "8", kInvalid, {"'batch_sizes' must be a list or null"}},
    {"BatchSizesUnsorted", "[1, 4, 8]", "[4, 1, 8]", kInvalid, {"'batch_sizes' must be ascending"}},
    {"BatchSizesDuplicate", "[1, 4, 8]", "[1, 4, 4, 8]", kInvalid, {"'batch_sizes'", "unique"}},
    {"BatchSizesZero", "[1, 4, 8]", "[0, 4, 8]", kInvalid, {"'batch_sizes'", ">= 1"}},
    {"BatchSizesNegative", "[1, 4, 8]", "[-4, 8]", kInvalid, {"'batch_sizes'", ">= 1"}},
    {"BatchSizesEmpty", "[1, 4, 8]", "[]", kInvalid, {"'batch_sizes'"}},
    {"BatchSizesHoldsAString", "[1, 4, 8]", R"([1, "4", 8])", kInvalid,
     {"'batch_sizes' must hold integers"}},
    {"BatchAxisWithoutBatchSizes", "[1, 4, 8]", "null", kInvalid,
     {"inputs[0].batch_axis 0 is invalid", "x: float32(batch, 64)"}},
    // --- inputs / outputs ---
    {"MissingInputs", R"("inputs": [)", R"("inputs_": [)", kInvalid, {"missing field 'inputs'"}},
    {"MissingOutputs", R"("outputs": [)", R"("outputs_": [)", kInvalid,
     {"missing field 'outputs'"}},
    {"InputsIsAnObject", "",
     ReplaceOnce(ReplaceOnce(ValidManifestJson(), R"("inputs": [)", R"("inputs": {"a": [)"),
                 "\n  ],\n  \"outputs\"", "\n  ]},\n  \"outputs\""),
     kInvalid, {"field 'inputs' must be a list"}},
    {"NoInputs", "", ReplaceOnce(ReplaceOnce(ValidManifestJson(), std::string(kInputX) + ",", ""),
                                 kInputMask, ""),
     kInvalid, {"at least one input"}},
    {"SpecIsAString", kInputMask, R"("mask")", kInvalid, {"'inputs[1]' must be an object"}},
    {"SpecMissingName", R"({"name": "mask", )", "{", kInvalid, {"missing field 'inputs[1].name'"}},
    {"SpecMissingDType", R"("dtype": "bool", )", "", kInvalid,
     {"missing field 'inputs[1].dtype'"}},
    {"SpecUnknownDType", R"("dtype": "bool")", R"("dtype": "float8")", kInvalid,
     {"inputs[1].dtype", "unsupported dtype 'float8'"}},
    {"SpecMissingShape", R"("shape": [4, -1], )", "", kInvalid,
     {"missing field 'inputs[1].shape'"}},
    {"SpecShapeIsAString", "[4, -1]", R"("4, -1")", kInvalid,
     {"field 'inputs[1].shape' must be a list"}},
    {"SpecShapeHoldsAFloat", "[4, -1]", "[4.5, -1]", kInvalid,
     {"'inputs[1].shape' must hold integers"}},
    {"SpecMissingBatchAxis", R"(, "batch_axis": 1})", "}", kInvalid,
     {"missing field 'inputs[1].batch_axis'"}},
    {"SpecBatchAxisIsAString", R"("batch_axis": 1})", R"("batch_axis": "1"})", kInvalid,
     {"'inputs[1].batch_axis' must be an integer"}},
    {"SpecBatchAxisIsNull", R"("batch_axis": 1})", R"("batch_axis": null})", kInvalid,
     {"'inputs[1].batch_axis' must be an integer"}},
    // --- shapes and batch axes ---
    {"MinusOneOutsideTheBatchAxis", "[4, -1]", "[-1, -1]", kInvalid,
     {"inputs[1].shape (batch, batch) must be static except -1 at the batch axis"}},
    {"MinusOneInAStaticOutput", kOutputScale,
     R"({"name": "scale", "dtype": "float64", "shape": [-1], "batch_axis": -1})", kInvalid,
     {"outputs[1].shape (batch,)"}},
    {"OtherNegativeDimension", "[4, -1]", "[-3, -1]", kInvalid, {"inputs[1].shape"}},
    {"StaticDimAtTheBatchAxis", "[4, -1]", "[4, 8]", kInvalid,
     {"inputs[1].shape (4, 8) must be static except -1 at the batch axis"}},
    {"BatchAxisEqualsRank", R"("batch_axis": 1})", R"("batch_axis": 2})", kInvalid,
     {"inputs[1].batch_axis 2 is invalid", "mask: bool(4, batch)"}},
    {"BatchAxisBelowMinusOne", R"("batch_axis": 1})", R"("batch_axis": -2})", kInvalid,
     {"inputs[1].batch_axis -2 is invalid"}},
    // 2^32 must not wrap around to the valid axis 0.
    {"HugeBatchAxis", R"("shape": [-1, 64], "batch_axis": 0})",
     R"("shape": [-1, 64], "batch_axis": 4294967296})", kInvalid,
     {"inputs[0].batch_axis 4294967296 is invalid"}},
    {"BatchSizesButNoBatchedInput", "",
     ReplaceOnce(
         ReplaceOnce(ValidManifestJson(), kInputX,
                     R"({"name": "x", "dtype": "float32", "shape": [1, 64], "batch_axis": -1})"),
         kInputMask, R"({"name": "mask", "dtype": "bool", "shape": [4, 1], "batch_axis": -1})"),
     kInvalid, {"batch_sizes given but no input has a batch axis"}},
    // --- target ---
    {"MissingTarget", R"("target": {)", R"("target_": {)", kInvalid, {"missing field 'target'"}},
    {"TargetIsAString", "", R"({"format_version": 1, "model_name": "m", "library": "model.so",
      "batch_sizes": null,
      "inputs": [{"name": "x", "dtype": "float32", "shape": [2], "batch_axis": -1}],
      "outputs": [{"name": "y", "dtype": "float32", "shape": [2], "batch_axis": -1}],
      "target": "llvm", "versions": {"ember": "0", "tvm": "0", "tvm_ffi": "0"}})",
     kInvalid, {"'target' must be an object"}},
    {"MissingTargetName", R"("name": "x86-64-v3",)", "", kInvalid,
     {"missing field 'target.name'"}},
    {"MissingTargetKind", R"("kind": "llvm",
    "arch")", R"("arch")", kInvalid, {"missing field 'target.kind'"}},
    {"TargetArchIsAList", R"("arch": "x86_64")", R"("arch": ["x86_64"])", kInvalid,
     {"'target.arch' must be a string"}},
    {"MissingRequiredCpuFeatures", R"(,
    "required_cpu_features": ["avx2", "fma"])", "", kInvalid,
     {"missing field 'target.required_cpu_features'"}},
    {"CpuFeaturesAreAString", R"(["avx2", "fma"])", R"("avx2 fma")", kInvalid,
     {"'target.required_cpu_features' must be a list"}},
    {"CpuFeatureIsANumber", R"(["avx2", "fma"])", R"(["avx2", 3])", kInvalid,
     {"'target.required_cpu_features' must hold strings"}},
    // --- versions ---
    {"MissingVersions", R"("versions": {)", R"("versions_": {)", kInvalid,
     {"missing field 'versions'"}},
    {"VersionsIsAList", R"({"ember": "0.1.0", "tvm": "0.0.test", "tvm_ffi": "0.0.ffi-test"})",
     R"(["0.1.0"])", kInvalid, {"'versions' must be an object"}},
    {"MissingEmberVersion", R"("ember": "0.1.0", )", "", kInvalid,
     {"missing field 'versions.ember'"}},
    {"MissingTvmVersion", R"("tvm": "0.0.test", )", "", kInvalid,
     {"missing field 'versions.tvm'"}},
    {"TvmFfiVersionIsANumber", R"("tvm_ffi": "0.0.ffi-test")", R"("tvm_ffi": 14)", kInvalid,
     {"'versions.tvm_ffi' must be a string"}},
};

INSTANTIATE_TEST_SUITE_P(Manifest, InvalidManifestTest, ::testing::ValuesIn(kInvalidCases),
                         [](const ::testing::TestParamInfo<InvalidCase>& case_info) {
                           return std::string(case_info.param.test_name);
                         });

}  // namespace
}  // namespace ember
