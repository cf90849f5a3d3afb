"""Quantization: calibration of activation ranges (more to come: int8 weights and kernels).

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
from .gate import MethodResult, QuantizationRejectedError, QuantizationReport, quantize
from .qdq import activation_params, quantize_static, quantize_weights

__all__ = [
    "METHODS",
    "Calibration",
    "MethodResult",
    "QuantizationRejectedError",
    "QuantizationReport",
    "TensorRange",
    "activation_params",
    "calibrate",
    "quantize",
    "quantize_static",
    "quantize_weights",
    "quantized_activations",
]
