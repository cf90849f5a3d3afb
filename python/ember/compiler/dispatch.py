"""Library dispatch: rewrite conv2d and matmul (with their bias, residual add and activation) into
`R.call_dps_packed` calls of oneDNN kernels registered by ember's C++ core (ember.dnnl.*).

Convolutions are first converted to a layout oneDNN's direct kernels run well on, and constants
folded so that biases and weights are plain constants the kernels can prepack once. Two activation
layouts are used, one per model: NHWC, where brgconv is fastest for dense KxK convs (ResNet), and
NCHW8c (oneDNN's nChw8c), where its depthwise, 1x1 and few-channel kernels are 1.1-2x faster than
in NHWC (MobileNet); see `choose_conv_layout`. NHWC 3x3 stride-1 convs with enough channels and
tiles go to ember.dnnl.conv2d_wino, a Winograd F(2x2,3x3) kernel, or for static int8 to its
integer form ember.dnnl.conv2d_wino_q8 (`_winograd_applies`); such convs vote for NHWC (the digits
CNN at batch 32). Softmax and max-pool run on oneDNN too, and a flatten after NHWC convs moves its
transpose into the next matmuls' weights (`_flatten_into_weights`).
Argument lists here must match cpp/src/kernels/dnnl_kernels.cc (and winograd.cc).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Activation codes shared with cpp/include/ember/kernels/dnnl_kernels.h.
ACT_NONE, ACT_RELU, ACT_GELU_ERF, ACT_GELU_TANH, ACT_CLIP, ACT_SIGMOID, ACT_TANH = range(7)
_FLOAT_MAX = 3.4e38
CONV_LAYOUTS = ("auto", "NHWC", "NCHW8c")
_BLOCK = 8  # channel block of NCHW8c, as in cpp/src/kernels/dnnl_kernels.cc


@dataclass
class _Fusion:
    """One library call: the anchor op plus the chain of single-use consumers folded into it."""

    kind: str  # "conv2d" | "matmul" | "matmul_q8"
    anchor: Any  # the anchor's Call
    members: list[Any] = field(default_factory=list)  # chain vars, anchor first, output last
    bias: np.ndarray | None = None
    residual: Any = None
    activation: tuple[int, float, float] = (ACT_NONE, 0.0, 0.0)
    q8: _Int8Operands | None = None  # matmul_q8 only
    consumed: list[Any] = field(default_factory=list)  # QDQ vars only this call used
    conv_q8: _Int8Conv | None = None  # a conv2d whose weights came from QDQ int8 weights
    w8: _WeightOnly | None = None  # a float conv2d/matmul whose constant weights are int8 only
    winograd: bool = False  # a conv2d run by ember.dnnl.conv2d_wino (see _winograd_applies)


@dataclass
class _Int8Conv:
    """An int8 conv found in QDQ form before layout conversion: its OHWI int8 weights, their
    per-output-channel scales and the (uint8) activation scale. The conv itself goes on as a float
    conv2d of the exactly dequantized weights, found again by their content (weight id) once
    layout conversion and folding have turned them into OHWI constants."""

    weights: np.ndarray  # int8 OHWI
    scales: np.ndarray  # float32 [O]
    a_scale: float


@dataclass
class _WeightOnly:
    """Weight-only int8: a constant weight that reached the graph as dequantize(int8, scales) with
    float activations. The float op goes on with the exactly dequantized weights, found again by
    their content (weight id); the kernel gets the int8 weights in the same layout and their
    per-output-channel scales, and dequantizes them once, when it prepacks them."""

    weights: np.ndarray  # int8, in the layout the kernel takes: [K, N] or OHWI
    scales: np.ndarray  # float32, one per output channel (N or O)
    # The id of the dequantized weights, which the kernels prepack by: it covers the scales too
    # (W and 2W have the same int8 weights).
    weight_id: int


@dataclass
class _Int8Operands:
    """What ember.dnnl.matmul_q8 takes from a quantize -> dequantize -> matmul <- dequantize(int8
    weights) pattern (ONNX QDQ)."""

    x: Any  # the float activation before QuantizeLinear
    a_scale: float
    a_unsigned: bool  # uint8 activation rather than int8
    weights: np.ndarray  # int8 [K, N]
    scales: np.ndarray  # float32 [N]
    a_zero: int = 0  # the activation's zero point (ONNX Runtime's uint8 ones are often ~128)


def _op(call: Any, name: str) -> bool:
    import tvm
    from tvm import relax

    return isinstance(call, relax.Call) and call.op.same_as(tvm.ir.Op.get(name))


def _const(expr: Any) -> np.ndarray | None:
    import tvm

    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def _tensor_type(expr: Any) -> tuple[tuple[int, ...], str] | None:
    from tvm import relax

    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values), str(ty.dtype)
    except (TypeError, ValueError):  # symbolic dims
        return None


def _weight_id(array: np.ndarray) -> int:
    digest = hashlib.sha256(array.tobytes() + str(array.shape).encode()).digest()
    return int.from_bytes(digest[:8], "little", signed=True)


class _Planner:
    """Finds fusions in one Relax function's dataflow blocks: float conv2d/matmul chains, or with
    `qdq`, int8 matmuls written as ONNX QDQ (before constant folding turns the int8 weights back
    into float)."""

    def __init__(
        self,
        func: Any,
        qdq: bool = False,
        int8_convs: dict[int, _Int8Conv] | None = None,
        weight_only: dict[int, _WeightOnly] | None = None,
    ) -> None:
        from tvm import relax

        self.qdq = qdq
        self.int8_convs = int8_convs if int8_convs is not None else {}
        self.weight_only = weight_only if weight_only is not None else {}
        self.values: dict[Any, Any] = {}
        self.users: dict[Any, list[Any]] = {}
        self.taken: set[Any] = set()  # vars already inside a fusion
        for block in func.body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    continue
                self.values[binding.var] = binding.value
                for used in self._vars_in(binding.value):
                    self.users.setdefault(used, []).append(binding.var)
        for used in self._vars_in(func.body.body):
            self.users.setdefault(used, []).append(None)  # None: the function's result

    @staticmethod
    def _vars_in(expr: Any) -> list[Any]:
        from tvm import relax

        if isinstance(expr, relax.Var):
            return [expr]
        if isinstance(expr, relax.Call):
            return [a for arg in expr.args for a in _Planner._vars_in(arg)]
        if isinstance(expr, relax.Tuple):
            return [a for f in expr.fields for a in _Planner._vars_in(f)]
        if isinstance(expr, relax.TupleGetItem):
            return _Planner._vars_in(expr.tuple_value)
        return []

    def _only_user(self, var: Any) -> Any:
        """The single binding that uses `var`, if no other fusion has claimed it."""
        users = self.users.get(var, [])
        if len(users) != 1 or users[0] is None or users[0] in self.taken:
            return None
        return users[0]

    def plan(self) -> list[_Fusion]:
        fusions: list[_Fusion] = []
        taken = self.taken = set()
        for var, value in self.values.items():
            if var in taken:
                continue
            fusion = self._anchor(var, value)
            if fusion is None:
                continue
            self._extend(fusion)
            taken.update(fusion.members)
            taken.update(fusion.consumed)
            fusions.append(fusion)
        return fusions

    def _anchor(self, var: Any, value: Any) -> _Fusion | None:
        if self.qdq:
            return self._qdq_matmul(var, value)
        if _op(value, "relax.nn.conv2d"):
            attrs = value.attrs
            x_type, w = _tensor_type(value.args[0]), _const(value.args[1])
            if (
                w is None
                or w.dtype != np.float32
                or x_type is None
                or x_type[1] != "float32"
                or str(attrs.data_layout) not in ("NHWC", "NCHW8c")
                or str(attrs.kernel_layout) != "OHWI"
                or str(attrs.out_layout) != str(attrs.data_layout)
                or str(attrs.out_dtype) not in ("", "None", "float32", "void")
                or len(attrs.padding) != 4
            ):
                return None
            wid = _weight_id(w)
            return _Fusion(
                "conv2d",
                value,
                [var],
                conv_q8=self.int8_convs.get(wid),
                w8=self.weight_only.get(wid),
            )
        if _op(value, "relax.matmul"):
            a_type, b_type = _tensor_type(value.args[0]), _tensor_type(value.args[1])
            out_type = _tensor_type(var)
            if (
                a_type is None
                or b_type is None
                or out_type is None
                or {a_type[1], b_type[1], out_type[1]} != {"float32"}
                or len(a_type[0]) < 2
                or len(b_type[0]) < 2
            ):
                return None
            b = _const(value.args[1])
            w8 = self.weight_only.get(_weight_id(b)) if b is not None and b.ndim == 2 else None
            return _Fusion("matmul", value, [var], w8=w8)
        return None

    def _qdq_matmul(self, var: Any, value: Any) -> _Fusion | None:
        """matmul(dequantize(quantize(x, s, z), s, z), dequantize(W int8 [K, N], s_w[N], 0))
        with a per-tensor activation scale and zero point (uint8 or int8) and per-column or
        per-tensor weight scales."""
        from tvm import relax

        if not _op(value, "relax.matmul"):
            return None
        a, b = value.args
        if not (isinstance(a, relax.Var) and isinstance(b, relax.Var)):
            return None
        dq_a, dq_w = self.values.get(a), self.values.get(b)
        if dq_a is None or dq_w is None:
            return None
        if not (_op(dq_a, "relax.dequantize") and _op(dq_w, "relax.dequantize")):
            return None
        q_var = dq_a.args[0]
        q_a = self.values.get(q_var) if isinstance(q_var, relax.Var) else None
        if q_a is None or not _op(q_a, "relax.quantize"):
            return None
        w, w_scale, w_zero = (_const(x) for x in dq_w.args)
        if w is None or w_scale is None or w_zero is None or w.dtype != np.int8 or w.ndim != 2:
            return None
        n = w.shape[1]
        if np.any(w_zero != 0) or w_scale.size not in (1, n):
            return None
        if w_scale.size == n and int(dq_w.attrs.axis) not in (1, -1):
            return None
        scalars = [_const(x) for x in (*dq_a.args[1:], *q_a.args[1:])]
        if any(c is None or c.size != 1 for c in scalars):
            return None
        a_scale, a_zero, q_scale, q_zero = (float(np.asarray(c).reshape(())) for c in scalars)
        zero_type = str(np.asarray(scalars[3]).dtype)
        x_type, out_type = _tensor_type(q_a.args[0]), _tensor_type(var)
        if (
            a_zero != q_zero
            or a_scale != q_scale
            or not a_scale > 0
            or zero_type not in ("uint8", "int8")
            or x_type is None
            or x_type[1] != "float32"
            or out_type is None
            or out_type[1] != "float32"
            or len(x_type[0]) < 2
            or (_NEEDS_SEVEN_BIT_WEIGHTS() and _widest(w) > SEVEN_BIT_MAX)
        ):
            return None
        operands = _Int8Operands(
            q_a.args[0],
            a_scale,
            zero_type == "uint8",
            np.ascontiguousarray(w),
            np.broadcast_to(w_scale.astype(np.float32).reshape(-1), (n,)).copy(),
            int(a_zero),
        )
        consumed = [v for v in (q_var, a, b) if len(self.users.get(v, [])) == 1]
        return _Fusion("matmul_q8", value, [var], q8=operands, consumed=consumed)

    def _extend(self, f: _Fusion) -> None:
        out_type = _tensor_type(f.members[-1])
        assert out_type is not None
        shape = out_type[0]
        blocked = f.kind == "conv2d" and _is_blocked(f.anchor)
        # Channel axes: the last one, or (C/8, ..., 8) in NCHW8c, whose row-major order is C's.
        channel_shape = (shape[1], 1, 1, shape[4]) if blocked else (shape[-1],)
        channels = math.prod(channel_shape)
        # Bias: add(y, const) broadcasting only along the channel axes.
        user = self._only_user(f.members[-1])
        if user is not None and _op(self.values[user], "relax.add"):
            a, b = self.values[user].args
            const = _const(b) if a.same_as(f.members[-1]) else _const(a)
            if (
                const is not None
                and const.dtype == np.float32
                and const.size == channels
                and const.ndim <= len(shape)
                and (
                    const.ndim == 0
                    or const.shape[-len(channel_shape) :] == channel_shape
                    or (not blocked and const.shape[-1] == channels)
                )
            ):
                f.bias = const.reshape(channels).copy()
                f.members.append(user)
        # Residual: add(y, other) with `other` of exactly the output's shape.
        user = self._only_user(f.members[-1])
        if user is not None and _op(self.values[user], "relax.add"):
            a, b = self.values[user].args
            other = b if a.same_as(f.members[-1]) else a
            if _const(other) is None and _tensor_type(other) == out_type:
                f.residual = other
                f.members.append(user)
        self._activation(f)

    def _activation(self, f: _Fusion) -> None:
        tail = f.members[-1]
        user = self._only_user(tail)
        if user is not None:
            value = self.values[user]
            if _op(value, "relax.nn.relu"):
                f.activation = (ACT_RELU, 0.0, 0.0)
                f.members.append(user)
                return
            if _op(value, "relax.sigmoid") or _op(value, "relax.tanh"):
                f.activation = (ACT_SIGMOID if _op(value, "relax.sigmoid") else ACT_TANH, 0, 0)
                f.members.append(user)
                return
            if _op(value, "relax.maximum"):
                lo = self._scalar_operand(value, tail)
                if lo is not None:
                    hi, chain = _FLOAT_MAX, [user]
                    second = self._only_user(user)
                    if second is not None and _op(self.values[second], "relax.minimum"):
                        upper = self._scalar_operand(self.values[second], user)
                        if upper is not None:
                            hi, chain = upper, [user, second]
                    f.activation = (ACT_CLIP, lo, hi)
                    f.members.extend(chain)
                    return
        gelu = self._gelu_chain(tail)
        if gelu is not None:
            f.activation = (ACT_GELU_ERF, 0.0, 0.0)
            f.members.extend(gelu)

    def _scalar_operand(self, call: Any, var: Any) -> float | None:
        a, b = call.args
        other = b if a.same_as(var) else a if b.same_as(var) else None
        const = _const(other) if other is not None else None
        if const is None or const.size != 1:
            return None
        return float(const.reshape(()))

    def _gelu_chain(self, t: Any) -> list[Any] | None:
        """t * 0.5 * (1 + erf(t / sqrt(2))) in the orders exporters emit; returns its vars."""
        users = self.users.get(t, [])
        if len(users) != 2 or None in users or any(u in self.taken for u in users):
            return None
        for first in users:
            value = self.values[first]
            c = (
                self._scalar_operand(value, t)
                if (_op(value, "relax.divide") or _op(value, "relax.multiply"))
                else None
            )
            inv_sqrt2 = 1.0 / math.sqrt(2.0)
            if c is None or not (
                (_op(value, "relax.divide") and abs(c - math.sqrt(2.0)) < 1e-4)
                or (_op(value, "relax.multiply") and abs(c - inv_sqrt2) < 1e-4)
            ):
                continue
            erf = self._only_user(first)
            if erf is None or not _op(self.values[erf], "relax.erf"):
                continue
            plus = self._only_user(erf)
            if plus is None or not _op(self.values[plus], "relax.add"):
                continue
            if self._scalar_operand(self.values[plus], erf) != 1.0:
                continue
            times = self._only_user(plus)
            other = next(u for u in users if u is not first)
            if (
                times is None
                or not times.same_as(other)
                or not _op(self.values[times], "relax.multiply")
            ):
                continue
            half = self._only_user(times)
            if half is None or not _op(self.values[half], "relax.multiply"):
                continue
            if self._scalar_operand(self.values[half], times) != 0.5:
                continue
            return [first, erf, plus, times, half]
        return None


def _prim(value: float | int) -> Any:
    import tvm
    from tvm import relax

    if isinstance(value, int):
        return relax.prim_value(tvm.tirx.IntImm("int64", value))
    return relax.prim_value(tvm.tirx.FloatImm("float64", float(value)))


def _library_call(f: _Fusion, out_var: Any) -> Any:
    from tvm import relax

    if f.q8 is not None:
        return _int8_matmul_call(f, f.q8, out_var)
    x = f.anchor.args[0]
    bias = relax.const(f.bias) if f.bias is not None else x
    residual = f.residual if f.residual is not None else x
    act, alpha, beta = f.activation
    if f.kind == "conv2d" and f.conv_q8 is not None:
        return _int8_conv_call(f, f.conv_q8, out_var)
    if f.w8 is not None:
        return _weight_only_call(f, f.w8, out_var)
    if f.kind == "conv2d":
        w = _const(f.anchor.args[1])
        assert w is not None
        ints = _conv_ints(f, _weight_id(w))
        args = [x, f.anchor.args[1], bias, residual, *map(_prim, ints), _prim(alpha), _prim(beta)]
        name = "ember.dnnl.conv2d_wino" if f.winograd else "ember.dnnl.conv2d"
        return relax.call_dps_packed(name, args, out_ty=out_var.ty)
    b = f.anchor.args[1]
    b_const = _const(b)
    ints = [
        int(b_const is not None),
        int(f.bias is not None),
        int(f.residual is not None),
        act,
        _weight_id(b_const) if b_const is not None else 0,
    ]
    args = [x, b, bias, residual, *map(_prim, ints), _prim(alpha), _prim(beta)]
    return relax.call_dps_packed("ember.dnnl.matmul", args, out_ty=out_var.ty)


def _int8_matmul_call(f: _Fusion, q: _Int8Operands, out_var: Any) -> Any:
    from tvm import relax

    bias = relax.const(f.bias) if f.bias is not None else q.x
    residual = f.residual if f.residual is not None else q.x
    act, alpha, beta = f.activation
    ints = [
        int(q.a_unsigned),
        int(f.bias is not None),
        int(f.residual is not None),
        act,
        _weight_id(q.weights),
    ]
    args = [
        q.x,
        relax.const(q.weights),
        relax.const(q.scales),
        bias,
        residual,
        _prim(q.a_scale),
        *map(_prim, ints),
        _prim(alpha),
        _prim(beta),
        _prim(q.a_zero),
    ]
    return relax.call_dps_packed("ember.dnnl.matmul_q8", args, out_ty=out_var.ty)


def _weight_only_call(f: _Fusion, w8: _WeightOnly, out_var: Any) -> Any:
    """ember.dnnl.conv2d_w8 / conv2d_wino_w8 / matmul_w8: the float call's arguments, with the
    int8 weights and their scales in place of the float weights, prepacked under w8.weight_id."""
    from tvm import relax

    x = f.anchor.args[0]
    bias = relax.const(f.bias) if f.bias is not None else x
    residual = f.residual if f.residual is not None else x
    act, alpha, beta = f.activation
    if f.kind == "conv2d":
        ints = _conv_ints(f, w8.weight_id)
        name = "ember.dnnl.conv2d_wino_w8" if f.winograd else "ember.dnnl.conv2d_w8"
    else:
        ints = [1, int(f.bias is not None), int(f.residual is not None), act, w8.weight_id]
        name = "ember.dnnl.matmul_w8"
    weights = [relax.const(w8.weights), relax.const(w8.scales)]
    args = [x, *weights, bias, residual, *map(_prim, ints), _prim(alpha), _prim(beta)]
    return relax.call_dps_packed(name, args, out_ty=out_var.ty)


def _conv_ints(f: _Fusion, weight_id: int) -> list[int]:
    """The integer arguments every conv kernel takes, in order: strides, padding, dilation,
    groups, has_bias, has_residual, activation, weight id."""
    attrs = f.anchor.attrs
    return [
        *(int(s) for s in attrs.strides),
        *(int(p) for p in attrs.padding),
        *(int(d) for d in attrs.dilation),
        int(attrs.groups),
        int(f.bias is not None),
        int(f.residual is not None),
        f.activation[0],
        weight_id,
    ]


def _int8_conv_call(f: _Fusion, q: _Int8Conv, out_var: Any) -> Any:
    from tvm import relax

    x = f.anchor.args[0]
    bias = relax.const(f.bias) if f.bias is not None else x
    residual = f.residual if f.residual is not None else x
    _, alpha, beta = f.activation
    ints = [*_conv_ints(f, _weight_id(q.weights)), 1]  # a_unsigned: uint8 activations only
    args = [
        x,
        relax.const(q.weights),
        relax.const(q.scales),
        bias,
        residual,
        *map(_prim, ints),
        _prim(q.a_scale),
        _prim(alpha),
        _prim(beta),
    ]
    name = "ember.dnnl.conv2d_wino_q8" if f.winograd else "ember.dnnl.conv2d_q8"
    return relax.call_dps_packed(name, args, out_ty=out_var.ty)


def _unwrap_qdq_convs(func: Any, int8_convs: dict[int, _Int8Conv]) -> Any:
    """conv2d(dequantize(quantize(x, s, 0 uint8)), dequantize(W int8 OIHW, s_w[O], 0, axis 0))
    becomes conv2d(x, W * s_w) -- the same math in float -- and the int8 form is remembered in
    `int8_convs` under the weight id the dequantized weights will have in OHWI. The conv then goes
    through layout conversion like any other and `_library_call` emits ember.dnnl.conv2d_q8 for
    it. Convs of signed activations are left as they are (their QDQ is folded into float)."""
    from tvm import relax

    planner = _Planner(func)
    replacements: dict[Any, Any] = {}
    for var, value in planner.values.items():
        if not _op(value, "relax.nn.conv2d") or str(value.attrs.data_layout) != "NCHW":
            continue
        if str(value.attrs.kernel_layout) != "OIHW":
            continue
        a, b = value.args
        dq_a, dq_w = planner.values.get(a), planner.values.get(b)
        if dq_a is None or dq_w is None:
            continue
        if not (_op(dq_a, "relax.dequantize") and _op(dq_w, "relax.dequantize")):
            continue
        q_a = planner.values.get(dq_a.args[0])
        if q_a is None or not _op(q_a, "relax.quantize"):
            continue
        w, w_scale, w_zero = (_const(x) for x in dq_w.args)
        scalars = [_const(x) for x in (*dq_a.args[1:], *q_a.args[1:])]
        if w is None or w_scale is None or w_zero is None or w.dtype != np.int8 or w.ndim != 4:
            continue
        if any(c is None or c.size != 1 for c in scalars) or np.any(w_zero != 0):
            continue
        a_scale, a_zero, q_scale, q_zero = (float(np.asarray(c).reshape(())) for c in scalars)
        out_channels = w.shape[0]
        if (
            str(np.asarray(scalars[3]).dtype) != "uint8"
            or a_zero != 0
            or q_zero != 0
            or a_scale != q_scale
            or not a_scale > 0
            or w_scale.size not in (1, out_channels)
            or (w_scale.size == out_channels and int(dq_w.attrs.axis) != 0)
            or (_NEEDS_SEVEN_BIT_WEIGHTS() and _widest(w) > SEVEN_BIT_MAX)
        ):
            continue
        scales = np.broadcast_to(w_scale.astype(np.float32).reshape(-1), (out_channels,)).copy()
        dequantized = (w.astype(np.float32) * scales[:, None, None, None]).astype(np.float32)
        ohwi = np.ascontiguousarray(dequantized.transpose(0, 2, 3, 1))
        int8_convs[_weight_id(ohwi)] = _Int8Conv(
            np.ascontiguousarray(w.transpose(0, 2, 3, 1)), scales, a_scale
        )
        replacements[var] = relax.Call(
            value.op, [q_a.args[0], relax.const(dequantized)], value.attrs, value.ty_args
        )
    return _replace_bindings(func, replacements)


def _softmax_calls(func: Any) -> tuple[Any, int]:
    """Every float32 softmax of a statically shaped tensor of 1-6 dims becomes
    ember.dnnl.softmax (oneDNN's, ~5x faster than TVM's default schedule on attention scores).
    Returns the function and how many it rewrote."""
    from tvm import relax

    planner = _Planner(func)
    replacements: dict[Any, Any] = {}
    for var, value in planner.values.items():
        if not _op(value, "relax.nn.softmax"):
            continue
        x = value.args[0]
        x_type, out_type = _tensor_type(x), _tensor_type(var)
        if x_type is None or out_type is None or x_type[1] != "float32" or out_type[1] != "float32":
            continue
        if not 1 <= len(x_type[0]) <= 6:
            continue
        args = [x, _prim(int(value.attrs.axis))]
        replacements[var] = relax.call_dps_packed("ember.dnnl.softmax", args, out_ty=var.ty)
    return _replace_bindings(func, replacements), len(replacements)


# Library matmuls whose argument 1 is a constant 2-d weight [K, N]: the index of their weight_id,
# and their optional operands as {argument: index of its has_* flag} (bias, residual; see
# cpp/src/kernels/dnnl_kernels.cc).
_MATMUL_ARGS: dict[str, tuple[int, dict[int, int]]] = {
    "ember.dnnl.matmul": (8, {2: 5, 3: 6}),
    "ember.dnnl.matmul_w8": (9, {3: 6, 4: 7}),
    "ember.dnnl.matmul_q8": (10, {3: 7, 4: 8}),
}


def _reads_only_as_input(var: Any, name: str, args: list[Any]) -> bool:
    """Whether library matmul `name` reads `var` as its input `a` and nowhere else (an optional
    operand's slot that repeats it while its has_* flag is 0 is a placeholder, never read)."""
    optional = _MATMUL_ARGS[name][1]
    for i, arg in enumerate(args[1:], start=1):
        if arg.same_as(var) and not (i in optional and int(args[optional[i]].value) == 0):
            return False
    return bool(args[0].same_as(var))


def _packed_call(value: Any) -> tuple[str, list[Any]] | None:
    """(kernel name, arguments) of an R.call_dps_packed of a library kernel, else None."""
    from tvm import relax

    if not _op(value, "relax.call_dps_packed") or not isinstance(value.args[0], relax.ExternFunc):
        return None
    return str(value.args[0].global_symbol), list(value.args[1].fields)


def _flatten_into_weights(func: Any) -> tuple[Any, int]:
    """reshape(permute_dims(y), [N, F]) feeding only library matmuls with constant weights (a
    flatten after NHWC convs: TVM transposes back to NCHW first) becomes reshape(y, [N, F]), and
    the weights' rows take the permutation instead, once at compile time: the transpose (19 us
    of the digits CNN's ~240 at batch 32) disappears. Returns the function and how many."""
    from tvm import relax

    planner = _Planner(func)
    replacements: dict[Any, Any] = {}
    flattens = 0
    for var, value in planner.values.items():
        permuted = value.args[0] if _op(value, "relax.reshape") else None
        permute = planner.values.get(permuted) if permuted is not None else None
        if permute is None or not _op(permute, "relax.permute_dims"):
            continue
        y_type, out_type = _tensor_type(permute.args[0]), _tensor_type(var)
        if y_type is None or out_type is None or len(out_type[0]) != 2:
            continue
        axes = [int(a) for a in permute.attrs.axes] if permute.attrs.axes else None
        if axes is None or axes[0] != 0 or out_type[0][0] != y_type[0][0]:
            continue  # the batch axis must stay first
        users = planner.users.get(var, [])
        calls = [(u, _packed_call(planner.values.get(u))) for u in users]
        if planner.users.get(permuted, []) != [var] or not calls:
            continue
        if not all(
            c is not None and c[0] in _MATMUL_ARGS and _reads_only_as_input(var, *c)
            for _, c in calls
        ):
            continue
        weights = [_const(c[1][1]) for _, c in calls if c is not None]
        features = int(np.prod(y_type[0][1:]))
        if any(w is None or w.ndim != 2 or w.shape[0] != features for w in weights):
            continue
        # Row i of flatten(permuted) is row source[i] of flatten(y): y @ W' = permuted @ W for
        # W'[source] = W.
        inner = np.arange(features).reshape(y_type[0][1:])
        source = inner.transpose([a - 1 for a in axes[1:]]).reshape(-1)
        replacements[var] = relax.op.reshape(permute.args[0], value.args[1])
        for (user, call), w in zip(calls, weights, strict=True):
            assert call is not None and w is not None
            name, args = call
            moved = np.empty_like(w)
            moved[source] = w
            args[1] = relax.const(moved)
            args[_MATMUL_ARGS[name][0]] = _prim(_weight_id(moved))
            old = planner.values[user]
            replacements[user] = relax.call_dps_packed(name, args, out_ty=old.ty)
        flattens += 1
    if not flattens:
        return func, 0
    # The permute_dims is now unused: drop it.
    return relax.analysis.remove_all_unused(_replace_bindings(func, replacements)), flattens


def _permutes_as_reshapes(func: Any) -> Any:
    """A permute_dims that moves only size-1 axes (NCHW -> NHWC of a 1-channel image) keeps the
    elements in order: it becomes a reshape, a view, instead of a copy kernel."""
    from tvm import relax

    planner = _Planner(func)
    replacements: dict[Any, Any] = {}
    for var, value in planner.values.items():
        if not _op(value, "relax.permute_dims"):
            continue
        x_type, out_type = _tensor_type(value.args[0]), _tensor_type(var)
        if x_type is None or out_type is None:
            continue
        axes = [int(a) for a in value.attrs.axes] if value.attrs.axes else None
        if axes is None:
            axes = list(reversed(range(len(x_type[0]))))
        moved = [a for a in axes if x_type[0][a] != 1]
        if moved == sorted(moved):
            replacements[var] = relax.op.reshape(value.args[0], out_type[0])
    return _replace_bindings(func, replacements)


_POOL_LAYOUTS = {"NCHW": 0, "NHWC": 1, "NCHW8c": 2}  # the layout codes of ember.dnnl.max_pool2d


def _pool_fits(size: int, out: int, pool: int, stride: int, pad_l: int, pad_r: int) -> bool:
    """Whether ember.dnnl.max_pool2d accepts this output size along one axis: at least what
    the pads give (floor), at most one more window per axis (ceil_mode), each starting inside
    the input or its leading pad (the kernel's check, so that it never refuses at run time)."""
    if size + pad_l + pad_r < pool:
        return False
    return out >= (size + pad_l + pad_r - pool) // stride + 1 and (out - 1) * stride < size + pad_l


def _max_pool_calls(func: Any) -> tuple[Any, int]:
    """Every float32 max_pool2d with static shapes in NCHW, NHWC or NCHW8c (no dilation)
    becomes ember.dnnl.max_pool2d: oneDNN's pooling, 5x faster than TVM's default schedule on
    the digits CNN's NHWC pool and 7x on ResNet-18's at batch 1 (memory-bound and about level at
    batch 32). Returns the function and how many it rewrote."""
    from tvm import relax

    planner = _Planner(func)
    replacements: dict[Any, Any] = {}
    for var, value in planner.values.items():
        if not _op(value, "relax.nn.max_pool2d"):
            continue
        attrs = value.attrs
        layout = str(attrs.layout)
        x_type, out_type = _tensor_type(value.args[0]), _tensor_type(var)
        if (
            layout not in _POOL_LAYOUTS
            or str(attrs.out_layout) != layout
            or x_type is None
            or out_type is None
            or x_type[1] != "float32"
            or out_type[1] != "float32"
            or [int(d) for d in attrs.dilation] != [1, 1]
        ):
            continue
        axes = (1, 2) if layout == "NHWC" else (2, 3)
        pool = [int(v) for v in attrs.pool_size]
        strides = [int(v) for v in attrs.strides]
        pads = [int(v) for v in attrs.padding]  # top, left, bottom, right
        if not all(
            _pool_fits(x_type[0][a], out_type[0][a], pool[d], strides[d], pads[d], pads[d + 2])
            for d, a in enumerate(axes)
        ):
            continue
        args = [value.args[0], _prim(_POOL_LAYOUTS[layout])]
        args += [_prim(v) for v in (*pool, *strides, *pads)]
        replacements[var] = relax.call_dps_packed("ember.dnnl.max_pool2d", args, out_ty=var.ty)
    return _replace_bindings(func, replacements), len(replacements)


def _unwrap_weight_dequantize(func: Any, weight_only: dict[int, _WeightOnly]) -> Any:
    """dequantize(W int8, scales, 0) of a constant becomes the float constant W * scales (what
    folding would make of it), and the int8 form is remembered in `weight_only` under the weight
    id that constant will have where a kernel takes it: [K, N] for a matmul (per-column or
    per-tensor scales), OHWI for a conv's OIHW weights (per-output-channel or per-tensor). What
    `_rewrite(qdq=True)` and `_unwrap_qdq_convs` did not take (weight-only int8) is left here."""
    from tvm import relax

    planner = _Planner(func)
    replacements: dict[Any, Any] = {}
    for var, value in planner.values.items():
        if not _op(value, "relax.dequantize"):
            continue
        w, scale, zero = (_const(x) for x in value.args)
        if w is None or scale is None or zero is None or w.dtype != np.int8 or np.any(zero != 0):
            continue
        axis = int(value.attrs.axis) % w.ndim if w.ndim else 0
        out_axis = {2: 1, 4: 0}.get(w.ndim)
        if out_axis is None or scale.size not in (1, w.shape[out_axis]):
            continue
        if scale.size > 1 and axis != out_axis:
            continue
        channels = w.shape[out_axis]
        scales = np.broadcast_to(scale.astype(np.float32).reshape(-1), (channels,)).copy()
        shape = [1] * w.ndim
        shape[out_axis] = channels
        dequantized = (w.astype(np.float32) * scales.reshape(shape)).astype(np.float32)
        if w.ndim == 4:  # OIHW -> the OHWI the conv kernels take after layout conversion
            kernel_w = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
            key = np.ascontiguousarray(dequantized.transpose(0, 2, 3, 1))
        else:
            kernel_w, key = np.ascontiguousarray(w), dequantized
        key_id = _weight_id(key)
        weight_only[key_id] = _WeightOnly(kernel_w, scales, key_id)
        replacements[var] = relax.const(dequantized)
    return _replace_bindings(func, replacements)


def _replace_bindings(func: Any, replacements: dict[Any, Any]) -> Any:
    """`func` with the value of each binding in `replacements` swapped for the new expression
    (a call's arguments are visited, so the vars it uses stay bound)."""
    from tvm import relax

    if not replacements:
        return func

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def visit_var_binding_(self, binding: Any) -> None:
            new = replacements.get(binding.var)
            if new is None:
                super().visit_var_binding_(binding)
                return
            if isinstance(new, relax.Call):
                new = relax.Call(
                    new.op, [self.visit_expr(a) for a in new.args], new.attrs, new.ty_args
                )
            self.builder_.emit_normalized(
                relax.VarBinding(binding.var, self.builder_.normalize(new))
            )

    return Rewriter().visit_expr(func)


def host_needs_seven_bit_weights() -> bool:
    """x86 without VNNI saturates u8 x s8 products beyond 7-bit weights (see dnnl_kernels.cc)."""
    from .. import _core

    features = _core.host_cpu_features()
    x86 = _core.host_arch() in ("x86_64", "AMD64")
    return x86 and not ({"avx512_vnni", "avx_vnni"} & set(features))


_NEEDS_SEVEN_BIT_WEIGHTS = host_needs_seven_bit_weights
# The widest int8 weights such hosts run exactly: a u8 x s8 pair sums to at most 2 * 255 * 64 =
# 32640, within int16 (ONNX Runtime's reduce_range weights reach 64; ember's quantizer uses 63).
SEVEN_BIT_MAX = 64


def _widest(weights: np.ndarray) -> int:
    return int(np.abs(weights.astype(np.int32)).max(initial=0))


_ACTIVATION_NAMES = {
    ACT_RELU: "relu",
    ACT_GELU_ERF: "gelu",
    ACT_GELU_TANH: "gelu_tanh",
    ACT_CLIP: "clip",
    ACT_SIGMOID: "sigmoid",
    ACT_TANH: "tanh",
}


def _is_blocked(conv: Any) -> bool:
    return str(conv.attrs.data_layout) == "NCHW8c"


WINOGRAD_ENV = "EMBER_WINOGRAD"  # "0" turns ember.dnnl.conv2d_wino off (read at compile time)
_WINOGRAD_MIN_CHANNELS = 64
_WINOGRAD_MAX_CHANNELS = 256
_WINOGRAD_MIN_TILES_WIDE = 256
_WINOGRAD_MIN_CHANNELS_THIN = 16  # below _WINOGRAD_MIN_CHANNELS: only with enough tiles
_WINOGRAD_MIN_TILES_THIN = 256


def winograd_enabled() -> bool:
    """Whether dispatch may use the Winograd kernel: unless EMBER_WINOGRAD=0."""
    return os.environ.get(WINOGRAD_ENV, "1").strip() != "0"


def _winograd_applies(f: _Fusion) -> bool:
    """Whether a float conv2d fusion runs as ember.dnnl.conv2d_wino (Winograd F(2x2,3x3),
    cpp/src/kernels/winograd.cc) rather than oneDNN's direct conv.

    The kernel covers NHWC, 3x3, stride 1, dilation 1, groups 1, padding 1 on every side, and the
    activations none, ReLU and clip (bias and residual always). Among those convs, the rule is the
    measured one (benchmarks/winograd_conv.cc and winograd_vs_ort.py on the 2-core Zen 3, AVX2;
    numbers in benchmarks/README.md), on ResNet-18's shapes at batch 1 and 32 (2 threads, and
    2 single-threaded lanes of 16 as ember runs batch 32):

    - 64 to 256 input and output channels: Winograd took 0.52-0.61x the time of oneDNN 3.2's
      direct conv (brgconv, NHWC) at 56x56x64, 28x28x128 and 14x14x256, batch 1 and 32, and
      0.6-0.75x ONNX Runtime's;
    - 512 channels (7x7): only with >= 256 tiles (N * ceil(H/2) * ceil(W/2), e.g. batch >= 16
      there): 0.72-0.77x direct at batch 32, but 1.15-1.4x *slower* at batch 1, whose 16 tiles
      leave the GEMMs too thin for weights 16/9 the size of the direct conv's;
    - 16 to 63 channels (the smaller of C and K), the larger at least 32: only with >= 256
      tiles. Measured (`conv2d` in NHWC and NCHW8c against `conv2d_wino` on the same inputs,
      interleaved in one process, 2 threads; benchmarks/README.md): 0.63-0.81x the time of the
      faster direct conv at 256-1024 tiles (C/K 16/32,
      32/32, 32/48; the digits CNN's 16->32 on 8x8 at batch 32), but 1.04x at 16/16 and 1.25x
      at 128 tiles: the GEMMs are too thin to pay for the transforms there.

    Static int8 convs (f.conv_q8) run as ember.dnnl.conv2d_wino_q8, exact in int16/int32, for 64
    to 256 channels only: against oneDNN's direct int8 conv (conv2d_q8) on the same shapes it took
    0.68-0.80x the time at batch 32 (2 threads), 0.57-0.79x at 16 (one lane) and 0.71x at 1, but
    1.13x at 512 channels (7x7) at batch 32 and 1.8x at batch 1 (benchmarks/README.md).
    Weight-only int8 convs (f.w8) follow the float rule as ember.dnnl.conv2d_wino_w8.
    """
    if f.kind != "conv2d":
        return False
    if f.activation[0] not in (ACT_NONE, ACT_RELU, ACT_CLIP):
        return False
    conv = f.anchor
    attrs = conv.attrs
    w = _const(conv.args[1])
    x_type = _tensor_type(conv.args[0])
    if (
        w is None
        or x_type is None
        or len(x_type[0]) != 4
        or str(attrs.data_layout) != "NHWC"
        or str(attrs.kernel_layout) != "OHWI"
        or w.ndim != 4
        or tuple(w.shape[1:3]) != (3, 3)
        or not _winograd_conv_attrs(attrs)
    ):
        return False
    n, h, width, c = x_type[0]
    return _winograd_shape_applies(n, h, width, c, int(w.shape[0]), int8=f.conv_q8 is not None)


def _winograd_conv_attrs(attrs: Any) -> bool:
    """Stride 1, no dilation, pad 1 on every side and one group: what F(2x2,3x3) computes."""
    return (
        [int(v) for v in attrs.strides] == [1, 1]
        and [int(v) for v in attrs.dilation] == [1, 1]
        and [int(v) for v in attrs.padding] == [1, 1, 1, 1]
        and int(attrs.groups) == 1
    )


def _winograd_shape_applies(n: int, h: int, width: int, c: int, k: int, *, int8: bool) -> bool:
    """The channel and tile rule of `_winograd_applies` for an N x H x W x C -> K conv."""
    tiles = n * ((h + 1) // 2) * ((width + 1) // 2)
    if min(c, k) < _WINOGRAD_MIN_CHANNELS:
        thin_ok = min(c, k) >= _WINOGRAD_MIN_CHANNELS_THIN and max(c, k) >= 32
        return not int8 and thin_ok and tiles >= _WINOGRAD_MIN_TILES_THIN
    if max(c, k) <= _WINOGRAD_MAX_CHANNELS:
        return True
    return not int8 and tiles >= _WINOGRAD_MIN_TILES_WIDE


def _describe(fusions: Sequence[_Fusion]) -> dict[str, int]:
    """Counts of library calls, of convs run in NCHW8c and of what was fused into the calls, for
    the manifest and tests."""
    stats: dict[str, int] = {}
    for f in fusions:
        parts = ["conv2d_q8" if f.conv_q8 is not None else f.kind]
        parts += [f"{f.kind}_w8"] if f.w8 is not None and f.conv_q8 is None else []
        parts += ["nchw8c"] if f.kind == "conv2d" and _is_blocked(f.anchor) else []
        parts += ["conv2d_wino"] if f.winograd else []
        parts += ["bias"] if f.bias is not None else []
        parts += ["residual"] if f.residual is not None else []
        parts += [_ACTIVATION_NAMES[f.activation[0]]] if f.activation[0] != ACT_NONE else []
        for part in parts:
            stats[part] = stats.get(part, 0) + 1
    return stats


def _rewrite(
    func: Any,
    qdq: bool = False,
    int8_convs: dict[int, _Int8Conv] | None = None,
    weight_only: dict[int, _WeightOnly] | None = None,
    winograd: bool = False,
) -> tuple[Any, list[_Fusion]]:
    from tvm import relax

    fusions = _Planner(func, qdq, int8_convs, weight_only).plan()
    if not fusions:
        return func, []
    for f in fusions:
        f.winograd = winograd and _winograd_applies(f)
    by_output = {f.members[-1]: f for f in fusions}
    dropped = {v for f in fusions for v in (*f.members[:-1], *f.consumed)}

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def visit_var_binding_(self, binding: Any) -> None:
            if binding.var in dropped:
                return
            fusion = by_output.get(binding.var)
            if fusion is None:
                super().visit_var_binding_(binding)
                return
            call = _library_call(fusion, binding.var)
            call = relax.Call(
                call.op, [self.visit_expr(a) for a in call.args], call.attrs, call.ty_args
            )
            call = self.builder_.normalize(call)
            self.builder_.emit_normalized(relax.VarBinding(binding.var, call))

    return Rewriter().visit_expr(func), fusions


def _clip_as_relax_ops(mod: Any) -> Any:
    """TVM imports ONNX Clip as opaque TE functions (`call_tir(maximum, (x, c))`), which layout
    conversion cannot see through. Rewrite those with a one-element constant bound into
    relax.maximum/minimum, which it can, and which fuse into a library call as a clip post-op."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    replacements = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not call.op.same_as(call_tir) or not isinstance(call.args[1], relax.Tuple):
                return call
            gv, args = call.args[0], call.args[1].fields
            base = gv.name_hint.rstrip("0123456789_")
            func = mod[gv] if isinstance(gv, tvm.ir.GlobalVar) else None
            bound = _const(args[1]) if len(args) == 2 else None
            if base not in replacements or func is None or bound is None or bound.size != 1:
                return call
            if len(func.params) != 3:  # (x, bound, out): the TE maximum/minimum signature
                return call
            scalar = relax.const(bound.reshape(()).astype(bound.dtype))
            return replacements[base](args[0], scalar)

    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = Rewriter().visit_expr(func)
    return relax.transform.DeadCodeElimination()(mod)


def _conv2d_calls(mod: Any) -> list[Any]:
    from tvm import relax

    calls: list[Any] = []

    @relax.expr_functor.visitor
    class Collector(relax.PyExprVisitor):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> None:
            super().visit_call_(call)
            if _op(call, "relax.nn.conv2d"):
                calls.append(call)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            Collector().visit_expr(func)
    return calls


def _blockable(conv: Any) -> bool:
    """Whether a (not yet converted) conv2d can run in NCHW8c: a constant float32 OIHW weight
    (so that it will be dispatched: TVM has no NCHW8c legalization to fall back on) and channel
    counts that are multiples of the block."""
    w = _const(conv.args[1])
    x = _tensor_type(conv.args[0])
    if w is None or w.dtype != np.float32 or w.ndim != 4 or x is None or x[1] != "float32":
        return False
    channels_in, channels_out = w.shape[1] * int(conv.attrs.groups), w.shape[0]
    return channels_in % _BLOCK == 0 and channels_out % _BLOCK == 0 and len(conv.attrs.padding) == 4


def _prefers_blocked(conv: Any) -> bool:
    """Whether oneDNN 3.2 (AVX2) runs this conv faster in nChw8c than in NHWC, as measured on the
    sample models' shapes: depthwise, 1x1 and few-channel KxK convs are 1.1-2x faster blocked;
    dense KxK convs with more input channels are up to 1.6x faster in NHWC (brgconv)."""
    w = _const(conv.args[1])
    assert w is not None
    groups = int(conv.attrs.groups)
    depthwise = groups > 1 and int(w.shape[1]) == 1 and int(w.shape[0]) == groups
    pointwise = int(w.shape[2]) == int(w.shape[3]) == 1
    return depthwise or pointwise or int(w.shape[1]) * groups <= 32


def _flops(conv: Any) -> int:
    w = _const(conv.args[1])
    out = _tensor_type(conv)
    assert w is not None
    return 2 * math.prod(out[0] if out else w.shape[:1]) * math.prod(w.shape[1:])


def _winograd_in_nhwc(conv: Any) -> bool:
    """Whether a (not yet converted, NCHW) float conv2d would run the Winograd kernel once in
    NHWC: 3x3, stride 1, no dilation, pads 1, one group, and `_winograd_shape_applies`."""
    attrs = conv.attrs
    w = _const(conv.args[1])
    x = _tensor_type(conv.args[0])
    if w is None or x is None or len(x[0]) != 4 or str(attrs.data_layout) != "NCHW":
        return False
    if w.ndim != 4 or tuple(w.shape[2:]) != (3, 3) or not _winograd_conv_attrs(attrs):
        return False
    n, c, h, width = x[0]
    return _winograd_shape_applies(n, h, width, c, int(w.shape[0]), int8=False)


def choose_conv_layout(mod: Any, requested: str = "auto", winograd: bool = False) -> str:
    """The activation layout for a model's convs. "auto" picks the layout preferred (see
    `_prefers_blocked`) by the convs holding most of the model's conv FLOPs: NCHW8c for
    MobileNet-style models (depthwise + 1x1) and small-channel CNNs, NHWC for ResNet-style ones.
    With `winograd`, a conv the Winograd kernel would run in NHWC votes NHWC: 0.63-0.81x the
    time of oneDNN's blocked direct conv (see `_winograd_applies`). Each bucket's convs vote
    with their own FLOPs, so the largest bucket decides."""
    if requested not in CONV_LAYOUTS:
        raise ValueError(f"conv_layout must be one of {CONV_LAYOUTS}, got {requested!r}")
    if requested != "auto":
        return requested
    votes = {True: 0, False: 0}
    for conv in _conv2d_calls(mod):
        if _blockable(conv):
            blocked = _prefers_blocked(conv) and not (winograd and _winograd_in_nhwc(conv))
            votes[blocked] += _flops(conv)
    return "NCHW8c" if votes[True] > votes[False] else "NHWC"


def _convert_conv_layouts(mod: Any, layout: str) -> Any:
    """ConvertLayout with each conv2d's layout chosen per call: `layout` where the conv can run
    in it, NHWC otherwise. conv2d_transpose is pinned to NCHW: its legalization has no NHWC form,
    and ConvertLayout would otherwise propagate NHWC into it from a neighbouring conv."""
    from tvm import relax

    def desired(call: Any) -> dict[str, list[str]]:
        blocked = layout == "NCHW8c" and _op(call, "relax.nn.conv2d") and _blockable(call)
        data = "NCHW8c" if blocked else "NHWC"
        return {"relax.nn.conv2d": [data, "OHWI"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}

    return relax.transform.ConvertLayout({}, layout_cb=desired)(mod)


def dispatch_to_dnnl(
    mod: Any, conv_layout: str = "auto", winograd: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Convert convs to `conv_layout` ("auto", "NHWC" or "NCHW8c"; see `choose_conv_layout`), fold
    constants, and rewrite every matching conv2d/matmul chain into an ember.dnnl.* library call.
    With `winograd` (and unless EMBER_WINOGRAD=0), the convs `_winograd_applies` to call
    ember.dnnl.conv2d_wino. Returns the module and a report over all functions: the conv layout,
    "calls", per anchor kind ("conv2d", "matmul"), "conv2d_wino" (of the conv2d calls, those run
    by the Winograd kernel), per fused post-op ("bias", "residual", "relu", ...), "softmax"
    and "max_pool2d" (run by ember.dnnl.softmax and ember.dnnl.max_pool2d, counted in "calls"
    too), and "flatten_into_weights" (flattens whose transpose moved into matmul weights)."""
    from tvm import relax

    fusions: list[_Fusion] = []
    softmaxes = max_pools = flattens = 0
    int8_convs: dict[int, _Int8Conv] = {}
    weight_only: dict[int, _WeightOnly] = {}
    for gv, func in list(mod.functions_items()):  # int8 QDQ ops, before folding loses them
        if isinstance(func, relax.Function):
            mod[gv], found = _rewrite(func, qdq=True)
            fusions += found
            mod[gv] = _unwrap_qdq_convs(mod[gv], int8_convs)
            mod[gv] = _unwrap_weight_dequantize(mod[gv], weight_only)
    mod = _clip_as_relax_ops(relax.transform.FoldConstant()(mod))
    if int8_convs:
        # oneDNN's int8 convs are optimized for NHWC only (nChw8c uint8 falls back to its
        # reference kernel, measured 300x slower on the digits CNN).
        if conv_layout == "NCHW8c":
            from ..errors import CompileError

            raise CompileError("int8 convs need conv_layout 'NHWC' (or 'auto'), not 'NCHW8c'")
        conv_layout = "NHWC"
    winograd = winograd and winograd_enabled()
    layout = choose_conv_layout(mod, conv_layout, winograd=winograd)
    mod = relax.transform.FoldConstant()(_convert_conv_layouts(mod, layout))
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv], found = _rewrite(
                func, int8_convs=int8_convs, weight_only=weight_only, winograd=winograd
            )
            fusions += found
            mod[gv], count = _softmax_calls(mod[gv])
            softmaxes += count
            mod[gv], count = _max_pool_calls(mod[gv])
            max_pools += count
            mod[gv], count = _flatten_into_weights(mod[gv])
            flattens += count
            mod[gv] = _permutes_as_reshapes(mod[gv])
    report = {
        "conv_layout": layout,
        "calls": len(fusions) + softmaxes + max_pools,
        **_describe(fusions),
    }
    if softmaxes:
        report["softmax"] = softmaxes
    if max_pools:
        report["max_pool2d"] = max_pools
    if flattens:
        report["flatten_into_weights"] = flattens
    return mod, report


def dispatched_kernels(mod: Any) -> Sequence[str]:
    """Names of the library kernels a module calls (for tests and reports)."""
    text = mod.script(show_meta=False)
    names = (
        "ember.dnnl.conv2d",
        "ember.dnnl.conv2d_wino",
        "ember.dnnl.matmul",
        "ember.dnnl.matmul_q8",
        "ember.dnnl.conv2d_q8",
        "ember.dnnl.conv2d_wino_q8",
        "ember.dnnl.matmul_w8",
        "ember.dnnl.conv2d_w8",
        "ember.dnnl.conv2d_wino_w8",
        "ember.dnnl.softmax",
        "ember.dnnl.max_pool2d",
    )
    return [name for name in names if f'"{name}"' in text]
