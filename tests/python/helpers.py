"""Builders for tiny ONNX models and numeric checks shared by the tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# fp32 agreement with ONNX Runtime: relative 1e-4, absolute 1e-4 of the output's magnitude.
RTOL = 1e-4
ATOL_SCALE = 1e-4


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: Sequence[tuple[str, np.ndarray]] = (),
    name: str = "tiny",
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def mlp(
    in_features: int = 16,
    hidden: int = 32,
    out_features: int = 5,
    seed: int = 0,
    batch_dim: str = "N",
) -> onnx.ModelProto:
    """x[N, in] -> MatMul/Add/Relu -> MatMul/Add -> y[N, out]."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((in_features, hidden)) / np.sqrt(in_features)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, out_features)) / np.sqrt(hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    b2 = rng.standard_normal(out_features).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, out_features])],
        [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)],
        name="mlp",
    )


def ort_run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, dict(feeds)), strict=True))


def assert_matches_ort(
    actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> None:
    assert set(actual) == set(expected)
    for name, ref in expected.items():
        got = actual[name]
        assert got.shape == ref.shape, f"{name}: shape {got.shape} != ORT {ref.shape}"
        assert got.dtype == ref.dtype, f"{name}: dtype {got.dtype} != ORT {ref.dtype}"
        scale = float(np.abs(ref).max()) if ref.size else 1.0
        np.testing.assert_allclose(
            got, ref, rtol=RTOL, atol=ATOL_SCALE * max(scale, 1.0), err_msg=f"output {name}"
        )
