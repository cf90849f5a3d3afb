"""Default CPU schedules (ember.compiler.schedule) and the cpu_pipeline that applies them.

Every case builds a small Relax module, compiles it with cpu_pipeline, runs it on the Relax VM
and compares with numpy (float64 references): rtol 1e-5 for elementwise/data movement, 1e-4
for reductions. Separate tests check that the scheduled TIR really is parallel/vectorized (so a
regression to serial loops fails), that parallelism is gated on work size, and that a function
whose scheduling fails is left as it was without failing the build.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.target import codegen

from ember.compiler import schedule as schedule_mod
from ember.compiler.pipeline import cpu_pipeline
from ember.compiler.schedule import (
    SCHEDULED_ATTR,
    ScheduleStats,
    default_cpu_schedule,
    vector_bits,
)

R = relax.op
ELEMENTWISE = {"rtol": 1e-5, "atol": 1e-6}
REDUCTION = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def target() -> Any:
    return tvm.target.Target(
        {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu()), "num-cores": 2}
    )


def _module(shapes: Sequence[Sequence[Any]], build: Callable[..., Any]) -> Any:
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(*params))
        bb.emit_func_output(out)
    return bb.get()


def _run(target: Any, mod: Any, inputs: Sequence[np.ndarray], stats: ScheduleStats) -> Any:
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target, stats=stats))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(x) for x in inputs]).numpy()


def _scheduled(target: Any, mod: Any, **kwargs: Any) -> tuple[Any, ScheduleStats]:
    """The module right after default_cpu_schedule, for inspecting its TIR."""
    stats = ScheduleStats()
    with target:
        legal = tvm.transform.Sequential(cpu_generic.legalize_passes(target))(mod)
        return default_cpu_schedule(target, stats=stats, **kwargs)(legal), stats


def _prim_funcs(mod: Any) -> dict[str, Any]:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


# ---------------------------------------------------------------------------------------------
# numpy references (float64)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * g + b


def _max_pool(x: np.ndarray, k: int = 3, s: int = 2, p: int = 1) -> np.ndarray:
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 2 * p, w + 2 * p), -np.inf, np.float64)
    padded[:, :, p : p + h, p : p + w] = x
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, padded[:, :, i : i + s * oh : s, j : j + s * ow : s])
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))


@dataclass(frozen=True)
class Case:
    name: str
    shapes: list[tuple[int, ...]]
    build: Callable[..., Any]
    ref: Callable[..., np.ndarray]
    tol: dict[str, float]
    large: bool = False  # enough work that the main loop must be parallel


CASES = [
    Case(
        "add_relu_fused_tiny_b1",
        [(1, 8), (8,)],
        lambda x, b: R.nn.relu(R.add(x, b)),
        lambda x, b: np.maximum(x + b, 0),
        ELEMENTWISE,
    ),
    Case(
        "add_relu_fused_32x128x768",
        [(32, 128, 768), (768,)],
        lambda x, b: R.nn.relu(R.add(x, b)),
        lambda x, b: np.maximum(x + b, 0),
        ELEMENTWISE,
        large=True,
    ),
    Case(
        "odd_7x13x5_broadcast",
        [(7, 13, 5), (13, 5)],
        lambda x, y: R.nn.relu(R.multiply(x, y)),
        lambda x, y: np.maximum(x * y, 0),
        ELEMENTWISE,
    ),
    Case(
        "gelu_odd_33x130x77",
        [(33, 130, 77)],
        lambda x: R.nn.gelu(x),
        _gelu,
        {"rtol": 1e-5, "atol": 1e-5},  # TVM's erf is a polynomial (as in the default pipeline)
        large=True,
    ),
    Case(
        "transpose_nchw_to_nhwc_2x5x6x7",
        [(2, 5, 6, 7)],
        lambda x: R.permute_dims(x, [0, 2, 3, 1]),
        lambda x: x.transpose(0, 2, 3, 1),
        ELEMENTWISE,
    ),
    Case(
        "transpose_nchw_to_nhwc_8x64x56x56",
        [(8, 64, 56, 56)],
        lambda x: R.permute_dims(x, [0, 2, 3, 1]),
        lambda x: x.transpose(0, 2, 3, 1),
        ELEMENTWISE,
        large=True,
    ),
    Case(
        "transpose_heads_32x128x12x64",
        [(32, 128, 12, 64)],
        lambda x: R.permute_dims(x, [0, 2, 1, 3]),
        lambda x: x.transpose(0, 2, 1, 3),
        ELEMENTWISE,
        large=True,
    ),
    Case(
        "softmax_last_axis_odd_3x5x13",
        [(3, 5, 13)],
        lambda x: R.nn.softmax(x, axis=-1),
        _softmax,
        REDUCTION,
    ),
    Case(
        "softmax_last_axis_8x12x128x128",
        [(8, 12, 128, 128)],
        lambda x: R.nn.softmax(x, axis=-1),
        _softmax,
        REDUCTION,
        large=True,
    ),
    Case(
        "softmax_middle_axis_6x40x24",
        [(6, 40, 24)],
        lambda x: R.nn.softmax(x, axis=1),
        lambda x: _softmax(x, axis=1),
        REDUCTION,
    ),
    Case(
        "layer_norm_b1_1x4x16",
        [(1, 4, 16), (16,), (16,)],
        lambda x, g, b: R.nn.layer_norm(x, g, b, axes=[-1]),
        _layer_norm,
        REDUCTION,
    ),
    Case(
        "layer_norm_32x128x768",
        [(32, 128, 768), (768,), (768,)],
        lambda x, g, b: R.nn.layer_norm(x, g, b, axes=[-1]),
        _layer_norm,
        REDUCTION,
        large=True,
    ),
    Case(
        "layer_norm_odd_5x7x100",
        [(5, 7, 100), (100,), (100,)],
        lambda x, g, b: R.nn.layer_norm(x, g, b, axes=[-1]),
        _layer_norm,
        REDUCTION,
    ),
    Case(
        "mean_axis1_32x128x768",
        [(32, 128, 768)],
        lambda x: R.mean(x, axis=[1]),
        lambda x: x.astype(np.float64).mean(1),
        REDUCTION,
        large=True,
    ),
    Case(
        "mean_last_axis_odd_4x33x70",
        [(4, 33, 70)],
        lambda x: R.mean(x, axis=[-1]),
        lambda x: x.astype(np.float64).mean(-1),
        REDUCTION,
    ),
    Case(
        "sum_all_64x256",
        [(64, 256)],
        lambda x: R.sum(x),
        lambda x: x.astype(np.float64).sum(),
        REDUCTION,
    ),
    Case(
        "max_pool2d_3x3_s2_2x4x9x9",
        [(2, 4, 9, 9)],
        lambda x: R.nn.max_pool2d(x, (3, 3), (2, 2), padding=(1, 1)),
        _max_pool,
        ELEMENTWISE,
    ),
    Case(
        "max_pool2d_3x3_s2_4x64x56x56",
        [(4, 64, 56, 56)],
        lambda x: R.nn.max_pool2d(x, (3, 3), (2, 2), padding=(1, 1)),
        _max_pool,
        ELEMENTWISE,
        large=True,
    ),
    Case(
        "global_avg_pool_2x16x7x7",
        [(2, 16, 7, 7)],
        lambda x: R.nn.adaptive_avg_pool2d(x, (1, 1)),
        lambda x: x.astype(np.float64).mean((2, 3), keepdims=True),
        REDUCTION,
    ),
    Case(
        "global_avg_pool_32x256x8x8",
        [(32, 256, 8, 8)],
        lambda x: R.nn.adaptive_avg_pool2d(x, (1, 1)),
        lambda x: x.astype(np.float64).mean((2, 3), keepdims=True),
        REDUCTION,
        large=True,
    ),
    Case(
        "concat_reshape_2x3_2x5",
        [(2, 3), (2, 5)],
        lambda x, y: R.reshape(R.concat([x, y], axis=1), (4, 4)),
        lambda x, y: np.concatenate([x, y], 1).reshape(4, 4),
        ELEMENTWISE,
    ),
    Case(
        "concat_last_axis_odd_9x13_9x7_9x30",
        [(9, 13), (9, 7), (9, 30)],
        lambda x, y, z: R.nn.relu(R.concat([x, y, z], axis=1)),
        lambda x, y, z: np.maximum(np.concatenate([x, y, z], 1), 0),
        ELEMENTWISE,
    ),
    Case(
        "pad_odd_3x5x11x13",
        [(3, 5, 11, 13)],
        lambda x: R.nn.pad(x, [0, 0, 0, 0, 1, 2, 3, 1], pad_value=0.5),
        lambda x: np.pad(x, [(0, 0), (0, 0), (1, 2), (3, 1)], constant_values=0.5),
        ELEMENTWISE,
    ),
    Case(
        "concat_reshape_64x300_64x212",
        [(64, 300), (64, 212)],
        lambda x, y: R.reshape(R.concat([x, y], axis=1), (64, 16, 32)),
        lambda x, y: np.concatenate([x, y], 1).reshape(64, 16, 32),
        ELEMENTWISE,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_numpy(target: Any, case: Case) -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(np.float32) for s in case.shapes]
    stats = ScheduleStats()
    got = _run(target, _module(case.shapes, case.build), inputs, stats)
    expect = case.ref(*inputs)
    np.testing.assert_allclose(got, expect, **case.tol)
    assert stats.scheduled, f"nothing was scheduled: {stats}"
    assert not stats.failed


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_scheduled_loops_are_parallel_or_vectorized(target: Any, case: Case) -> None:
    mod, stats = _scheduled(target, _module(case.shapes, case.build))
    assert not stats.failed
    for name, func in _prim_funcs(mod).items():
        text = func.script()
        assert name in stats.scheduled, f"{name} was not scheduled: {stats}"
        assert func.attrs[SCHEDULED_ATTR]
        assert "T.parallel" in text or "T.vectorized" in text, f"{name} is serial:\n{text}"
        if case.large:
            assert "T.parallel" in text, f"{name} has enough work to be parallel:\n{text}"


def test_ops_unsafe_to_vectorize_stay_scalar(target: Any) -> None:
    """sinh has no vector lowering in TVM's LLVM codegen, and x86 vector and scalar shifts
    disagree on out-of-range counts: such blocks are parallelized at most, never vectorized."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 40)).astype(np.float32)
    stats = ScheduleStats()
    got = _run(target, _module([(64, 40)], lambda a: R.sinh(a)), [x], stats)
    np.testing.assert_allclose(got, np.sinh(x.astype(np.float64)), **ELEMENTWISE)

    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((64, 40), "int32"))
    b = relax.Var("b", relax.TensorType((64, 40), "int32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(R.left_shift(a, b))
        bb.emit_func_output(out)
    mod, stats = _scheduled(target, bb.get())
    assert not stats.failed
    for func in _prim_funcs(mod).values():
        assert "T.vectorized" not in func.script()


def test_small_work_stays_single_threaded(target: Any) -> None:
    mod, _ = _scheduled(target, _module([(1, 128, 64), (64,)], lambda x, b: R.add(x, b)))
    (func,) = _prim_funcs(mod).values()
    text = func.script()
    assert "T.vectorized" in text and "T.parallel" not in text
    # The same function is parallel once the gate is lowered below its size.
    mod, _ = _scheduled(
        target,
        _module([(1, 128, 64), (64,)], lambda x, b: R.add(x, b)),
        min_parallel_elements=1024,
    )
    (func,) = _prim_funcs(mod).values()
    assert "T.parallel" in func.script()


@pytest.mark.parametrize(
    ("shapes", "build"),
    [
        ([(32, 12, 128, 128)], lambda x: R.nn.softmax(x, axis=-1)),
        ([(32, 128, 768), (768,), (768,)], lambda x, g, b: R.nn.layer_norm(x, g, b, axes=[-1])),
    ],
    ids=["softmax", "layer_norm"],
)
def test_row_reductions_are_fused_under_one_parallel_loop(
    target: Any, shapes: list[tuple[int, ...]], build: Callable[..., Any]
) -> None:
    mod, stats = _scheduled(target, _module(shapes, build))
    (name, func) = next(iter(_prim_funcs(mod).items()))
    assert stats.strategy[name] == "fused"
    text = func.script()
    assert text.count("T.parallel") == 1  # one parallel region for all the blocks
    assert text.count("T.vectorized") >= 3  # partial sums/max, elementwise stages


def test_symbolic_batch_compiles_and_runs(target: Any) -> None:
    n = tvm.tirx.Var("n", "int64")
    mod = _module([(n, 24, 40), (40,)], lambda x, b: R.nn.softmax(R.add(x, b), axis=-1))
    rng = np.random.default_rng(3)
    for batch in (1, 5):
        x = rng.standard_normal((batch, 24, 40)).astype(np.float32)
        b = rng.standard_normal(40).astype(np.float32)
        stats = ScheduleStats()
        got = _run(target, mod, [x, b], stats)
        np.testing.assert_allclose(got, _softmax(x + b), **REDUCTION)
        assert not stats.failed


def test_onnx_model_through_importer(target: Any) -> None:
    import onnx
    from onnx import TensorProto, helper
    from tvm.relax.frontend.onnx import from_onnx

    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["t"], ["s"], axis=-1),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "attn_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, 4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 16, 32])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = from_onnx(model, shape_dict={"x": [2, 16, 4, 32]}, keep_params_in_input=False)
    x = np.random.default_rng(4).standard_normal((2, 16, 4, 32)).astype(np.float32)
    stats = ScheduleStats()
    got = _run(target, mod, [x], stats)
    np.testing.assert_allclose(got, _softmax(x.transpose(0, 2, 1, 3)), **REDUCTION)
    assert stats.scheduled and not stats.failed


def test_failure_leaves_function_unscheduled(target: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = schedule_mod.schedule_prim_func

    def flaky(func: Any, *args: Any, **kwargs: Any) -> Any:
        if "softmax" in func.script():
            raise RuntimeError("boom")
        return real(func, *args, **kwargs)

    monkeypatch.setattr(schedule_mod, "schedule_prim_func", flaky)
    mod = _module(
        [(4, 8, 16)], lambda x: R.nn.softmax(R.permute_dims(R.nn.relu(x), [0, 2, 1]), axis=-1)
    )
    x = np.random.default_rng(5).standard_normal((4, 8, 16)).astype(np.float32)
    stats = ScheduleStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _run(target, mod, [x], stats)
    np.testing.assert_allclose(got, _softmax(np.maximum(x, 0).transpose(0, 2, 1)), **REDUCTION)
    assert list(stats.failed) == ["softmax"] and "boom" in stats.failed["softmax"]
    assert stats.scheduled  # the other functions still were


def test_lowering_failure_is_caught(target: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(func: Any, tgt: Any) -> None:
        raise ValueError("cannot lower")

    monkeypatch.setattr(schedule_mod, "_check_lowers", broken)
    mod, stats = _scheduled(target, _module([(64, 64)], lambda x: R.nn.relu(x)))
    assert list(stats.failed) == ["relu"]
    (func,) = _prim_funcs(mod).values()
    assert SCHEDULED_ATTR not in func.attrs and "T.vectorized" not in func.script()


def test_already_scheduled_functions_are_left_alone(target: Any) -> None:
    mod = _module([(64, 64)], lambda x: R.nn.relu(R.add(x, x)))
    with target:
        legal = tvm.transform.Sequential(cpu_generic.legalize_passes(target))(mod)
    (gv, func) = next(
        (gv, f) for gv, f in legal.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    )
    legal.update_func(gv, func.with_attr(SCHEDULED_ATTR, True))
    before = legal[gv]
    stats = ScheduleStats()
    out = default_cpu_schedule(target, stats=stats)(legal)
    assert stats.skipped == [gv.name_hint] and not stats.scheduled
    assert out[gv].same_as(before)


def test_pass_does_not_modify_its_input(target: Any) -> None:
    mod = _module([(64, 64)], lambda x: R.nn.relu(x))
    with target:
        legal = tvm.transform.Sequential(cpu_generic.legalize_passes(target))(mod)
    funcs = dict(_prim_funcs(legal))
    default_cpu_schedule(target)(legal)
    for name, func in _prim_funcs(legal).items():
        assert func.same_as(funcs[name])


@pytest.mark.parametrize(
    ("spec", "bits"),
    [
        ({"kind": "llvm", "mcpu": "skylake-avx512"}, 512),
        ({"kind": "llvm", "mcpu": "znver3"}, 256),
        ({"kind": "llvm", "mcpu": "haswell"}, 256),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"}, 128),
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, 128),
    ],
)
def test_vector_bits(spec: dict[str, str], bits: int) -> None:
    assert vector_bits(tvm.target.Target(spec)) == bits
