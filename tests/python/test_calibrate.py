"""Calibration: ranges against numpy on the same samples for every method, and clear errors for
bad calibration data."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from helpers import mlp
from onnx import numpy_helper

import ember
from ember.quantize import calibrate, quantized_activations


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def hidden(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The ReLU output feeding the MLP's second MatMul, computed in numpy."""
    w = weights(model)
    return np.maximum(x @ w["w1"] + w["b1"], 0)


def samples(n: int, rows: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((rows, 16)).astype(np.float32)} for _ in range(n)]


def test_the_activations_of_matmuls_are_calibrated_not_their_weights() -> None:
    assert quantized_activations(mlp()) == ["x", "h2"]


def test_minmax_is_the_range_seen_widened_to_zero() -> None:
    model = mlp()
    data = samples(10, rows=4, seed=1) + samples(3, rows=7, seed=2)  # batch sizes may vary
    result = calibrate(model, data, method="minmax")
    xs = np.concatenate([s["x"] for s in data])
    h = hidden(model, xs)
    x_range, h_range = result.ranges["x"], result.ranges["h2"]
    assert (x_range.min, x_range.max) == pytest.approx((xs.min(), xs.max()), rel=1e-6)
    assert h_range.min == 0.0  # a ReLU output: widened down to 0
    assert h_range.max == pytest.approx(h.max(), rel=1e-5)
    assert result.samples == 13 and result.method == "minmax"


def test_percentile_clips_a_rare_outlier() -> None:
    rng = np.random.default_rng(3)
    data = [{"x": rng.standard_normal((64, 16)).astype(np.float32)} for _ in range(10)]
    data[4]["x"][0, 0] = 1000.0
    result = calibrate(mlp(), data, method="percentile", percentile=99.9, tensors=["x"])
    x_range = result.ranges["x"]
    magnitudes = np.abs(np.concatenate([s["x"].ravel() for s in data]))
    width = 1000.0 / 2048
    assert x_range.max == pytest.approx(np.percentile(magnitudes, 99.9), abs=2 * width)
    assert x_range.observed_max == 1000.0
    assert x_range.min == pytest.approx(-x_range.max)  # symmetric threshold within [min, max]


def test_entropy_clips_outliers_but_keeps_a_uniform_range() -> None:
    rng = np.random.default_rng(4)
    gaussian = [{"x": rng.standard_normal((256, 16)).astype(np.float32)} for _ in range(10)]
    gaussian[0]["x"][0, :4] = 40.0
    clipped = calibrate(mlp(), gaussian, method="entropy", tensors=["x"]).ranges["x"]
    assert 2.0 < clipped.max < 20.0, clipped  # well inside the outliers, beyond 2 sigma
    uniform = [{"x": rng.uniform(-1, 1, (256, 16)).astype(np.float32)} for _ in range(10)]
    kept = calibrate(mlp(), uniform, method="entropy", tensors=["x"]).ranges["x"]
    assert kept.max > 0.9, kept  # nothing to gain from clipping a uniform distribution


def test_a_generator_of_samples_is_accepted() -> None:
    def stream() -> Iterator[dict[str, np.ndarray]]:
        yield from samples(5)

    assert calibrate(mlp(), stream()).samples == 5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "no calibration samples"),
        ({"x": np.zeros((1, 16), np.float32)}, "got a single dict; wrap it in a list"),
        ([np.zeros((1, 16), np.float32)], "calibration sample 0 must be a dict"),
        (
            [{"x": np.zeros((1, 16), np.float32)}, {"y": np.zeros((1, 16), np.float32)}],
            r"calibration sample 1: unknown inputs \['y'\], missing inputs \['x'\]",
        ),
        ([{"x": np.zeros((1, 16))}], "input 'x' has dtype float64, the model expects float32"),
        (
            [{"x": np.zeros((1, 15), np.float32)}],
            r"has shape \(1, 15\), the model expects \[N, 16\]",
        ),
        ([{"x": np.zeros((16,), np.float32)}], r"has shape \(16,\)"),
        ([{"x": np.full((1, 16), np.nan, np.float32)}], "had no finite values"),
    ],
)
def test_bad_calibration_data_is_named(data: object, message: str) -> None:
    with pytest.raises(ember.InvalidInputError, match=message):
        calibrate(mlp(), data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "kl"}, "unknown calibration method 'kl'"),
        ({"percentile": 0}, r"percentile must be in \(0, 100\]"),
        ({"num_bins": 16}, "num_bins must be >= 128"),
        ({"tensors": ["nope"]}, r"tensors \['nope'\] are not produced"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ember.InvalidInputError, match=message):
        calibrate(mlp(), samples(2), **kwargs)  # type: ignore[arg-type]
