"""The conv rewrite for CUDA targets (ember.compiler.gpu_convs): dense convs as GEMMs, depthwise
convs as shifted-slice sums. The rewritten graph is target-independent Relax, so it is run here on
the CPU (TVM's plain LLVM build) and compared with ONNX Runtime; its GPU speed is measured with
`ember bench` on a GPU host (issue 6 note)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run
from onnx import TensorProto, helper

from ember.compiler.build import _import_relax
from ember.compiler.gpu_convs import ConvRewrites, convs_for_gpu

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

SHAPE = (2, 3, 17, 15)


def conv_zoo(seed: int = 0):
    """Every conv form the rewrite handles (3x3 padded with bias, strided depthwise, strided 1x1,
    5x5 depthwise with uneven padding, asymmetric padding and strides) plus two it must keep
    (groups 2, dilation 2)."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    conv = helper.make_node
    nodes = [
        conv("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        conv("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=8),
        conv("Conv", ["c2", "w3"], ["c3"], strides=[2, 2]),
        conv("Conv", ["c3", "w4"], ["c4"], pads=[2, 1, 2, 1], group=16),
        conv("Conv", ["c4", "w5"], ["c5"], pads=[0, 1, 1, 0], strides=[1, 2]),
        conv("Conv", ["c5", "w6"], ["c6"], pads=[1, 1, 1, 1], group=2),
        conv("Conv", ["c6", "w7"], ["y"], pads=[2, 2, 2, 2], dilations=[2, 2]),
    ]
    initializers = [
        ("w1", weights(8, 3, 3, 3)), ("b1", weights(8)), ("w2", weights(8, 1, 3, 3)),
        ("w3", weights(16, 8, 1, 1)), ("w4", weights(16, 1, 5, 5)), ("w5", weights(12, 16, 3, 3)),
        ("w6", weights(12, 6, 3, 3)), ("w7", weights(4, 12, 3, 3)),
    ]  # fmt: skip
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
        name="conv_zoo",
    )


def run_on_cpu(mod, x: np.ndarray) -> np.ndarray:
    executable = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_rewritten_convs_match_onnxruntime() -> None:
    model = conv_zoo()
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    want = ort_run(model, {"x": x})["y"]
    mod = _import_relax(model, {"x": list(SHAPE)}, {"x": "float32"})
    rewritten, counts = convs_for_gpu(mod)
    assert counts == ConvRewrites(gemm=3, depthwise=2, kept=2)
    got = run_on_cpu(rewritten, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_only_the_kept_convs_remain() -> None:
    mod = _import_relax(conv_zoo(), {"x": list(SHAPE)}, {"x": "float32"})
    rewritten, _ = convs_for_gpu(mod)
    text = rewritten.script()
    assert text.count("R.nn.conv2d(") == 2
    assert "groups=2" in text and "dilation=[2, 2]" in text
    assert text.count("R.matmul(") == 3
