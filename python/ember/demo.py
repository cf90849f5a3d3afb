"""`ember demo`: the main job on real data. Train the digits MLP on scikit-learn's bundled digits,
compile it, serve the held-out digits through the C++ core, and compare with ONNX Runtime."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

# Pass/fail bounds the demo checks and prints.
MIN_ACCURACY = 0.95
MAX_ABS_DIFF_VS_ORT = 1e-4


def run_demo(workdir: str | os.PathLike[str] | None = None) -> int:
    """Run the demo; returns 0 when accuracy and agreement with ONNX Runtime hold, else 1."""
    from ._timing import median_us, ort_session
    from .compiler import compile as ember_compile
    from .model import load
    from .samples import digits_mlp, load_digits_split

    out = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ember-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] training a 64-128-10 MLP on scikit-learn's digits (work dir {out})")
    start = time.perf_counter()
    data = load_digits_split()
    proto, _ = digits_mlp()
    onnx_path = out / "digits_mlp.onnx"
    onnx.save(proto, onnx_path)
    print(
        f"[demo] trained in {time.perf_counter() - start:.1f} s; "
        f"{len(data.x_train)} training / {len(data.x_test)} held-out digits"
    )

    artifact = ember_compile(
        onnx_path, batch_sizes=(1, 8, 32, 128), output=out / "digits_mlp.ember", progress=print
    )
    model = load(artifact.path)
    x_test = np.ascontiguousarray(data.x_test, dtype=np.float32)

    logits = model.run({"x": x_test})["logits"]
    accuracy = float((logits.argmax(axis=1) == data.y_test).mean())
    session = ort_session(onnx_path.read_bytes())
    ort_logits = session.run(None, {"x": x_test})[0]  # type: ignore[attr-defined]
    ort_accuracy = float((ort_logits.argmax(axis=1) == data.y_test).mean())
    max_diff = float(np.abs(logits - ort_logits).max())

    one = x_test[:1]
    ember_b1 = median_us(lambda: model.run({"x": one}), repeats=2000, warmup=50)
    ort_b1 = median_us(lambda: session.run(None, {"x": one}), repeats=2000, warmup=50)  # type: ignore[attr-defined]
    ember_all = median_us(lambda: model.run({"x": x_test}), repeats=200, warmup=10)
    ort_all = median_us(lambda: session.run(None, {"x": x_test}), repeats=200, warmup=10)  # type: ignore[attr-defined]

    n = len(x_test)
    print()
    print(f"held-out digits: {n}   threads: {os.environ.get('TVM_NUM_THREADS')}")
    print(f"{'':24}{'ember (C++ core)':>18}{'ONNX Runtime':>16}{'ember/ORT':>11}")
    print(f"{'accuracy':24}{accuracy:>18.4f}{ort_accuracy:>16.4f}")
    print(f"{'latency, 1 digit (µs)':24}{ember_b1:>18.1f}{ort_b1:>16.1f}{ember_b1 / ort_b1:>11.2f}")
    print(
        f"{f'latency, {n} digits (µs)':24}{ember_all:>18.1f}{ort_all:>16.1f}"
        f"{ember_all / ort_all:>11.2f}"
    )
    print(f"max |ember - ORT| over all logits: {max_diff:.2e} (bound {MAX_ABS_DIFF_VS_ORT:.0e})")
    ok = accuracy >= MIN_ACCURACY and max_diff <= MAX_ABS_DIFF_VS_ORT
    print(f"[demo] {'PASS' if ok else 'FAIL'}: accuracy >= {MIN_ACCURACY} and outputs match ORT")
    return 0 if ok else 1
