"""Tests for ember.samples: valid ONNX, runs in onnxruntime, sane scale, real digits accuracy."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ember.samples import (
    INPUT_SHAPES,
    SAMPLES,
    bert_encoder,
    digits_cnn,
    digits_mlp,
    load_digits_split,
)

NAMES = ["digits_mlp", "digits_cnn", "resnet18", "mobilenet", "bert_encoder"]
OUTPUTS = {
    "digits_mlp": ("logits", (10,)),
    "digits_cnn": ("logits", (10,)),
    "resnet18": ("logits", (1000,)),
    "mobilenet": ("logits", (1000,)),
    "bert_encoder": ("y", (128, 768)),
}


@functools.cache
def built(name: str) -> tuple[onnx.ModelProto, float | None]:
    """Each sample built once per test session, with the trainer's reported accuracy if any."""
    if name == "digits_mlp":
        return digits_mlp()
    if name == "digits_cnn":
        return digits_cnn()
    return SAMPLES[name](), None


@functools.cache
def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(
        built(name)[0].SerializeToString(), providers=["CPUExecutionProvider"]
    )


def random_inputs(name: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for input_name, shape in INPUT_SHAPES[name].items():
        full_shape = [batch, *(d for d in shape[1:] if d is not None)]
        inputs[input_name] = rng.standard_normal(full_shape).astype(np.float32)
    return inputs


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_registry_names() -> None:
    assert sorted(SAMPLES) == sorted(NAMES)
    assert sorted(INPUT_SHAPES) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_check_model_full(name: str) -> None:
    model = built(name)[0]
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.name == name
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    for init in model.graph.initializer:
        assert init.data_type == onnx.TensorProto.FLOAT, init.name


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_batch_and_input_shapes(name: str) -> None:
    model = built(name)[0]
    inputs = {i.name: dims(i) for i in model.graph.input}
    assert set(inputs) == set(INPUT_SHAPES[name])
    for input_name, shape in INPUT_SHAPES[name].items():
        declared = inputs[input_name]
        assert declared[0] == "batch" and shape[0] is None
        assert len(declared) == len(shape)
        for got, want in zip(declared[1:], shape[1:], strict=True):
            assert isinstance(want, int)
            assert got == want or isinstance(got, str)  # symbolic dims (bert's seq) take any size
    output_name, _ = OUTPUTS[name]
    [output] = model.graph.output
    assert output.name == output_name and dims(output)[0] == "batch"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_runs_in_onnxruntime(name: str, batch: int) -> None:
    output_name, trailing = OUTPUTS[name]
    [y] = session(name).run([output_name], random_inputs(name, batch))
    assert y.shape == (batch, *trailing) and y.dtype == np.float32
    assert np.isfinite(y).all()
    if name not in ("digits_mlp", "digits_cnn"):
        # Random weights must keep activations in a range where 1e-4 relative checks make sense.
        assert 0.1 <= float(y.std()) <= 10.0, float(y.std())


def test_bert_symbolic_sequence_length() -> None:
    rng = np.random.default_rng(1)
    for seq in (7, 33):
        x = rng.standard_normal((2, seq, 768)).astype(np.float32)
        [y] = session("bert_encoder").run(["y"], {"x": x})
        assert y.shape == x.shape and np.isfinite(y).all()


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_held_out_accuracy(name: str) -> None:
    data = load_digits_split()
    x = data.x_test.reshape(-1, *(d for d in INPUT_SHAPES[name]["x"][1:] if d is not None))
    [logits] = session(name).run(["logits"], {"x": x})
    accuracy = float(np.mean(np.argmax(logits, axis=1) == data.y_test))
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(built(name)[1])


def test_digits_split() -> None:
    data = load_digits_split()
    assert data.x_train.shape == (1347, 64) and data.x_test.shape == (450, 64)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.max() - counts.min() <= 3  # stratified: 43..46 per class, as in the full set


def test_exporter_style_ops() -> None:
    """The graphs carry the runtime shape arithmetic that torch.onnx emits."""

    def ops(name: str) -> set[str]:
        return {n.op_type for n in built(name)[0].graph.node}

    shape_ops = {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape"}
    assert shape_ops <= ops("digits_cnn")
    assert shape_ops <= ops("mobilenet")
    assert shape_ops | {"Slice", "Erf", "Softmax", "LayerNormalization", "Transpose"} <= ops(
        "bert_encoder"
    )
    assert "BatchNormalization" not in ops("resnet18")
    assert {"MaxPool", "GlobalAveragePool", "Gemm", "Add", "Relu"} <= ops("resnet18")
    mobilenet_nodes = built("mobilenet")[0].graph.node
    convs = [n for n in mobilenet_nodes if n.op_type == "Conv"]
    groups = [a.i for n in convs for a in n.attribute if a.name == "group"]
    assert max(groups) > 1  # depthwise convolutions
    assert all(len(n.input) == 3 for n in mobilenet_nodes if n.op_type == "Clip")


def test_deterministic_given_seed() -> None:
    small = functools.partial(bert_encoder, hidden=64, heads=4, ffn=128)
    assert small(seed=3).SerializeToString() == small(seed=3).SerializeToString()
    assert small(seed=3).SerializeToString() != small(seed=4).SerializeToString()
