"""Calibration: the range of every activation an int8 kernel will quantize, from sample inputs.

The fp32 model runs in ONNX Runtime on the calibration samples with the chosen activations added
as graph outputs (the model ember compiles is unchanged). Each activation gets a range:

- `minmax`: the smallest and largest value seen.
- `percentile`: |x| clipped at the given percentile of all |x| seen (outliers saturate instead of
  stretching the scale for everyone).
- `entropy`: the clipping threshold whose 128-level quantized histogram of |x| is closest to the
  real one in KL divergence (the TensorRT method), computed on `num_bins` bins.

Ranges are then widened to include 0 (so 0.0 stays exact) and intersected with [min, max].
Samples are read once into memory: the histogram methods take two passes (range, then counts).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx

from ..errors import CompileError, InvalidInputError

Method = Literal["minmax", "percentile", "entropy"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
# Operators whose activation inputs the int8 kernels quantize.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
QUANTIZED_LEVELS = 128  # |x| maps onto 128 levels of a symmetric int8 / the magnitude of u8


@dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one tensor (includes 0), and what was observed."""

    min: float
    max: float
    observed_min: float
    observed_max: float


@dataclass(frozen=True)
class Calibration:
    """Ranges per tensor name, with how they were computed."""

    ranges: dict[str, TensorRange]
    method: str
    samples: int
    percentile: float | None = None
    num_bins: int | None = None


def quantized_activations(model: onnx.ModelProto) -> list[str]:
    """Activation inputs of Conv / MatMul / Gemm nodes (not weights), in graph order, unique."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        candidates = node.input[:2] if node.op_type in ("MatMul", "Gemm") else node.input[:1]
        for name in candidates:
            if name and name not in constants and name not in names:
                names.append(name)
    return names


def calibrate(
    model: onnx.ModelProto | str | os.PathLike[str],
    data: Iterable[Mapping[str, np.ndarray]],
    *,
    method: Method = "minmax",
    tensors: Sequence[str] | None = None,
    percentile: float = 99.99,
    num_bins: int = 2048,
) -> Calibration:
    """Calibrate `tensors` (default: quantized_activations(model)) on the samples in `data`.

    Each sample maps every model input name to an array of the declared dtype and rank, with the
    declared size on every fixed dimension (symbolic ones, such as the batch, may vary). Raises
    InvalidInputError naming the sample and the input for bad samples, and for no samples.
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown calibration method {method!r}; choose from {METHODS}")
    if not 0 < percentile <= 100:
        raise InvalidInputError(f"percentile must be in (0, 100], got {percentile}")
    if num_bins < QUANTIZED_LEVELS:
        raise InvalidInputError(f"num_bins must be >= {QUANTIZED_LEVELS}, got {num_bins}")
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    samples = _checked_samples(proto, data)
    names = list(tensors) if tensors is not None else quantized_activations(proto)
    session = _observing_session(proto, names)

    lows = {n: math.inf for n in names}
    highs = {n: -math.inf for n in names}
    for sample in samples:
        for name, value in zip(names, session.run(names, sample), strict=True):
            lows[name] = min(lows[name], float(np.min(value))) if value.size else lows[name]
            highs[name] = max(highs[name], float(np.max(value))) if value.size else highs[name]
    for name in names:
        if not (math.isfinite(lows[name]) and math.isfinite(highs[name])):
            raise InvalidInputError(
                f"tensor '{name}' had no finite values in the calibration samples "
                f"(range [{lows[name]}, {highs[name]}]); check the samples for NaN or inf"
            )

    thresholds: dict[str, float] = {}
    if method != "minmax":
        hists = {n: np.zeros(num_bins, np.int64) for n in names}
        tops = {n: max(abs(lows[n]), abs(highs[n])) for n in names}
        for sample in samples:
            for name, value in zip(names, session.run(names, sample), strict=True):
                top = tops[name] or 1.0
                counts, _ = np.histogram(np.abs(value), bins=num_bins, range=(0.0, top))
                hists[name] += counts
        for name in names:
            width = (tops[name] or 1.0) / num_bins
            if method == "percentile":
                thresholds[name] = _percentile_threshold(hists[name], width, percentile)
            else:
                thresholds[name] = _entropy_threshold(hists[name], width)

    ranges = {}
    for name in names:
        low, high = lows[name], highs[name]
        if name in thresholds:
            low, high = max(low, -thresholds[name]), min(high, thresholds[name])
        ranges[name] = TensorRange(min(low, 0.0), max(high, 0.0), lows[name], highs[name])
    return Calibration(
        ranges,
        method,
        len(samples),
        percentile if method == "percentile" else None,
        num_bins if method != "minmax" else None,
    )


def _percentile_threshold(hist: np.ndarray, width: float, percentile: float) -> float:
    """Upper edge of the bin where the cumulative count reaches `percentile` % of all |x|."""
    cumulative = np.cumsum(hist)
    index = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return (min(index, len(hist) - 1) + 1) * width


def _entropy_threshold(hist: np.ndarray, width: float) -> float:
    """The KL-optimal clipping threshold of a histogram of |x| (TensorRT's calibration)."""
    hist = hist.astype(np.float64)
    nonzero_bins = np.nonzero(hist)[0]
    if len(nonzero_bins) == 0:
        return width * len(hist)
    last = int(nonzero_bins[-1]) + 1
    if last <= QUANTIZED_LEVELS:
        return last * width  # fits 128 levels without clipping anything
    best_kl, best_i = math.inf, last
    for i in range(QUANTIZED_LEVELS, last + 1):
        reference = hist[:i].copy()
        reference[i - 1] += hist[i:].sum()  # outliers clip into the last bin
        candidate = _quantized_histogram(hist[:i], QUANTIZED_LEVELS)
        kl = _kl_divergence(reference, candidate)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * width


def _quantized_histogram(hist: np.ndarray, levels: int) -> np.ndarray:
    """Merge `hist` (at least `levels` bins) into `levels` groups, then spread each group's count
    evenly over the group's non-empty bins (empty bins stay empty: quantization cannot fill
    them)."""
    edges = np.linspace(0, len(hist), levels + 1).astype(np.int64)
    used = hist > 0
    sums = np.add.reduceat(hist, edges[:-1])
    counts = np.add.reduceat(used.astype(np.float64), edges[:-1])
    per_bin = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    group = np.repeat(np.arange(levels), np.diff(edges))
    return np.where(used, per_bin[group], 0.0)


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q_total = q.sum()
    if q_total == 0:
        return math.inf
    q = q / q_total
    mask = p > 0
    if np.any(q[mask] == 0):
        return math.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _checked_samples(
    model: onnx.ModelProto, data: Iterable[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    from ..compiler.onnx_prep import graph_inputs

    inputs = {info.name: info for info in graph_inputs(model)}
    expected = ", ".join(
        f"{i.name}: {i.dtype}[{', '.join(str(d) for d in i.dims)}]" for i in inputs.values()
    )
    if isinstance(data, Mapping):
        raise InvalidInputError(
            "calibration data must be a list or iterator of input dicts, got a single dict; "
            "wrap it in a list"
        )
    samples: list[dict[str, np.ndarray]] = []
    for index, sample in enumerate(data):
        where = f"calibration sample {index}"
        if not isinstance(sample, Mapping):
            raise InvalidInputError(
                f"{where} must be a dict of input name -> array, got {type(sample).__name__}"
            )
        unknown = sorted(set(sample) - set(inputs))
        missing = sorted(set(inputs) - set(sample))
        if unknown or missing:
            raise InvalidInputError(
                f"{where}: unknown inputs {unknown}, missing inputs {missing}; "
                f"the model's inputs are: {expected}"
            )
        checked = {}
        for name, value in sample.items():
            info = inputs[name]
            array = np.asarray(value)
            if array.dtype != np.dtype(info.dtype):
                raise InvalidInputError(
                    f"{where}: input '{name}' has dtype {array.dtype}, the model expects "
                    f"{info.dtype}"
                )
            if array.ndim != len(info.dims) or any(
                isinstance(d, int) and d != n for d, n in zip(info.dims, array.shape, strict=True)
            ):
                raise InvalidInputError(
                    f"{where}: input '{name}' has shape {tuple(array.shape)}, the model expects "
                    f"[{', '.join(str(d) for d in info.dims)}]"
                )
            checked[name] = np.ascontiguousarray(array)
        samples.append(checked)
    if not samples:
        raise InvalidInputError("no calibration samples: `data` yielded nothing")
    return samples


def _observing_session(model: onnx.ModelProto, names: Sequence[str]) -> Any:
    """An ONNX Runtime session of `model` that also outputs the tensors `names`."""
    import onnxruntime as ort

    produced = {o for node in model.graph.node for o in node.output}
    produced |= {i.name for i in model.graph.input}
    unknown = [n for n in names if n not in produced]
    if unknown:
        raise InvalidInputError(f"tensors {unknown} are not produced by any node or input")
    observed = onnx.ModelProto()
    observed.CopyFrom(model)
    existing = {o.name for o in observed.graph.output}
    for name in names:
        if name not in existing:
            observed.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            observed.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own exception types
        raise CompileError(f"ONNX Runtime could not load the model to calibrate it: {exc}") from exc
