"""ONNX Runtime on ResNet-18's 3x3 stride-1 convs: the target a Winograd conv must beat (issue 3).

benchmarks/winograd_conv.cc times oneDNN's direct conv and a Winograd F(2x2,3x3) conv on these
shapes; this script times ORT (MLAS) on the same ones, each as a one-Conv(+Relu) ONNX model
(NCHW, bias, pad 1, random weights), so the three can be compared.

ORT runs such a conv as ReorderInput (NCHW -> NCHWc) + Conv (NCHWc, ReLU fused) + ReorderOutput;
in a whole ResNet the reorders happen only at the model's edges. So two times are reported:

- `session ms`: median wall time of `InferenceSession.run` (reorders included);
- `conv ms`: median over runs of the Conv node's own kernel time, from ORT's profiler (what ORT
  spends on this conv inside a model; compare this one with winograd_conv's columns).

    python benchmarks/winograd_vs_ort.py                       # batch 1 and 32, 2 threads
    python benchmarks/winograd_vs_ort.py --batch-sizes 32 --threads 2 --min-time 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = ((56, 64), (28, 128), (14, 256), (7, 512))  # (H = W, C = K)


def conv_model(n: int, hw: int, c: int, k: int, relu: bool = True) -> onnx.ModelProto:
    """One Conv 3x3 (stride 1, pad 1, bias) and an optional Relu, NCHW, random weights."""
    rng = np.random.default_rng(0)
    w = (rng.uniform(-1, 1, (k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, (k,)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["conv" if relu else "y"],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        )
    ]
    if relu:
        nodes.append(helper.make_node("Relu", ["conv"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "conv3x3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, k, hw, hw])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def session(model: onnx.ModelProto, threads: int, profile_dir: str | None) -> ort.InferenceSession:
    """An ORT session at its best, as benchmarks/vs_onnxruntime.py makes it."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(profile_dir, "ort")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def time_session(sess: ort.InferenceSession, x: np.ndarray, min_time: float) -> list[float]:
    """Wall ms of each run, after warm-up, for at least `min_time` s and 15 runs."""
    for _ in range(3):
        sess.run(None, {"x": x})
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 15 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def conv_node_ms(profile_path: str) -> tuple[float, list[str]]:
    """Median per-run kernel time of the Conv nodes in an ORT profile, and the ops seen."""
    events = json.loads(Path(profile_path).read_text())
    per_run: dict[int, float] = {}
    ops: set[str] = set()
    run = -1
    for ev in events:
        if ev.get("cat") == "Session" and ev.get("name") == "model_run":
            continue
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        op = ev.get("args", {}).get("op_name", "")
        ops.add(op)
        if op == "Conv":
            run += 1
            per_run[run] = per_run.get(run, 0.0) + ev["dur"] / 1e3
    values = list(per_run.values())[3:]  # drop the warm-up runs
    return (statistics.median(values) if values else float("nan")), sorted(ops)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per shape and mode")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, Conv 3x3 + bias + Relu, NCHW")
    print(f"{'shape':<18} {'batch':>5} {'session ms':>11} {'conv ms':>9}  ops")
    for n in batches:
        for hw, c in SHAPES:
            model = conv_model(n, hw, c, c)
            x = np.random.default_rng(1).uniform(-1, 1, (n, c, hw, hw)).astype(np.float32)
            plain = time_session(session(model, args.threads, None), x, args.min_time)
            with tempfile.TemporaryDirectory() as tmp:
                sess = session(model, args.threads, tmp)
                time_session(sess, x, args.min_time / 2)
                conv_ms, ops = conv_node_ms(sess.end_profiling())
            print(
                f"{f'{hw}x{hw} {c}->{c}':<18} {n:>5} {statistics.median(plain):>11.3f} "
                f"{conv_ms:>9.3f}  {','.join(ops)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
