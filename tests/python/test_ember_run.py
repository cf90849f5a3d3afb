"""ember-run, the Python-free runner: same outputs as ember.load().run(), its report, its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import make_model
from onnx import TensorProto, helper

import ember

REPO = Path(__file__).resolve().parents[2]


def _find_runner() -> Path | None:
    """The installed ember-run (PATH, then the venv's bin dir), else the C++ test build's."""
    on_path = shutil.which("ember-run")
    candidates = [Path(on_path)] if on_path else []
    candidates += [Path(sys.executable).parent / "ember-run", REPO / "build/cpp-tests/ember-run"]
    return next((c for c in candidates if c.is_file()), None)


RUNNER = _find_runner()
pytestmark = pytest.mark.skipif(
    RUNNER is None,
    reason="ember-run is not built: `pip install .` puts it next to the Python executable, "
    "tools/test_cpp.sh builds build/cpp-tests/ember-run",
)

STATS = ("min", "p50", "p90", "p99", "max", "mean")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert RUNNER is not None
    return subprocess.run(
        [str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def run_json(*args: str | Path) -> dict[str, Any]:
    done = run(*args, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def mlp_input(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


@pytest.mark.parametrize("rows", [1, 6, 13])  # a bucket, padded to 8, split across buckets
def test_outputs_equal_the_python_runtime_exactly(
    mlp_artifact: ember.Artifact, mlp_model: ember.Model, tmp_path: Path, rows: int
) -> None:
    x = mlp_input(rows)
    out = tmp_path / "out"
    run_json(mlp_artifact.path, "--input", f"x={save(tmp_path / 'x.npy', x)}", "--output-dir", out)
    got = np.load(out / "y.npy")
    expected = mlp_model.run({"x": x})["y"]
    assert got.dtype == expected.dtype and got.shape == (rows, 5)
    np.testing.assert_array_equal(got, expected)


def test_json_report_has_sensible_latency_statistics(
    mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    x_path = save(tmp_path / "x.npy", mlp_input(4))
    report = run_json(
        mlp_artifact.path, "--input", f"x={x_path}", "--warmup", "2", "--iterations", "7"
    )
    assert report["model"] == "mlp"
    assert report["target"] == mlp_artifact.manifest["target"]["name"]
    assert report["threads"] >= 1
    assert (report["batch_rows"], report["warmup"], report["iterations"]) == (4, 2, 7)
    assert report["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": [4, 16], "source": str(x_path)}
    ]
    assert report["outputs"] == [{"name": "y", "dtype": "float32", "shape": [4, 5], "file": None}]
    latency = report["latency_ms"]
    assert set(latency) == set(STATS)
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
    assert latency["p99"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert report["throughput_rows_per_s"] == pytest.approx(4 * 1000 / latency["mean"], rel=1e-3)


def test_table_report_names_model_target_threads_and_statistics(
    mlp_artifact: ember.Artifact,
) -> None:
    done = run(mlp_artifact.path, "--random-inputs", "2", "--iterations", "3", "--threads", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "model        mlp" in lines
    assert "threads      1" in lines
    assert "iterations   3" in lines
    assert any(line.startswith("target       ") for line in lines)
    header = next(line for line in lines if line.startswith("latency (ms)"))
    assert header.split()[2:] == list(STATS)
    assert any(line.startswith("throughput") and line.endswith("rows/s") for line in lines)


def test_random_inputs_are_deterministic_and_batched(
    mlp_artifact: ember.Artifact, mlp_model: ember.Model, tmp_path: Path
) -> None:
    first = run_json(mlp_artifact.path, "--random-inputs", "4", "--output-dir", tmp_path / "a")
    run_json(mlp_artifact.path, "--random-inputs", "4", "--output-dir", tmp_path / "b")
    assert first["batch_rows"] == 4
    assert first["inputs"][0]["source"] == "random"
    assert first["inputs"][0]["shape"] == [4, 16]
    a, b = np.load(tmp_path / "a/y.npy"), np.load(tmp_path / "b/y.npy")
    assert a.shape == (4, 5) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # Not all zeros: the model's output differs from its output on zeros.
    assert not np.array_equal(a, mlp_model.run({"x": np.zeros((4, 16), np.float32)})["y"])


def test_threads_flag_sets_the_thread_count(mlp_artifact: ember.Artifact) -> None:
    report = run_json(mlp_artifact.path, "--random-inputs", "1", "--threads", "1")
    assert report["threads"] == 1


@pytest.mark.parametrize(
    ("input_args", "name"),
    [
        ((), "'x'"),  # missing
        (("--input", "z={x}"), "'z'"),  # unknown name
        (("--input", "x={bad_shape}"), "'x'"),
        (("--input", "x={bad_dtype}"), "'x'"),
        (("--input", "x={missing}"), "'x'"),
    ],
    ids=["missing", "unknown-name", "wrong-shape", "wrong-dtype", "missing-file"],
)
def test_bad_inputs_exit_2_naming_the_input(
    mlp_artifact: ember.Artifact, tmp_path: Path, input_args: tuple[str, ...], name: str
) -> None:
    files = {
        "x": save(tmp_path / "x.npy", mlp_input(2)),
        "bad_shape": save(tmp_path / "bad_shape.npy", np.zeros((2, 15), np.float32)),
        "bad_dtype": save(tmp_path / "bad_dtype.npy", np.zeros((2, 16), np.float64)),
        "missing": tmp_path / "missing.npy",
    }
    done = run(mlp_artifact.path, *(arg.format(**files) for arg in input_args))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("ember-run: error: ")
    assert name in done.stderr
    assert done.stdout == ""


def test_tampered_library_exits_1_with_the_integrity_error(
    mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    copy = shutil.copytree(mlp_artifact.path, tmp_path / "tampered.ember")
    with open(copy / "model.so", "ab") as library:
        library.write(b"\0")
    done = run(copy, "--random-inputs", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("ember-run: error: IntegrityError: ")
    assert "checksum mismatch for 'model.so'" in done.stderr


def test_missing_artifact_and_bad_usage(tmp_path: Path) -> None:
    not_found = run(tmp_path / "nothing.ember")
    assert not_found.returncode == 1
    assert "ember-run: error: NotFound: " in not_found.stderr
    assert run(tmp_path, "--bogus").returncode == 2
    assert run(tmp_path, "--iterations", "0").returncode == 2
    assert "--help" in run().stderr
    help_ = run("--help")
    assert help_.returncode == 0
    assert help_.stdout.startswith("usage: ember-run ARTIFACT")


def test_odd_tensor_names_become_safe_distinct_file_names(tmp_path: Path) -> None:
    names = ["logits:0", "../evil", "Logits/0"]
    model = make_model(
        [
            helper.make_node("Relu", ["in/put:0"], [names[0]]),
            helper.make_node("Neg", ["in/put:0"], [names[1]]),
            helper.make_node("Abs", ["in/put:0"], [names[2]]),
        ],
        [helper.make_tensor_value_info("in/put:0", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in names],
    )
    artifact = ember.compile(model, batch_sizes=(2,), output=tmp_path / "odd.ember")
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    out = tmp_path / "out"
    report = run_json(
        artifact.path, "--input", f"in/put:0={save(tmp_path / 'x.npy', x)}", "--output-dir", out
    )
    files = {o["name"]: Path(o["file"]).name for o in report["outputs"]}
    assert files == {
        "logits:0": "logits_0.npy",
        "../evil": "_.._evil.npy",
        "Logits/0": "Logits_0_2.npy",
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(files.values())
    np.testing.assert_array_equal(np.load(out / "logits_0.npy"), np.maximum(x, 0))
    np.testing.assert_array_equal(np.load(out / "_.._evil.npy"), -x)
    np.testing.assert_array_equal(np.load(out / "Logits_0_2.npy"), np.abs(x))


CAST_INPUTS = {
    "ids": (TensorProto.INT64, np.int64),
    "mask": (TensorProto.BOOL, np.bool_),
    "half": (TensorProto.FLOAT16, np.float16),
    "wide": (TensorProto.DOUBLE, np.float64),
    "byte": (TensorProto.UINT8, np.uint8),
    "small": (TensorProto.INT32, np.int32),
}


@pytest.fixture(scope="module")
def casts_artifact(tmp_path_factory: pytest.TempPathFactory) -> ember.Artifact:
    """One input of each of several dtypes, each cast to a float32 output "<name>_f"."""
    model = make_model(
        [helper.make_node("Cast", [n], [f"{n}_f"], to=TensorProto.FLOAT) for n in CAST_INPUTS],
        [helper.make_tensor_value_info(n, t, ["N", 4]) for n, (t, _) in CAST_INPUTS.items()],
        [helper.make_tensor_value_info(f"{n}_f", TensorProto.FLOAT, ["N", 4]) for n in CAST_INPUTS],
    )
    out = tmp_path_factory.mktemp("casts") / "casts.ember"
    return ember.compile(model, batch_sizes=(4,), output=out)


def test_file_inputs_of_every_dtype_equal_the_python_runtime(
    casts_artifact: ember.Artifact, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    # Quarters in [0, 200): exact in float16, in range for uint8, a mix of True/False as bool.
    inputs: dict[str, np.ndarray] = {
        n: (rng.integers(0, 800, (6, 4)) / 4).astype(d) for n, (_, d) in CAST_INPUTS.items()
    }
    args = [f"--input={n}={save(tmp_path / f'{n}.npy', a)}" for n, a in inputs.items()]
    run_json(casts_artifact.path, *args, "--output-dir", tmp_path / "out")
    expected = ember.load(casts_artifact.path).run(inputs)
    for name in CAST_INPUTS:
        np.testing.assert_array_equal(
            np.load(tmp_path / f"out/{name}_f.npy"), expected[f"{name}_f"]
        )


def test_random_inputs_of_every_dtype_stay_in_their_documented_ranges(
    casts_artifact: ember.Artifact, tmp_path: Path
) -> None:
    run_json(casts_artifact.path, "--random-inputs", "64", "--output-dir", tmp_path)
    values = {n: np.load(tmp_path / f"{n}_f.npy") for n in CAST_INPUTS}
    for name in ("ids", "byte", "small"):  # integers in [0, 16)
        assert set(np.unique(values[name])) == set(range(16)), name
    assert set(np.unique(values["mask"])) == {0, 1}
    for name in ("half", "wide"):  # floats in [-1, 1), not all equal
        assert values[name].min() >= -1 and values[name].max() < 1, name
        assert len(np.unique(values[name])) > 100, name
    half = values["half"] * 1024  # k / 1024: exactly representable in float16
    np.testing.assert_array_equal(half, np.round(half))


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_binary_does_not_link_python() -> None:
    dynamic = subprocess.run(
        ["readelf", "-d", str(RUNNER)], capture_output=True, text=True, check=True
    ).stdout
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert any("libtvm_runtime" in line for line in needed)
    assert not [line for line in needed if "libpython" in line or "pybind" in line]
