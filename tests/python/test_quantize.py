"""Static int8: calibrate -> quantize_static (ONNX QDQ) -> ember.compile dispatches the QDQ
MatMuls to ember.dnnl.matmul_q8. Outputs are checked against a numpy emulation of the QDQ graph
(the exact integer math, then float), accuracy on the digits held-out split against fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import mlp
from onnx import numpy_helper

import ember
from ember.quantize import calibrate, quantize_static, quantize_weights
from ember.quantize.calibrate import Calibration, TensorRange
from ember.samples import SAMPLES
from ember.samples.digits import load_digits_split


def emulate_mlp(model: onnx.ModelProto, q: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The QDQ helper MLP in numpy: quantize each MatMul's input with its scale and zero point,
    dequantize, multiply with the dequantized int8 weights; everything else in float."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}

    def qdq(value: np.ndarray, stem: str) -> np.ndarray:
        scale, zero = inits[f"{stem}_scale"], inits[f"{stem}_zero"]
        info = np.iinfo(zero.dtype)
        codes = np.clip(np.rint(value / scale) + zero.astype(np.int32), info.min, info.max)
        return ((codes - zero.astype(np.int32)) * scale).astype(np.float32)

    def weight(name: str) -> np.ndarray:
        stem = f"{name}__ember_q8"
        return (inits[f"{stem}_int8"].astype(np.float32) * inits[f"{stem}_scale"]).astype(
            np.float32
        )

    h = np.maximum(qdq(x, "x__ember_q8") @ weight("w1") + inits["b1"], 0)
    return qdq(h, "h2__ember_q8") @ weight("w2") + inits["b2"]


def test_quantize_static_writes_int8_weights_and_qdq_activations() -> None:
    model = mlp()
    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal((8, 16)).astype(np.float32)} for _ in range(8)]
    q = quantize_static(model, calibrate(model, data), seven_bit_weights=True)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert "w1" not in inits and "w2" not in inits  # float weights replaced
    w1 = inits["w1__ember_q8_int8"]
    assert w1.dtype == np.int8 and np.abs(w1.astype(int)).max() == 63  # 7 bits, per column
    assert np.all(np.abs(w1.astype(int)).max(axis=0) == 63)
    x_zero = inits["x__ember_q8_zero"]  # x goes negative: uint8 with 0 inside the range
    assert x_zero.dtype == np.uint8 and 0 < int(x_zero) < 255
    assert inits["h2__ember_q8_zero"].dtype == np.uint8  # a ReLU output: uint8
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 4
    x = rng.standard_normal((5, 16)).astype(np.float32)
    session = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], emulate_mlp(model, q, x), atol=1e-4)


def test_weights_round_half_to_even_per_column() -> None:
    w = np.array([[1.0, 0.0], [-0.5, 0.0], [0.25, 0.0]], np.float32)
    q, scales = quantize_weights(w, 2)
    np.testing.assert_array_equal(scales, [0.5, 1.0])  # an all-zero column gets scale 1
    np.testing.assert_array_equal(q[:, 0], [2, -1, 0])  # 0.25 / 0.5 = 0.5 -> 0 (half to even)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_ember_runs_qdq_matmuls_on_int8_kernels(tmp_path: Path, method: str) -> None:
    model = mlp()
    rng = np.random.default_rng(1)
    data = [{"x": rng.standard_normal((16, 16)).astype(np.float32)} for _ in range(8)]
    q = quantize_static(model, calibrate(model, data, method=method))  # type: ignore[arg-type]
    artifact = ember.compile(q, batch_sizes=(1, 4, 8), output=tmp_path / "q8")
    assert artifact.manifest["kernel_library"]["matmul_q8"] == 6  # 2 per bucket
    assert artifact.manifest["kernel_library"].get("matmul", 0) == 0
    loaded = ember.load(artifact.path)
    for rows in (1, 3, 8, 11):
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        got = loaded.run({"x": x})["y"]
        np.testing.assert_allclose(got, emulate_mlp(model, q, x), rtol=1e-4, atol=1e-4)


def test_weights_too_wide_for_this_cpu_run_in_float(tmp_path: Path) -> None:
    from ember.compiler.dispatch import host_needs_seven_bit_weights

    model = mlp()
    rng = np.random.default_rng(2)
    data = [{"x": rng.standard_normal((16, 16)).astype(np.float32)} for _ in range(4)]
    q = quantize_static(model, calibrate(model, data), seven_bit_weights=False)
    artifact = ember.compile(q, batch_sizes=(4,), output=tmp_path / "q8wide")
    calls = artifact.manifest["kernel_library"]
    if host_needs_seven_bit_weights():
        assert calls.get("matmul_q8", 0) == 0 and calls["matmul"] == 2  # never saturate
        assert calls["matmul_w8"] == 2  # the weights still stay int8 in the artifact
    else:
        assert calls["matmul_q8"] == 2
    x = rng.standard_normal((4, 16)).astype(np.float32)
    got = ember.load(artifact.path).run({"x": x})["y"]
    np.testing.assert_allclose(got, emulate_mlp(model, q, x), rtol=1e-4, atol=1e-4)


def test_old_opsets_are_refused_with_the_reason() -> None:
    model = mlp()
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", 11))
    calibration = Calibration({"x": TensorRange(-1, 1, -1, 1)}, "minmax", 1)
    with pytest.raises(ember.CompileError, match="needs ONNX opset >= 13"):
        quantize_static(model, calibration)


def test_digits_mlp_int8_keeps_its_held_out_accuracy(tmp_path: Path) -> None:
    model = SAMPLES["digits_mlp"]()
    split = load_digits_split()
    name = model.graph.input[0].name
    train = split.x_train.astype(np.float32)
    samples = [{name: train[i : i + 64]} for i in range(0, len(train), 64)]
    q = quantize_static(model, calibrate(model, samples, method="minmax"))
    fp32 = ember.load(ember.compile(model, output=tmp_path / "fp32").path)
    int8_artifact = ember.compile(q, output=tmp_path / "int8")
    assert "ember.dnnl.matmul_q8" in dispatched_kernels_of(int8_artifact)
    int8 = ember.load(int8_artifact.path)
    x = split.x_test.astype(np.float32)
    out = model.graph.output[0].name
    accuracy_fp32 = float((fp32.run({name: x})[out].argmax(1) == split.y_test).mean())
    accuracy_int8 = float((int8.run({name: x})[out].argmax(1) == split.y_test).mean())
    assert accuracy_int8 >= accuracy_fp32 - 0.005, (accuracy_fp32, accuracy_int8)


def dispatched_kernels_of(artifact: ember.Artifact) -> list[str]:
    calls = artifact.manifest["kernel_library"]
    names = {"matmul_q8": "ember.dnnl.matmul_q8", "matmul": "ember.dnnl.matmul"}
    return [full for key, full in names.items() if calls.get(key)]


def test_compile_precision_int8_static_records_what_it_did(tmp_path: Path) -> None:
    model = mlp()
    rng = np.random.default_rng(5)
    data = [{"x": rng.standard_normal((8, 16)).astype(np.float32)} for _ in range(4)]
    artifact = ember.compile(
        model,
        batch_sizes=(1, 4),
        output=tmp_path / "q8",
        precision="int8-static",
        calibration=iter(data),
        calibration_method="percentile",
    )
    assert artifact.manifest["precision"] == "int8-static"
    assert artifact.manifest["quantization"] == {
        "method": "percentile",
        "samples": 4,
        "activations": 2,
        "weight_bits": 7 if _seven_bit() else 8,
        "int8_calls": 4,
        "int8_weight_calls": 0,
    }
    assert artifact.manifest["source"]["sha256"] == artifact_source_sha(model)  # the fp32 model
    x = rng.standard_normal((3, 16)).astype(np.float32)
    y = ember.load(artifact.path).run({"x": x})["y"]
    assert y.shape == (3, 5)
    np.testing.assert_allclose(y, mlp_fp32(model, x), atol=0.1)  # int8 stays close to fp32


def _seven_bit() -> bool:
    from ember.compiler.dispatch import host_needs_seven_bit_weights

    return host_needs_seven_bit_weights()


def artifact_source_sha(model: onnx.ModelProto) -> str:
    import hashlib

    return hashlib.sha256(model.SerializeToString()).hexdigest()


def mlp_fp32(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int8-static"}, "needs calibration="),
        ({"precision": "fp64"}, "precision must be one of"),
        ({"precision": "int8-weight", "calibration": [{"x": np.zeros((1, 16))}]}, "only used"),
        ({"calibration": [{"x": np.zeros((1, 16), np.float32)}]}, "only used with"),
    ],
)
def test_bad_precision_settings_are_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ember.CompileError, match=message):
        ember.compile(mlp(), output=tmp_path / "x", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precisions_are_refused_where_the_cpu_cannot_run_them_fast(
    tmp_path: Path, precision: str
) -> None:
    features = set(ember._core.host_cpu_features())
    fast = {"fp16": {"avx512_fp16"}, "bf16": {"avx512_bf16", "amx_bf16"}}[precision]
    expected = "not implemented yet" if features & fast else "refused: this CPU has none of"
    with pytest.raises(ember.CompileError, match=expected):
        ember.compile(mlp(), output=tmp_path / "x", precision=precision)


def test_ember_info_shows_the_quantization(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ember.cli import main

    rng = np.random.default_rng(6)
    data = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(3)]
    out = tmp_path / "q8"
    ember.compile(mlp(), batch_sizes=(2,), output=out, precision="int8-static", calibration=data)
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "int8-static" in text
    assert "minmax calibration on 3 samples, 2 activations" in text
    assert "2 int8 library calls" in text


def qdq_in_float(q: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The QDQ model computed op by op, as written (quantize, dequantize, float conv/matmul):
    ONNX Runtime with graph optimizations off, so it does not fuse QDQ into its int8 kernels."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(q.SerializeToString(), options, providers=providers)
    return session.run(None, feeds)[0]


def conv_model(signed_input: bool) -> onnx.ModelProto:
    """x[N, 8, 6, 6] -> (Abs unless signed) -> Conv 3x3 16 + ReLU -> Conv 1x1 8 -> y."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((8, 16, 1, 1)) * 0.3).astype(np.float32)
    b1 = rng.standard_normal(16).astype(np.float32)
    nodes = [] if signed_input else [helper.make_node("Abs", ["x"], ["a"])]
    first = "x" if signed_input else "a"
    nodes += [
        helper.make_node("Conv", [first, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b1, "b1"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("signed_input", [False, True])
def test_convs_of_unsigned_activations_run_on_int8_kernels(
    tmp_path: Path, signed_input: bool
) -> None:
    model = conv_model(signed_input)
    rng = np.random.default_rng(8)
    data = [{"x": rng.standard_normal((4, 8, 6, 6)).astype(np.float32)} for _ in range(6)]
    q = quantize_static(model, calibrate(model, data))
    conv_weights = [n.input[1] for n in q.graph.node if n.op_type == "Conv"]
    # The first conv's input is signed when the model has no Abs: it stays float.
    assert conv_weights[0] == ("w1" if signed_input else "w1__ember_q8_dq")
    assert conv_weights[1] == "w2__ember_q8_dq"  # a ReLU output
    artifact = ember.compile(q, batch_sizes=(1, 4), output=tmp_path / "convq8")
    calls = artifact.manifest["kernel_library"]
    assert calls["conv2d_q8"] == (2 if signed_input else 4)
    loaded = ember.load(artifact.path)
    for rows in (1, 3, 4):
        x = rng.standard_normal((rows, 8, 6, 6)).astype(np.float32)
        got = loaded.run({"x": x})["y"]
        np.testing.assert_allclose(got, qdq_in_float(q, {"x": x}), rtol=1e-4, atol=1e-4)


def wide_conv_model(channels: int = 64) -> onnx.ModelProto:
    """x[N, C, 8, 8] -> Abs -> (Conv 3x3 C + bias + ReLU) twice -> y: the shape of a ResNet stage,
    which dispatch sends to the int8 Winograd kernel."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(9)
    scale = 1.0 / np.sqrt(9 * channels)
    inits = {
        "w1": (rng.standard_normal((channels, channels, 3, 3)) * scale).astype(np.float32),
        "w2": (rng.standard_normal((channels, channels, 3, 3)) * scale).astype(np.float32),
        "b1": rng.standard_normal(channels).astype(np.float32) * 0.1,
        "b2": rng.standard_normal(channels).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Conv", ["a", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    shape = ["N", channels, 8, 8]
    graph = helper.make_graph(
        nodes,
        "wide_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_int8_3x3_convs_with_64_channels_run_on_the_integer_winograd_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ember.compiler.dispatch import WINOGRAD_ENV

    model = wide_conv_model()
    rng = np.random.default_rng(10)
    data = [{"x": rng.standard_normal((4, 64, 8, 8)).astype(np.float32)} for _ in range(4)]
    q = quantize_static(model, calibrate(model, data))
    wino = ember.compile(q, batch_sizes=(1, 4), output=tmp_path / "wino")
    calls = wino.manifest["kernel_library"]
    assert calls["conv2d_q8"] == 4 and calls["conv2d_wino"] == 4  # 2 convs x 2 buckets
    monkeypatch.setenv(WINOGRAD_ENV, "0")
    direct = ember.compile(q, batch_sizes=(1, 4), output=tmp_path / "direct")
    calls = direct.manifest["kernel_library"]
    assert calls["conv2d_q8"] == 4 and "conv2d_wino" not in calls
    loaded = {name: ember.load(a.path) for name, a in (("wino", wino), ("direct", direct))}
    for rows in (1, 3, 4):
        x = rng.standard_normal((rows, 64, 8, 8)).astype(np.float32)
        got = {name: m.run({"x": x})["y"] for name, m in loaded.items()}
        np.testing.assert_allclose(got["wino"], qdq_in_float(q, {"x": x}), rtol=1e-4, atol=1e-4)
        # Both kernels compute the same integer convs: only float rounding may differ.
        np.testing.assert_allclose(got["wino"], got["direct"], rtol=1e-5, atol=1e-5)


def test_digits_cnn_int8_keeps_its_held_out_accuracy(tmp_path: Path) -> None:
    from ember.samples import INPUT_SHAPES

    model = SAMPLES["digits_cnn"]()
    split = load_digits_split()
    name = model.graph.input[0].name
    shape = INPUT_SHAPES["digits_cnn"][name][1:]
    train = split.x_train.astype(np.float32).reshape(-1, *shape)
    samples = [{name: train[i : i + 64]} for i in range(0, len(train), 64)]
    fp32 = ember.load(ember.compile(model, output=tmp_path / "fp32").path)
    artifact = ember.compile(
        model, output=tmp_path / "int8", precision="int8-static", calibration=samples
    )
    calls = artifact.manifest["kernel_library"]
    assert calls["conv2d_q8"] == 8 and calls["matmul_q8"] == 8  # 2 convs + 2 Gemms x 4 buckets
    int8 = ember.load(artifact.path)
    x = split.x_test.astype(np.float32).reshape(-1, *shape)
    out = model.graph.output[0].name
    accuracy_fp32 = float((fp32.run({name: x})[out].argmax(1) == split.y_test).mean())
    accuracy_int8 = float((int8.run({name: x})[out].argmax(1) == split.y_test).mean())
    assert accuracy_int8 >= accuracy_fp32 - 0.005, (accuracy_fp32, accuracy_int8)


@pytest.mark.parametrize(("trans_b", "beta"), [(1, 1.0), (0, 0.5)])
def test_gemm_layers_are_quantized_as_matmuls(tmp_path: Path, trans_b: int, beta: float) -> None:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(9)
    w = rng.standard_normal((6, 10) if trans_b else (10, 6)).astype(np.float32)
    c = rng.standard_normal(6).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Gemm", ["r", "w", "c"], ["y"], transB=trans_b, beta=beta),
        ],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = [{"x": rng.standard_normal((8, 10)).astype(np.float32)} for _ in range(4)]
    q = quantize_static(model, calibrate(model, data))
    assert [n.op_type for n in q.graph.node].count("Gemm") == 0
    artifact = ember.compile(q, batch_sizes=(1, 4), output=tmp_path / "gemm")
    assert artifact.manifest["kernel_library"]["matmul_q8"] == 2
    x = rng.standard_normal((4, 10)).astype(np.float32)
    got = ember.load(artifact.path).run({"x": x})["y"]
    np.testing.assert_allclose(got, qdq_in_float(q, {"x": x}), rtol=1e-4, atol=1e-4)
    # And within the calibrated range (fresh inputs may saturate), int8 stays within the rounding
    # bound of the float Gemm: each activation is off by at most half its scale, each weight by
    # half its column's scale.
    x = data[0]["x"][:4]
    got = ember.load(artifact.path).run({"x": x})["y"]
    w_kn = w.T if trans_b else w
    r = np.maximum(x, 0)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    s_a = float(inits["r__ember_q8_scale"])
    s_w = next(v for k, v in inits.items() if k.endswith("_w__ember_q8_scale"))
    bound = 0.5 * s_a * np.abs(w_kn).sum(axis=0) + 0.5 * np.abs(r).sum(axis=1, keepdims=True) * s_w
    fp32 = r @ w_kn + beta * c
    assert np.all(np.abs(got - fp32) <= bound * 1.001 + 1e-5)


def test_quantize_keeps_the_best_method_that_passes_and_reports_all(tmp_path: Path) -> None:
    from ember.quantize import quantize

    model = SAMPLES["digits_mlp"]()
    split = load_digits_split()
    name = model.graph.input[0].name
    train = split.x_train.astype(np.float32)
    samples = [{name: train[i : i + 64]} for i in range(0, len(train), 64)]
    held_out = {name: split.x_test.astype(np.float32)}
    artifact, report = quantize(
        model,
        samples,
        held_out,
        labels=split.y_test,
        max_accuracy_drop=0.005,
        output=tmp_path / "q8",
        repeats=3,
    )
    assert [m.method for m in report.methods] == ["minmax", "percentile", "entropy", "weight-only"]
    chosen = next(m for m in report.methods if m.method == report.chosen)
    assert chosen.passed and chosen.accuracy_drop is not None and chosen.accuracy_drop <= 0.005
    assert report.fp32_accuracy == pytest.approx(0.9822, abs=1e-3)
    stored = artifact.manifest["quantization"]["report"]
    assert stored["chosen"] == report.chosen and len(stored["methods"]) == 4
    ember.load(artifact.path)  # re-checksummed after the report was added
    assert not (tmp_path / ".q8.quantize").exists()


def test_the_gate_rejects_with_the_report_and_ships_nothing(tmp_path: Path) -> None:
    from ember.quantize import QuantizationRejectedError, quantize

    model = mlp()
    rng = np.random.default_rng(10)
    samples = [{"x": rng.standard_normal((8, 16)).astype(np.float32)} for _ in range(4)]
    held_out = {"x": rng.standard_normal((16, 16)).astype(np.float32)}
    with pytest.raises(QuantizationRejectedError, match=r"speedup \S+ < 1000\.0x") as info:
        quantize(
            model,
            samples,
            held_out,
            method="minmax",
            min_speedup=1000.0,
            output=tmp_path / "rejected",
            batch_sizes=(1, 16),
            repeats=1,
        )
    (result,) = info.value.report.methods
    assert not result.passed and 0.9 < result.cosine <= 1.0 + 1e-6  # measured, not skipped
    assert result.accuracy is None  # no labels: the gate used top-1 agreement with fp32
    assert not (tmp_path / "rejected").exists() and not (tmp_path / ".rejected.quantize").exists()
    with pytest.raises(ember.CompileError, match="method must be 'auto' or one of"):
        quantize(model, samples, held_out, method="kl", output=tmp_path / "x")


def test_ember_compile_cli_quantizes_with_an_npz_of_calibration_samples(tmp_path: Path) -> None:
    from ember.cli import main

    model_path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), str(model_path))
    samples = tmp_path / "calibration.npz"
    np.savez(samples, x=np.random.default_rng(11).standard_normal((70, 16)).astype(np.float32))
    out = tmp_path / "q8"
    argv = ["compile", str(model_path), "-o", str(out), "--batch-sizes", "1,4"]
    assert main([*argv, "--precision", "int8-static", "--calibration", str(samples)]) == 0
    manifest = ember.Artifact(out).manifest
    assert manifest["precision"] == "int8-static"
    assert manifest["quantization"]["samples"] == 3  # 70 rows in batches of 32
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 16), np.float32), z=np.zeros((5, 16), np.float32))
    with pytest.raises(SystemExit, match="same number of samples"):
        main([*argv, "--precision", "int8-static", "--calibration", str(bad)])
