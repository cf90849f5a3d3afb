"""ONNX preparation before TVM import: find the batch axis, fix static shapes per batch bucket and
fold run-time shape subgraphs (Shape -> Gather -> Concat -> Reshape) into constants, which TVM's
importer rejects. Pure ONNX + numpy: no TVM here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from ..errors import CompileError

# Ops whose value is not a function of their inputs; never folded.
_NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                      "Multinomial", "Bernoulli"}  # fmt: skip
# A folded tensor may grow to this many bytes beyond its inputs (e.g. ConstantOfShape, Expand).
_MAX_FOLD_GROWTH_BYTES = 1 << 20
_BATCH_NAME = re.compile(r"^(batch|batch_size|n|b|bs|.*batch.*)$", re.IGNORECASE)

ShapeSpec = Sequence[int | None]


@dataclass(frozen=True)
class InputInfo:
    """A graph input as declared: dims are ints or symbol names (None when unnamed)."""

    name: str
    dtype: str
    dims: tuple[int | str | None, ...]


def graph_inputs(model: onnx.ModelProto) -> list[InputInfo]:
    """The real inputs of the graph (initializers listed as inputs are weights, not inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        ttype = vi.type.tensor_type
        dims: list[int | str | None] = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
        out.append(InputInfo(vi.name, dtype, tuple(dims)))
    return out


def resolve_input_shapes(
    inputs: Sequence[InputInfo],
    input_shapes: Mapping[str, ShapeSpec] | None,
    batch_axis: int | Mapping[str, int | None] | None,
    batched: bool,
) -> dict[str, tuple[tuple[int | None, ...], int | None]]:
    """Per input: its shape with None at the batch axis, and that axis (None when unbatched).

    Symbolic dims other than the batch axis must be given in `input_shapes`; the batch axis is the
    None in `input_shapes`, the override in `batch_axis`, or the symbol all inputs share.
    """
    input_shapes = dict(input_shapes or {})
    names = {i.name for i in inputs}
    for key in input_shapes:
        if key not in names:
            raise CompileError(
                f"input_shapes names unknown input '{key}'; inputs are: {sorted(names)}"
            )
    explicit_axis: dict[str, int | None] = {}
    if isinstance(batch_axis, int):
        explicit_axis = {i.name: batch_axis for i in inputs}
    elif batch_axis is not None:
        explicit_axis = dict(batch_axis)
    batch_symbol = _common_batch_symbol(inputs) if batched else None

    resolved: dict[str, tuple[tuple[int | None, ...], int | None]] = {}
    for info in inputs:
        given = input_shapes.get(info.name)
        if given is not None and len(given) != len(info.dims):
            raise CompileError(
                f"input_shapes['{info.name}'] has rank {len(given)} but the model declares "
                f"{_fmt(info.dims)} (rank {len(info.dims)})"
            )
        if info.name in explicit_axis:
            axis = explicit_axis[info.name]
        elif given is not None and any(d is None for d in given):
            axis = next(k for k, d in enumerate(given) if d is None)
        elif batch_symbol is not None and batch_symbol in info.dims:
            axis = info.dims.index(batch_symbol)
        else:
            axis = None
        if not batched:
            axis = None
        if axis is not None and not -len(info.dims) <= axis < len(info.dims):
            raise CompileError(f"batch axis {axis} is out of range for input '{info.name}'")
        if axis is not None:
            axis %= len(info.dims)
        shape: list[int | None] = []
        for k, dim in enumerate(info.dims):
            value = given[k] if given is not None else None
            if k == axis:
                shape.append(None)
            elif value is not None:
                if isinstance(dim, int) and dim != value:
                    raise CompileError(
                        f"input_shapes['{info.name}'][{k}] = {value} contradicts the model's "
                        f"static dimension {dim}"
                    )
                shape.append(int(value))
            elif isinstance(dim, int):
                shape.append(dim)
            else:
                hint = tuple(None if j == axis else "?" for j in range(len(info.dims)))
                raise CompileError(
                    f"input '{info.name}' dimension {k} ('{dim or '?'}') is symbolic and not the "
                    f"batch axis; give its size, e.g. input_shapes={{'{info.name}': {hint}}}"
                )
        resolved[info.name] = (tuple(shape), axis)
    if batched and all(axis is None for _, axis in resolved.values()):
        raise CompileError(
            "no input has a batch axis: the model declares static shapes "
            f"({', '.join(f'{i.name}{_fmt(i.dims)}' for i in inputs)}); pass batch_sizes=None to "
            "compile them as declared, or name the axis with batch_axis= or input_shapes"
        )
    return resolved


def _common_batch_symbol(inputs: Sequence[InputInfo]) -> str | None:
    symbolic = [[d for d in i.dims if isinstance(d, str)] for i in inputs]
    with_symbols = [s for s in symbolic if s]
    if not with_symbols:
        return None
    common = set(with_symbols[0]).intersection(*map(set, with_symbols[1:]))
    if not common:
        return None
    named = [s for s in common if _BATCH_NAME.match(s)]
    if len(named) == 1:
        return named[0]
    # Otherwise the shared symbol that appears first in the first input.
    return next(s for s in with_symbols[0] if s in common)


def _fmt(dims: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def fix_input_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]
) -> onnx.ModelProto:
    """A copy of `model` whose inputs have the given static shapes, outputs' dims cleared."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for value in shapes[vi.name]:
                dims.add().dim_value = int(value)
    # Output and intermediate dims are re-derived by shape inference for these shapes.
    for vi in fixed.graph.output:
        for d in vi.type.tensor_type.shape.dim:
            d.Clear()
    del fixed.graph.value_info[:]
    return fixed


def _static_shape(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    ttype = vi.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    dims = []
    for d in ttype.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and others
        raise CompileError(f"ONNX shape inference failed: {exc}") from exc


def _evaluate_node(
    node: onnx.NodeProto,
    values: Sequence[np.ndarray | None],
    opset: Sequence[onnx.OperatorSetIdProto],
) -> list[np.ndarray]:
    names = [f"in{k}" if v is not None else "" for k, v in enumerate(values)]
    single = onnx.NodeProto()
    single.CopyFrom(node)
    del single.input[:]
    single.input.extend(names)
    inputs = [
        onnx.helper.make_tensor_value_info(
            n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape
        )
        for n, v in zip(names, values, strict=True)
        if v is not None
    ]
    outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = onnx.helper.make_graph([single], "fold", inputs, outputs)
    tiny = onnx.helper.make_model(graph, opset_imports=list(opset))
    feeds = {n: v for n, v in zip(names, values, strict=True) if v is not None}
    return [np.asarray(r) for r in ReferenceEvaluator(tiny).run(None, feeds)]


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold every node computable at compile time (constant inputs, or Shape/Size of a statically
    shaped tensor) into initializers; run shape inference again on the result."""
    model = _infer(model)
    graph = model.graph
    known: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    static: dict[str, tuple[int, ...]] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape = _static_shape(vi)
        if shape is not None:
            static[vi.name] = shape
    kept: list[onnx.NodeProto] = []
    folded_any = False
    for node in graph.node:
        outputs = _fold_node(node, known, static, model.opset_import)
        if outputs is None:
            kept.append(node)
            continue
        folded_any = True
        for name, value in zip(node.output, outputs, strict=False):
            if name:
                known[name] = value
    if not folded_any:
        return model
    needed = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    for n in kept:  # inputs used inside subgraphs (If/Loop bodies) count too
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                needed |= {i for sub in attr.g.node for i in sub.input}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(
        numpy_helper.from_array(np.ascontiguousarray(v), name)
        for name, v in known.items()
        if name in needed
    )
    for out in graph.output:
        if out.name in known and out.name not in {n for k in kept for n in k.output}:
            # A graph output that folded away is re-emitted by an Identity of its constant.
            const_name = out.name + "__ember_const"
            graph.initializer.append(numpy_helper.from_array(known[out.name], const_name))
            graph.node.append(onnx.helper.make_node("Identity", [const_name], [out.name]))
    del graph.value_info[:]
    return _infer(model)


def _fold_node(
    node: onnx.NodeProto,
    known: Mapping[str, np.ndarray],
    static: Mapping[str, tuple[int, ...]],
    opset: Sequence[onnx.OperatorSetIdProto],
) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NON_DETERMINISTIC:
        return None
    if node.op_type == "DequantizeLinear":
        return None  # int8 weights stay int8: the compiler dispatches QDQ ops to int8 kernels
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    ):
        return None
    if node.op_type == "Constant":
        return _evaluate_node(node, [], opset)
    if node.op_type in ("Shape", "Size") and node.input[0] in static:
        shape = static[node.input[0]]
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape)), dtype=np.int64)]
        attrs = {a.name: a.i for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return [np.array(shape[start:end], dtype=np.int64)]
    if not node.input or any(i and i not in known for i in node.input):
        return None
    values = [known[i] if i else None for i in node.input]
    results = _evaluate_node(node, values, opset)
    input_bytes = sum(v.nbytes for v in values if v is not None)
    if sum(r.nbytes for r in results) > input_bytes + _MAX_FOLD_GROWTH_BYTES:
        return None
    return results


def prepare(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """Fix the input shapes and fold shape subgraphs until nothing more folds."""
    prepared = fix_input_shapes(model, shapes)
    for _ in range(4):  # folding can expose new static shapes; a few rounds reach a fixed point
        before = len(prepared.graph.node)
        prepared = fold_constants(prepared)
        if len(prepared.graph.node) == before:
            break
    return prepared


def output_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    """Static output shapes after shape inference (None where inference could not tell)."""
    return {o.name: _static_shape(o) for o in model.graph.output}


def opset_version(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return 1


_QMIN: dict[int, int] = {onnx.TensorProto.UINT8: 0, onnx.TensorProto.INT8: -128}
_Use = tuple[onnx.NodeProto, int]  # a node and which of its inputs


def _float_reads(
    uses: list[_Use], kernel_reads: Callable[[onnx.NodeProto, int], bool]
) -> list[_Use]:
    return [(node, index) for node, index in uses if not kernel_reads(node, index)]


def float_requantizations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Computes in float the QuantizeLinear -> DequantizeLinear pairs that no int8 kernel reads.

    Quantizers such as ONNX Runtime's put a pair on every op's output, also where the next op is
    float (a residual Add, MaxPool, the model's output) and in place of the ReLUs they remove (a
    uint8 pair with zero point 0 clamps at 0). ember's int8 kernels quantize their own inputs, so
    only pairs feeding a Conv/MatMul/Gemm with int8 weights are kept. Every other use reads the
    float value: through a Relu where the pair's range starts at 0 (zero point = qmin) and its
    input can go below 0, directly otherwise. Rounding to the pair's grid and saturation at its
    calibrated range are therefore not reproduced there (outputs differ from a runtime that
    rounds by up to half a step).
    Returns the model (a copy when anything changed) and how many pairs changed.
    """
    original, model = model, _copy(model)
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[_Use]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    outputs = {o.name for o in graph.output}

    def int8_weight(name: str) -> bool:
        dq = producer.get(name)
        return (
            dq is not None
            and dq.op_type == "DequantizeLinear"
            and dq.input[0] in constants
            and constants[dq.input[0]].dtype == np.int8
        )

    def kernel_reads(node: onnx.NodeProto, index: int) -> bool:
        return (
            node.op_type in ("Conv", "MatMul", "Gemm")
            and index == 0
            and len(node.input) > 1
            and int8_weight(node.input[1])
        )

    def per_tensor(node: onnx.NodeProto) -> tuple[float, int, int] | None:
        if len(node.input) < 3 or node.input[1] not in constants or node.input[2] not in constants:
            return None
        scale, zero = constants[node.input[1]], constants[node.input[2]]
        qmin = _QMIN.get(int(numpy_helper.from_array(zero).data_type))
        if scale.size != 1 or zero.size != 1 or qmin is None:
            return None
        return float(scale.reshape(())), int(zero.reshape(())), qmin

    new_nodes: list[onnx.NodeProto] = []
    removed: set[str] = set()  # outputs of the pairs' nodes that go
    changed = 0
    for q in graph.node:
        q_range = per_tensor(q) if q.op_type == "QuantizeLinear" else None
        uses = consumers.get(q.output[0], [])
        if q_range is None or q.output[0] in outputs or not uses:
            continue
        if any(u.op_type != "DequantizeLinear" or per_tensor(u) != q_range for u, _ in uses):
            continue
        float_uses = {
            dq.output[0]: _float_reads(consumers.get(dq.output[0], []), kernel_reads)
            for dq, _ in uses
        }
        if not any(float_uses.values()) and not any(dq.output[0] in outputs for dq, _ in uses):
            continue  # only int8 kernels read this pair
        source = q.input[0]
        # zero point = qmin: the range starts at 0, a ReLU; not where x never drops below 0 by
        # more than the half step of rounding dropped anyway (GELU's 1 + erf(.): a Relu there
        # would only hide the pattern from the fusions)
        if (
            q_range[1] == q_range[2]
            and _lower_bound(q.input[0], producer, constants) < -q_range[0] / 2
        ):
            source = f"{q.output[0]}/relu"  # the kernels quantize relu(x) exactly as x
            new_nodes.append(onnx.helper.make_node("Relu", [q.input[0]], [source]))
            q.input[0] = source
        for dq, _ in uses:
            name = dq.output[0]
            read_by_kernels = len(float_uses[name]) < len(consumers.get(name, []))
            if name in outputs and read_by_kernels:
                continue  # a graph output that kernels also read: left as it is
            for node, index in float_uses[name]:
                node.input[index] = source
            if not read_by_kernels:
                removed.add(name)
                if name in outputs:
                    new_nodes.append(onnx.helper.make_node("Identity", [source], [name]))
            if float_uses[name] or not read_by_kernels:
                changed += 1
        if all(dq.output[0] in removed for dq, _ in uses):
            removed.add(q.output[0])
    if not changed:
        return original, 0
    kept = [n for n in graph.node if not (n.output and n.output[0] in removed)]
    del graph.node[:]
    graph.node.extend(kept + new_nodes)
    return sort_nodes(model), changed


_BOUNDED_BELOW = {"Sigmoid": 0.0, "Softmax": 0.0, "Abs": 0.0, "Exp": 0.0, "Sqrt": 0.0,
                  "Softplus": 0.0, "Erf": -1.0, "Tanh": -1.0}  # fmt: skip


def _lower_bound(
    name: str,
    producer: Mapping[str, onnx.NodeProto],
    constants: Mapping[str, np.ndarray],
    depth: int = 4,
) -> float:
    """A lower bound of tensor `name` from its producers (-inf when unknown): enough to see that
    GELU's 1 + erf(x) is never negative."""
    if name in constants:
        return float(constants[name].min(initial=np.inf))
    node = producer.get(name)
    if node is None or depth == 0:
        return -np.inf
    if node.op_type in _BOUNDED_BELOW:
        return _BOUNDED_BELOW[node.op_type]
    if node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return float(numpy_helper.to_array(value).min(initial=np.inf)) if value else -np.inf
    below = [_lower_bound(i, producer, constants, depth - 1) for i in node.input[:1]]
    if node.op_type == "Relu":
        return max(0.0, below[0])
    if node.op_type == "Add" and len(node.input) == 2:
        return below[0] + _lower_bound(node.input[1], producer, constants, depth - 1)
    quantized = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
    if (
        quantized is not None
        and quantized.op_type == "QuantizeLinear"
        and node.input[1] in constants
    ):
        scale = float(np.max(constants[node.input[1]]))  # a pair rounds x by half a step at most
        return _lower_bound(quantized.input[0], producer, constants, depth - 1) - scale / 2
    return -np.inf


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def sort_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Orders the graph's nodes (in place) so that every input is produced before it is used."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            raise CompileError("the quantized graph has a cycle or a missing input")
        for n in progress:
            ordered.append(n)
            ready.update(n.output)
        done = {id(n) for n in progress}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def fold_constant_dequantizations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Folds DequantizeLinear of constants into float initializers, except int8 weights read by a
    Conv/MatMul/Gemm (the int8 kernels take those as they are).

    Quantizers store biases (and other constants) quantized too; as float constants they fuse into
    the kernels' epilogues, which need constant biases before TVM's own constant folding runs.
    Returns the model (a copy when anything was folded) and how many were folded.
    """
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_reads = {
        node.input[1]
        for node in model.graph.node
        if node.op_type in ("Conv", "MatMul", "Gemm") and len(node.input) > 1
    }
    folded: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] in weight_reads:
            continue
        if not all(name in constants for name in node.input if name):
            continue
        q = constants[node.input[0]].astype(np.float64)
        scale = constants[node.input[1]].astype(np.float64)
        zero = (
            constants[node.input[2]].astype(np.float64)
            if len(node.input) > 2 and node.input[2]
            else 0.0
        )
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and scale.size > 1:  # per axis: broadcast along `axis`
            shape = [1] * q.ndim
            shape[axis % q.ndim] = scale.size
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
        folded[node.output[0]] = ((q - zero) * scale).astype(np.float32)
    if not folded:
        return model, 0
    out = _copy(model)
    kept = [n for n in out.graph.node if not (n.output and n.output[0] in folded)]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items())
    return out, len(folded)
