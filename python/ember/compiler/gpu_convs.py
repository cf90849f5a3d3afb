"""Convolutions in forms TVM's GPU schedules run well, for CUDA targets.

The TVM wheel ember pins has no cuDNN or cuBLAS, and DLight has no conv2d rule: every conv falls
to `dl.gpu.Fallback`, one thread per output with the whole reduction serial, which made MobileNetV2
at batch 32 take 71 ms on an H200 (16 CPU cores under ONNX Runtime: 25 ms). So, before the CUDA
pipeline runs:

- a dense conv (groups 1) becomes a GEMM, which `dl.gpu.Matmul` schedules with shared-memory tiles:
  weights [K, C*R*S] times the patches [N, C*R*S, Ho*Wo] (im2col, one fused injective kernel; a
  1x1 conv needs none, only a reshape and, when strided, a slice);
- a depthwise conv (groups = C = K) becomes a sum of R*S shifted slices times per-channel weights,
  an elementwise kernel that FuseOps fuses with its bias and activation into one memory-bound pass.

Other grouped or dilated convs, and non-NCHW/OIHW layouts, are left to TVM.

Measured on an H200 (ember-run, p50): MobileNetV2 71 -> 4.4-5.6 ms at batch 32, 2.5 -> 0.7 ms at
batch 1. Variants that fed the GEMM k-contiguous operands, folded the batch into its columns or
used larger DLight tiles were all slower; see the issue 6 note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dispatch import _tensor_type


@dataclass
class ConvRewrites:
    """How many conv2d calls `convs_for_gpu` rewrote, per form, in one function (every batch
    bucket's function holds the same graph)."""

    gemm: int = 0
    depthwise: int = 0
    kept: int = 0


@dataclass(frozen=True)
class _Conv:
    """A static NCHW/OIHW conv2d: shapes, strides and padding (top, left, bottom, right)."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]
    groups: int

    @property
    def out_hw(self) -> tuple[int, int]:
        top, left, bottom, right = self.pad
        return (
            (self.h + top + bottom - self.r) // self.stride[0] + 1,
            (self.w + left + right - self.s) // self.stride[1] + 1,
        )


def _conv_of(call: Any) -> _Conv | None:
    """The conv `call` describes, when it is one this module rewrites."""
    attrs = call.attrs
    x_type, w_type = _tensor_type(call.args[0]), _tensor_type(call.args[1])
    if (
        x_type is None
        or w_type is None
        or x_type[1] != "float32"
        or w_type[1] != "float32"
        or len(x_type[0]) != 4
        or len(w_type[0]) != 4
        or str(attrs.data_layout) != "NCHW"
        or str(attrs.kernel_layout) != "OIHW"
        or str(attrs.out_layout) not in ("NCHW", "")
        or any(int(d) != 1 for d in attrs.dilation)
    ):
        return None
    x_shape, w_shape = x_type[0], w_type[0]
    n, c, h, w = x_shape
    k, c_per_group, r, s = w_shape
    groups = int(attrs.groups)
    top, left, bottom, right = (int(p) for p in attrs.padding)
    conv = _Conv(
        n, c, h, w, k, r, s,
        (int(attrs.strides[0]), int(attrs.strides[1])),
        (top, left, bottom, right),
        groups,
    )  # fmt: skip
    dense = groups == 1 and c_per_group == c
    depthwise = groups == c == k and c_per_group == 1
    return conv if dense or depthwise else None


def convs_for_gpu(mod: Any) -> tuple[Any, ConvRewrites]:
    """Rewrite the module's float32 NCHW convs as GEMMs (dense) or shifted-slice sums
    (depthwise); returns the new module and the counts."""
    import tvm
    from tvm import relax

    conv_op = tvm.ir.Op.get("relax.nn.conv2d")

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def __init__(self, counts: ConvRewrites) -> None:
            super().__init__()
            self.counts = counts

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not call.op.same_as(conv_op):
                return call
            conv = _conv_of(call)
            if conv is None:
                self.counts.kept += 1
                return call
            x, weight = call.args
            if conv.groups == 1:
                self.counts.gemm += 1
                return self._gemm(conv, x, weight)
            self.counts.depthwise += 1
            return self._depthwise(conv, x, weight)

        def _padded(self, conv: _Conv, x: Any) -> Any:
            top, left, bottom, right = conv.pad
            if not any(conv.pad):
                return x
            return self.builder_.emit(relax.op.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right]))

        def _window(self, conv: _Conv, x: Any, i: int, j: int) -> Any:
            """x[:, :, i::stride_h, j::stride_w] cut to the output size: the inputs that tap
            (i, j) of every output position reads."""
            (ho, wo), (sh, sw) = conv.out_hw, conv.stride
            typed = _tensor_type(x)
            if (i, j) == (0, 0) and (sh, sw) == (1, 1) and typed and typed[0][2:] == (ho, wo):
                return x
            return self.builder_.emit(
                relax.op.strided_slice(
                    x, [2, 3], [i, j], [i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1], [sh, sw]
                )
            )

        def _gemm(self, conv: _Conv, x: Any, weight: Any) -> Any:
            emit = self.builder_.emit
            ho, wo = conv.out_hw
            x = self._padded(conv, x)
            taps = [
                emit(relax.op.reshape(self._window(conv, x, i, j), [conv.n, conv.c, 1, ho * wo]))
                for i in range(conv.r)
                for j in range(conv.s)
            ]
            # Rows ordered (c, r, s), as the OIHW weights are.
            patches = taps[0] if len(taps) == 1 else emit(relax.op.concat(taps, axis=2))
            cols = emit(relax.op.reshape(patches, [conv.n, conv.c * conv.r * conv.s, ho * wo]))
            matrix = emit(relax.op.reshape(weight, [conv.k, conv.c * conv.r * conv.s]))
            out = emit(relax.op.matmul(matrix, cols))
            return relax.op.reshape(out, [conv.n, conv.k, ho, wo])

        def _depthwise(self, conv: _Conv, x: Any, weight: Any) -> Any:
            emit = self.builder_.emit
            x = self._padded(conv, x)
            total = None
            for i in range(conv.r):
                for j in range(conv.s):
                    tap = emit(relax.op.strided_slice(weight, [2, 3], [i, j], [i + 1, j + 1]))
                    tap = emit(relax.op.reshape(tap, [1, conv.c, 1, 1]))
                    term = emit(relax.op.multiply(self._window(conv, x, i, j), tap))
                    total = term if total is None else emit(relax.op.add(total, term))
            return total

    counts = ConvRewrites()
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            found = ConvRewrites()
            mod[gv] = Rewriter(found).visit_expr(func)
            counts = max(counts, found, key=lambda c: (c.gemm, c.depthwise, c.kept))
    mod = relax.transform.FoldConstant()(relax.transform.DeadCodeElimination()(mod))
    return mod, counts
