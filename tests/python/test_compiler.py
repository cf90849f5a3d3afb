"""ember.compile: batch-axis detection, static shapes, shape-subgraph folding and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_matches_ort, make_model, mlp, ort_run
from onnx import TensorProto, helper

import ember
from ember.compiler import onnx_prep


def _seq_first(dims: list[int | str]) -> onnx.ModelProto:
    """x[seq, batch, 8] @ w[8, 3] -> y[seq, batch, 3]: the batch is axis 1."""
    w = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], dims[1], 3])],
        [("w", w)],
        name="seq_first",
    )


def _shape_subgraph_model() -> onnx.ModelProto:
    """The flatten torch.onnx emits: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    w = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [
            ("zero", np.array(0, np.int64)),
            ("axes0", np.array([0], np.int64)),
            ("minus1", np.array([-1], np.int64)),
            ("w", w),
        ],
        name="flatten",
    )


def test_batch_axis_found_when_not_axis_0(tmp_path: Path) -> None:
    model = _seq_first([5, "batch", 8])
    artifact = ember.compile(model, batch_sizes=(2, 4), output=tmp_path / "a")
    assert artifact.inputs[0].batch_axis == 1
    assert artifact.outputs[0] == ember.TensorSpec("y", "float32", (5, None, 3), 1)
    loaded = ember.load(artifact.path)
    for rows in (1, 3, 4, 7):
        x = np.random.default_rng(rows).standard_normal((5, rows, 8)).astype(np.float32)
        assert_matches_ort(loaded.run({"x": x}), ort_run(model, {"x": x}))


def test_symbolic_dims_other_than_batch_need_input_shapes(tmp_path: Path) -> None:
    model = _seq_first(["seq", "batch", 8])
    with pytest.raises(ember.CompileError, match=r"input 'x' dimension 0 \('seq'\) is symbolic"):
        ember.compile(model, batch_sizes=(2,), output=tmp_path / "a")
    artifact = ember.compile(
        model, batch_sizes=(2,), output=tmp_path / "b", input_shapes={"x": (6, None, 8)}
    )
    assert artifact.inputs[0].shape == (6, None, 8)
    assert artifact.outputs[0].batch_axis == 1  # one bucket: found by probing batch + 1


def test_batch_axis_override(tmp_path: Path) -> None:
    model = _seq_first(["p", "q", 8])  # two symbols, neither named like a batch
    artifact = ember.compile(
        model,
        batch_sizes=(1, 2),
        batch_axis=1,
        input_shapes={"x": (3, None, 8)},
        output=tmp_path / "a",
    )
    assert artifact.inputs[0].batch_axis == 1
    x = np.ones((3, 2, 8), np.float32)
    assert_matches_ort(ember.load(artifact.path).run({"x": x}), ort_run(model, {"x": x}))


def test_unknown_input_in_input_shapes_is_named(tmp_path: Path) -> None:
    with pytest.raises(ember.CompileError, match="unknown input 'nope'"):
        ember.compile(mlp(), input_shapes={"nope": (None, 1)}, output=tmp_path / "a")


def test_static_model_without_batch_axis(tmp_path: Path) -> None:
    model = _seq_first([5, 2, 8])
    with pytest.raises(ember.CompileError, match="no input has a batch axis"):
        ember.compile(model, output=tmp_path / "a")
    artifact = ember.compile(model, batch_sizes=None, output=tmp_path / "b")
    assert artifact.batch_sizes is None
    loaded = ember.load(artifact.path)
    x = np.random.default_rng(0).standard_normal((5, 2, 8)).astype(np.float32)
    assert_matches_ort(loaded.run({"x": x}), ort_run(model, {"x": x}))
    with pytest.raises(ember.InvalidInputError, match="dimension 1 must be 2, got 3"):
        loaded.run({"x": np.zeros((5, 3, 8), np.float32)})


def test_shape_subgraphs_are_folded_before_import(tmp_path: Path) -> None:
    model = _shape_subgraph_model()
    prepared = onnx_prep.prepare(model, {"x": (4, 2, 4)})
    assert [n.op_type for n in prepared.graph.node] == ["Reshape", "MatMul"]
    artifact = ember.compile(model, batch_sizes=(1, 4), output=tmp_path / "a")
    loaded = ember.load(artifact.path)
    for rows in (1, 3, 6):
        x = np.random.default_rng(rows).standard_normal((rows, 2, 4)).astype(np.float32)
        assert_matches_ort(loaded.run({"x": x}), ort_run(model, {"x": x}))


def test_multiple_inputs_and_outputs(tmp_path: Path) -> None:
    model = make_model(
        [
            helper.make_node("Add", ["a", "b"], ["s"]),
            helper.make_node("ReduceMean", ["s"], ["m"], axes=[1], keepdims=0),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N"]),
        ],
    )
    model.opset_import[0].version = 13  # ReduceMean takes axes as an attribute before opset 18
    artifact = ember.compile(model, batch_sizes=(2, 4), output=tmp_path / "a")
    assert [s.batch_axis for s in artifact.outputs] == [0, 0]
    loaded = ember.load(artifact.path)
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((5, 4)).astype(np.float32) for k in "ab"}
    assert_matches_ort(loaded.run(feeds), ort_run(model, feeds))
    with pytest.raises(ember.InvalidInputError, match="disagree on the batch size"):
        loaded.run({"a": feeds["a"], "b": feeds["b"][:3]})


def test_weights_are_stored_once_for_all_buckets(tmp_path: Path) -> None:
    model = mlp(in_features=256, hidden=512, out_features=8)
    weight_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    artifact = ember.compile(model, batch_sizes=(1, 2, 4, 8), output=tmp_path / "a")
    size = (artifact.path / "model.so").stat().st_size
    assert size < 1.5 * weight_bytes, f"library {size} bytes for {weight_bytes} bytes of weights"


def test_unsupported_operator_names_node_op_and_opset(tmp_path: Path) -> None:
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu0"),
            helper.make_node("Det", ["r"], ["y"], name="the_det"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    with pytest.raises(
        ember.UnsupportedOperatorError,
        match=r"node 'the_det' uses operator ai.onnx::Det \(opset 17\)",
    ):
        ember.compile(model, output=tmp_path / "a")
    custom = make_model(
        [helper.make_node("Frobnicate", ["x"], ["y"], name="frob", domain="com.example")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ember.UnsupportedOperatorError, match=r"com\.example::Frobnicate"):
        ember.compile(custom, output=tmp_path / "b")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tpu", "unknown target 'tpu'; known targets: aarch64, cpu, cuda, jetson-orin-cpu"),
        ("cuda-sm_12", "unknown CUDA arch 'sm_12'"),
        ({"kind": "no-such-kind"}, "invalid TVM target"),
        (42, "target must be a name or a TVM target dict"),
    ],
)
def test_unknown_target_is_a_clear_error(tmp_path: Path, target: object, message: str) -> None:
    with pytest.raises(ember.UnknownTargetError, match=message):
        ember.compile(mlp(), target=target, output=tmp_path / "a")  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_sizes", [(), (0,), (2, -1)])
def test_bad_batch_sizes(tmp_path: Path, batch_sizes: tuple[int, ...]) -> None:
    with pytest.raises(ember.CompileError, match="batch_sizes must be positive integers"):
        ember.compile(mlp(), batch_sizes=batch_sizes, output=tmp_path / "a")


def test_missing_or_corrupt_model_file(tmp_path: Path) -> None:
    with pytest.raises(ember.CompileError, match="does not exist"):
        ember.compile(tmp_path / "missing.onnx", output=tmp_path / "a")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model\xff" * 10)
    with pytest.raises(ember.CompileError, match="not a valid ONNX model"):
        ember.compile(bad, output=tmp_path / "b")


def test_compiling_from_a_file_records_its_sha256(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "m.onnx"
    onnx.save(mlp(), path)
    artifact = ember.compile(path, batch_sizes=(1,), output=tmp_path / "a")
    assert artifact.manifest["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # Recompiling into the same directory replaces the artifact consistently.
    again = ember.compile(path, batch_sizes=(2,), output=tmp_path / "a")
    assert ember.load(again.path).batch_sizes == (2,)
