"""ember.load / Model.run: numerics vs ONNX Runtime across buckets, and precise input errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_matches_ort, mlp, ort_run

import ember


@pytest.mark.parametrize("rows", [1, 2, 4, 5, 8, 9, 17, 30])
def test_rows_at_between_and_beyond_buckets_match_ort(mlp_model: ember.Model, rows: int) -> None:
    x = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
    assert_matches_ort(mlp_model.run({"x": x}), ort_run(mlp(), {"x": x}))


def test_specs_describe_the_model(mlp_model: ember.Model) -> None:
    assert mlp_model.inputs == [ember.TensorSpec("x", "float32", (None, 16), 0)]
    assert mlp_model.outputs == [ember.TensorSpec("y", "float32", (None, 5), 0)]
    assert mlp_model.batch_sizes == (1, 4, 8)
    assert mlp_model.name == "mlp"


def test_zero_rows_gives_empty_outputs(mlp_model: ember.Model) -> None:
    out = mlp_model.run({"x": np.zeros((0, 16), np.float32)})
    assert out["y"].shape == (0, 5)


def test_padding_rows_do_not_leak_between_calls(mlp_model: ember.Model) -> None:
    rng = np.random.default_rng(1)
    big = rng.standard_normal((8, 16)).astype(np.float32) * 100
    mlp_model.run({"x": big[:7]})  # fills the bucket-8 staging buffer with large rows
    small = rng.standard_normal((5, 16)).astype(np.float32)
    assert_matches_ort(mlp_model.run({"x": small}), ort_run(mlp(), {"x": small}))


def test_outputs_own_their_memory(mlp_model: ember.Model) -> None:
    x = np.ones((4, 16), np.float32)
    first = mlp_model.run({"x": x})["y"]
    kept = first.copy()
    mlp_model.run({"x": -x})
    np.testing.assert_array_equal(first, kept)
    assert first.flags.c_contiguous and first.flags.writeable


def test_inputs_in_the_other_byte_order_are_converted(mlp_model: ember.Model) -> None:
    x = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    swapped = x.astype(x.dtype.newbyteorder(">" if x.dtype.byteorder in "=<" else "<"))
    assert not swapped.dtype.isnative
    want = mlp_model.run({"x": x})["y"]
    np.testing.assert_array_equal(mlp_model.run({"x": swapped})["y"], want)
    # Swapped and transposed: the conversion must also lay it out C-contiguously.
    swapped_t = np.ascontiguousarray(swapped.T).T
    assert not swapped_t.flags.c_contiguous
    np.testing.assert_array_equal(mlp_model.run({"x": swapped_t})["y"], want)
    with ember.Engine(mlp_model) as engine:
        np.testing.assert_array_equal(engine.run({"x": swapped})["y"], want)
        np.testing.assert_array_equal(engine.run({"x": swapped_t})["y"], want)


def test_non_contiguous_and_unaligned_inputs_are_copied(mlp_model: ember.Model) -> None:
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((8, 32)).astype(np.float32)
    strided = wide[:, ::2]  # not C-contiguous: copied once (documented)
    assert not strided.flags.c_contiguous
    assert_matches_ort(
        mlp_model.run({"x": strided}), ort_run(mlp(), {"x": np.ascontiguousarray(strided)})
    )
    fortran = np.asfortranarray(rng.standard_normal((8, 16)).astype(np.float32))
    assert_matches_ort(
        mlp_model.run({"x": fortran}), ort_run(mlp(), {"x": np.ascontiguousarray(fortran)})
    )
    raw = np.zeros(8 * 16 + 1, np.float32)
    unaligned = raw[1:].reshape(8, 16)  # 4 bytes off a 64-byte boundary: staged, not passed
    unaligned[:] = rng.standard_normal((8, 16))
    assert_matches_ort(mlp_model.run({"x": unaligned}), ort_run(mlp(), {"x": unaligned.copy()}))


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"x": np.zeros((2, 16), np.float32), "z": np.zeros(1)}, "unknown input 'z'"),
        ({}, "missing input 'x'"),
        ({"x": np.zeros((2, 16), np.float64)}, "expected dtype float32, got float64"),
        ({"x": np.zeros((2, 16), np.int32)}, "expected dtype float32, got int32"),
        ({"x": np.zeros((2, 16, 1), np.float32)}, "expected rank 2"),
        ({"x": np.zeros(16, np.float32)}, "expected rank 2"),
        ({"x": np.zeros((2, 15), np.float32)}, "dimension 1 must be 16, got 15"),
        ({"x": [[0.0] * 16]}, "must be a numpy array"),
        ({"x": np.zeros((2, 16), np.complex64)}, "unsupported numpy dtype"),
    ],
)
def test_bad_inputs_raise_precise_errors(
    mlp_model: ember.Model, feeds: dict[str, object], message: str
) -> None:
    with pytest.raises(ember.InvalidInputError, match=message) as info:
        mlp_model.run(feeds)  # type: ignore[arg-type]
    assert info.value.code == "InvalidArgument"
    assert isinstance(info.value, ValueError)
    # The model still works after every rejected call.
    assert mlp_model.run({"x": np.zeros((1, 16), np.float32)})["y"].shape == (1, 5)


def test_missing_artifact_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ember.ArtifactNotFoundError, match="does not exist"):
        ember.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ember.ArtifactNotFoundError, match=r"checksums\.json is missing"):
        ember.load(tmp_path / "empty")


_SPLIT_SCRIPT = """
import sys
import numpy as np
import ember
model = ember.load(sys.argv[1])
rng = np.random.default_rng(0)
for rows in (8, 7, 2, 20, 33):
    x = rng.standard_normal((rows, 16)).astype(np.float32)
    np.save(f"{sys.argv[2]}/x{rows}.npy", x)
    np.save(f"{sys.argv[2]}/y{rows}.npy", model.run({"x": x})["y"])
"""


@pytest.mark.parametrize("split", ["1", "0"])
def test_requests_split_across_lanes_match_ort(tmp_path, split: str) -> None:  # type: ignore[no-untyped-def]
    """With 2 threads, rows whose halves fit a smaller bucket run as two parallel lanes (8 rows
    as 2 x 4, 20 as 2 x (8 + 2)); results must equal ORT's either way, including rows the lanes
    split unevenly. Runs in a subprocess: the lane count is fixed when the core starts."""
    model = mlp()
    artifact = ember.compile(model, batch_sizes=(2, 4, 8), output=tmp_path / "a")
    env = {**os.environ, "EMBER_NUM_THREADS": "2", "EMBER_SPLIT_BATCHES": split}
    command = [sys.executable, "-c", _SPLIT_SCRIPT, str(artifact.path), str(tmp_path)]
    subprocess.run(command, env=env, check=True)
    for rows in (8, 7, 2, 20, 33):
        x = np.load(tmp_path / f"x{rows}.npy")
        got = {"y": np.load(tmp_path / f"y{rows}.npy")}
        assert_matches_ort(got, ort_run(model, {"x": x}))
