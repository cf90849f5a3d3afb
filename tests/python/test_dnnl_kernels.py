"""oneDNN-dispatched kernels (ember.dnnl.conv2d / ember.dnnl.matmul) against ONNX Runtime on random
shapes: odd sizes, strides, asymmetric padding, groups, dilation, and every fused post-op."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_matches_ort, make_model, ort_run
from onnx import TensorProto, helper

import ember


def _compile_and_compare(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    tmp_path: Path,
    min_calls: int = 1,
    **kwargs: object,
) -> ember.Artifact:
    artifact = ember.compile(model, batch_sizes=None, output=tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    record = artifact.manifest["kernel_library"]
    calls = record["calls"] if record else 0
    assert calls >= min_calls, f"expected >= {min_calls} library calls, got {calls}"
    assert_matches_ort(ember.load(artifact.path).run(feeds), ort_run(model, feeds))
    return artifact


CONV_CASES = [
    # (N, C, H, W, O, kernel, stride, pads[t,l,b,r], dilation, groups, bias, post)
    (1, 3, 7, 9, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True, "relu"),
    (2, 5, 13, 11, 7, (3, 5), (2, 1), (0, 2, 1, 0), (1, 1), 1, True, "none"),
    (3, 4, 9, 9, 6, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 2, False, "relu6"),
    (1, 8, 10, 10, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8, True, "relu6"),  # depthwise
    (2, 6, 8, 7, 6, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True, "residual_relu"),
    (1, 16, 15, 15, 32, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, True, "residual"),
    (2, 12, 11, 14, 12, (5, 5), (3, 3), (2, 1, 2, 1), (1, 2), 3, True, "sigmoid"),
    # Channel counts that are multiples of 8, so that NCHW8c applies.
    (2, 16, 9, 11, 16, (3, 3), (2, 2), (0, 1, 1, 0), (1, 1), 16, True, "relu6"),  # depthwise
    (3, 8, 7, 5, 24, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True, "residual_relu"),
    (1, 16, 10, 9, 32, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2, False, "sigmoid"),
]


def _conv_model(case: tuple, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict]:  # type: ignore[type-arg]
    n, c, h, w, o, kernel, stride, pads, dilation, groups, bias, post = case
    weight = rng.standard_normal((o, c // groups, *kernel)).astype(np.float32) * 0.3
    inits = [("w", weight)]
    inputs = ["x", "w"]
    if bias:
        inits.append(("b", rng.standard_normal(o).astype(np.float32)))
        inputs.append("b")
    nodes = [
        helper.make_node(
            "Conv",
            inputs,
            ["y0"],
            kernel_shape=list(kernel),
            strides=list(stride),
            pads=[pads[0], pads[1], pads[2], pads[3]],
            dilations=list(dilation),
            group=groups,
        )
    ]
    oh = (h + pads[0] + pads[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + pads[1] + pads[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])]
    feeds = {"x": rng.standard_normal((n, c, h, w)).astype(np.float32)}
    last = "y0"
    if post.startswith("residual"):
        graph_inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [n, o, oh, ow]))
        feeds["r"] = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
        nodes.append(helper.make_node("Add", [last, "r"], ["y1"]))
        last = "y1"
    if post.endswith("relu"):
        nodes.append(helper.make_node("Relu", [last], ["y2"]))
        last = "y2"
    elif post == "relu6":
        inits += [("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32))]
        nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["y2"]))
        last = "y2"
    elif post == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [last], ["y2"]))
        last = "y2"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    model = make_model(
        nodes,
        graph_inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, o, oh, ow])],
        inits,
    )
    return model, feeds


@pytest.mark.parametrize("layout", ["NHWC", "NCHW8c"])
@pytest.mark.parametrize(
    "case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-g{c[9]}-{c[11]}"
)
def test_conv2d_matches_ort(case: tuple, layout: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """Each conv in both activation layouts; NCHW8c falls back to NHWC when a channel count is
    not a multiple of 8."""
    model, feeds = _conv_model(case, np.random.default_rng(sum(case[:5])))
    artifact = _compile_and_compare(model, feeds, tmp_path, conv_layout=layout)
    stats = artifact.manifest["kernel_library"]
    assert stats["conv_layout"] == layout
    assert stats["calls"] == stats["conv2d"] == 1
    blockable = case[1] % 8 == 0 and case[4] % 8 == 0
    assert stats.get("nchw8c", 0) == int(layout == "NCHW8c" and blockable)
    assert stats.get("bias", 0) == int(case[10])
    post = case[11]
    assert stats.get("residual", 0) == int(post.startswith("residual"))
    fused = {"relu": "relu", "residual_relu": "relu", "relu6": "clip", "sigmoid": "sigmoid"}
    if post in fused:
        assert stats[fused[post]] == 1


MATMUL_CASES = [
    # (a shape, b shape, b constant, bias, post)
    ((1, 7), (7, 13), True, True, "none"),
    ((5, 64), (64, 33), True, True, "relu"),
    ((2, 9, 31), (31, 17), True, True, "gelu"),
    ((3, 4, 16), (16, 16), True, True, "residual"),
    ((2, 3, 5, 8), (2, 3, 8, 6), False, False, "none"),  # attention-style batched matmul
    ((2, 1, 5, 8), (1, 3, 8, 6), False, False, "none"),  # broadcast batch dims
    ((4, 6, 10), (10, 3), True, False, "tanh"),
]


def _matmul_model(case: tuple, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict]:  # type: ignore[type-arg]
    a_shape, b_shape, b_const, bias, post = case
    out_shape = [*np.broadcast_shapes(a_shape[:-2], b_shape[:-2]), a_shape[-2], b_shape[-1]]
    inits: list[tuple[str, np.ndarray]] = []
    graph_inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape))]
    feeds = {"a": rng.standard_normal(a_shape).astype(np.float32)}
    b = (rng.standard_normal(b_shape) / np.sqrt(b_shape[-2])).astype(np.float32)
    if b_const:
        inits.append(("b", b))
    else:
        graph_inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b_shape)))
        feeds["b"] = b
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y0"])]
    last = "y0"
    if bias:
        inits.append(("bias", rng.standard_normal(b_shape[-1]).astype(np.float32)))
        nodes.append(helper.make_node("Add", [last, "bias"], ["y1"]))
        last = "y1"
    if post == "relu":
        nodes.append(helper.make_node("Relu", [last], ["y2"]))
        last = "y2"
    elif post == "tanh":
        nodes.append(helper.make_node("Tanh", [last], ["y2"]))
        last = "y2"
    elif post == "gelu":  # the exact form torch exports
        inits += [
            ("sqrt2", np.array(np.sqrt(2.0), np.float32)),
            ("one", np.array(1.0, np.float32)),
            ("half", np.array(0.5, np.float32)),
        ]
        nodes += [
            helper.make_node("Div", [last, "sqrt2"], ["g0"]),
            helper.make_node("Erf", ["g0"], ["g1"]),
            helper.make_node("Add", ["g1", "one"], ["g2"]),
            helper.make_node("Mul", [last, "g2"], ["g3"]),
            helper.make_node("Mul", ["g3", "half"], ["y2"]),
        ]
        last = "y2"
    elif post == "residual":
        graph_inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, out_shape))
        feeds["r"] = rng.standard_normal(out_shape).astype(np.float32)
        nodes.append(helper.make_node("Add", [last, "r"], ["y2"]))
        last = "y2"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    model = make_model(
        nodes,
        graph_inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    return model, feeds


@pytest.mark.parametrize("case", MATMUL_CASES, ids=lambda c: f"{c[0]}@{c[1]}-{c[4]}")
def test_matmul_matches_ort(case: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    model, feeds = _matmul_model(case, np.random.default_rng(len(case[0]) * 7 + case[1][-1]))
    artifact = _compile_and_compare(model, feeds, tmp_path)
    stats = artifact.manifest["kernel_library"]
    assert stats["calls"] == stats["matmul"] == 1
    assert stats.get("bias", 0) == int(case[3])
    if case[4] != "none":  # the post-op was fused into the one library call
        assert stats[case[4]] == 1


def _depthwise_block_model(stem_channels: int, rng: np.random.Generator) -> onnx.ModelProto:
    """MobileNet-style: a 3x3 stem conv, then depthwise 3x3 + 1x1 with a residual add, a max pool
    and a global average pool, so that TVM-generated ops run between library convs."""
    c = 16
    inits = [
        ("w0", rng.standard_normal((c, stem_channels, 3, 3)).astype(np.float32) * 0.3),
        ("b0", rng.standard_normal(c).astype(np.float32)),
        ("w1", rng.standard_normal((c, 1, 3, 3)).astype(np.float32) * 0.3),
        ("w2", rng.standard_normal((c, c, 1, 1)).astype(np.float32) * 0.3),
        ("b2", rng.standard_normal(c).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["s"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["s1"]),
        helper.make_node("Conv", ["s1", "w1"], ["d"], pads=[1, 1, 1, 1], group=c),
        helper.make_node("Relu", ["d"], ["d1"]),
        helper.make_node("Conv", ["d1", "w2", "b2"], ["p"]),
        helper.make_node("Add", ["p", "s1"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["m"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, stem_channels, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, 1, 1])],
        inits,
    )


@pytest.mark.parametrize("stem_channels", [3, 8])
def test_auto_layout_blocks_depthwise_models_only(stem_channels: int, tmp_path: Path) -> None:
    """A model with depthwise convs runs its convs in NCHW8c (a 3-channel stem stays NHWC), with
    pooling and a residual add between them, and matches ORT; a ResNet-style 3x3 conv with 64
    input channels stays NHWC."""
    rng = np.random.default_rng(stem_channels)
    model = _depthwise_block_model(stem_channels, rng)
    feeds = {"x": rng.standard_normal((2, stem_channels, 10, 10)).astype(np.float32)}
    stats = _compile_and_compare(model, feeds, tmp_path).manifest["kernel_library"]
    assert stats["conv_layout"] == "NCHW8c"
    assert stats["conv2d"] == 3 and stats["residual"] == 1
    assert stats["nchw8c"] == (3 if stem_channels % 8 == 0 else 2)
    resnet_like = (1, 64, 6, 6, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True, "relu")
    dense, _ = _conv_model(resnet_like, rng)
    artifact = ember.compile(dense, batch_sizes=None, output=tmp_path / "dense")
    assert artifact.manifest["kernel_library"]["conv_layout"] == "NHWC"


def test_unknown_conv_layout_is_a_compile_error(tmp_path: Path) -> None:
    model, _ = _conv_model(CONV_CASES[0], np.random.default_rng(0))
    with pytest.raises(ember.CompileError, match="conv_layout"):
        ember.compile(model, batch_sizes=None, output=tmp_path / "a", conv_layout="NCHW16c")


def test_library_and_tvm_paths_agree(tmp_path: Path) -> None:
    model, feeds = _conv_model(CONV_CASES[0], np.random.default_rng(0))
    plain = ember.compile(model, batch_sizes=None, output=tmp_path / "tvm", kernel_library=None)
    assert plain.manifest["kernel_library"] is None
    fast = ember.compile(model, batch_sizes=None, output=tmp_path / "dnnl")
    np.testing.assert_allclose(
        ember.load(fast.path).run(feeds)["y"],
        ember.load(plain.path).run(feeds)["y"],
        rtol=1e-4,
        atol=1e-4,
    )


def test_ops_the_library_does_not_cover_stay_in_tvm(tmp_path: Path) -> None:
    """ConvTranspose, a conv whose weight is a runtime input and LayerNorm: compiled by TVM next
    to a dispatched conv and softmax, and still correct."""
    rng = np.random.default_rng(3)
    inits = [
        ("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3),
        ("wt", rng.standard_normal((4, 2, 2, 2)).astype(np.float32) * 0.3),
        ("scale", np.ones(64, np.float32)),
        ("shift", np.zeros(64, np.float32)),
        ("shape", np.array([2, 2, 64], np.int64)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # dispatched
        helper.make_node("ConvTranspose", ["c", "wt"], ["t"], strides=[2, 2]),  # TVM
        helper.make_node("Conv", ["x", "wx"], ["c2"]),  # runtime weight: TVM
        helper.make_node("Reshape", ["t", "shape"], ["t2"]),
        helper.make_node("LayerNormalization", ["t2", "scale", "shift"], ["ln"], axis=-1),
        helper.make_node("Softmax", ["ln"], ["y"], axis=-1),
    ]
    model = make_model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4]),
            helper.make_tensor_value_info("wx", TensorProto.FLOAT, [1, 3, 1, 1]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 64]),
            helper.make_tensor_value_info("c2", TensorProto.FLOAT, [2, 1, 4, 4]),
        ],
        inits,
    )
    feeds = {
        "x": rng.standard_normal((2, 3, 4, 4)).astype(np.float32),
        "wx": rng.standard_normal((1, 3, 1, 1)).astype(np.float32),
    }
    artifact = _compile_and_compare(model, feeds, tmp_path)
    stats = artifact.manifest["kernel_library"]
    assert stats["calls"] == 2 and stats["conv2d"] == 1 and stats["softmax"] == 1


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((2, 12, 16, 16), -1), ((3, 5, 7), 1), ((4, 10), 0), ((2, 3, 33), 2)],
)
def test_softmax_runs_in_the_library_and_matches_onnxruntime(
    tmp_path: Path, shape: tuple[int, ...], axis: int
) -> None:
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=axis)]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
        [],
    )
    x = np.random.default_rng(len(shape) + axis).standard_normal(shape).astype(np.float32) * 4
    x.flat[0] = 90.0  # overflows exp() in float unless the max is subtracted first
    artifact = _compile_and_compare(model, {"x": x}, tmp_path)
    assert artifact.manifest["kernel_library"]["softmax"] == 1


@pytest.mark.parametrize(
    ("shape", "pool", "strides", "pads", "ceil", "conv_layout"),
    [
        ((2, 8, 9, 11), (2, 2), (2, 2), (0, 0, 0, 0), 0, None),  # no conv: stays NCHW
        ((2, 8, 9, 11), (2, 2), (2, 2), (0, 0, 0, 0), 1, None),  # ceil_mode: one more window
        ((3, 16, 14, 14), (3, 3), (2, 2), (1, 1, 1, 1), 0, "NHWC"),  # ResNet's stem pool
        ((3, 16, 14, 14), (3, 3), (2, 2), (1, 1, 1, 1), 0, "NCHW8c"),
        ((2, 16, 7, 10), (3, 2), (2, 3), (1, 0, 0, 1), 1, "NCHW8c"),  # asymmetric, ceil_mode
    ],
)
def test_max_pool_runs_in_the_library_and_matches_onnxruntime(
    tmp_path: Path,
    shape: tuple[int, int, int, int],
    pool: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    ceil: int,
    conv_layout: str | None,
) -> None:
    """MaxPool alone or after a conv, so that it runs in the conv's layout. Inputs are mostly
    negative: a pad read as 0 instead of ignored would show."""
    rng = np.random.default_rng(sum(shape))
    n, c, h, w = shape
    pool_node = helper.make_node(
        "MaxPool", ["p"], ["y"], kernel_shape=list(pool), strides=list(strides),
        pads=[pads[0], pads[1], pads[2], pads[3]], ceil_mode=ceil,
    )  # fmt: skip
    kwargs: dict[str, object] = {}
    if conv_layout is None:
        nodes, inits = [helper.make_node("Identity", ["x"], ["p"]), pool_node], []
    else:
        weight = rng.standard_normal((c, c, 1, 1)).astype(np.float32) * 0.3
        nodes, inits = [helper.make_node("Conv", ["x", "w"], ["p"]), pool_node], [("w", weight)]
        kwargs["conv_layout"] = conv_layout
    out_hw = [
        (size + pads[d] + pads[d + 2] - pool[d] + (strides[d] - 1) * ceil) // strides[d] + 1
        for d, size in enumerate((h, w))
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, *out_hw])],
        inits,
    )
    x = (rng.standard_normal(shape) - 3).astype(np.float32)
    artifact = _compile_and_compare(model, {"x": x}, tmp_path, **kwargs)
    assert artifact.manifest["kernel_library"]["max_pool2d"] == 1


def _flatten_model(extra_user: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv (16 channels) -> ReLU -> Flatten -> two Gemm heads (transB, as PyTorch exports), and
    with `extra_user` also the flattened features themselves as an output."""
    rng = np.random.default_rng(11)
    inits = [
        ("w", rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2),
        ("fa", rng.standard_normal((10, 16 * 5 * 6)).astype(np.float32) * 0.1),
        ("fb", rng.standard_normal((3, 16 * 5 * 6)).astype(np.float32) * 0.1),
        ("ba", rng.standard_normal(10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fa", "ba"], ["ya"], transB=1),
        helper.make_node("Gemm", ["f", "fb"], ["yb"], transB=1),
    ]
    outputs = [
        helper.make_tensor_value_info("ya", TensorProto.FLOAT, [4, 10]),
        helper.make_tensor_value_info("yb", TensorProto.FLOAT, [4, 3]),
    ]
    if extra_user:
        outputs.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, [4, 16 * 5 * 6]))
    model = make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8, 5, 6])], outputs, inits
    )
    return model, {"x": rng.standard_normal((4, 8, 5, 6)).astype(np.float32)}


@pytest.mark.parametrize("extra_user", [False, True], ids=["matmuls-only", "features-too"])
def test_a_flatten_after_nhwc_convs_moves_into_the_weights(
    tmp_path: Path, extra_user: bool
) -> None:
    """In NHWC, TVM transposes back to NCHW before a flatten; when only library matmuls read the
    flattened features, the weights' rows are permuted instead (once, at compile time). Where the
    features are also an output, the transpose must stay."""
    model, feeds = _flatten_model(extra_user)
    artifact = _compile_and_compare(model, feeds, tmp_path, conv_layout="NHWC")
    stats = artifact.manifest["kernel_library"]
    assert stats["matmul"] == 2
    assert stats.get("flatten_into_weights", 0) == int(not extra_user)


def test_a_flatten_after_blocked_convs_stays_correct(tmp_path: Path) -> None:
    model, feeds = _flatten_model(extra_user=False)
    artifact = _compile_and_compare(model, feeds, tmp_path, conv_layout="NCHW8c")
    assert artifact.manifest["kernel_library"]["nchw8c"] == 1


def test_a_permute_that_moves_only_size_1_axes_becomes_a_reshape() -> None:
    """NCHW -> NHWC of a 1-channel image keeps the element order: a view, not a copy kernel."""
    from tvm import relax

    from ember.compiler.dispatch import _permutes_as_reshapes

    def permuted(shape: tuple[int, ...]) -> str:
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType(shape, "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(relax.op.permute_dims(x, [0, 2, 3, 1]))
            bb.emit_func_output(y)
        return str(_permutes_as_reshapes(bb.get()["main"]).script())

    assert "R.reshape(x, R.shape([2, 4, 5, 1]))" in permuted((2, 1, 4, 5))
    assert "R.permute_dims" in permuted((2, 3, 4, 5))  # moves real data: stays


def test_a_flatten_that_is_also_the_residual_keeps_its_transpose(tmp_path: Path) -> None:
    """Gemm(f) + f, the add fused into the matmul as its residual: permuting the weights would
    leave the residual in the other order, so the transpose stays."""
    rng = np.random.default_rng(12)
    features = 8 * 2 * 3
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "fw"], ["g"], transB=1),
        helper.make_node("Add", ["g", "f"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, features])],
        [
            ("w", rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2),
            ("fw", rng.standard_normal((features, features)).astype(np.float32) * 0.1),
        ],
    )
    feeds = {"x": rng.standard_normal((3, 8, 2, 3)).astype(np.float32)}
    artifact = _compile_and_compare(model, feeds, tmp_path, conv_layout="NHWC")
    stats = artifact.manifest["kernel_library"]
    assert stats["matmul"] == 1 and stats.get("residual", 0) == 1
    assert "flatten_into_weights" not in stats
