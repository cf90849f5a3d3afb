"""Kernel-library candidates for the heavy ops, side by side in one process on the same inputs:
oneDNN (as ember dispatches it: the op compiled alone, run through the C++ core), OpenBLAS
(numpy's bundled scipy-openblas: sgemm, and im2col + sgemm for convolutions) and ONNX Runtime
(MLAS) as the reference. Prints medians and ratios to ORT; outputs are checked against ORT.

    python benchmarks/kernel_library.py [--repeats 30]

Why oneDNN: it is the candidate that fuses bias/residual/activation post-ops and prepacks weights,
and it exists for aarch64 too (Debian arm64 libdnnl); OpenBLAS offers neither fusion nor conv.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ember
from ember._timing import ort_session


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _model(
    node: onnx.NodeProto, x_shape: list[int], y_shape: list[int], weights: dict[str, np.ndarray]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _im2col_conv(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """NCHW 3x3-style convolution, stride 1: im2col copy then one OpenBLAS sgemm."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    s = xp.strides
    cols = np.lib.stride_tricks.as_strided(
        xp, (n, h, wd, c, kh, kw), (s[0], s[2], s[3], s[1], s[2], s[3])
    ).reshape(n * h * wd, c * kh * kw)
    out = cols @ w.reshape(o, -1).T
    return np.ascontiguousarray(out.reshape(n, h, wd, o).transpose(0, 3, 1, 2))


def _bench_case(
    kind: str,
    label: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    rng: np.random.Generator,
    workdir: Path,
    repeats: int,
) -> tuple[str, float, float, float, int]:
    """Time one op in each library; returns (label, oneDNN ms, OpenBLAS ms, ORT ms, flops)."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:-1]))).astype(np.float32)
    if kind == "matmul":
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        y_shape = [x_shape[0], w_shape[1]]
        flops = 2 * x_shape[0] * x_shape[1] * w_shape[1]

        def blas() -> np.ndarray:
            return np.asarray(x @ w)
    else:
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        y_shape = [x_shape[0], w_shape[0], x_shape[2], x_shape[3]]
        flops = 2 * int(np.prod(y_shape)) * int(np.prod(w_shape[1:]))

        def blas() -> np.ndarray:
            return _im2col_conv(x, w, 1)

    model = _model(node, list(x_shape), y_shape, {"w": w})
    artifact = ember.compile(model, batch_sizes=None, output=workdir / label.split()[1])
    compiled = ember.load(artifact.path)
    session: Any = ort_session(model.SerializeToString())
    reference = session.run(None, {"x": x})[0]
    for name, out in (("oneDNN", compiled.run({"x": x})["y"]), ("OpenBLAS", blas())):
        np.testing.assert_allclose(out, reference, rtol=1e-3, atol=1e-3, err_msg=name)
    ort_ms = _median_ms(lambda: session.run(None, {"x": x}), repeats)
    dnnl_ms = _median_ms(lambda: compiled.run({"x": x}), repeats)
    return label, dnnl_ms, _median_ms(blas, repeats), ort_ms, flops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="ember-kernels-"))
    cases: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = [
        ("matmul", "BERT QKV/out 128x768x768", (128, 768), (768, 768)),
        ("matmul", "BERT FFN1 128x768x3072", (128, 768), (768, 3072)),
        ("matmul", "BERT FFN2 128x3072x768", (128, 3072), (3072, 768)),
        ("conv", "ResNet 1x64x56x56 3x3x64", (1, 64, 56, 56), (64, 64, 3, 3)),
        ("conv", "ResNet 1x256x14x14 3x3x256", (1, 256, 14, 14), (256, 256, 3, 3)),
    ]
    for kind, label, x_shape, w_shape in cases:
        print(f"[{label}]", flush=True)
        rows.append(_bench_case(kind, label, x_shape, w_shape, rng, workdir, args.repeats))
    print(f"\n{ember.NUM_THREADS} thread(s); medians; ratio = time / ORT time (lower is better)")
    print(
        f"{'op':32}{'oneDNN ms':>11}{'ratio':>7}{'OpenBLAS ms':>13}{'ratio':>7}{'ORT ms':>9}"
        f"{'oneDNN GF/s':>13}"
    )
    for label, dnnl_ms, blas_ms, ort_ms, flops in rows:
        print(
            f"{label:32}{dnnl_ms:>11.3f}{dnnl_ms / ort_ms:>7.2f}{blas_ms:>13.3f}"
            f"{blas_ms / ort_ms:>7.2f}{ort_ms:>9.3f}{flops / dnnl_ms / 1e6:>13.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
