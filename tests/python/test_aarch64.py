"""The aarch64 edge bundle (tools/build_aarch64_bundle.sh): ember-run and the core cross-built for
aarch64 with the runtime libraries they load, running aarch64 artifacts (conv/matmul on the oneDNN
kernels) under qemu-aarch64 with outputs equal to the x86 runtime's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from helpers import ort_run
from test_dnnl_kernels import CONV_CASES, MATMUL_CASES, _conv_model, _matmul_model

import ember
from ember.samples import digits_cnn, digits_mlp, load_digits_split

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "build_aarch64_bundle.sh"
MULTIARCH = Path("/usr/lib/aarch64-linux-gnu")
EM_AARCH64 = 183  # ELF e_machine


def _missing() -> list[str]:
    """What the host lacks to build and emulate the bundle, each with its install command."""
    arm64 = "dpkg --add-architecture arm64 && apt-get update && apt-get install"
    missing = []
    if shutil.which("aarch64-linux-gnu-g++") is None:
        missing.append("the aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)")
    if shutil.which("qemu-aarch64") is None:
        missing.append("qemu-aarch64 (apt-get install qemu-user)")
    if not (MULTIARCH / "cmake/dnnl/dnnl-config.cmake").is_file():
        missing.append(f"oneDNN for arm64 ({arm64} libdnnl-dev:arm64 libgomp1:arm64)")
    elif not (MULTIARCH / "libgomp.so.1").is_file():
        missing.append(f"GNU OpenMP for arm64 ({arm64} libgomp1:arm64)")
    return missing


pytestmark = pytest.mark.skipif(
    bool(_missing()), reason="the aarch64 bundle needs " + "; ".join(_missing())
)

# (name, model builder, input rows -> model input): 13 rows run as buckets 8 + a padded 8.
MODELS = {
    "digits_mlp": (lambda: digits_mlp()[0], lambda x: x),
    "digits_cnn": (lambda: digits_cnn()[0], lambda x: x.reshape(-1, 1, 8, 8)),
}
ROWS = 13


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, ember.Artifact]]:
    """Each model compiled for aarch64 (the bundle's) and for this x86 host."""
    out = tmp_path_factory.mktemp("aarch64-models")
    artifacts: dict[str, dict[str, ember.Artifact]] = {}
    for name, (build, _) in MODELS.items():
        model: onnx.ModelProto = build()
        artifacts[name] = {
            target: ember.compile(
                model, target=target, batch_sizes=(1, 8), output=out / f"{name}-{target}.ember"
            )
            for target in ("aarch64", "cpu")
        }
    return artifacts


@pytest.fixture(scope="session")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, compiled: dict[str, dict[str, ember.Artifact]]
) -> Path:
    """The bundle, built by the script with the aarch64 artifacts in it (cross build cached in
    build/aarch64-cross, the aarch64 TVM libraries in build/aarch64-deps)."""
    out = tmp_path_factory.mktemp("aarch64") / "bundle"
    paths = [str(a["aarch64"].path) for a in compiled.values()]
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *paths],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def run_sh(
    bundle: Path, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bundle / "run.sh"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def test_the_bundle_holds_aarch64_binaries_that_start_under_qemu(bundle: Path) -> None:
    assert (bundle / "bin/ember-run").is_file()
    libs = sorted(p.name for p in (bundle / "lib").iterdir())
    assert libs == ["libdnnl.so.2", "libgomp.so.1", "libtvm_ffi.so", "libtvm_runtime.so"]
    for binary in [bundle / "bin/ember-run", *(bundle / "lib").iterdir()]:
        assert elf_machine(binary) == EM_AARCH64, binary
    done = run_sh(bundle, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ember-run ARTIFACT")
    readme = (bundle / "README.txt").read_text()
    assert "scp -r build/aarch64-bundle pi@board:" in readme and "glibc >= 2." in readme
    assert "digits_mlp-aarch64.ember" in readme


def test_the_runner_loads_only_the_bundle_libraries_and_the_c_runtime(bundle: Path) -> None:
    """Everything but glibc, libstdc++ and libgcc_s (which every aarch64 Linux has) comes from
    the bundle's lib/, not from this host's arm64 packages."""
    # QEMU_SET_ENV: set in the emulated program only (qemu itself is a dynamic executable too).
    done = run_sh(bundle, env={"QEMU_SET_ENV": "LD_TRACE_LOADED_OBJECTS=1"})
    assert done.returncode == 0, done.stderr
    system = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "libstdc++.so.6"}
    system |= {"libgcc_s.so.1"}
    resolved = {}
    for line in done.stdout.splitlines():
        name, arrow, where = line.strip().partition(" => ")
        if arrow:
            resolved[name] = where.split(" (")[0]
    assert {"libtvm_runtime.so", "libtvm_ffi.so", "libdnnl.so.2", "libgomp.so.1"} <= set(resolved)
    for name, where in resolved.items():
        if name not in system:
            assert Path(where).parent == bundle / "lib", f"{name} from {where}"


def test_aarch64_artifacts_run_the_onednn_kernels(
    compiled: dict[str, dict[str, ember.Artifact]],
) -> None:
    mlp = compiled["digits_mlp"]["aarch64"].manifest["kernel_library"]
    cnn = compiled["digits_cnn"]["aarch64"].manifest["kernel_library"]
    assert mlp["name"] == "dnnl" and mlp["matmul"] == 4  # 2 layers x 2 buckets
    assert cnn["name"] == "dnnl" and cnn["conv_layout"] == "NHWC" and cnn["conv2d"] == 4
    assert cnn["max_pool2d"] == 2  # oneDNN 2.x's pooling: run under qemu by the test below
    assert "nchw8c" not in cnn  # NCHW8c is an x86 choice; this host's own build may use it


@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_under_qemu_equal_the_x86_runtime(
    bundle: Path,
    compiled: dict[str, dict[str, ember.Artifact]],
    tmp_path: Path,
    name: str,
) -> None:
    x = MODELS[name][1](load_digits_split().x_test[:ROWS])
    np.save(tmp_path / "x.npy", x)
    artifact = bundle / "artifacts" / f"{name}-aarch64.ember"
    out = tmp_path / "out"
    done = run_sh(
        bundle, artifact, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", out,
        "--warmup", "1", "--iterations", "2", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["target_arch"] == "aarch64" and report["batch_rows"] == ROWS
    got = np.load(out / "logits.npy")
    expected = ember.load(compiled[name]["cpu"].path).run({"x": x})["logits"]
    assert got.shape == expected.shape == (ROWS, 10) and got.dtype == expected.dtype
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


# Cases of the x86 kernel tests (test_dnnl_kernels.py) on the aarch64 build, whose oneDNN 2.x runs
# through the compatibility shims: residual adds, grouped, dilated and depthwise convs, fused
# activations, runtime (batched) and padded-pitch weights, int8-weight prepacking.
KERNEL_CASES = [
    ("conv", CONV_CASES[4], "fp32"),  # 1x1, residual + relu
    ("conv", CONV_CASES[2], "fp32"),  # groups 2, dilation 2, no bias, clip
    ("conv", CONV_CASES[7], "fp32"),  # depthwise, stride 2, asymmetric pads
    ("conv", CONV_CASES[5], "int8-weight"),  # stride 2, residual
    ("conv", CONV_CASES[6], "int8-weight"),  # 5x5, groups 3, sigmoid
    ("matmul", MATMUL_CASES[2], "fp32"),  # gelu
    ("matmul", MATMUL_CASES[4], "fp32"),  # batched, b a runtime input
    ("matmul", MATMUL_CASES[6], "fp32"),  # tanh; every op in the library call
    ("matmul", ((3, 64), (64, 256), True, True, "relu"), "int8-weight"),  # padded weight pitch
]


@pytest.mark.parametrize(
    ("kind", "case", "precision"),
    KERNEL_CASES,
    ids=[
        f"{k}-{'x'.join(map(str, c[0] if k == 'matmul' else c[:5]))}-{p}"
        for k, c, p in KERNEL_CASES
    ],
)
def test_library_kernels_under_qemu_match(
    bundle: Path,
    tmp_path: Path,
    kind: str,
    case: tuple,  # type: ignore[type-arg]
    precision: str,
) -> None:
    """fp32 against ONNX Runtime; int8-weight against the same model's x86 artifact."""
    model, feeds = (_conv_model if kind == "conv" else _matmul_model)(
        case, np.random.default_rng(7)
    )
    artifact = ember.compile(
        model, target="aarch64", batch_sizes=None, precision=precision, output=tmp_path / "a64"
    )
    calls = artifact.manifest["kernel_library"]
    assert calls["calls"] == 1
    if precision == "int8-weight":
        assert calls[f"{'conv2d' if kind == 'conv' else 'matmul'}_w8"] == 1
    args: list[str | Path] = []
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / name}.npy"]
    out = tmp_path / "out"
    done = run_sh(bundle, artifact.path, *args, "--output-dir", out, "--iterations", "1")
    assert done.returncode == 0, done.stderr
    got = np.load(out / "y.npy")
    if precision == "fp32":
        expected = ort_run(model, feeds)["y"]
    else:
        x86 = ember.compile(model, batch_sizes=None, precision=precision, output=tmp_path / "x86")
        expected = ember.load(x86.path).run(feeds)["y"]
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


def test_static_int8_and_nchw8c_are_refused_for_aarch64(tmp_path: Path) -> None:
    """The aarch64 runtime's oneDNN 2.x has no static int8 kernels (they refuse to run there):
    neither int8-static nor a QDQ model's int8 ops may be dispatched to them."""
    from ember.quantize import calibrate, quantize_static

    model = digits_mlp()[0]
    calibration = [{"x": load_digits_split().x_train[:32]}]
    with pytest.raises(ember.CompileError, match="'int8-static' is not supported for target rpi4"):
        ember.compile(
            model, target="rpi4", precision="int8-static", calibration=calibration,
            output=tmp_path / "q8",
        )  # fmt: skip
    qdq = quantize_static(model, calibrate(model, calibration))
    refused = r"QDQ \(int8\) model is not supported .* use kernel_library=None"
    with pytest.raises(ember.CompileError, match=refused):
        ember.compile(qdq, target="aarch64", output=tmp_path / "qdq")
    with pytest.raises(ember.CompileError, match="aarch64 targets use 'NHWC'"):
        ember.compile(model, target="aarch64", conv_layout="NCHW8c", output=tmp_path / "b")
