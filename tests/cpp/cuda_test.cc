// CUDA artifacts without a GPU: parsing their manifest "device" entry, choosing a GPU that can
// run their code (against made-up drivers and GPUs), the compatibility check, and the device-copy
// helper (exercised with the CPU as the device).
#include "ember/cuda.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ember/artifact.h"
#include "ember/device_transfer.h"
#include "ember/manifest.h"
#include "test_util.h"

namespace ember {
namespace {

using ::ember::testing::IsError;
using ::ember::testing::kTestTvmFfiVersion;
using ::ember::testing::kTestTvmVersion;
using ::ember::testing::ReplaceOnce;
using ::ember::testing::ValidManifestJson;
using cuda::ComputeCapability;

constexpr const char* kLlvmTarget = R"("kind": "llvm",
    "arch": "x86_64",
    "tvm": {"kind": "llvm", "mcpu": "haswell"},
    "required_cpu_features": ["avx2", "fma"]
  },)";
constexpr const char* kCudaDevice =
    R"("device": {"kind": "cuda", "arch": "sm_80", "sass": ["sm_80", "sm_90"],
               "ptx": "compute_80", "cuda_version": "13.5"},)";

// ValidManifestJson() as the compiler writes it for target cuda-sm_80, with `device` (a
// '"device": {...},' member, or empty for none).
std::string CudaManifestJson(const std::string& device = kCudaDevice) {
  const std::string target = R"("kind": "cuda",
    "arch": "x86_64",
    "tvm": {"kind": "cuda", "arch": "sm_80"},
    "required_cpu_features": []
  },
  )" + device;
  return ReplaceOnce(ValidManifestJson(), kLlvmTarget, target);
}

cuda::Requirements Sm80Requirements() {
  cuda::Requirements req;
  req.arch = {8, 0};
  req.sass = {{8, 0}, {9, 0}};
  req.ptx = ComputeCapability{8, 0};
  req.cuda_version = 13050;
  return req;
}

cuda::HostGpus Host(int driver, std::vector<ComputeCapability> capabilities) {
  cuda::HostGpus host;
  host.driver_version = driver;
  for (const ComputeCapability& cc : capabilities) host.gpus.push_back({"Test GPU " + cc.Sm(), cc});
  return host;
}

// --- Parsing ---

TEST(CudaArchTest, ParsesSmAndComputeNames) {
  EXPECT_EQ(cuda::ParseArch("sm_86", "sm_"), (ComputeCapability{8, 6}));
  EXPECT_EQ(cuda::ParseArch("compute_90", "compute_"), (ComputeCapability{9, 0}));
  EXPECT_EQ(cuda::ParseArch("sm_120", "sm_"), (ComputeCapability{12, 0}));
  EXPECT_EQ(cuda::ParseArch("sm_86", "sm_")->Sm(), "sm_86");
  for (const char* bad : {"sm_8", "sm_", "compute_80", "sm_8x", "sm_90a", "SM_80", "sm_-80", ""}) {
    EXPECT_FALSE(cuda::ParseArch(bad, "sm_").has_value()) << bad;
  }
}

TEST(CudaVersionTest, RoundTripsTheDriverEncoding) {
  EXPECT_EQ(cuda::ParseCudaVersion("13.5"), 13050);
  EXPECT_EQ(cuda::ParseCudaVersion("12.10"), 12100);
  EXPECT_EQ(cuda::CudaVersionString(13050), "13.5");
  EXPECT_EQ(cuda::CudaVersionString(12040), "12.4");
  for (const char* bad : {"13", "13.", ".5", "13.5.1", "v13.5", "13.500"}) {
    EXPECT_FALSE(cuda::ParseCudaVersion(bad).has_value()) << bad;
  }
}

TEST(CudaManifestTest, ParsesTheDeviceEntry) {
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(CudaManifestJson()));
  EXPECT_EQ(m.target_kind, "cuda");
  ASSERT_TRUE(m.cuda.has_value());
  EXPECT_EQ(m.cuda->arch, (ComputeCapability{8, 0}));
  ASSERT_EQ(m.cuda->sass.size(), 2u);
  EXPECT_EQ(m.cuda->sass[1], (ComputeCapability{9, 0}));
  EXPECT_EQ(m.cuda->ptx, (ComputeCapability{8, 0}));
  EXPECT_EQ(m.cuda->cuda_version, 13050);
}

TEST(CudaManifestTest, CpuManifestsHaveNoDevice) {
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(ValidManifestJson()));
  EXPECT_FALSE(m.cuda.has_value());
}

TEST(CudaManifestTest, PtxMayBeNull) {
  const std::string json = ReplaceOnce(CudaManifestJson(), R"("ptx": "compute_80")", R"("ptx": null)");
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(json));
  EXPECT_FALSE(m.cuda->ptx.has_value());
}

TEST(CudaManifestTest, InvalidDeviceEntriesNameTheField) {
  const std::string valid = CudaManifestJson();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {CudaManifestJson(""), "needs a 'device' entry"},
      {ReplaceOnce(valid, R"("kind": "cuda", "arch": "sm_80", "sass")", R"("kind": "rocm", "arch": "sm_80", "sass")"),
       "'device.kind' must be 'cuda'"},
      {ReplaceOnce(valid, R"("arch": "sm_80", "sass")", R"("arch": "ampere", "sass")"), "'device.arch'"},
      {ReplaceOnce(valid, R"(["sm_80", "sm_90"])", R"(["sm_80", 90])"), "'device.sass'"},
      {ReplaceOnce(valid, R"("compute_80")", R"("sm_80")"), "'device.ptx'"},
      {ReplaceOnce(valid, R"("13.5")", R"("13")"), "'device.cuda_version'"},
      {ReplaceOnce(ReplaceOnce(valid, R"(["sm_80", "sm_90"])", "[]"), R"("compute_80")", "null"),
       "no cubin"},
  };
  for (const auto& [json, fragment] : cases) {
    EXPECT_TRUE(IsError(ParseManifest(json).status(), StatusCode::kInvalidArgument, fragment)) << json;
  }
}

// --- Choosing a GPU ---

TEST(SelectDeviceTest, NoDriverIsIncompatibleWithTheReason) {
  cuda::HostGpus host;
  host.error = "the NVIDIA driver library libcuda.so.1 cannot be loaded (not found)";
  EXPECT_TRUE(IsError(cuda::SelectDevice(Sm80Requirements(), host).status(), StatusCode::kIncompatible,
                      "needs an NVIDIA GPU (sm_80 or newer); none found: the NVIDIA driver library "
                      "libcuda.so.1 cannot be loaded"));
}

TEST(SelectDeviceTest, SameGenerationRunsTheCubin) {
  for (ComputeCapability cc : {ComputeCapability{8, 0}, {8, 6}, {8, 9}}) {
    // An old 13.x driver is enough for cubins: no PTX to compile.
    EXPECT_EQ(cuda::SelectDevice(Sm80Requirements(), Host(13000, {cc})).value(), 0) << cc.Sm();
  }
  EXPECT_EQ(cuda::SelectDevice(Sm80Requirements(), Host(13000, {{9, 0}})).value(), 0);
}

TEST(SelectDeviceTest, OlderGpusAreRefusedNamingEach) {
  const Status status =
      cuda::SelectDevice(Sm80Requirements(), Host(13050, {{7, 5}, {7, 0}})).status();
  EXPECT_TRUE(IsError(status, StatusCode::kIncompatible, "(sm_80 or newer); none found: ",
                      "GPU 0 (Test GPU sm_75): it is sm_75, older than sm_80",
                      "GPU 1 (Test GPU sm_70): it is sm_70"));
}

TEST(SelectDeviceTest, PicksTheFirstUsableGpu) {
  EXPECT_EQ(cuda::SelectDevice(Sm80Requirements(), Host(13050, {{7, 5}, {8, 6}})).value(), 1);
}

TEST(SelectDeviceTest, NewerGenerationsNeedPtxAndADriverThatCompilesIt) {
  const cuda::Requirements req = Sm80Requirements();  // cubins sm_80, sm_90; PTX from CUDA 13.5
  EXPECT_EQ(cuda::SelectDevice(req, Host(13050, {{12, 0}})).value(), 0);
  EXPECT_TRUE(IsError(cuda::SelectDevice(req, Host(13000, {{12, 0}})).status(),
                      StatusCode::kIncompatible, "driver supports CUDA 13.0",
                      "PTX is from CUDA 13.5", "cuda-sm_120"));
  cuda::Requirements no_ptx = req;
  no_ptx.ptx.reset();
  EXPECT_TRUE(IsError(cuda::SelectDevice(no_ptx, Host(13050, {{10, 0}})).status(),
                      StatusCode::kIncompatible, "holds cubins for sm_80, sm_90 only, no PTX"));
}

TEST(SelectDeviceTest, DriversOlderThanTheRuntimeAreRefused) {
  EXPECT_TRUE(IsError(cuda::SelectDevice(Sm80Requirements(), Host(12040, {{8, 0}})).status(),
                      StatusCode::kIncompatible, "driver supports CUDA 12.4", "needs 13.0 or newer"));
}

TEST(SelectDeviceTest, ADriverWithoutGpusIsRefused) {
  EXPECT_TRUE(IsError(cuda::SelectDevice(Sm80Requirements(), Host(13050, {})).status(),
                      StatusCode::kIncompatible, "none found: the NVIDIA driver reports no GPU"));
}

// --- CheckCompatibility of a CUDA artifact ---

HostInfo HostWith(const cuda::HostGpus* gpus) {
  HostInfo host;
  host.arch = "x86_64";
  host.tvm_version = kTestTvmVersion;
  host.tvm_ffi_version = kTestTvmFfiVersion;
  host.gpus = [gpus]() -> const cuda::HostGpus& { return *gpus; };
  return host;
}

TEST(CudaCompatibilityTest, NeedsAUsableGpu) {
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(CudaManifestJson()));
  const cuda::HostGpus ampere = Host(13050, {{8, 6}});
  EMBER_EXPECT_OK(CheckCompatibility(m, HostWith(&ampere)));
  cuda::HostGpus none;
  none.error = "cuInit failed with CUDA error 100 (no CUDA-capable device is detected)";
  EXPECT_TRUE(IsError(CheckCompatibility(m, HostWith(&none)), StatusCode::kIncompatible,
                      "artifact 'digits_mlp' (target x86-64-v3) needs an NVIDIA GPU (sm_80 or newer); "
                      "none found: cuInit failed"));
}

TEST(CudaCompatibilityTest, HostChecksComeBeforeTheDriverIsAsked) {
  EMBER_ASSERT_OK_AND_ASSIGN(const Manifest m, ParseManifest(CudaManifestJson()));
  bool asked = false;
  HostInfo host = HostWith(nullptr);
  host.arch = "aarch64";
  host.gpus = [&asked]() -> const cuda::HostGpus& {
    asked = true;
    static const cuda::HostGpus unused;
    return unused;
  };
  EXPECT_TRUE(IsError(CheckCompatibility(m, host), StatusCode::kIncompatible, "this host is aarch64"));
  EXPECT_FALSE(asked);
}

TEST(CudaCompatibilityTest, CpuArtifactsNeverAskTheDriver) {
  EMBER_ASSERT_OK_AND_ASSIGN(Manifest m, ParseManifest(ValidManifestJson()));
  m.required_cpu_features.clear();
  HostInfo host = HostWith(nullptr);
  host.gpus = []() -> const cuda::HostGpus& {
    ADD_FAILURE() << "a CPU artifact probed the GPUs";
    static const cuda::HostGpus unused;
    return unused;
  };
  EMBER_EXPECT_OK(CheckCompatibility(m, host));
}

// --- This machine ---

TEST(ProbeHostGpusTest, ReportsGpusOrWhyThereAreNone) {
  const cuda::HostGpus& host = cuda::ProbeHostGpus();
  EXPECT_EQ(host.error.empty(), !host.gpus.empty()) << host.error;
  EXPECT_EQ(&host, &cuda::ProbeHostGpus());  // probed once
}

TEST(LoadTvmCudaRuntimeTest, WithoutADriverItIsIncompatible) {
  if (cuda::ProbeHostGpus().error.empty()) GTEST_SKIP() << "this machine has a GPU";
  // TVM's CUDA runtime links libcuda.so.1 (the driver), so it cannot load without one; the
  // message says which library is missing.
  const Status status = cuda::LoadTvmCudaRuntime();
  EXPECT_TRUE(IsError(status, StatusCode::kIncompatible)) << status.ToString();
  EXPECT_NE(status.message().find(".so"), std::string::npos) << status.ToString();
  EXPECT_EQ(status.message(), cuda::LoadTvmCudaRuntime().message());  // attempted once
}

// --- DeviceTransfer, with the CPU as the device ---

TEST(DeviceTransferTest, CopiesInAndOutOfADeviceTensor) {
  EMBER_ASSERT_OK_AND_ASSIGN(const runtime::DeviceTransfer transfer,
                             runtime::DeviceTransfer::Create(DLDevice{kDLCPU, 0}));
  const DLDataType f32{kDLFloat, 32, 1};
  EMBER_ASSERT_OK_AND_ASSIGN(const tvm::ffi::Tensor tensor, transfer.Empty({2, 3}, f32));
  EXPECT_EQ(tensor.shape()[0], 2);
  EXPECT_EQ(tensor.shape()[1], 3);
  EXPECT_EQ(tensor.device().device_type, kDLCPU);
  const float in[6] = {1, 2, 3, 4, 5, 6.5f};
  EMBER_EXPECT_OK(transfer.CopyIn(in, sizeof(in), tensor));
  float out[6] = {};
  EMBER_EXPECT_OK(transfer.CopyOut(tensor, out, sizeof(out)));
  EXPECT_EQ(std::memcmp(in, out, sizeof(in)), 0);
  EXPECT_TRUE(IsError(transfer.CopyIn(in, sizeof(in) - 4, tensor), StatusCode::kInternal, "20 bytes"));
  EXPECT_TRUE(IsError(transfer.CopyOut(tensor, out, 4), StatusCode::kInternal, "24 bytes"));
}

}  // namespace
}  // namespace ember
