"""int8 vs fp32, ember vs ONNX Runtime, on the same calibration data, side by side in one process.

For each model: calibration samples (the digits' training split; seeded random inputs for the
random-weight zoo models), then
  - ember: `ember.quantize.calibrate` + `quantize_static` (ONNX QDQ) compiled by `ember.compile`;
  - ORT: `onnxruntime.quantization.quantize_static` (QDQ, per-channel int8 weights, uint8
    activations, reduce_range on CPUs without VNNI, as its docs advise there);
plus ember's int8 weight-only artifact (precision="int8-weight": int8 weights, float compute) and
ORT's QDQ model compiled by ember (how a model quantized with ORT's tools runs on ember);
then the fp32, int8 and weight-only models are timed interleaved at the batch size (medians), and
their outputs are compared with fp32 on held-out inputs: accuracy for the digits (held-out
split), max abs error and cosine similarity otherwise. Artifact sizes are listed too.

    python benchmarks/quantization.py                               # bert_encoder, digits_mlp
    python benchmarks/quantization.py --models bert_encoder --batch 32 --repeats 7

What ember quantizes (int8-static): MatMuls with constant weights, and Convs whose input is never
negative (after a ReLU); the rest (e.g. ResNet's stem conv on signed pixels) stays fp32.
Weight-only int8 makes artifacts ~4x smaller where weights dominate, at fp32 speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_onnxruntime import ort_session

DEFAULT_MODELS = ("bert_encoder", "digits_mlp")
CALIBRATION_SAMPLES = 8
ON_ORT_MODEL = "ember on ORT's int8 model"  # ORT's QDQ model compiled by ember


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


QUIESCE_SECONDS = 0.15  # ORT's intra-op threads spin 20-100 ms after a run (vs_onnxruntime.py)
BLOCK_SECONDS = 0.02


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds per run for each engine: every round times a ~20 ms block of runs of
    each engine in turn, after a pause that lets the previous engine's spinning threads idle."""
    block = {}
    for name, fn in runs.items():
        fn()
        start = time.perf_counter()
        fn()
        block[name] = max(1, int(BLOCK_SECONDS / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            time.sleep(QUIESCE_SECONDS)
            fn()  # wake the pool
            start = time.perf_counter()
            for _ in range(block[name]):
                fn()
            times[name].append((time.perf_counter() - start) * 1e3 / block[name])
    return {k: statistics.median(v) for k, v in times.items()}


def data_for(
    name: str, model: onnx.ModelProto, batch: int
) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray], Any]:
    """(calibration samples, an evaluation input at `batch` rows, labels or None)."""
    from ember.samples import INPUT_SHAPES

    input_name = model.graph.input[0].name
    if name.startswith("digits"):
        from ember.samples.digits import load_digits_split

        split = load_digits_split()
        shape = INPUT_SHAPES[name][input_name][1:]
        train = split.x_train.astype(np.float32).reshape(-1, *shape)
        samples = [{input_name: train[i : i + 64]} for i in range(0, len(train), 64)]
        test = split.x_test.astype(np.float32).reshape(-1, *shape)
        return samples, {input_name: test}, split.y_test
    rng = np.random.default_rng(0)
    shape = tuple(d or 2 for d in INPUT_SHAPES[name][input_name])
    samples = [
        {input_name: rng.standard_normal(shape).astype(np.float32)}
        for _ in range(CALIBRATION_SAMPLES)
    ]
    full = tuple(batch if d is None else d for d in INPUT_SHAPES[name][input_name])
    return samples, {input_name: rng.standard_normal(full).astype(np.float32)}, None


def ort_int8(model_path: Path, out: Path, samples: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from ember.compiler.dispatch import host_needs_seven_bit_weights

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(model_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=host_needs_seven_bit_weights(),
    )


def bench(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import ember
    from ember.quantize import calibrate, quantize_static
    from ember.samples import INPUT_SHAPES, SAMPLES

    model = SAMPLES[name]()
    samples, evaluation, labels = data_for(name, model, args.batch)
    print(f"[{name}] calibrating on {len(samples)} samples", flush=True)
    q = quantize_static(model, calibrate(model, samples, method=args.method))
    fp32_path = workdir / f"{name}.onnx"
    onnx.save(model, str(fp32_path))
    ort_q_path = workdir / f"{name}_ort_int8.onnx"
    ort_int8(fp32_path, ort_q_path, samples)
    rows = next(iter(evaluation.values())).shape[0]
    buckets = (rows,) if labels is None else (1, 8, 16, 32)
    shapes = dict(INPUT_SHAPES[name])
    print(f"[{name}] compiling fp32 and int8", flush=True)
    a32 = ember.compile(model, batch_sizes=buckets, input_shapes=shapes, output=workdir / "fp32")
    a8 = ember.compile(q, batch_sizes=buckets, input_shapes=shapes, output=workdir / "int8")
    aw8 = ember.compile(
        model,
        batch_sizes=buckets,
        input_shapes=shapes,
        output=workdir / "int8-weight",
        precision="int8-weight",
    )
    # ORT's own QDQ model, compiled by ember: what a user who quantized with ORT gets.
    aort = ember.compile(
        ort_q_path, batch_sizes=buckets, input_shapes=shapes, output=workdir / "ort-int8"
    )
    m32, m8, mw8 = ember.load(a32.path), ember.load(a8.path), ember.load(aw8.path)
    mort = ember.load(aort.path)
    s32 = ort_session(fp32_path.read_bytes(), ember.NUM_THREADS)
    s8 = ort_session(ort_q_path.read_bytes(), ember.NUM_THREADS)
    out_name = model.graph.output[0].name
    outs = {
        "ember fp32": m32.run(evaluation)[out_name],
        "ember int8": m8.run(evaluation)[out_name],
        "ember int8-weight": mw8.run(evaluation)[out_name],
        ON_ORT_MODEL: mort.run(evaluation)[out_name],
        "ORT fp32": s32.run([out_name], evaluation)[0],
        "ORT int8": s8.run([out_name], evaluation)[0],
    }
    timed = {k: v for k, v in evaluation.items()}
    if labels is not None:  # time a batch of args.batch rows of the held-out inputs
        timed = {k: np.ascontiguousarray(v[: args.batch]) for k, v in evaluation.items()}
    print(f"[{name}] timing at batch {args.batch}", flush=True)
    ms = interleaved_medians(
        {
            "ember fp32": lambda: m32.run(timed),
            "ember int8": lambda: m8.run(timed),
            "ember int8-weight": lambda: mw8.run(timed),
            ON_ORT_MODEL: lambda: mort.run(timed),
            "ORT fp32": lambda: s32.run([out_name], timed),
            "ORT int8": lambda: s8.run([out_name], timed),
        },
        args.repeats,
    )
    reference = outs["ember fp32"]
    quality = {}
    for key, out in outs.items():
        if labels is not None:
            quality[key] = f"acc {float((out.argmax(-1) == labels).mean()):.4f}"
        else:
            cosine = float(
                (out * reference).sum() / np.linalg.norm(out) / np.linalg.norm(reference)
            )
            quality[key] = f"max|d| {float(np.abs(out - reference).max()):.3g}, cos {cosine:.5f}"
    return {
        "model": name,
        "ms": ms,
        "quality": quality,
        "kernels": a8.manifest.get("kernel_library", {}),
        "ort_model_kernels": aort.manifest.get("kernel_library", {}),
        "bytes": {
            "fp32": directory_bytes(a32.path),
            "int8": directory_bytes(a8.path),
            "int8-weight": directory_bytes(aw8.path),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(DEFAULT_MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"))
    args = parser.parse_args(argv)
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            workdir = Path(tmp) / name
            workdir.mkdir()
            results.append(bench(name, args, workdir))
    print(f"\nbatch {args.batch}, calibration {args.method}, medians of {args.repeats} runs\n")
    header = ["model", "ember fp32 ms", "ember int8 ms", "int8 speedup", "ORT fp32 ms"]
    header += ["ORT int8 ms", "ember int8 / ORT int8", f"{ON_ORT_MODEL} ms"]
    header += ["ember int8-weight ms"]
    header += ["artifact fp32 -> int8, int8-weight"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        ms, size = r["ms"], r["bytes"]
        cells = [
            r["model"],
            f"{ms['ember fp32']:.3f}",
            f"{ms['ember int8']:.3f}",
            f"{ms['ember fp32'] / ms['ember int8']:.2f}x",
            f"{ms['ORT fp32']:.3f}",
            f"{ms['ORT int8']:.3f}",
            f"{ms['ember int8'] / ms['ORT int8']:.2f}",
            f"{ms[ON_ORT_MODEL]:.3f}",
            f"{ms['ember int8-weight']:.3f}",
            f"{size['fp32'] / 1e6:.3f} -> {size['int8'] / 1e6:.3f} MB "
            f"({size['int8'] / size['fp32']:.2f}x), {size['int8-weight'] / 1e6:.3f} MB "
            f"({size['int8-weight'] / size['fp32']:.2f}x)",
        ]
        print("| " + " | ".join(cells) + " |")
    small = [r["model"] for r in results if r["ms"]["ember fp32"] < 1.0]
    if small:
        print(
            f"\nNOTE: {', '.join(small)} run in well under 1 ms: with ORT sessions in the process, "
            "such runs are erratic here (ember's 0.03 ms MLP batch measured 0.04-2 ms between "
            "runs of this script). Use benchmarks/vs_onnxruntime.py for small-model latency; "
            "read these rows for accuracy and size."
        )
    print()
    for r in results:
        quality = "; ".join(f"{k}: {v}" for k, v in r["quality"].items())
        print(f"{r['model']}: {quality}; int8 kernels: {r['kernels']}")
        print(f"{r['model']}: {ON_ORT_MODEL}: kernels {r['ort_model_kernels']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
