"""CUDA targets: artifacts built on this GPU-less machine hold real device code (a fatbin with
cubins and PTX, never CUDA source); the core refuses them cleanly without a GPU; the device-copy
path the core uses for them is exercised on the CPU; and, where a GPU is present, they run and
agree with the CPU artifact (those tests skip elsewhere).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import make_model, mlp
from onnx import TensorProto, helper

import ember
from ember.compiler import cuda

TARGET = "cuda-sm_80"
BUCKETS = (1, 4)
GPU_TOLERANCE = 1e-4
EM_CUDA = 190  # ELF e_machine of NVIDIA cubins


def _gpu_reason() -> str | None:
    """None when nvidia-smi lists a GPU, else why the GPU tests skip."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU: nvidia-smi is not installed"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no NVIDIA GPU: nvidia-smi failed ({exc})"
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return f"no NVIDIA GPU: nvidia-smi -L exited {listed.returncode}"
    return None


GPU_SKIP_REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(GPU_SKIP_REASON is not None, reason=str(GPU_SKIP_REASON))


def _has_driver() -> bool:
    """Whether the NVIDIA driver library loads here (a GPU may be there even without nvidia-smi)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _toolchain_reason() -> str | None:
    try:
        cuda.find_toolchain()
    except ember.CompileError as exc:
        return f"CUDA toolchain not installed: {exc}"
    return None


needs_toolchain = pytest.mark.skipif(
    _toolchain_reason() is not None, reason=str(_toolchain_reason())
)


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """x[N, 3, 8, 8] -> Conv 3x3 (8) / Relu / GlobalAveragePool -> feat[N, 8] -> MatMul/Add ->
    y[N, 4]: a conv, a reduction and a matmul, and two outputs."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 3, 3, 3)) / 5).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((8, 4)).astype(np.float32)
    b2 = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["feat"]),
        helper.make_node("MatMul", ["feat", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 8]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
        ],
        [("w", w), ("b", b), ("w2", w2), ("b2", b2)],
        name="small_cnn",
    )


MODELS = {"mlp": mlp, "cnn": small_cnn}


def inputs_for(name: str, rows: int, seed: int) -> dict[str, np.ndarray]:
    shape = (rows, 16) if name == "mlp" else (rows, 3, 8, 8)
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.fixture(scope="session")
def cuda_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ember.Artifact]:
    if (reason := _toolchain_reason()) is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("cuda")
    return {
        name: ember.compile(build(), target=TARGET, batch_sizes=BUCKETS, output=out / name)
        for name, build in MODELS.items()
    }


@pytest.fixture(scope="session")
def cpu_cnn_artifact(tmp_path_factory: pytest.TempPathFactory) -> ember.Artifact:
    out = tmp_path_factory.mktemp("cnn_cpu") / "cnn.ember"
    return ember.compile(small_cnn(), batch_sizes=BUCKETS, output=out)


def embedded_cuda_elfs(data: bytes) -> set[int]:
    """SM numbers of the NVIDIA cubins (ELF, e_machine EM_CUDA) embedded in `data`, read from
    each ELF header independently of ember's fatbin reader."""
    found = set()
    for match in re.finditer(rb"\x7fELF\x02\x01\x01", data):
        at = match.start()
        abi_version = data[at + 8]
        (machine,) = struct.unpack_from("<H", data, at + 18)
        (flags,) = struct.unpack_from("<I", data, at + 48)
        if machine == EM_CUDA:  # the arch sits in e_flags: bits 8-15 from ABI version 8 on
            found.add((flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF)
    return found


# --- Built here, without a GPU ---


@needs_toolchain
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_library_holds_cubins_and_ptx_and_no_cuda_source(
    cuda_artifacts: dict[str, ember.Artifact], name: str
) -> None:
    library = cuda_artifacts[name].path / "model.so"
    data = library.read_bytes()
    assert struct.pack("<I", 0xBA55ED50) in data, "no fatbin in the library"
    assert embedded_cuda_elfs(data) == {80, 90}
    assert b"__global__" not in data and b'extern "C"' not in data
    found = cuda.inspect_device_code(library)
    assert found == cuda.DeviceCode(("sm_80", "sm_90"), ("compute_80",), cuda_source=False)


@needs_toolchain
def test_the_manifest_says_cuda_and_the_gpu_code(cuda_artifacts: dict[str, ember.Artifact]) -> None:
    manifest = cuda_artifacts["mlp"].manifest
    assert manifest["target"]["kind"] == "cuda"
    assert manifest["target"]["tvm"]["arch"] == "sm_80"
    device = manifest["device"]
    assert device["kind"] == "cuda" and device["arch"] == "sm_80"
    assert device["sass"] == ["sm_80", "sm_90"] and device["ptx"] == "compute_80"
    assert re.fullmatch(r"\d+\.\d+", device["cuda_version"])
    assert manifest["kernel_library"] is None  # oneDNN is for CPUs
    assert manifest["batch_sizes"] == list(BUCKETS)


@pytest.mark.skipif(_has_driver(), reason="this machine has an NVIDIA driver")
@needs_toolchain
def test_loading_without_a_gpu_is_incompatible(cuda_artifacts: dict[str, ember.Artifact]) -> None:
    artifact = cuda_artifacts["mlp"]
    expected = r"needs an NVIDIA GPU \(sm_80 or newer\); none found: \S"
    with pytest.raises(ember.IncompatibleArtifactError, match=expected) as info:
        ember.load(artifact.path)
    assert "artifact 'mlp' (target cuda-sm_80)" in str(info.value)
    with pytest.raises(ember.IncompatibleArtifactError, match=expected):
        artifact.verify()
    with pytest.raises(ember.IncompatibleArtifactError, match=expected):
        ember.Engine(artifact.path)


@needs_toolchain
def test_a_build_whose_cuda_runtime_cannot_load_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the stub driver on its library path TVM's CUDA runtime cannot load, and TVM
    would quietly keep CUDA source: the build must refuse instead of writing an artifact."""
    environment = cuda._worker_environment

    def without_stub(toolchain: cuda.CudaToolchain, stub_dir: Path) -> dict[str, str]:
        env = environment(toolchain, stub_dir)
        env["LD_LIBRARY_PATH"] = str(toolchain.runtime_dir)
        return env

    monkeypatch.setattr(cuda, "_worker_environment", without_stub)
    with pytest.raises(ember.CompileError, match=r"TVM's CUDA runtime did not load: .*libcuda"):
        ember.compile(mlp(), target=TARGET, batch_sizes=(1,), output=tmp_path / "m")
    assert not (tmp_path / "m" / "model.so").exists()


def test_cuda_source_or_missing_device_code_is_refused(
    tmp_path: Path, mlp_artifact: ember.Artifact
) -> None:
    plan = cuda.code_plan("sm_80")
    source = tmp_path / "source.so"
    source.write_bytes(b"\x7fELF...." + b'extern "C" __global__ void default_function_kernel() {}')
    with pytest.raises(ember.CompileError, match="kept its kernels as CUDA source"):
        cuda.check_device_code(source, plan)
    with pytest.raises(ember.CompileError, match="lacks device code for sm_80, sm_90, compute_80"):
        cuda.check_device_code(mlp_artifact.path / "model.so", plan)  # a CPU library
    truncated = tmp_path / "truncated.so"  # a fatbin header claiming more bytes than there are
    truncated.write_bytes(struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 1 << 20) + b"\0" * 64)
    assert cuda.inspect_device_code(truncated) == cuda.DeviceCode((), (), cuda_source=False)


def test_code_plans_cover_newer_gpu_generations() -> None:
    assert cuda.code_plan("sm_75") == cuda.CodePlan(
        "sm_75", ("sm_75", "sm_80", "sm_90"), "compute_75"
    )
    assert cuda.code_plan("sm_86") == cuda.CodePlan("sm_86", ("sm_86", "sm_90"), "compute_86")
    plan = cuda.code_plan("sm_90")
    assert plan == cuda.CodePlan("sm_90", ("sm_90",), "compute_90")
    assert plan.nvcc_flags() == ["-gencode", "arch=compute_90,code=[sm_90,compute_90]"]
    assert cuda.code_plan("sm_80").nvcc_flags() == [
        "-gencode",
        "arch=compute_80,code=[sm_80,sm_90,compute_80]",
    ]


def test_a_missing_toolchain_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cuda"
    monkeypatch.setattr(cuda, "_toolkit_roots", lambda: iter([(root, "test")]))
    monkeypatch.setattr(cuda, "_wheel_roots", list)
    with pytest.raises(ember.CompileError, match=r"needs nvcc; none was found: pip install .*cuda"):
        cuda.find_toolchain()

    nvcc = root / "bin" / "nvcc"  # an nvcc without the CUDA 13 runtime beside it
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.2, V13.2.51'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(ember.CompileError, match=r"libcudart\.so\.13.*nvidia-cuda-runtime"):
        cuda.find_toolchain()

    (root / "lib64").mkdir()
    (root / "lib64" / "libcudart.so.13").write_bytes(b"")
    toolchain = cuda.find_toolchain()
    assert (toolchain.nvcc, toolchain.runtime_dir, toolchain.version) == (
        nvcc,
        root / "lib64",
        (13, 2),
    )


def test_tuning_a_cuda_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ember.CompileError, match="tuning is not available for CUDA targets"):
        ember.compile(
            mlp(), target=TARGET, batch_sizes=(1,), output=tmp_path / "m", tune=ember.TuneBudget(4)
        )


# --- The core's device-copy path, with the CPU as the device ---


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_device_copy_path_matches_the_direct_path(
    name: str,
    mlp_artifact: ember.Artifact,
    cpu_cnn_artifact: ember.Artifact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMBER_TEST_DEVICE_COPIES=1 runs a CPU artifact the way CUDA artifacts run: inputs copied
    into device tensors (padded to the bucket), outputs copied back, then sliced."""
    path = (mlp_artifact if name == "mlp" else cpu_cnn_artifact).path
    direct = ember.load(path)
    monkeypatch.setenv("EMBER_TEST_DEVICE_COPIES", "1")
    staged = ember.load(path)
    for rows in (1, 3, 4, 8, 9, 21):
        feeds = inputs_for(name, rows, seed=rows)
        want, got = direct.run(feeds), staged.run(feeds)
        assert set(got) == set(want)
        for key in want:
            assert got[key].shape == want[key].shape
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} at {rows} rows")
    with ember.Engine(staged, lanes=1) as engine:
        futures = [engine.submit(inputs_for(name, 2, seed=s)) for s in range(6)]
        for s, future in enumerate(futures):
            want = direct.run(inputs_for(name, 2, seed=s))
            for key, value in future.result(timeout=60).items():
                np.testing.assert_allclose(value, want[key], rtol=1e-6, atol=1e-6)


# --- On a GPU (skipped without one) ---


@needs_gpu
@needs_toolchain
@pytest.mark.parametrize("name", sorted(MODELS))
def test_gpu_outputs_equal_the_cpu_artifact(
    name: str,
    cuda_artifacts: dict[str, ember.Artifact],
    mlp_artifact: ember.Artifact,
    cpu_cnn_artifact: ember.Artifact,
) -> None:
    gpu = ember.load(cuda_artifacts[name].path)
    cpu = ember.load((mlp_artifact if name == "mlp" else cpu_cnn_artifact).path)
    for rows in (1, 3, 4, 9):
        feeds = inputs_for(name, rows, seed=100 + rows)
        want, got = cpu.run(feeds), gpu.run(feeds)
        for key, value in want.items():
            assert isinstance(got[key], np.ndarray) and got[key].shape == value.shape
            np.testing.assert_allclose(got[key], value, rtol=GPU_TOLERANCE, atol=GPU_TOLERANCE)


@needs_gpu
@needs_toolchain
def test_gpu_engine_serves_requests(
    cuda_artifacts: dict[str, ember.Artifact], mlp_artifact: ember.Artifact
) -> None:
    cpu = ember.load(mlp_artifact.path)
    with ember.Engine(cuda_artifacts["mlp"].path) as engine:
        assert "lanes=1," in repr(engine)  # automatic lanes are for CPU models (one GPU here)
        futures = [engine.submit(inputs_for("mlp", 1 + s % 3, seed=s)) for s in range(12)]
        for s, future in enumerate(futures):
            want = cpu.run(inputs_for("mlp", 1 + s % 3, seed=s))["y"]
            got = future.result(timeout=60)["y"]
            np.testing.assert_allclose(got, want, rtol=GPU_TOLERANCE, atol=GPU_TOLERANCE)
        assert engine.metrics().failures == {}
