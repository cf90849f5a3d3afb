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

__all__ = ["METHODS", "Calibration", "TensorRange", "calibrate", "quantized_activations"]
