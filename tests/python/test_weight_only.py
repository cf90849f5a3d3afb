"""int8 weight-only: quantize_weight_only writes int8 weights behind DequantizeLinear; ember.compile
(precision="int8-weight") dispatches them to ember.dnnl.conv2d_w8 / matmul_w8, which keep the
weights int8 in the artifact and dequantize them once, at prepack. Outputs are checked against the
quantized ONNX model computed op by op (ONNX Runtime, graph optimizations off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import make_model, mlp
from onnx import TensorProto, helper, numpy_helper
from test_dnnl_kernels import CONV_CASES, _conv_model

import ember
from ember.quantize import quantize_weight_only
from ember.samples import INPUT_SHAPES, SAMPLES
from ember.samples.digits import load_digits_split


def as_written(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The model computed op by op: ONNX Runtime with graph optimizations off (with them on, it
    turns DequantizeLinear -> MatMul into dynamically quantized int8, a different result)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)[0]


def library_bytes(artifact: ember.Artifact) -> int:
    return (artifact.path / "model.so").stat().st_size


def test_weights_become_int8_per_output_channel_and_shared_ones_once() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    conv_w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["y"]),  # the same weight twice
        helper.make_node("Conv", ["img", "cw"], ["z"], pads=[1, 1, 1, 1]),
    ]
    model = make_model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
            helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 2, 5, 5]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 5, 5]),
        ],
        [("w", w), ("cw", conv_w)],
    )
    q = quantize_weight_only(model)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert "w" not in inits and "cw" not in inits  # no float copy left behind
    w8, scales = inits["w__ember_w8_int8"], inits["w__ember_w8_scale"]
    assert w8.dtype == np.int8 and np.all(np.abs(w8.astype(int)).max(axis=0) == 127)  # per column
    np.testing.assert_allclose(w8 * scales, w, atol=scales.max() / 2 + 1e-7)
    cw8 = inits["cw__ember_w8_int8"]
    assert cw8.shape == (4, 2, 3, 3) and np.all(np.abs(cw8.astype(int)).max(axis=(1, 2, 3)) == 127)
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("DequantizeLinear") == 2 and "QuantizeLinear" not in ops
    onnx.checker.check_model(q)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW8c"])
@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (0, 2, 3, 6, 8)], ids=str)
def test_convs_run_on_weight_only_kernels(
    case: tuple,  # type: ignore[type-arg]
    layout: str,
    tmp_path: Path,
) -> None:
    model, feeds = _conv_model(case, np.random.default_rng(1))
    q = quantize_weight_only(model)
    artifact = ember.compile(
        model,
        batch_sizes=None,
        output=tmp_path / "w8",
        precision="int8-weight",
        conv_layout=layout,
    )
    assert artifact.manifest["kernel_library"]["conv2d_w8"] == 1
    assert artifact.manifest["quantization"]["int8_weight_calls"] == 1
    got = ember.load(artifact.path).run(feeds)["y"]
    want = as_written(q, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_winograd_convs_keep_their_int8_weights_and_match(tmp_path: Path) -> None:
    """3x3 convs that the Winograd kernel takes in float (64+ channels) take it with int8 weights
    too (conv2d_wino_w8), which makes int8-weight as fast as fp32 there (benchmarks/quantization.py,
    README.md). Tiles cut at odd edges, bias, ReLU and the residual add are all covered."""
    from test_winograd import _block_model, _feeds

    model, feeds = _block_model(2, 64, 9, 11), _feeds(2, 64, 9, 11)
    artifact = ember.compile(
        model, batch_sizes=None, output=tmp_path / "w8", precision="int8-weight"
    )
    stats = artifact.manifest["kernel_library"]
    assert stats["conv2d_w8"] == stats["conv2d_wino"] == 2
    got = ember.load(artifact.path).run(feeds)["y"]
    want = as_written(quantize_weight_only(model), feeds)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("channels", [8, 64])  # direct (conv2d_w8) and Winograd (conv2d_wino_w8)
def test_convs_with_the_same_int8_weights_but_other_scales_stay_apart(
    tmp_path: Path, channels: int
) -> None:
    """W and 2W quantize to the same int8 weights with scales twice as large. The kernels prepack
    once per weight id, so the id must cover the scales, else the second conv reuses the first's."""
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 6, 6])],
        [("w", w), ("w2", 2 * w)],
    )
    q = quantize_weight_only(model)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    np.testing.assert_array_equal(inits["w__ember_w8_int8"], inits["w2__ember_w8_int8"])
    artifact = ember.compile(
        model, batch_sizes=None, output=tmp_path / "w8", precision="int8-weight"
    )
    assert artifact.manifest["kernel_library"]["conv2d_w8"] == 2
    feeds = {"x": rng.standard_normal((1, channels, 6, 6)).astype(np.float32)}
    want = as_written(q, feeds)
    got = ember.load(artifact.path).run(feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_matmuls_with_the_same_int8_weights_but_other_scales_stay_apart(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [("w", w), ("w2", 2 * w)],
    )
    artifact = ember.compile(
        model, batch_sizes=(3,), output=tmp_path / "w8", precision="int8-weight"
    )
    assert artifact.manifest["kernel_library"]["matmul_w8"] == 2
    x = rng.standard_normal((3, 16)).astype(np.float32)
    want = as_written(quantize_weight_only(model), {"x": x})
    got = ember.load(artifact.path).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_and_matmul_layers_run_on_weight_only_kernels(tmp_path: Path, trans_b: int) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 24) if trans_b else (24, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, 7)).astype(np.float32)
    c = rng.standard_normal(32).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "c"], ["h"], transB=trans_b),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7])],
        [("w", w), ("w2", w2), ("c", c)],
    )
    artifact = ember.compile(
        model, batch_sizes=(1, 5), output=tmp_path / "w8", precision="int8-weight"
    )
    assert artifact.manifest["kernel_library"]["matmul_w8"] == 4  # 2 layers x 2 buckets
    loaded, q = ember.load(artifact.path), quantize_weight_only(model)
    for rows in (1, 3, 5):
        x = rng.standard_normal((rows, 24)).astype(np.float32)
        np.testing.assert_allclose(loaded.run({"x": x})["y"], as_written(q, {"x": x}), atol=1e-4)


def test_the_artifact_is_about_four_times_smaller_when_weights_dominate(tmp_path: Path) -> None:
    model = mlp(in_features=512, hidden=1024, out_features=256)
    fp32 = ember.compile(model, batch_sizes=(4,), output=tmp_path / "fp32")
    w8 = ember.compile(model, batch_sizes=(4,), output=tmp_path / "w8", precision="int8-weight")
    ratio = library_bytes(w8) / library_bytes(fp32)
    assert 0.2 < ratio <= 0.3, ratio  # 4-byte floats -> 1-byte ints, plus the fixed part
    x = np.random.default_rng(3).standard_normal((4, 512)).astype(np.float32)
    got = ember.load(w8.path).run({"x": x})["y"]
    np.testing.assert_allclose(got, as_written(quantize_weight_only(model), {"x": x}), atol=1e-3)


@pytest.mark.parametrize("sample", ["digits_mlp", "digits_cnn"])
def test_digits_models_keep_their_held_out_accuracy(tmp_path: Path, sample: str) -> None:
    model = SAMPLES[sample]()
    split = load_digits_split()
    name = model.graph.input[0].name
    shape = INPUT_SHAPES[sample][name][1:]
    x = split.x_test.astype(np.float32).reshape(-1, *shape)
    out = model.graph.output[0].name
    fp32 = ember.compile(model, batch_sizes=(32,), output=tmp_path / "fp32")
    w8 = ember.compile(model, batch_sizes=(32,), output=tmp_path / "w8", precision="int8-weight")
    accuracy = {}
    for label, artifact in (("fp32", fp32), ("w8", w8)):
        loaded = ember.load(artifact.path)
        logits = np.concatenate(
            [loaded.run({name: x[i : i + 32]})[out] for i in range(0, len(x), 32)]
        )
        accuracy[label] = float((logits.argmax(1) == split.y_test).mean())
    assert accuracy["w8"] >= accuracy["fp32"] - 0.005, accuracy
    # Smaller, though code and metadata keep small models above 0.3x (see README.md, Quantization).
    assert library_bytes(w8) < 0.6 * library_bytes(fp32)


def test_ember_info_describes_weight_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ember.cli import main

    out = tmp_path / "w8"
    ember.compile(mlp(), batch_sizes=(2,), output=out, precision="int8-weight")
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "int8-weight" in text
    assert "weight-only, 8-bit weights per output channel, 2 library calls" in text
