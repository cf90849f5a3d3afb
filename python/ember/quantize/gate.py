"""`ember.quantize.quantize`: try quantization methods (int8-static with each calibration method,
and int8 weight-only), measure each against fp32 on held-out data, keep the best one that passes
the gate, and refuse to ship one that does not.

For each method the int8 artifact is compiled and compared with the fp32 artifact on the
evaluation inputs: accuracy when labels are given, otherwise output error (max / mean absolute
error, cosine similarity, top-1 agreement), plus the latency ratio at the evaluation batch size
and the artifact size. The report is stored in the chosen artifact's manifest ("quantization"
entry, re-checksummed) and printed by `ember info`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..artifact import MANIFEST_FILE, Artifact, write_checksums
from ..errors import CompileError, EmberError
from .calibrate import METHODS, calibrate

WEIGHT_ONLY = "weight-only"
# What `quantize` can try: int8-static with each calibration method, then int8 weight-only.
QUANTIZE_METHODS = (*METHODS, WEIGHT_ONLY)


class QuantizationRejectedError(EmberError):
    """No quantization method passed the gate; `.report` holds what each one measured."""

    code = "QuantizationRejected"

    def __init__(self, message: str, report: QuantizationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class MethodResult:
    """How one calibration method's int8 artifact compares with fp32 on the evaluation data."""

    method: str
    accuracy: float | None  # with labels
    accuracy_drop: float | None  # fp32 accuracy - int8 accuracy
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    top1_agreement: float
    speedup: float  # fp32 latency / int8 latency at the evaluation batch
    artifact_bytes: int
    passed: bool = False
    reason: str = ""


@dataclass
class QuantizationReport:
    fp32_accuracy: float | None
    fp32_artifact_bytes: int
    batch: int
    max_accuracy_drop: float | None
    min_speedup: float | None
    methods: list[MethodResult] = field(default_factory=list)
    chosen: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"fp32: accuracy {_fmt(self.fp32_accuracy)}, {self.fp32_artifact_bytes / 1e6:.2f} MB; "
            f"gate: accuracy drop <= {_fmt(self.max_accuracy_drop)}, speedup >= "
            f"{_fmt(self.min_speedup)}"
        ]
        for m in self.methods:
            mark = "chosen" if m.method == self.chosen else ("pass" if m.passed else "FAIL")
            lines.append(
                f"  {m.method:10s} acc {_fmt(m.accuracy)} (drop {_fmt(m.accuracy_drop)}), "
                f"cos {m.cosine:.5f}, top-1 agree {m.top1_agreement:.4f}, max|d| "
                f"{m.max_abs_error:.3g}, speedup {m.speedup:.2f}x, "
                f"{m.artifact_bytes / 1e6:.2f} MB  [{mark}]{' ' + m.reason if m.reason else ''}"
            )
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def quantize(
    model: onnx.ModelProto | str | os.PathLike[str],
    calibration: Iterable[Mapping[str, np.ndarray]],
    evaluation: Mapping[str, np.ndarray],
    *,
    labels: np.ndarray | None = None,
    method: str = "auto",
    max_accuracy_drop: float | None = 0.01,
    min_speedup: float | None = None,
    output: str | os.PathLike[str] = "model-int8.ember",
    batch_sizes: Sequence[int] | None = (1, 8, 16, 32),
    input_shapes: Mapping[str, Sequence[int | None]] | None = None,
    repeats: int = 10,
) -> tuple[Artifact, QuantizationReport]:
    """Quantize `model` with `method` -- a calibration method for int8-static, or "weight-only"
    for int8 weights with float compute (smaller, not faster); "auto" tries them all -- and
    return the artifact of the best method that passes the gate (the smallest accuracy drop,
    then the highest cosine, then the fastest), with the report.

    evaluation: held-out inputs (never the calibration data), all rows in one dict; labels: their
    classes, to gate on accuracy (argmax of the first output), else the gate uses top-1
    agreement with fp32 as the accuracy. Raises QuantizationRejectedError with the report when
    no method passes; the rejected artifacts are deleted.
    """
    from ..compiler import compile as compile_model
    from ..model import Model

    methods = list(QUANTIZE_METHODS) if method == "auto" else [method]
    if any(m not in QUANTIZE_METHODS for m in methods):
        raise CompileError(f"method must be 'auto' or one of {QUANTIZE_METHODS}, got {method!r}")
    samples = list(calibration)
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    out = Path(output)
    work = out.parent / f".{out.name}.quantize"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        common = {"batch_sizes": batch_sizes, "input_shapes": input_shapes}
        fp32_artifact = compile_model(proto, output=work / "fp32", **common)  # type: ignore[arg-type]
        fp32 = Model(fp32_artifact.path)
        reference = _first_output(fp32.run(dict(evaluation)))
        batch = _batch_rows(evaluation, batch_sizes)
        timing_input = {k: np.ascontiguousarray(v[:batch]) for k, v in evaluation.items()}
        fp32_accuracy = _accuracy(reference, labels)
        report = QuantizationReport(
            fp32_accuracy,
            _bytes(fp32_artifact.path),
            batch,
            max_accuracy_drop,
            min_speedup,
        )
        models = {}
        for name in methods:
            if name == WEIGHT_ONLY:
                precision: dict[str, Any] = {"precision": "int8-weight"}
            else:
                calibrated = calibrate(proto, samples, method=name)  # type: ignore[arg-type]
                precision = {"precision": "int8-static", "calibration": calibrated}
            artifact = compile_model(
                proto,
                output=work / name,
                **precision,
                **common,  # type: ignore[arg-type]
            )
            int8 = Model(artifact.path)
            models[name] = int8
            got = _first_output(int8.run(dict(evaluation)))
            result = _compare(name, reference, got, labels, fp32_accuracy)
            result.artifact_bytes = _bytes(artifact.path)
            report.methods.append(result)
        # Timed only once everything is compiled (a compile leaves the machine busy for a while),
        # in interleaved rounds so that drift hits every model alike.
        runs = {"fp32": fp32, **models}
        calls = {name: (lambda m=m: m.run(timing_input)) for name, m in runs.items()}
        ms = _interleaved_ms(calls, repeats)
        for result in report.methods:
            result.speedup = ms["fp32"] / ms[result.method]
            _gate(result, max_accuracy_drop, min_speedup)
        passing = [m for m in report.methods if m.passed]
        if not passing:
            raise QuantizationRejectedError(
                "no quantization method passed the gate:\n" + report.table(), report
            )
        best = max(passing, key=lambda m: (-(m.accuracy_drop or 0.0), m.cosine, m.speedup))
        report.chosen = best.method
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(str(work / best.method), str(out))
        manifest_path = out / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text())
        manifest["quantization"] = {**manifest.get("quantization", {}), "report": report.to_json()}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        write_checksums(out)
        return Artifact(out), report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _first_output(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())), dtype=np.float64)


def _batch_rows(evaluation: Mapping[str, np.ndarray], buckets: Sequence[int] | None) -> int:
    rows = int(next(iter(evaluation.values())).shape[0])
    return min(rows, max(buckets)) if buckets else rows


def _interleaved_ms(runs: Mapping[str, Any], repeats: int) -> dict[str, float]:
    """Median milliseconds per run: every round runs a ~20 ms block of each model in turn after
    a short pause (worker threads of the previous model go idle)."""
    block = {}
    for name, fn in runs.items():
        fn()
        start = time.perf_counter()
        fn()
        block[name] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(max(1, repeats)):
        for name, fn in runs.items():
            time.sleep(0.05)
            fn()
            start = time.perf_counter()
            for _ in range(block[name]):
                fn()
            times[name].append((time.perf_counter() - start) * 1e3 / block[name])
    return {name: statistics.median(values) for name, values in times.items()}


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float((outputs.reshape(len(labels), -1).argmax(1) == labels).mean())


def _compare(
    method: str,
    reference: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray | None,
    fp32_accuracy: float | None,
) -> MethodResult:
    diff = np.abs(got - reference)
    flat_ref, flat_got = reference.ravel(), got.ravel()
    norm = float(np.linalg.norm(flat_ref) * np.linalg.norm(flat_got))
    cosine = float(flat_ref @ flat_got / norm) if norm > 0 else 1.0
    rows = reference.shape[0]
    agreement = float(
        (reference.reshape(rows, -1).argmax(1) == got.reshape(rows, -1).argmax(1)).mean()
    )
    accuracy = _accuracy(got, labels)
    drop = None
    if accuracy is not None and fp32_accuracy is not None:
        drop = fp32_accuracy - accuracy
    return MethodResult(
        method,
        accuracy,
        drop,
        float(diff.max()),
        float(diff.mean()),
        cosine,
        agreement,
        speedup=0.0,
        artifact_bytes=0,
    )


def _gate(result: MethodResult, max_drop: float | None, min_speedup: float | None) -> None:
    reasons = []
    drop = result.accuracy_drop if result.accuracy_drop is not None else 1 - result.top1_agreement
    if max_drop is not None and drop > max_drop:
        reasons.append(f"accuracy drop {drop:.4f} > {max_drop}")
    if min_speedup is not None and result.speedup < min_speedup:
        reasons.append(f"speedup {result.speedup:.2f}x < {min_speedup}x")
    result.passed = not reasons
    result.reason = "; ".join(reasons)
