"""Models quantized by ONNX Runtime's `quantize_static` (QDQ, a pair on every op's output, ReLUs
folded into uint8 pairs, 7-bit weights in [-64, 64] on CPUs without VNNI) run on ember's int8
kernels: the pairs no int8 kernel reads are computed in float (`float_requantizations`), and the
outputs stay within half a quantization step or so of ONNX Runtime running the same QDQ model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import mlp
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.compiler.dispatch import host_needs_seven_bit_weights
from ember.compiler.onnx_prep import float_requantizations, fold_constant_dequantizations
from ember.samples import INPUT_SHAPES, SAMPLES
from ember.samples.digits import load_digits_split

ort_quantization = pytest.importorskip("onnxruntime.quantization")


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _pair_graph() -> onnx.ModelProto:
    """x -> Conv(int8 weights) -> pair(u8, zp 0) -> [Conv(int8), Add] ; Add -> pair(u8, zp 120)
    -> output "y"; a third pair (zp 0) is read only by the second conv."""
    rng = np.random.default_rng(3)
    w1 = rng.integers(-64, 65, (4, 3, 3, 3)).astype(np.int8)
    w2 = rng.integers(-64, 65, (4, 4, 1, 1)).astype(np.int8)
    inits = [
        _const("w1_q", w1), _const("w1_s", np.full(4, 0.02, np.float32)),
        _const("w1_z", np.zeros(4, np.int8)),
        _const("w2_q", w2), _const("w2_s", np.full(4, 0.03, np.float32)),
        _const("w2_z", np.zeros(4, np.int8)),
        _const("x_s", np.array(0.02, np.float32)), _const("x_z", np.array(128, np.uint8)),
        _const("h_s", np.array(0.1, np.float32)), _const("h_z", np.array(0, np.uint8)),
        _const("y_s", np.array(0.2, np.float32)), _const("y_z", np.array(120, np.uint8)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_z"], ["w1"], axis=0),
        helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "w2_z"], ["w2"], axis=0),
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
        helper.make_node("Conv", ["xd", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["h", "h_s", "h_z"], ["hq"]),  # stands for a ReLU
        helper.make_node("DequantizeLinear", ["hq", "h_s", "h_z"], ["hd"]),
        helper.make_node("Conv", ["hd", "w2"], ["g"]),
        helper.make_node("Add", ["g", "hd"], ["s"]),
        helper.make_node("QuantizeLinear", ["s", "y_s", "y_z"], ["sq"]),
        helper.make_node("DequantizeLinear", ["sq", "y_s", "y_z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pairs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_pairs_read_only_by_float_ops_are_computed_in_float() -> None:
    model = _pair_graph()
    rewritten, changed = float_requantizations(model)
    assert changed == 2  # h's pair (for the Add) and the output pair; x's feeds only a kernel
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("QuantizeLinear") == 2  # x's and h's, for the two convs
    assert ops.count("Relu") == 1 and ops.count("Identity") == 1
    by_output = {o: n for n in rewritten.graph.node for o in n.output}
    add = next(n for n in rewritten.graph.node if n.op_type == "Add")
    relu = by_output[add.input[1]]
    assert relu.op_type == "Relu" and relu.input[0] == "h"  # the Add reads relu(h), unrounded
    assert by_output["hq"].input[0] == relu.output[0]  # the conv quantizes relu(h): the same codes
    assert by_output["y"].op_type == "Identity"
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") == 3  # input untouched

    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    # The scales are "calibrated": no value reaches the ends of its pair's range (h: [0, 25.5],
    # y: [-24, 27]), so only h's rounding (half of 0.1, into the Add) and y's (half of 0.2) go.
    assert want.min() > -24 and want.max() < 27 and np.abs(got).max() < 25.5
    np.testing.assert_allclose(got, want, atol=0.05 + 0.1 + 1e-5)


def test_a_model_without_such_pairs_is_returned_unchanged() -> None:
    model = _pair_graph()
    del model.graph.node[-2:]  # drop the output pair and the Add's read of h's pair
    model.graph.node[-1].CopyFrom(helper.make_node("Add", ["g", "g"], ["y"]))
    same, changed = float_requantizations(model)
    assert changed == 0 and same is model


def _quantize_with_ort(
    model: onnx.ModelProto, samples: list[dict[str, np.ndarray]], tmp_path: Path
) -> Path:
    """ONNX Runtime's quantizer as its docs advise on this CPU (reduce_range without VNNI)."""
    source, out = tmp_path / "fp32.onnx", tmp_path / "ort_int8.onnx"
    onnx.save(model, str(source))
    batches = iter(samples)

    class Reader(ort_quantization.CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    ort_quantization.quantize_static(
        str(source),
        str(out),
        Reader(),
        quant_format=ort_quantization.QuantFormat.QDQ,
        activation_type=ort_quantization.QuantType.QUInt8,
        weight_type=ort_quantization.QuantType.QInt8,
        per_channel=True,
        reduce_range=host_needs_seven_bit_weights(),
    )
    return out


def _output_scale(path: Path) -> float:
    """The scale of the pair ORT put on the model's output (its quantization step)."""
    quantized = onnx.load(str(path))
    out_name = quantized.graph.output[0].name
    return max(
        float(numpy_helper.to_array(t))
        for t in quantized.graph.initializer
        if t.name.startswith(out_name) and t.name.endswith("_scale")
    )


def _ort_quantized(name: str, tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    model = SAMPLES[name]()
    input_name = model.graph.input[0].name
    split = load_digits_split()
    shape = INPUT_SHAPES[name][input_name][1:]
    train = split.x_train.astype(np.float32).reshape(-1, *shape)
    test = split.x_test.astype(np.float32).reshape(-1, *shape)
    samples = [{input_name: train[i : i + 64]} for i in range(0, 512, 64)]
    return _quantize_with_ort(model, samples, tmp_path), {input_name: test}, split.y_test


@pytest.mark.parametrize(
    ("name", "kernel"), [("digits_mlp", "matmul_q8"), ("digits_cnn", "conv2d_q8")]
)
def test_onnx_runtime_quantized_models_run_on_int8_kernels(
    name: str, kernel: str, tmp_path: Path
) -> None:
    path, inputs, labels = _ort_quantized(name, tmp_path)
    artifact = ember.compile(
        path, batch_sizes=(1, 32), input_shapes=dict(INPUT_SHAPES[name]), output=tmp_path / "a"
    )
    stats = artifact.manifest["kernel_library"]
    assert stats.get(kernel, 0) >= 1, stats
    assert stats.get("float_requantizations", 0) >= 1, stats
    got = next(iter(ember.load(artifact.path).run(inputs).values()))
    want = ort.InferenceSession(str(path)).run(None, inputs)[0]
    out_scale = _output_scale(path)
    # ORT rounds every op's output to its pair's grid, ember only each int8 kernel's input: the
    # logits differ by a few output steps at most, and the predictions hardly ever.
    assert float(np.abs(got - want).max()) <= 3 * out_scale
    assert float((got.argmax(-1) == want.argmax(-1)).mean()) >= 0.99
    ours, theirs = (float((o.argmax(-1) == labels).mean()) for o in (got, want))
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_signed_activations_run_on_the_int8_matmul_with_their_zero_point(tmp_path: Path) -> None:
    """ORT quantizes signed activations to uint8 with a zero point near 128 (ember's own quantizer
    uses symmetric int8): matmul_q8 takes the zero point, and its biases (stored quantized by
    ORT) are folded to float so that they fuse."""
    model = mlp(in_features=64, hidden=96, out_features=10, seed=4)
    rng = np.random.default_rng(5)
    samples = [{"x": rng.standard_normal((32, 64)).astype(np.float32)} for _ in range(8)]
    path = _quantize_with_ort(model, samples, tmp_path)
    zero_points = [
        int(numpy_helper.to_array(t))
        for t in onnx.load(str(path)).graph.initializer
        if t.name == "x_zero_point"
    ]
    assert zero_points and zero_points[0] not in (0,), zero_points  # the case this test is for
    artifact = ember.compile(path, batch_sizes=(1, 16), output=tmp_path / "a")
    stats = artifact.manifest["kernel_library"]
    assert stats.get("matmul_q8") == 4 and stats.get("bias") == 4, stats  # 2 MatMuls x 2 buckets
    assert stats.get("folded_dequantizations", 0) >= 2, stats
    x = {"x": rng.standard_normal((16, 64)).astype(np.float32)}
    got = ember.load(artifact.path).run(x)["y"]
    want = ort.InferenceSession(str(path)).run(None, x)[0]
    assert float(np.abs(got - want).max()) <= 3 * _output_scale(path)
    fp32 = ort.InferenceSession(model.SerializeToString()).run(None, x)[0]
    assert float(np.abs(got - fp32).max()) <= 0.05 * float(np.abs(fp32).max())


def test_constant_dequantizations_fold_except_kernel_weights() -> None:
    model = _pair_graph()
    bias_q = np.array([[10, -20], [30, 0]], np.int32)
    model.graph.initializer.extend(
        [
            _const("b_q", bias_q),
            _const("b_s", np.array([0.5, 0.25], np.float32)),
            _const("b_z", np.array([0, 4], np.int32)),
        ]
    )
    model.graph.node.insert(
        0, helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b"], axis=1)
    )
    folded, count = fold_constant_dequantizations(model)
    assert count == 1  # w1 and w2 are conv weights: kept for the int8 kernels
    values = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    np.testing.assert_array_equal(values["b"], [[5.0, -6.0], [15.0, -1.0]])
    assert [n.op_type for n in folded.graph.node].count("DequantizeLinear") == 5  # b went
    untouched = _pair_graph()
    same, none = fold_constant_dequantizations(untouched)
    assert none == 0 and same is untouched


@pytest.mark.parametrize(("offset", "relus"), [(1.0, 0), (0.5, 1)])
def test_a_pair_on_a_value_that_is_never_negative_adds_no_relu(offset: float, relus: int) -> None:
    """GELU's 1 + erf(x) gets a uint8 pair with zero point 0 from ORT: a Relu there would change
    nothing but hide the pattern from the GELU fusion. With 0.5 + erf(x) the Relu is needed."""
    inits = [
        _const("one", np.array(offset, np.float32)),
        _const("c_s", np.array(1 / 255, np.float32)), _const("c_z", np.array(0, np.uint8)),
        _const("g_s", np.array(2 / 255, np.float32)), _const("g_z", np.array(0, np.uint8)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["one", "c_s", "c_z"], ["one_q"]),
        helper.make_node("DequantizeLinear", ["one_q", "c_s", "c_z"], ["one_d"]),
        helper.make_node("Erf", ["x"], ["e"]),
        helper.make_node("Add", ["e", "one_d"], ["g"]),
        helper.make_node("QuantizeLinear", ["g", "g_s", "g_z"], ["g_q"]),
        helper.make_node("DequantizeLinear", ["g_q", "g_s", "g_z"], ["g_d"]),
        helper.make_node("Mul", ["x", "g_d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rewritten, changed = float_requantizations(model)
    assert changed == 2  # both pairs are read only by float ops
    assert [n.op_type for n in rewritten.graph.node].count("Relu") == relus
    x = np.array([-3.0, -0.5, 0.2, 2.0], np.float32)
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=3 * (1 / 255 + 2 / 255))
