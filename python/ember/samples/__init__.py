"""Sample ONNX models for ember's tests, demo and benchmarks, built locally with no download.

`digits_mlp`/`digits_cnn` are trained on sklearn's digits; the zoo models have random weights.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from .digits import DigitsData, digits_cnn, digits_mlp, load_digits_split, train_digits_mlp
from .zoo import bert_encoder, mobilenet, resnet18

__all__ = [
    "INPUT_SHAPES",
    "SAMPLES",
    "DigitsData",
    "bert_encoder",
    "digits_cnn",
    "digits_mlp",
    "load_digits_split",
    "mobilenet",
    "resnet18",
    "train_digits_mlp",
]


def _digits_mlp_model() -> onnx.ModelProto:
    """The trained digits MLP without its accuracy."""
    return digits_mlp()[0]


def _digits_cnn_model() -> onnx.ModelProto:
    """The trained digits CNN without its accuracy."""
    return digits_cnn()[0]


SAMPLES: dict[str, Callable[[], onnx.ModelProto]] = {
    "digits_mlp": _digits_mlp_model,
    "digits_cnn": _digits_cnn_model,
    "resnet18": resnet18,
    "mobilenet": mobilenet,
    "bert_encoder": bert_encoder,
}
"""Model name -> builder with default arguments (seed 0, default sizes)."""

INPUT_SHAPES: dict[str, dict[str, tuple[int | None, ...]]] = {
    "digits_mlp": {"x": (None, 64)},
    "digits_cnn": {"x": (None, 1, 8, 8)},
    "resnet18": {"input": (None, 3, 224, 224)},
    "mobilenet": {"input": (None, 3, 224, 224)},
    "bert_encoder": {"x": (None, 128, 768)},
}
"""Per model, each input's shape to compile with: batch as None, other dims concrete (seq=128)."""
