"""Quantization: int8 weight-only and static int8 (calibrated activations) as ONNX QDQ, which
ember's compiler runs on int8 kernels, and `quantize`, which reports each method against fp32 and
gates the result.

from ember.quantize import calibrate
ranges = calibrate("model.onnx", samples, method="entropy").ranges
"""

from __future__ import annotations

from .calibrate import (
    METHODS,
    Calibration,
    TensorRange,
    calibrate,
    quantized_activations,
)
from .gate import (
    QUANTIZE_METHODS,
    MethodResult,
    QuantizationRejectedError,
    QuantizationReport,
    quantize,
)
from .qdq import activation_params, quantize_static, quantize_weight_only, quantize_weights

__all__ = [
    "METHODS",
    "QUANTIZE_METHODS",
    "Calibration",
    "MethodResult",
    "QuantizationRejectedError",
    "QuantizationReport",
    "TensorRange",
    "activation_params",
    "calibrate",
    "quantize",
    "quantize_static",
    "quantize_weight_only",
    "quantize_weights",
    "quantized_activations",
]
