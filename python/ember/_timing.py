"""Small timing helpers shared by the demo and the benchmarks: medians, never single runs."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def median_us(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of `fn()` in microseconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e3)
    return statistics.median(samples)


def ort_session(model_bytes: bytes, threads: int | None = None) -> object:
    """An ONNX Runtime CPU session using `threads` intra-op threads (default: ember's count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or int(os.environ.get("TVM_NUM_THREADS", "1"))
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
