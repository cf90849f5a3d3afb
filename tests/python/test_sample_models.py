"""Every sample model, compiled by ember and run by the C++ core, matches ONNX Runtime at every
bucket, at a size between buckets, and at a batch larger than the largest bucket."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_matches_ort, ort_run

import ember
from ember.samples import INPUT_SHAPES, SAMPLES

# Buckets and row counts per model: (at a bucket, between buckets, beyond the largest bucket).
# The large models run untuned TVM code until library dispatch lands (issue 3), so they use
# small buckets; BERT compiles at seq 32 instead of 128 (seq is a free dim of the same layer).
CASES = {
    "digits_mlp": ((1, 8, 32), (1, 5, 8, 20, 32, 77), {}),
    "digits_cnn": ((1, 8, 32), (1, 5, 8, 20, 32, 77), {}),
    "resnet18": ((1, 3), (1, 2, 3, 4), {}),
    "mobilenet": ((1, 3), (1, 2, 3, 4), {}),
    "bert_encoder": ((1, 3), (1, 2, 3, 4), {"x": (None, 32, 768)}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def compiled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, onnx.ModelProto, ember.Model]:
    name = request.param
    buckets, _, shapes = CASES[name]
    proto = SAMPLES[name]()
    out = Path(tmp_path_factory.mktemp(name)) / f"{name}.ember"
    artifact = ember.compile(
        proto, batch_sizes=buckets, output=out, input_shapes=shapes or INPUT_SHAPES[name]
    )
    return name, proto, ember.load(artifact.path)


def test_matches_onnxruntime_at_and_around_buckets(
    compiled: tuple[str, onnx.ModelProto, ember.Model],
) -> None:
    name, proto, model = compiled
    _, rows_list, _ = CASES[name]
    spec = model.inputs[0]
    rng = np.random.default_rng(0)
    for rows in rows_list:
        shape = tuple(rows if d is None else d for d in spec.shape)
        x = rng.standard_normal(shape).astype(np.float32)
        assert_matches_ort(model.run({spec.name: x}), ort_run(proto, {spec.name: x}))


@pytest.mark.parametrize("compiled", ["digits_cnn", "digits_mlp"], indirect=True)
def test_digits_accuracy_on_held_out_split(
    compiled: tuple[str, onnx.ModelProto, ember.Model],
) -> None:
    _, _, model = compiled
    data = ember.samples.load_digits_split()
    spec = model.inputs[0]
    x = data.x_test.reshape((-1, *spec.shape[1:])).astype(np.float32)  # type: ignore[misc]
    logits = model.run({spec.name: x})["logits"]
    assert (logits.argmax(axis=1) == data.y_test).mean() >= 0.95
