"""The target registry: presets, `ember targets`, and cross-compiled aarch64 artifacts, which are
real aarch64 code that this x86-64 host refuses to load (the qemu run is in test_aarch64.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import mlp

import ember
from ember.compiler import build as build_module
from ember.compiler.targets import CUDA_ARCHS, PRESETS, Target, resolve_target

AARCH64_PRESETS = ("aarch64", "rpi4", "rpi5", "jetson-orin-cpu")


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "cuda"])
def test_every_cpu_preset_resolves_with_its_arch_and_features(name: str) -> None:
    target = resolve_target(name)
    assert target.kind == "llvm" and target.name == name
    if name in AARCH64_PRESETS:
        assert target.arch == "aarch64" and "asimd" in target.required_cpu_features
    else:
        assert target.arch == "x86_64" and "avx2" in target.required_cpu_features
    if name == "x86-avx512":
        assert {"avx512f", "avx512bw", "avx512vl"} <= set(target.required_cpu_features)
    if name == "rpi5":
        assert "asimddp" in target.required_cpu_features  # dot product, Cortex-A76


@pytest.mark.parametrize("arch", CUDA_ARCHS)
def test_cuda_targets_name_their_arch(arch: str) -> None:
    target = resolve_target(f"cuda-{arch}")
    assert target.kind == "cuda" and target.tvm["arch"] == arch
    assert target.tvm["host"]["kind"] == "llvm"


@pytest.mark.parametrize("name", ["x86-avx512", "rpi5", "cuda-sm_90"])
def test_a_manifest_target_record_reads_back_as_the_same_target(name: str) -> None:
    """`ember bench --reuse` plans from the record in the artifact's manifest (no TVM there)."""
    target = resolve_target(name)
    assert Target.from_json(json.loads(json.dumps(target.to_json()))) == target


def test_a_malformed_target_record_is_a_clear_error() -> None:
    record = resolve_target("x86-avx2").to_json()
    del record["arch"]
    with pytest.raises(ember.UnknownTargetError, match=r"malformed target record .*'arch'"):
        Target.from_json(record)


def test_cuda_without_a_gpu_asks_for_the_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(ember.UnknownTargetError, match="name the arch instead: cuda-sm_75"):
        resolve_target("cuda")


def test_ember_targets_lists_every_preset_with_its_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ember.cli import main

    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    for name in PRESETS:
        assert f"\n{name} " in f"\n{text}"
    assert "g++-aarch64-linux-gnu" in text and "nvcc" in text
    assert main(["targets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["rpi4"]["tvm"]["mcpu"] == "cortex-a72"


needs_cross = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None,
    reason="needs g++-aarch64-linux-gnu (apt); .ci/run installs it",
)


@needs_cross
def test_aarch64_artifacts_are_cross_compiled_and_refused_here(tmp_path: Path) -> None:
    artifact = ember.compile(mlp(), target="rpi4", batch_sizes=(1, 4), output=tmp_path / "a")
    assert artifact.target["arch"] == "aarch64" and artifact.target["name"] == "rpi4"
    header = (artifact.path / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # AArch64
    if shutil.which("file"):
        described = subprocess.run(
            ["file", str(artifact.path / "model.so")], capture_output=True, text=True, check=True
        ).stdout
        assert "aarch64" in described
    with pytest.raises(ember.IncompatibleArtifactError, match="compiled for aarch64"):
        ember.load(artifact.path)


def test_a_missing_cross_compiler_is_named_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        build_module.shutil,
        "which",
        lambda name: None if name == "aarch64-linux-gnu-g++" else real_which(name),
    )
    with pytest.raises(ember.CompileError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        ember.compile(mlp(), target="aarch64", output=tmp_path / "a")
