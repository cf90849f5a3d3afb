"""Loading verifies checksums, then compatibility, before any code of the artifact is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import mlp, ort_run

import ember
from ember import _core
from ember.artifact import write_checksums


def _copy(artifact: ember.Artifact, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.ember"
    shutil.copytree(artifact.path, dst)
    return dst


def _library_is_mapped(path: Path) -> bool:
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


def test_manifest_records_what_the_artifact_is(mlp_artifact: ember.Artifact) -> None:
    m = mlp_artifact.manifest
    assert m["format_version"] == 1
    assert m["model_name"] == "mlp"
    assert len(m["source"]["sha256"]) == 64
    assert m["batch_sizes"] == [1, 4, 8]
    assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 16], "batch_axis": 0}]
    assert m["target"]["name"] == "cpu" and m["target"]["arch"] == _core.host_arch()
    assert set(m["target"]["required_cpu_features"]) <= _core.host_cpu_features()
    assert m["versions"]["tvm"] == _core.runtime_versions()["tvm"]
    assert m["build_host"]["cpu_features"]
    checksums = json.loads((mlp_artifact.path / "checksums.json").read_text())["files"]
    assert set(checksums) == {"manifest.json", "model.so"}


@pytest.mark.parametrize("victim", ["model.so", "manifest.json"])
def test_one_flipped_byte_is_refused_before_loading(
    mlp_artifact: ember.Artifact, tmp_path: Path, victim: str
) -> None:
    path = _copy(mlp_artifact, tmp_path)
    data = bytearray((path / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / victim).write_bytes(bytes(data))
    with pytest.raises(ember.IntegrityError, match=f"checksum mismatch for '{victim}'"):
        ember.load(path)
    assert not _library_is_mapped(path / "model.so")


def test_library_not_covered_by_checksums_is_refused(
    mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    path = _copy(mlp_artifact, tmp_path)
    sums = json.loads((path / "checksums.json").read_text())
    del sums["files"]["model.so"]
    (path / "checksums.json").write_text(json.dumps(sums))
    with pytest.raises(ember.IntegrityError, match=r"does not cover the library 'model\.so'"):
        ember.load(path)


def _rewrite_manifest(path: Path, **target_changes: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["target"].update(target_changes)
    (path / "manifest.json").write_text(json.dumps(manifest))
    write_checksums(path)  # a consistent artifact, as if built on that other machine


def test_artifact_for_another_arch_is_refused(mlp_artifact: ember.Artifact, tmp_path: Path) -> None:
    path = _copy(mlp_artifact, tmp_path)
    other = "aarch64" if _core.host_arch() != "aarch64" else "x86_64"
    _rewrite_manifest(path, arch=other)
    with pytest.raises(ember.IncompatibleArtifactError, match=f"compiled for {other}"):
        ember.load(path)
    assert not _library_is_mapped(path / "model.so")


def test_artifact_for_a_cpu_with_more_features_is_refused(tmp_path: Path) -> None:
    """A real build for a CPU with AMX (Sapphire Rapids), refused on hosts without it."""
    if _core.host_arch() != "x86_64":
        pytest.skip("x86-only: the foreign CPU is an x86 model")
    if {"amx_tile", "avx512f"} <= _core.host_cpu_features():
        pytest.skip("this host has AMX and AVX-512, so a Sapphire Rapids build is runnable here")
    artifact = ember.compile(
        mlp(),
        target={"kind": "llvm", "mcpu": "sapphirerapids"},
        batch_sizes=(2,),
        output=tmp_path / "spr.ember",
    )
    missing = set(artifact.target["required_cpu_features"]) - _core.host_cpu_features()
    assert missing
    with pytest.raises(ember.IncompatibleArtifactError, match="needs CPU features this host lacks"):
        ember.load(artifact.path)
    assert not _library_is_mapped(artifact.path / "model.so")


def test_artifact_from_another_runtime_version_is_refused(
    mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    path = _copy(mlp_artifact, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["versions"]["tvm"] = "0.1.0"
    (path / "manifest.json").write_text(json.dumps(manifest))
    write_checksums(path)
    with pytest.raises(ember.IncompatibleArtifactError, match=r"built with TVM 0\.1\.0"):
        ember.load(path)


def test_verify_without_loading(mlp_artifact: ember.Artifact) -> None:
    mlp_artifact.verify()
    assert (
        _core.sha256_file(str(mlp_artifact.path / "model.so"))
        == json.loads((mlp_artifact.path / "checksums.json").read_text())["files"]["model.so"]
    )
    model = ember.load(mlp_artifact.path)
    assert model.run({"x": np.zeros((1, 16), np.float32)})["y"].shape == (1, 5)


def test_recompiling_in_place_then_loading_runs_the_new_code(tmp_path: Path) -> None:
    """The dynamic loader caches libraries by path; loading a private copy means a model
    recompiled into the same directory is really the one that runs."""
    out = tmp_path / "same.ember"
    first = ember.load(ember.compile(mlp(out_features=5), batch_sizes=(2,), output=out).path)
    second = ember.load(
        ember.compile(mlp(out_features=7, seed=1), batch_sizes=(2,), output=out).path
    )
    x = np.ones((2, 16), np.float32)
    assert first.run({"x": x})["y"].shape == (2, 5)
    y = second.run({"x": x})["y"]
    assert y.shape == (2, 7)
    np.testing.assert_allclose(
        y, ort_run(mlp(out_features=7, seed=1), {"x": x})["y"], rtol=1e-4, atol=1e-4
    )
