"""Default CPU schedules for the PrimFuncs TVM generates (no tuning).

TVM's default CPU pipeline legalizes Relax ops into TensorIR and fuses them, but applies no
schedule: every elementwise op, reduction, softmax, layer norm, pool and transpose runs as a
serial scalar loop nest. `default_cpu_schedule` is a module pass, run right after FuseTIR, that
gives every unscheduled PrimFunc a default with `tvm.s_tir.Schedule`:

* inline: injective intermediate producers are inlined into their consumers when that
  recomputes nothing (a padding block feeding a 3x3 pool is kept: inlined, its bounds check
  would run for every window element);
* injective blocks: the longest loop suffix that every access walks contiguously (or not at
  all) is fused and vectorized, split by a factor in [lanes/2, lanes] that divides it if there
  is one; vectors containing a tail or a point where an if_then_else on the lane flips (padding,
  concat) are peeled off with loop_partition, since TVM would scalarize the whole loop. The
  leading loops are fused until there are >= 64 iterations and bound to `parallel`;
* reductions, by how the accesses walk memory:
  - "column" (mean over a middle axis, C[i, j] += A[i, k] * B[k, j], conv along W): the
    innermost spatial loop moves inside the reduction loops and is vectorized;
  - "row" (softmax, layer norm, global pooling: reduce along the contiguous axis): rfactor
    keeps `lanes` partial results, updated as one vector, reduced at the end;
  - otherwise (stride-2 pooling windows) the reduction loops stay scalar;
  always parallel over the outer spatial loops, the reduction loops serial, the init hoisted;
* multi-block functions whose blocks share leading spatial loops (softmax, layer norm, mean =
  sum + divide, pad + pool) are computed row by row under one fused parallel loop
  (compute_at), each block's inner loops scheduled as above; otherwise block by block;
* parallel only when the estimated work reaches `min_parallel_elements` (iterations weighted by
  cost): at batch 1 a parallel region costs more than it saves on small tensors.

Every step is a TensorIR schedule primitive, which checks its own legality, so results do not
change beyond float reassociation in vectorized ("row") reductions. Scheduling never fails the
build: each scheduled function is run through TVM's TIR lowering pipeline, and a function whose
scheduling or lowering raises is left as it was and listed in `ScheduleStats.failed`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir.prim import expr as _prim_expr
from tvm.sym import Analyzer
from tvm.sym.pattern import detect_linear_equation
from tvm.target import codegen

__all__ = [
    "DEFAULT_MIN_PARALLEL_ELEMENTS",
    "SCHEDULED_ATTR",
    "ScheduleStats",
    "default_cpu_schedule",
    "schedule_prim_func",
    "vector_bits",
]

log = logging.getLogger(__name__)

SCHEDULED_ATTR = "tirx.is_scheduled"
_LEGACY_SCHEDULED_ATTRS = ("tirx.is_scheduled", "tir.is_scheduled")
_PARTITION_HINT = "pragma_loop_partition_hint"

# Work (in vectorized-add units, see _FuncScheduler.cost) below which a function stays
# single-threaded. A TVM parallel region costs ~3 us to launch and join; on 2 cores (Zen 3,
# TVM_NUM_THREADS=2) the crossover was at ~64K elements for add+relu, ~12K for layer norm and
# for a transpose, ~2K for softmax (exp-bound), which this threshold and the weights reproduce.
DEFAULT_MIN_PARALLEL_ELEMENTS = 1 << 16
_CALL_WEIGHT = 24  # per transcendental call (exp, erf, tanh, sqrt...) in a block
_GATHER_WEIGHT = 4  # an access that is not contiguous along the innermost loop

# Calls that LLVM turns into a few vector instructions (measured: sqrt 1.2x, rsqrt 2x the cost
# of an add); the others (exp 23x, log 27x, tanh 38x, pow 55x, erf 97x) become scalar libm calls.
_CHEAP_CALLS = frozenset(
    {
        "sqrt",
        "rsqrt",
        "fmin",
        "fmax",
        "copysign",
        "if_then_else",
        "likely",
        "reinterpret",
        "abs",
        "fabs",
        "floor",
        "ceil",
        "trunc",
        "round",
        "nearbyint",
        "isnan",
        "isinf",
        "isfinite",
        "bitwise_and",
        "bitwise_or",
        "bitwise_xor",
        "bitwise_not",
        "shift_left",
        "shift_right",
    }
)

# Calls that LLVM code generation handles on vectors, with the same results as scalar code
# (checked by building each vectorized: sinh and cosh fail with "unknown intrinsic"; shifts are
# left out because x86 vector and scalar shifts disagree on counts < 0 or >= the bit width,
# which the ONNX BitShift tests exercise). A block calling anything else is not vectorized.
_VECTOR_SAFE_CALLS = frozenset(
    {
        "exp",
        "exp2",
        "exp10",
        "log",
        "log2",
        "log10",
        "log1p",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "tanh",
        "asinh",
        "acosh",
        "atanh",
        "erf",
        "sigmoid",
        "pow",
        "atan2",
        "hypot",
        "nextafter",
        "ldexp",
    }
) | (_CHEAP_CALLS - {"shift_left", "shift_right"})

# A parallel loop gets at least this many iterations (leading loops are fused until it does),
# so TVM's static chunking over the threads stays balanced.
_PARALLEL_CHUNKS = 64

_get_sblock_realize = tvm_ffi.get_global_func("s_tir.schedule.GetSBlockRealize")


@dataclass
class ScheduleStats:
    """What one run of the pass did; pass an instance to `default_cpu_schedule` to collect it."""

    scheduled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already scheduled, or nothing to do
    failed: dict[str, str] = field(default_factory=dict)  # name -> error; left unscheduled
    strategy: dict[str, str] = field(default_factory=dict)  # name -> single/fused/separate

    def reset(self) -> None:
        self.scheduled.clear()
        self.skipped.clear()
        self.failed.clear()
        self.strategy.clear()


def vector_bits(target: tvm.target.Target) -> int:
    """SIMD register width in bits for an LLVM target.

    `codegen.llvm_get_vector_width` reports 512 for every x86 CPU in TVM 0.27 (even SSE2-only
    ones), so x86 widths come from the CPU feature list; other architectures use LLVM's answer.
    """
    try:
        llvm_bits = int(codegen.llvm_get_vector_width(target))
    except Exception:
        llvm_bits = -1
    try:
        features = {str(f) for f in codegen.llvm_get_cpu_features(target)}
    except Exception:
        features = set()
    if "avx512f" in features:
        bits = 512
    elif "avx" in features:
        bits = 256
    elif features & {"sse", "sse2", "neon", "asimd"}:
        bits = 128
    else:
        bits = llvm_bits if llvm_bits > 0 else 128
    if llvm_bits > 0:
        bits = min(bits, llvm_bits)
    return max(bits, 64)


# --------------------------------------------------------------------------------------------
# Small analyses
# --------------------------------------------------------------------------------------------


def _vector_factor(extent: int, lanes: int) -> tuple[int, bool]:
    """(factor, has_tail) for vectorizing a loop of `extent` > `lanes`: the largest factor in
    [lanes/2, lanes] that divides the extent; else one coprime with it (LoopPartition cannot
    peel the tail of `8*i + j < 114`: TVM's simplifier rewrites it to `4*i + j//2 < 57`)."""
    low = max(2, lanes // 2)
    for f in range(lanes, low - 1, -1):
        if extent % f == 0:
            return f, False
    for f in range(lanes, low - 1, -1):
        if math.gcd(f, extent) == 1:
            return f, True
    return lanes, True


# --------------------------------------------------------------------------------------------
# Analyses of blocks
# --------------------------------------------------------------------------------------------


def _int(expr: Any) -> int | None:
    if isinstance(expr, int):
        return expr
    value = getattr(expr, "value", None)
    return value if isinstance(value, int) else None


def _vars_in(expr: Any) -> list[Any]:
    found: list[Any] = []
    tvm_ffi.structural_walk(expr, (tirx.Var, found.append), order="post")
    return found


def _uses(expr: Any, variables: Sequence[Any]) -> bool:
    wanted = {id(v) for v in variables}
    seen = _vars_in(expr)
    return any(id(v) in wanted or any(v.same_as(w) for w in variables) for v in seen)


def _calls_in(stmt: Any) -> list[str]:
    names: list[str] = []

    def visit(call: Any) -> None:
        op = getattr(call, "op", None)
        name = getattr(op, "name", None)
        if isinstance(name, str):
            names.append(name)

    tvm_ffi.structural_walk(stmt, (tvm.ir.expr.Call, visit), order="post")
    return names


def _vector_safe(block: Any) -> bool:
    """Whether vectorizing the block keeps its results and its code generation working."""
    for region in list(block.reads) + list(block.writes):
        dtype = str(region.source.dtype)
        if dtype.startswith(("bfloat", "float8", "float4", "float6")):
            return False  # stored as integers and legalized after scheduling
    if not all(name.rsplit(".", 1)[-1] in _VECTOR_SAFE_CALLS for name in _calls_in(block.body)):
        return False
    variable_shifts: list[Any] = []

    def visit(shift: Any) -> None:
        if _int(shift.b) is None:
            variable_shifts.append(shift)

    tvm_ffi.structural_walk(block.body, ((_prim_expr.LShift, _prim_expr.RShift), visit))
    return not variable_shifts


def _count_expensive(block: Any) -> int:
    return sum(name.rsplit(".", 1)[-1] not in _CHEAP_CALLS for name in _calls_in(block.body))


@dataclass
class _Nest:
    """A block's loops (outermost first), each binding one spatial ("S") or reduction ("R")
    iter var directly: the form LegalizeOps emits, and the inner loops after compute_at."""

    block: Any  # SBlockRV
    loops: list[Any]  # LoopRV, outermost first
    iter_vars: list[Any]  # tirx.IterVar, same order
    extents: list[int | None]

    @property
    def kinds(self) -> str:
        return "".join(
            "S" if iv.iter_type == tirx.IterVar.DataPar else "R" for iv in self.iter_vars
        )

    @property
    def work(self) -> int | None:
        total = 1
        for e in self.extents:
            if e is None:
                return None
            total *= e
        return total


def _nest(sch: Any, block: Any, skip: int = 0) -> _Nest | None:
    """The block's loops below the first `skip` (outermost first) with the iter var each binds,
    if every such loop is a plain serial loop from 0 binding exactly one iter var directly.
    Iter vars bound only to the outer `skip` loops (or constants) are left out."""
    stmt = sch.get(block)
    loops = list(sch.get_loops(block))[skip:]
    realize = _get_sblock_realize(sch, block)
    if _int(realize.predicate) != 1:
        return None
    loop_vars = [sch.get(lp).loop_var for lp in loops]
    by_loop: dict[int, Any] = {}
    for iv, value in zip(stmt.iter_vars, realize.iter_values, strict=True):
        if iv.iter_type not in (tirx.IterVar.DataPar, tirx.IterVar.CommReduce):
            return None
        match = [i for i, lv in enumerate(loop_vars) if value.same_as(lv)]
        if match:
            if match[0] in by_loop or _int(iv.dom.min) != 0:
                return None
            by_loop[match[0]] = iv
        elif _uses(value, loop_vars):
            return None  # bound to an expression of several loops (after fuse/split)
    if sorted(by_loop) != list(range(len(loops))):
        return None
    extents: list[int | None] = []
    for loop_rv in loops:
        loop = sch.get(loop_rv)
        if loop.kind != tirx.ForKind.SERIAL or len(loop.annotations) > 0 or _int(loop.min) != 0:
            return None
        extents.append(_int(loop.extent))
    return _Nest(block, loops, [by_loop[i] for i in range(len(loops))], extents)


def _total_iterations(sch: Any, block: Any) -> int | None:
    total = 1
    for loop_rv in sch.get_loops(block):
        e = _int(sch.get(loop_rv).extent)
        if e is None:
            return None
        total *= e
    return total


def _access_indices(nest: _Nest, region: Any) -> list[Any]:
    """Index expressions of a buffer access, with unit-extent iter vars replaced by 0."""
    analyzer = Analyzer()
    for iv, extent in zip(nest.iter_vars, nest.extents, strict=True):
        if extent == 1:
            analyzer.bind(iv.var, iv.dom.min)
    return [analyzer.simplify(r.min) for r in region.region]


def _contiguous(nest: _Nest, region: Any, suffix: Sequence[int]) -> str:
    """How an access walks the iter vars at `suffix` (positions, outermost first, adjacent).

    "invariant": it uses none of them (a broadcast); "contiguous": its last len(suffix) indices
    are those vars in order, unit stride, so the fused loop walks memory linearly; else "other".
    """
    variables = [nest.iter_vars[p].var for p in suffix]
    indices = _access_indices(nest, region)
    if not any(_uses(ix, variables) for ix in indices):
        return "invariant"
    s = len(suffix)
    if len(indices) < s:
        return "other"
    if any(_uses(ix, variables) for ix in indices[:-s]):
        return "other"
    shape = list(region.source.shape)
    for j, (ix, var) in enumerate(zip(indices[-s:], variables, strict=True)):
        coeffs = detect_linear_equation(ix, [var])
        if len(coeffs) != 2 or _int(coeffs[0]) != 1:
            return "other"
        base = coeffs[1]
        if _uses(base, variables):
            return "other"
        inner_dim_ok = (
            _int(base) == 0 and _int(shape[len(shape) - s + j]) == nest.extents[suffix[j]]
        )
        if j > 0 and not inner_dim_ok:
            return "other"
    return "contiguous"


def _walks_unit(sch: Any, nest: _Nest, region: Any, pos: int) -> bool:
    """Whether a vector along the iter var at `pos` reads/writes this access as one contiguous
    vector or one broadcast value: in the row-major flattened offset the var has coefficient
    1, or does not appear. (Flattening sees through a fused pair of axes: (f // 7, f % 7).)"""
    var = nest.iter_vars[pos].var
    analyzer = Analyzer()
    for iv in sch.get(nest.block).iter_vars:
        if _int(iv.dom.extent) == 1:
            analyzer.bind(iv.var, iv.dom.min)
        else:
            analyzer.bind(iv.var, iv.dom)
    shape = list(region.source.shape)
    flat: Any = None
    for dim, r in enumerate(region.region):
        stride: Any = 1
        for extent in shape[dim + 1 :]:
            stride = stride * extent
        term = r.min * stride if not (isinstance(stride, int) and stride == 1) else r.min
        flat = term if flat is None else flat + term
    if flat is None:
        return True
    flat = analyzer.simplify(flat)
    if not _uses(flat, [var]):
        return True
    coeffs = detect_linear_equation(flat, [var])
    return len(coeffs) == 2 and _int(analyzer.simplify(coeffs[0])) == 1


def _condition_flips(stmt: Any, nest: _Nest, pos: int) -> set[int] | None:
    """Points where an if_then_else condition atom on the iter var at `pos` changes truth
    (for atoms `a <op> b` with a - b = c*var + d, c = +-1, d constant after binding the other
    unit-extent vars); None if some atom uses the var in another form."""
    var = nest.iter_vars[pos].var
    analyzer = Analyzer()
    for iv, ext in zip(nest.iter_vars, nest.extents, strict=True):
        if ext == 1:
            analyzer.bind(iv.var, iv.dom.min)
    conditions: list[Any] = []

    def visit(call: Any) -> None:
        name = getattr(getattr(call, "op", None), "name", "")
        if isinstance(name, str) and name.endswith("if_then_else") and call.args:
            conditions.append(call.args[0])

    tvm_ffi.structural_walk(stmt.body, (tvm.ir.expr.Call, visit), order="post")
    atoms: list[Any] = []

    def split(expr: Any) -> None:
        if type(expr).__name__ == "And":
            split(expr.a)
            split(expr.b)
        else:
            atoms.append(expr)

    for cond in conditions:
        split(cond)
    flips: set[int] = set()
    for atom in atoms:
        if not _uses(atom, [var]):
            continue
        kind = type(atom).__name__
        if kind not in ("LT", "LE", "GT", "GE", "EQ", "NE"):
            return None
        diff = analyzer.simplify(atom.a - atom.b)
        coeffs = detect_linear_equation(diff, [var])
        if len(coeffs) != 2:
            return None
        c, d = _int(analyzer.simplify(coeffs[0])), _int(analyzer.simplify(coeffs[1]))
        if c not in (1, -1) or d is None:
            return None
        root = -d * c  # c*v + d == 0 at v = root (c is +-1)
        if kind in ("EQ", "NE"):
            flips |= {root, root + 1}
        elif (kind in ("LT", "GE")) == (c == 1):
            flips.add(root)  # c*v + d < 0 (or >= 0) flips between root-1 and root
        else:
            flips.add(root + 1)  # <= 0 (or > 0) flips between root and root+1
    return flips


def _dtype_bits(sch: Any, block: Any) -> int:
    stmt = sch.get(block)
    bits = [int(r.source.dtype.bits) for r in list(stmt.reads) + list(stmt.writes)]
    return max(bits) if bits else 32


# --------------------------------------------------------------------------------------------
# The scheduler for one PrimFunc
# --------------------------------------------------------------------------------------------


class _FuncScheduler:
    def __init__(self, func: Any, bits: int, min_parallel: int, tail_hints: bool) -> None:
        self.sch = s_tir.Schedule(func)
        self.bits = bits
        self.min_parallel = min_parallel
        self.tail_hints = tail_hints
        self.changed = False
        self.pending_decompose: list[tuple[Any, Any]] = []

    def finish(self) -> None:
        for block, loop in self.pending_decompose:
            self.sch.decompose_reduction(block, loop)
        self.pending_decompose.clear()

    # -- helpers ---------------------------------------------------------------------------

    def lanes(self, block: Any) -> int:
        return max(2, self.bits // _dtype_bits(self.sch, block))

    def root_blocks(self) -> list[Any]:
        root = self.sch.get_sblock(self.sch.mod["main"].body.block.name_hint)
        return list(self.sch.get_child_blocks(root))

    def cost(self, nest: _Nest) -> int | None:
        """Estimated work of a block in 'vectorized add' units (None: symbolic extents): its
        iterations, weighted up for transcendental calls (a libm exp/erf costs ~30 adds) and
        for accesses that do not walk the innermost loop contiguously (transposes, gathers)."""
        if nest.work is None:
            return None
        stmt = self.sch.get(nest.block)
        weight = 1 + _CALL_WEIGHT * _count_expensive(stmt)
        if nest.loops:
            inner = len(nest.loops) - 1
            regions = list(stmt.reads) + list(stmt.writes)
            if not all(_walks_unit(self.sch, nest, r, inner) for r in regions):
                weight += _GATHER_WEIGHT
        return nest.work * weight

    def worth_parallel(self, work: int | None, extent: int | None) -> bool:
        if extent is not None and extent < 2:
            return False
        return work is None or work >= self.min_parallel

    def vectorize_loop(self, loop: Any, lanes: int, extent: int | None) -> Any | None:
        """Vectorize `loop`: whole if it is short, else split by a factor near `lanes` that
        divides its extent if there is one, else peel a scalar tail off. Returns the outer loop
        of the split when it has no tail (usable for parallelism), else None."""
        if extent is None or extent < 2:
            return None
        if extent <= lanes:
            self.sch.vectorize(loop)
            self.changed = True
            return None
        factor, tail = _vector_factor(extent, lanes)
        if tail and not self.tail_hints:
            return None  # a predicated vector loop would be scalarized anyway
        outer, inner = self.sch.split(loop, factors=[None, factor])
        if tail:
            # LoopPartition (in TVM's default TIR pipeline) peels the predicated tail off, so
            # the body vectorizes without a predicate; the last `extent % factor` stay scalar.
            self.sch.annotate(outer, _PARTITION_HINT, 1)
        self.sch.vectorize(inner)
        self.changed = True
        return None if tail else outer

    def parallelize(self, loops: list[Any], work: int | None) -> None:
        """Bind the shortest prefix of `loops` (adjacent, outermost first) that gives
        _PARALLEL_CHUNKS iterations to `parallel`, fused, if the work is worth a parallel
        region. Inner loops stay nested: fusing them would cost a div/mod per iteration."""
        if not loops:
            return
        prefix: list[Any] = []
        extent: int | None = 1
        for loop in loops:
            prefix.append(loop)
            e = _int(self.sch.get(loop).extent)
            extent = None if extent is None or e is None else extent * e
            if extent is None or extent >= _PARALLEL_CHUNKS:
                break
        if not self.worth_parallel(work, extent):
            return
        fused = self.sch.fuse(*prefix) if len(prefix) > 1 else prefix[0]
        self.sch.parallel(fused)
        self.changed = True

    # -- inlining --------------------------------------------------------------------------

    def inline(self) -> None:
        """Inline injective intermediate producers where that recomputes nothing."""
        progress = True
        while progress:
            progress = False
            blocks = self.root_blocks()
            if len(blocks) < 2:
                return
            for block in blocks[:-1]:
                if self._try_inline(block):
                    progress = True
                    break

    def _try_inline(self, block: Any) -> bool:
        sch = self.sch
        stmt = sch.get(block)
        if len(stmt.writes) != 1 or stmt.init is not None:
            return False
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in stmt.iter_vars):
            return False
        consumers = list(sch.get_consumers(block))
        if not consumers:
            return False
        produced = _total_iterations(sch, block)
        consumed = 0
        for consumer in consumers:
            n = _total_iterations(sch, consumer)
            if n is None or produced is None:
                consumed = -1
                break
            consumed += n
        if consumed < 0:
            return False
        assert produced is not None
        # Never recompute: a padding producer inlined into a 3x3 pool would evaluate its bounds
        # check for every window element (measured 1.3x slower than computing the pad once).
        if consumed > produced:
            return False
        try:
            sch.compute_inline(block)
        except Exception:
            return False
        self.changed = True
        return True

    # -- single blocks -----------------------------------------------------------------------

    def schedule_block(self, block: Any, allow_parallel: bool = True) -> None:
        nest = _nest(self.sch, block)
        if nest is None:
            return
        if "R" in nest.kinds:
            self._schedule_reduction(nest, allow_parallel, first=0)
        else:
            self._schedule_injective(nest, allow_parallel, first=0)

    def _vector_suffix(self, nest: _Nest, first: int) -> list[int]:
        """Positions (>= first) of the longest loop suffix every access walks contiguously or
        not at all; at least the innermost loop."""
        n = len(nest.loops)
        if n - first < 1:
            return []
        stmt = self.sch.get(nest.block)
        regions = list(stmt.reads) + list(stmt.writes)
        best = [n - 1]
        for start in range(n - 2, first - 1, -1):
            suffix = list(range(start, n))
            if any(nest.extents[p] is None for p in suffix):
                break
            if all(_contiguous(nest, r, suffix) != "other" for r in regions):
                best = suffix
            else:
                break
        return best

    def _schedule_injective(self, nest: _Nest, allow_parallel: bool, first: int) -> None:
        """Loops [first:] of an all-spatial block: fuse the contiguous suffix and vectorize it,
        fuse the leading loops into one (parallel) loop."""
        sch = self.sch
        work = self.cost(nest)
        if not _vector_safe(sch.get(nest.block)):
            if allow_parallel:
                self.parallelize(nest.loops[first:], work)
            return
        suffix = self._vector_suffix(nest, first)
        if not suffix:
            return
        lanes = self.lanes(nest.block)
        outer = nest.loops[first : suffix[0]]
        inner_loops = [nest.loops[p] for p in suffix]
        extent: int | None = 1
        for p in suffix:
            e = nest.extents[p]
            extent = None if extent is None or e is None else extent * e
        inner = sch.fuse(*inner_loops) if len(inner_loops) > 1 else inner_loops[0]
        par_candidates = list(outer)
        if extent is None or extent < 2:
            pass
        elif extent <= lanes:
            sch.vectorize(inner)
            self.changed = True
        else:
            factor, tail = _vector_factor(extent, lanes)
            vec_outer, vec_inner = sch.split(inner, factors=[None, factor])
            sch.vectorize(vec_inner)
            self.changed = True
            runs = self._clean_runs(nest, suffix, extent, factor, tail)
            if len(runs) == 1:
                par_candidates.append(vec_outer)
            elif runs:
                # TVM scalarizes a whole vector loop whose if_then_else (padding, concat) or
                # split predicate (a tail) depends on the lane. Peel the vectors that contain
                # such a point off (loop_partition), so in the others the condition is
                # constant, lowering simplifies it away and they stay vectors.
                sch.loop_partition(vec_outer, factors=[hi - lo for lo, hi in runs[:-1]])
        if allow_parallel:
            self.parallelize(par_candidates, work)

    def _clean_runs(
        self, nest: _Nest, suffix: list[int], extent: int, factor: int, tail: bool
    ) -> list[tuple[int, int]]:
        """Maximal [lo, hi) runs of vector indices (vector o covers lanes [o*factor,
        (o+1)*factor)) that are all "clean" (no condition flip or loop end inside) or all
        "dirty". [] if the conditions cannot be analyzed (then nothing is peeled)."""
        flips: set[int] = set()
        if len(suffix) == 1:
            found = _condition_flips(self.sch.get(nest.block), nest, suffix[0])
            if found is None:
                return []
            flips = found
        count = -(-extent // factor)
        dirty = [any(o * factor < c < (o + 1) * factor for c in flips) for o in range(count)]
        if tail:
            dirty[-1] = True
        runs: list[tuple[int, int]] = []
        for o in range(count):
            if runs and dirty[runs[-1][0]] == dirty[o]:
                runs[-1] = (runs[-1][0], o + 1)
            else:
                runs.append((o, o + 1))
        return runs

    def _reduction_plan(self, nest: _Nest, first: int) -> str:
        """How to vectorize a reduction block (loops [first:]):
        'column': every access walks the innermost spatial axis contiguously (or not at all):
          move it inside the reduction loops and vectorize it (mean over a middle axis, matmul
          C[i, j] += A[i, k] * B[k, j], direct convolution along W);
        'row': every access walks the innermost reduction axis contiguously: keep `lanes`
          partial results (rfactor) and vectorize those (softmax, layer norm, global pooling);
        'serial': neither (e.g. stride-2 pooling windows): reduction loops stay scalar."""
        stmt = self.sch.get(nest.block)
        regions = list(stmt.reads) + list(stmt.writes)
        kinds = nest.kinds
        r_pos = [p for p in range(first, len(kinds)) if kinds[p] == "R"]
        s_pos = [
            p
            for p in range(first, len(kinds))
            if kinds[p] == "S" and (nest.extents[p] is None or nest.extents[p] != 1)
        ]
        if s_pos and all(_walks_unit(self.sch, nest, r, s_pos[-1]) for r in regions):
            return "column"
        if r_pos and all(_walks_unit(self.sch, nest, r, r_pos[-1]) for r in regions):
            return "row"
        return "serial"

    def _schedule_reduction(self, nest: _Nest, allow_parallel: bool, first: int) -> None:
        sch = self.sch
        work = self.cost(nest)
        kinds = nest.kinds
        plan = self._reduction_plan(nest, first)
        s_pos = [p for p in range(first, len(kinds)) if kinds[p] == "S"]
        r_pos = [p for p in range(first, len(kinds)) if kinds[p] == "R"]
        lanes = self.lanes(nest.block)
        vec_s: int | None = None
        if plan == "column" and _vector_safe(sch.get(nest.block)):
            wide = [p for p in s_pos if nest.extents[p] != 1]
            if wide and (nest.extents[wide[-1]] or 0) >= 2:
                vec_s = wide[-1]
        outer_s = [p for p in s_pos if p != vec_s]
        order = outer_s + r_pos + ([vec_s] if vec_s is not None else [])
        if order != list(range(first, len(kinds))):
            sch.reorder(*[nest.loops[p] for p in order])
            self.changed = True
        if vec_s is not None:
            self.vectorize_loop(nest.loops[vec_s], lanes, nest.extents[vec_s])
        if r_pos:
            # Hoist the init out of the reduction loops (init loops keep a vectorized kind), so
            # the update loop has no `if k == 0` and LLVM keeps the accumulator in a register.
            # Done last: once split off, the update block alone no longer counts as a
            # reduction, and parallel/vectorize refuse loops above it.
            self.pending_decompose.append((nest.block, nest.loops[r_pos[0]]))
        if allow_parallel:
            self.parallelize([nest.loops[p] for p in outer_s], work)

    def rfactor_rows(self) -> None:
        """Root-level pre-pass: a reduction along the contiguous innermost axis (softmax, layer
        norm, global pooling) keeps `lanes` partial results (rfactor) so its inner loop is a
        spatial, vectorizable one; the partials are reduced at the end. Only when a factor in
        [lanes/2, lanes] divides the reduced extent. Runs at root level, before compute_at:
        rfactor needs the reduction block to be the first child of its outermost loop."""
        for block in self.root_blocks():
            nest = _nest(self.sch, block)
            if nest is None or "R" not in nest.kinds or self._reduction_plan(nest, 0) != "row":
                continue
            if not _vector_safe(self.sch.get(block)):
                continue
            self._rfactor_row(nest)

    def _rfactor_row(self, nest: _Nest) -> None:
        sch = self.sch
        stmt = sch.get(nest.block)
        if len(stmt.writes) != 1:
            return
        lanes = self.lanes(nest.block)
        kinds = nest.kinds
        r_pos = [p for p, c in enumerate(kinds) if c == "R"]
        if r_pos[-1] != len(kinds) - 1:
            return  # after reorder the innermost would be spatial; leave it serial
        regions = list(stmt.reads) + list(stmt.writes)
        # Fuse trailing reduction loops that walk memory contiguously (e.g. a pool's H x W).
        suffix = [r_pos[-1]]
        for k in range(len(r_pos) - 2, -1, -1):
            cand = r_pos[k:]
            if cand != list(range(cand[0], cand[0] + len(cand))):
                break
            if all(_contiguous(nest, r, cand) != "other" for r in regions):
                suffix = cand
            else:
                break
        extent = 1
        for p in suffix:
            e = nest.extents[p]
            if e is None:
                return
            extent *= e
        if extent < 2 * lanes:
            return
        factor, tail = _vector_factor(extent, lanes)
        if tail:
            return  # the partial results' loop would carry a predicate and stay scalar
        loops = [nest.loops[p] for p in suffix]
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        _, inner = sch.split(fused, factors=[None, factor])
        sch.rfactor(inner, factor_axis=len(stmt.writes[0].source.shape))
        self.changed = True

    # -- multi-block functions ---------------------------------------------------------------

    def schedule_fused(self, blocks: list[Any]) -> None:
        """Compute all blocks row by row under the last block's leading spatial loops."""
        sch = self.sch
        nests = [_nest(sch, b) for b in blocks]
        nests_ok = [n for n in nests if n is not None]
        if len(nests_ok) != len(nests):
            raise _NotApplicable("a block has a non-trivial loop binding")
        last = nests_ok[-1]
        k = len(last.loops)
        for nest in nests_ok:
            kinds = nest.kinds
            lead = len(kinds) - len(kinds.lstrip("S"))
            if "R" in kinds and self._reduction_plan(nest, 0) == "column":
                s_pos = [p for p, c in enumerate(kinds) if c == "S" and nest.extents[p] != 1]
                lead = min(lead, s_pos[-1])  # keep the vectorized spatial axis inside
            k = min(k, lead)
            for p in range(min(k, len(nest.extents))):
                if nest.extents[p] is None or nest.extents[p] != last.extents[p]:
                    k = p
                    break
        if k == 0:
            raise _NotApplicable("no shared leading spatial loops")
        costs = [self.cost(n) for n in nests_ok]
        total_work: int | None = 0
        for c in costs:
            total_work = None if total_work is None or c is None else total_work + c
        before = {id(b): _total_iterations(sch, b) for b in blocks}

        spatial_loops = last.loops[:k]
        spatial = sch.fuse(*spatial_loops) if k > 1 else spatial_loops[0]
        for block in reversed(blocks[:-1]):
            sch.compute_at(block, spatial, preserve_unit_loops=False)
        for block in blocks[:-1]:
            after, orig = _total_iterations(sch, block), before[id(block)]
            if after is None or orig is None or after > orig:
                raise _NotApplicable("compute_at would recompute a producer")
        self.changed = True
        # Inner loops of every block, now under `spatial`.
        for block in sch.get_child_blocks(spatial):
            below = _nest(sch, block, 1)
            if below is None:
                continue
            if "R" in below.kinds:
                self._schedule_reduction(below, allow_parallel=False, first=0)
            else:
                self._schedule_injective(below, allow_parallel=False, first=0)
        spatial_extent = _int(sch.get(spatial).extent)
        if self.worth_parallel(total_work, spatial_extent):
            sch.parallel(spatial)


class _NotApplicable(Exception):
    pass


def _first_reduction_loop(sch: Any, block: Any) -> Any:
    """The outermost loop that a reduction iter var of `block` is bound to."""
    stmt = sch.get(block)
    realize = _get_sblock_realize(sch, block)
    reduce_values = [
        value
        for iv, value in zip(stmt.iter_vars, realize.iter_values, strict=True)
        if iv.iter_type == tirx.IterVar.CommReduce
    ]
    for loop_rv in sch.get_loops(block):
        var = sch.get(loop_rv).loop_var
        if any(_uses(value, [var]) for value in reduce_values):
            return loop_rv
    raise _NotApplicable("no reduction loop")


def _already_scheduled(func: Any) -> bool:
    attrs = func.attrs
    if attrs is not None:
        for key in _LEGACY_SCHEDULED_ATTRS:
            if key in attrs and bool(attrs[key]):
                return True
    found = []

    def visit(loop: Any) -> None:
        if loop.kind != tirx.ForKind.SERIAL or len(loop.annotations) > 0:
            found.append(loop)

    tvm_ffi.structural_walk(func.body, (tirx.For, visit), order="post")
    return bool(found)


def schedule_prim_func(
    func: Any, target: Any, min_parallel_elements: int, tail_hints: bool = True
) -> tuple[Any, str] | None:
    """Schedule one PrimFunc: (scheduled function, strategy) or None if no rule applied.
    Raises if scheduling failed (the caller keeps the original). Strategies: "single" (one
    loop nest), "fused" (blocks computed row by row under one shared loop), "separate" (each
    block on its own). tail_hints=False vectorizes only loops a factor near the vector width
    divides, without asking LoopPartition to peel tails."""
    bits = vector_bits(target)
    scheduler = _FuncScheduler(func, bits, min_parallel_elements, tail_hints)
    scheduler.inline()
    saved = scheduler.sch.copy()
    try:
        scheduler.rfactor_rows()
    except Exception:
        log.debug("rfactor failed", exc_info=True)
        scheduler.sch = saved
    blocks = scheduler.root_blocks()
    if not blocks:
        return None
    if len(blocks) == 1:
        scheduler.schedule_block(blocks[0])
        strategy = "single"
    else:
        saved = scheduler.sch.copy()
        changed = scheduler.changed
        try:
            scheduler.schedule_fused(blocks)
            strategy = "fused"
        except Exception:
            log.debug("fused schedule not applicable", exc_info=True)
            scheduler.sch = saved
            scheduler.changed = changed
            scheduler.pending_decompose = []
            for block in blocks:
                _schedule_independent(scheduler, block)
            strategy = "separate"
    scheduler.finish()
    if not scheduler.changed:
        return None
    return scheduler.sch.mod["main"], strategy


def _has_symbolic_shapes(func: Any) -> bool:
    # TVM 0.27: buffer parameters are Vars whose type is a BufferType (no buffer_map).
    for param in func.params:
        shape = getattr(getattr(param, "ty", None), "shape", None)
        if shape is not None and any(_int(dim) is None for dim in shape):
            return True
    return False


def _schedule_independent(scheduler: _FuncScheduler, block: Any) -> None:
    """Schedule one root block on its own; a failure leaves just that block as it was."""
    saved = scheduler.sch.copy()
    changed = scheduler.changed
    pending = list(scheduler.pending_decompose)
    try:
        scheduler.schedule_block(block)
    except Exception:
        log.debug("block schedule failed", exc_info=True)
        scheduler.sch = saved
        scheduler.changed = changed
        scheduler.pending_decompose = pending


def _check_lowers(func: Any, target: Any) -> None:
    """Run TVM's TIR lowering pipeline (what tvm.compile runs next, short of code generation)
    on one scheduled function, so a schedule the backend cannot lower is caught here."""
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    mod = tirx.transform.BindTarget(target.with_host(target))(mod)
    lower, _, _ = tirx.get_default_tir_pipeline(target)
    lower(mod)


def _schedule_checked(
    func: Any, target: Any, min_parallel: int, verify: bool
) -> tuple[Any, str] | None:
    """Schedule and (if verify) lower-check; on a lowering failure retry without tail hints
    (TVM 0.27's LoopPartition breaks on them in some int64/symbolic-shape functions)."""
    hint_options = [False] if _has_symbolic_shapes(func) else [True, False]
    error: Exception | None = None
    for tail_hints in hint_options:
        result = schedule_prim_func(func, target, min_parallel, tail_hints)
        if result is None:
            return None
        scheduled = result[0].with_attr(SCHEDULED_ATTR, True)
        if not verify:
            return scheduled, result[1]
        try:
            _check_lowers(scheduled, target)
        except Exception as exc:
            log.debug("scheduled function does not lower", exc_info=True)
            error = exc
            continue
        return scheduled, result[1]
    assert error is not None
    raise error


def default_cpu_schedule(
    target: tvm.target.Target,
    min_parallel_elements: int = DEFAULT_MIN_PARALLEL_ELEMENTS,
    *,
    stats: ScheduleStats | None = None,
    verify: bool = True,
) -> tvm.transform.Pass:
    """A module pass giving every unscheduled PrimFunc a default CPU schedule (run it right
    after FuseTIR). Functions with the `tirx.is_scheduled` attribute, or with any non-serial
    or annotated loop, are left alone; scheduled ones get `tirx.is_scheduled = True`.

    min_parallel_elements: a function runs single-threaded unless its estimated work reaches
    this: loop iterations, weighted x25 per transcendental call and x5 for non-contiguous
    access (so ~64K elements of add+relu, ~2.6K of exp).
    stats: filled with what was scheduled, skipped, failed.
    verify: also run the TIR lowering passes on each scheduled function and keep the original
    if they fail.
    """
    record = stats if stats is not None else ScheduleStats()

    def transform(mod: Any, _ctx: Any) -> Any:
        record.reset()
        updates: dict[Any, Any] = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            name = gvar.name_hint
            try:
                if _already_scheduled(func):
                    record.skipped.append(name)
                    continue
                result = _schedule_checked(func, target, min_parallel_elements, verify)
                if result is None:
                    record.skipped.append(name)
                    continue
                scheduled, strategy = result
            except Exception as exc:  # never fail the build over a schedule
                message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"
                record.failed[name] = message
                log.warning("ember: left %s unscheduled (%s)", name, message)
                continue
            updates[gvar] = scheduled
            record.scheduled.append(name)
            record.strategy[name] = strategy
        if not updates:
            return mod
        mod = mod.clone()  # never mutate the caller's module
        for gvar, func in updates.items():
            mod.update_func(gvar, func)
        return mod

    pass_fn: Callable[..., Any] = transform
    return tvm.transform.module_pass(pass_fn, opt_level=0, name="EmberDefaultCPUSchedule")
