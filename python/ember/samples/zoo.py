"""Random-weight ONNX models shaped like real exports: ResNet-18, MobileNetV2, a BERT encoder layer.

Graphs are laid out the way torch.onnx emits them (runtime shape subgraphs, Constant nodes,
Gemm/MatMul+Add linears) so that ember's importer and shape folding see realistic inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

__all__ = ["GraphBuilder", "bert_encoder", "mobilenet", "resnet18"]


class GraphBuilder:
    """Accumulates nodes, initializers and graph inputs/outputs with unique, readable names."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counts: dict[str, int] = {}

    def _fresh(self, prefix: str) -> str:
        """Returns `prefix_N` with N counting uses of that prefix."""
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def input(self, name: str, shape: Sequence[int | str]) -> str:
        """Declares a float32 graph input; string dims become symbolic (dim_param)."""
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def output(self, name: str, shape: Sequence[int | str]) -> None:
        """Declares a float32 graph output; produce it with `op(..., out=name)`."""
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))

    def weight(self, name: str, array: np.ndarray) -> str:
        """Adds a float32 initializer (a parameter) and returns its name."""
        tensor = numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)
        self.initializers.append(tensor)
        return name

    def const(self, value: float | int | Sequence[int] | np.ndarray, dtype: type = np.int64) -> str:
        """Emits a Constant node (as torch.onnx does for shape pieces and scalars)."""
        array: np.ndarray = np.asarray(value, dtype=dtype)
        name = self._fresh("Constant")
        tensor = numpy_helper.from_array(array, f"{name}_value")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        """Emits one single-output node and returns the name of its output."""
        name = self._fresh(op_type)
        output = out if out is not None else f"{name}_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        return output

    def build(self) -> onnx.ModelProto:
        """Assembles the model with opset 17 and an IR version onnxruntime accepts."""
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="ember.samples",
        )
        model.ir_version = IR_VERSION
        return model


def flatten_via_shape(g: GraphBuilder, x: str) -> str:
    """`x.view(x.size(0), -1)` as torch exports it: Shape, Gather, Unsqueeze, Concat, Reshape."""
    shape = g.op("Shape", x)
    batch = g.op("Gather", shape, g.const(0), axis=0)
    batch = g.op("Unsqueeze", batch, g.const([0]))
    target = g.op("Concat", batch, g.const([-1]), axis=0)
    return g.op("Reshape", x, target)


def _he_normal(
    rng: np.random.Generator, shape: Sequence[int], fan_in: int, gain: float
) -> np.ndarray:
    """Normal weights with variance gain/fan_in (gain 2 keeps ReLU activations' scale)."""
    return (rng.standard_normal(shape) * math.sqrt(gain / fan_in)).astype(np.float32)


def _bias(rng: np.random.Generator, n: int, scale: float = 0.05) -> np.ndarray:
    """Small random bias, like the folded BatchNorm shifts of a trained eval-mode network."""
    return (rng.standard_normal(n) * scale).astype(np.float32)


def _conv(
    g: GraphBuilder,
    rng: np.random.Generator,
    x: str,
    name: str,
    c_in: int,
    c_out: int,
    k: int,
    stride: int = 1,
    group: int = 1,
    gain: float = 2.0,
) -> str:
    """Conv with bias (BatchNorm folded in, as eval-mode exports have), 'same'-style padding."""
    fan_in = (c_in // group) * k * k
    w = g.weight(f"{name}.weight", _he_normal(rng, (c_out, c_in // group, k, k), fan_in, gain))
    b = g.weight(f"{name}.bias", _bias(rng, c_out))
    pad = k // 2
    return g.op(
        "Conv",
        x,
        w,
        b,
        dilations=[1, 1],
        group=group,
        kernel_shape=[k, k],
        pads=[pad, pad, pad, pad],
        strides=[stride, stride],
    )


def _classifier(
    g: GraphBuilder, rng: np.random.Generator, x: str, c_in: int, num_classes: int, name: str
) -> str:
    """Linear head as torch exports it for 2-D input: Gemm with transB=1, output named logits."""
    w = g.weight(f"{name}.weight", _he_normal(rng, (num_classes, c_in), c_in, 1.0))
    b = g.weight(f"{name}.bias", _bias(rng, num_classes))
    return g.op("Gemm", x, w, b, out="logits", alpha=1.0, beta=1.0, transB=1)


def resnet18(seed: int = 0, image_size: int = 224, num_classes: int = 1000) -> onnx.ModelProto:
    """ResNet-18 (BasicBlocks 2-2-2-2) with random He-initialized weights and BN folded into Conv.

    Input `input` [batch, 3, H, W], output `logits` [batch, num_classes].
    """
    rng = np.random.default_rng(seed)
    g = GraphBuilder("resnet18")
    x = g.input("input", ["batch", 3, image_size, image_size])
    x = g.op("Relu", _conv(g, rng, x, "conv1", 3, 64, 7, stride=2, gain=1.0))
    x = g.op("MaxPool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], ceil_mode=0)
    c_in = 64
    for stage, c_out in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if (stage > 1 and block == 0) else 1
            prefix = f"layer{stage}.{block}"
            y = g.op("Relu", _conv(g, rng, x, f"{prefix}.conv1", c_in, c_out, 3, stride))
            # Residual branch scaled down (like a small BN gamma) so depth does not blow up scale.
            y = _conv(g, rng, y, f"{prefix}.conv2", c_out, c_out, 3, gain=0.5)
            if stride != 1 or c_in != c_out:
                x = _conv(g, rng, x, f"{prefix}.downsample.0", c_in, c_out, 1, stride, gain=1.0)
            x = g.op("Relu", g.op("Add", y, x))
            c_in = c_out
    x = g.op("GlobalAveragePool", x)
    x = g.op("Flatten", x, axis=1)
    _classifier(g, rng, x, 512, num_classes, "fc")
    g.output("logits", ["batch", num_classes])
    return g.build()


# MobileNetV2 inverted-residual settings: expansion t, channels c, repeats n, first stride s.
_MOBILENET_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet(seed: int = 0, image_size: int = 224, num_classes: int = 1000) -> onnx.ModelProto:
    """MobileNetV2 (width 1.0): depthwise convs (group=C), ReLU6 as Clip(0, 6), inverted residuals.

    Input `input` [batch, 3, H, W], output `logits` [batch, num_classes].
    """
    rng = np.random.default_rng(seed)
    g = GraphBuilder("mobilenet")
    zero = g.const(0.0, np.float32)
    six = g.const(6.0, np.float32)

    def relu6(t: str) -> str:
        return g.op("Clip", t, zero, six)

    x = g.input("input", ["batch", 3, image_size, image_size])
    x = relu6(_conv(g, rng, x, "features.0", 3, 32, 3, stride=2, gain=1.0))
    c_in = 32
    index = 1
    for t, c, n, s in _MOBILENET_V2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            prefix = f"features.{index}.conv"
            hidden = c_in * t
            y = x
            if t != 1:
                y = relu6(_conv(g, rng, y, f"{prefix}.0", c_in, hidden, 1))
            y = relu6(_conv(g, rng, y, f"{prefix}.1", hidden, hidden, 3, stride, group=hidden))
            # Linear bottleneck: no activation after the projection.
            y = _conv(g, rng, y, f"{prefix}.2", hidden, c, 1, gain=1.0)
            x = g.op("Add", x, y) if stride == 1 and c_in == c else y
            c_in = c
            index += 1
    x = relu6(_conv(g, rng, x, f"features.{index}", c_in, 1280, 1))
    x = g.op("GlobalAveragePool", x)
    x = flatten_via_shape(g, x)
    _classifier(g, rng, x, 1280, num_classes, "classifier.1")
    g.output("logits", ["batch", num_classes])
    return g.build()


def _linear(
    g: GraphBuilder, rng: np.random.Generator, x: str, name: str, d_in: int, d_out: int
) -> str:
    """nn.Linear on a 3-D input as torch exports it: MatMul with the transposed weight, then Add."""
    w = g.weight(f"{name}.weight", (rng.standard_normal((d_in, d_out)) * 0.02).astype(np.float32))
    b = g.weight(f"{name}.bias", (rng.standard_normal(d_out) * 0.02).astype(np.float32))
    return g.op("Add", g.op("MatMul", x, w), b)


def _layer_norm(
    g: GraphBuilder, rng: np.random.Generator, x: str, name: str, d: int, out: str | None = None
) -> str:
    """LayerNormalization (opset 17) over the last axis, BERT's epsilon."""
    scale = g.weight(f"{name}.weight", (1.0 + 0.05 * rng.standard_normal(d)).astype(np.float32))
    shift = g.weight(f"{name}.bias", (0.05 * rng.standard_normal(d)).astype(np.float32))
    return g.op("LayerNormalization", x, scale, shift, out=out, axis=-1, epsilon=1e-12)


def _split_heads(g: GraphBuilder, x: str, heads: int, head_dim: int, perm: Sequence[int]) -> str:
    """`x.view(b, s, heads, head_dim).permute(perm)` with b, s read at run time from Shape(x)."""
    shape = g.op("Shape", x)
    batch = g.op("Unsqueeze", g.op("Gather", shape, g.const(0), axis=0), g.const([0]))
    seq = g.op("Unsqueeze", g.op("Gather", shape, g.const(1), axis=0), g.const([0]))
    target = g.op("Concat", batch, seq, g.const([heads]), g.const([head_dim]), axis=0)
    return g.op("Transpose", g.op("Reshape", x, target), perm=list(perm))


def bert_encoder(
    seed: int = 0, hidden: int = 768, heads: int = 12, ffn: int = 3072
) -> onnx.ModelProto:
    """One post-LayerNorm BERT encoder layer (BERT-base sizes by default), no attention mask.

    Input `x` [batch, seq, hidden], output `y` [batch, seq, hidden]; weights ~ N(0, 0.02) as BERT.
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)
    g = GraphBuilder("bert_encoder")
    x = g.input("x", ["batch", "seq", hidden])
    prefix = "encoder.layer.0"

    q = _linear(g, rng, x, f"{prefix}.attention.self.query", hidden, hidden)
    k = _linear(g, rng, x, f"{prefix}.attention.self.key", hidden, hidden)
    v = _linear(g, rng, x, f"{prefix}.attention.self.value", hidden, hidden)
    q = _split_heads(g, q, heads, head_dim, (0, 2, 1, 3))  # [b, h, s, d]
    k_t = _split_heads(g, k, heads, head_dim, (0, 2, 3, 1))  # [b, h, d, s]
    v = _split_heads(g, v, heads, head_dim, (0, 2, 1, 3))  # [b, h, s, d]
    scores = g.op("MatMul", q, k_t)
    scores = g.op("Div", scores, g.const(math.sqrt(head_dim), np.float32))
    probs = g.op("Softmax", scores, axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])  # [b, s, h, d]
    # context.view(context.size()[:-2] + (hidden,)): Shape -> Slice -> Concat -> Reshape.
    merged_shape = g.op(
        "Concat",
        g.op("Slice", g.op("Shape", context), g.const([0]), g.const([-2]), g.const([0])),
        g.const([hidden]),
        axis=0,
    )
    context = g.op("Reshape", context, merged_shape)
    attn = _linear(g, rng, context, f"{prefix}.attention.output.dense", hidden, hidden)
    x1 = _layer_norm(g, rng, g.op("Add", attn, x), f"{prefix}.attention.output.LayerNorm", hidden)

    h = _linear(g, rng, x1, f"{prefix}.intermediate.dense", hidden, ffn)
    # GELU as torch exports the exact (erf) form: x * 0.5 * (1 + erf(x / sqrt(2))).
    erf = g.op("Erf", g.op("Div", h, g.const(math.sqrt(2.0), np.float32)))
    h = g.op("Mul", h, g.op("Add", erf, g.const(1.0, np.float32)))
    h = g.op("Mul", h, g.const(0.5, np.float32))
    out = _linear(g, rng, h, f"{prefix}.output.dense", ffn, hidden)
    _layer_norm(g, rng, g.op("Add", out, x1), f"{prefix}.output.LayerNorm", hidden, out="y")
    g.output("y", ["batch", "seq", hidden])
    return g.build()
