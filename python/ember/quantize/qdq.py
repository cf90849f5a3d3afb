"""Static int8 quantization written as ONNX QDQ: QuantizeLinear -> DequantizeLinear pairs around
the activations and int8 weights behind DequantizeLinear, the format ONNX Runtime's quantizer
also emits. ember's compiler dispatches these patterns to int8 kernels (ember.dnnl.matmul_q8);
any other runtime can run the same model, which makes it easy to check.

Activations: per-tensor uint8 -- zero point 0 when the calibrated range never goes below 0
(ReLU outputs), else asymmetric over [min, max] with the zero point where 0 falls (the range is
used in full, and uint8 x int8 is oneDNN's fast path: the BERT layer's MatMuls ran 3-4% faster
and closer to fp32 than with symmetric int8). Weights: symmetric int8 per output channel (column
of a MatMul's [K, N] weight), in 7 bits ([-63, 63]) on x86 CPUs without VNNI, where wider
weights saturate in the int8 instructions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..compiler.onnx_prep import sort_nodes
from ..errors import CompileError
from .calibrate import Calibration, TensorRange

MIN_OPSET = 13  # per-axis DequantizeLinear


def activation_params(r: TensorRange) -> tuple[float, np.ndarray]:
    """(scale, uint8 zero point array) for one calibrated activation range (always holding 0)."""
    if r.min >= 0:
        return (r.max / 255.0 if r.max > 0 else 1.0), np.array(0, np.uint8)
    high = max(r.max, 0.0)
    scale = (high - r.min) / 255.0
    return scale, np.array(int(np.clip(np.rint(-r.min / scale), 0, 255)), np.uint8)


def quantize_weights(w: np.ndarray, qmax: int, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights with one scale per index of `axis` (the output channel: 1, the
    column, for a MatMul's [K, N]; 0 for a Conv's [O, C, KH, KW]), rounding half to even like
    QuantizeLinear. Returns (int8 weights, float32 scales)."""
    others = tuple(d for d in range(w.ndim) if d != axis)
    absmax = np.abs(w).max(axis=others)
    scales = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scales.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scales


def quantize_static(
    model: onnx.ModelProto, calibration: Calibration, *, seven_bit_weights: bool | None = None
) -> onnx.ModelProto:
    """A copy of `model` whose MatMuls and Convs with constant float weights and a calibrated
    activation input are int8 QDQ (Convs only where that input is never negative). Other nodes
    are unchanged. `seven_bit_weights` defaults to what this
    host's CPU needs (see the module docstring)."""
    if seven_bit_weights is None:
        from ..compiler.dispatch import host_needs_seven_bit_weights

        seven_bit_weights = host_needs_seven_bit_weights()
    qmax = 63 if seven_bit_weights else 127
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise CompileError(
            f"int8 quantization needs ONNX opset >= {MIN_OPSET} (per-channel DequantizeLinear); "
            f"the model has opset {opset}: convert it with onnx.version_converter first"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _gemms_as_matmuls(out, lambda x: x in calibration.ranges)
    graph = out.graph
    weights = {t.name: t for t in graph.initializer}
    dequantized: dict[str, str] = {}  # activation -> its QDQ output, shared by every user
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    replaced: set[str] = set()
    for node in graph.node:
        axis = _weight_axis(node, weights, calibration)
        if axis is not None:
            x, w_name = node.input[0], node.input[1]
            if x not in dequantized:
                scale, zero = activation_params(calibration.ranges[x])
                stem = f"{x}__ember_q8"
                new_inits += [
                    numpy_helper.from_array(np.array(scale, np.float32), f"{stem}_scale"),
                    numpy_helper.from_array(zero, f"{stem}_zero"),
                ]
                new_nodes += [
                    helper.make_node(
                        "QuantizeLinear", [x, f"{stem}_scale", f"{stem}_zero"], [f"{stem}_q"]
                    ),
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{stem}_q", f"{stem}_scale", f"{stem}_zero"],
                        [f"{stem}_dq"],
                    ),
                ]
                dequantized[x] = f"{stem}_dq"
            w_inits, w_node = _int8_weight(weights[w_name], f"{w_name}__ember_q8", qmax, axis)
            new_inits += w_inits
            new_nodes.append(w_node)
            node.input[0] = dequantized[x]
            node.input[1] = w_node.output[0]
            replaced.add(w_name)
        new_nodes.append(node)
    still_used = {i for n in new_nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in still_used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    # QDQ nodes sit just before their first user, which may precede the activation's producer
    # in a graph listed out of order: sort to be sure.
    return sort_nodes(out)


def quantize_weight_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose MatMul and Conv weights (constant float, 2-d [K, N] and 4-d
    [O, C, KH, KW]) are symmetric 8-bit int8 per output channel behind DequantizeLinear, with
    float activations; Gemms become MatMul + Add first. Weights shared by several nodes are
    quantized once. ember's kernels take the int8 weights and dequantize them once, at prepack."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise CompileError(
            f"int8 quantization needs ONNX opset >= {MIN_OPSET} (per-channel DequantizeLinear); "
            f"the model has opset {opset}: convert it with onnx.version_converter first"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _gemms_as_matmuls(out, lambda _: True)
    graph = out.graph
    weights = {t.name: t for t in graph.initializer}
    dequantized: dict[str, str] = {}  # float weight -> its DequantizeLinear output
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in graph.node:
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        axis = None
        if w is not None and w.data_type == TensorProto.FLOAT:
            axis = {("MatMul", 2): 1, ("Conv", 4): 0}.get((node.op_type, len(w.dims)))
        if w is not None and axis is not None:
            if w.name not in dequantized:
                w_inits, w_node = _int8_weight(w, f"{w.name}__ember_w8", 127, axis)
                new_inits += w_inits
                new_nodes.append(w_node)
                dequantized[w.name] = w_node.output[0]
            node.input[1] = dequantized[w.name]
        new_nodes.append(node)
    still_used = {i for n in new_nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in dequantized or t.name in still_used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return sort_nodes(out)


def _int8_weight(
    weight: onnx.TensorProto, stem: str, qmax: int, axis: int
) -> tuple[list[onnx.TensorProto], onnx.NodeProto]:
    """A float weight as int8 + per-channel scales + zero points, and the DequantizeLinear node
    (output `<stem>_dq`) that turns them back into float."""
    q, scales = quantize_weights(numpy_helper.to_array(weight), qmax, axis)
    inits = [
        numpy_helper.from_array(q, f"{stem}_int8"),
        numpy_helper.from_array(scales, f"{stem}_scale"),
        numpy_helper.from_array(np.zeros(scales.shape, np.int8), f"{stem}_zero"),
    ]
    node = helper.make_node(
        "DequantizeLinear",
        [f"{stem}_int8", f"{stem}_scale", f"{stem}_zero"],
        [f"{stem}_dq"],
        axis=axis,
    )
    return inits, node


def _gemms_as_matmuls(model: onnx.ModelProto, eligible: Callable[[str], bool]) -> None:
    """Rewrites, in place, each Gemm whose input A is `eligible`, with a constant 2-d float B,
    alpha 1 and no transA into MatMul(A, B as [K, N]) followed by Add(beta * C) when it has a C,
    so that the MatMul path quantizes it (fully connected layers are exported as Gemm)."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = weights.get(node.input[1]) if node.op_type == "Gemm" else None
        if (
            b is None
            or not eligible(node.input[0])
            or b.data_type != TensorProto.FLOAT
            or len(b.dims) != 2
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("transA", 0) != 0
        ):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(b)
        if attrs.get("transB", 0):
            w = w.T
        stem = f"{node.name or node.output[0]}__ember_gemm"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), f"{stem}_w"))
        has_c = len(node.input) > 2 and node.input[2]
        product = f"{stem}_mm" if has_c else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{stem}_w"], [product]))
        if has_c:
            c_name = node.input[2]
            beta = float(attrs.get("beta", 1.0))
            if beta != 1.0:
                c = weights.get(c_name)
                if c is None:
                    nodes[-1] = node  # a runtime C scaled by beta: leave the Gemm alone
                    continue
                scaled = (numpy_helper.to_array(c) * beta).astype(np.float32)
                c_name = f"{stem}_c"
                graph.initializer.append(numpy_helper.from_array(scaled, c_name))
            nodes.append(helper.make_node("Add", [product, c_name], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)


def _weight_axis(
    node: onnx.NodeProto, weights: dict[str, onnx.TensorProto], calibration: Calibration
) -> int | None:
    """The output-channel axis of the node's weights when ember quantizes the node, else None:
    MatMuls with constant 2-d float weights (axis 1), and Convs with constant 4-d float weights
    (axis 0) whose input is never negative (the int8 conv kernel takes uint8 activations)."""
    if len(node.input) < 2 or node.input[0] not in calibration.ranges:
        return None
    w = weights.get(node.input[1])
    if w is None or w.data_type != TensorProto.FLOAT:
        return None
    if node.op_type == "MatMul" and len(w.dims) == 2:
        return 1
    if node.op_type == "Conv" and len(w.dims) == 4 and calibration.ranges[node.input[0]].min >= 0:
        return 0
    return None
