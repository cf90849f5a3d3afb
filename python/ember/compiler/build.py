"""`ember.compile`: ONNX -> (prepare per batch bucket) -> Relax -> one TVM library -> Artifact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from ..artifact import (
    FORMAT_VERSION,
    LIBRARY_FILE,
    MANIFEST_FILE,
    Artifact,
    TensorSpec,
    write_checksums,
)
from ..errors import CompileError, UnsupportedOperatorError
from ..tune import TuneBudget
from . import onnx_prep
from .cuda import build_cuda_library, device_manifest
from .dispatch import CONV_LAYOUTS

if TYPE_CHECKING:
    import numpy as np

    from ..quantize.calibrate import Calibration
from .targets import Target, resolve_target
from .tuning import TuningReport
from .tuning import tune as tune_module

Progress = Callable[[str], None]


def _load_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
) -> tuple[onnx.ModelProto, bytes, str]:
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        return model, data, model.graph.name or "model"
    path = Path(model)
    if not path.is_file():
        raise CompileError(f"model file '{path}' does not exist")
    data = path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and others
        raise CompileError(f"'{path}' is not a valid ONNX model: {exc}") from exc
    if path.with_suffix(path.suffix + ".data").exists() or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer
    ):
        proto = onnx.load(str(path))  # pulls external weight files next to the model
    return proto, data, proto.graph.name or path.stem


def check_supported(model: onnx.ModelProto) -> None:
    """Raise UnsupportedOperatorError naming the first node TVM's ONNX importer cannot convert."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convert_map = _get_convert_map()
    opset = onnx_prep.opset_version(model)
    for node in model.graph.node:
        if node.op_type in ("Constant", "If"):
            continue
        domain_ok = node.domain in ("", "ai.onnx", "com.microsoft")
        if not domain_ok or node.op_type not in convert_map:
            domain = node.domain or "ai.onnx"
            raise UnsupportedOperatorError(
                f"node '{node.name or node.output[0]}' uses operator {domain}::{node.op_type} "
                f"(opset {opset}), which the TVM ONNX importer does not support"
            )


def _failing_node(exc: BaseException) -> onnx.NodeProto | None:
    tb = exc.__traceback__
    node = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("node")
        if isinstance(candidate, onnx.NodeProto):
            node = candidate
        tb = tb.tb_next
    return node


def _import_relax(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, str]
) -> Any:
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the importer warns on every checker nit
            return from_onnx(
                model,
                shape_dict={k: list(v) for k, v in shapes.items()},
                dtype_dict=dict(dtypes),
                keep_params_in_input=False,
            )
    except Exception as exc:
        node = _failing_node(exc)
        opset = onnx_prep.opset_version(model)
        if node is not None:
            raise UnsupportedOperatorError(
                f"node '{node.name or node.output[0]}' (operator {node.op_type}, opset {opset}) "
                f"could not be imported: {type(exc).__name__}: {exc}"
            ) from exc
        raise CompileError(f"TVM could not import the model: {type(exc).__name__}: {exc}") from exc


def _output_signature(func: Any) -> list[tuple[tuple[int, ...], str]]:
    from tvm import relax

    ret = func.ret_ty
    fields = ret.fields if isinstance(ret, relax.TupleType) else [ret]
    out = []
    for sinfo in fields:
        if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
            raise CompileError(f"model output has an unsupported type {sinfo}")
        out.append((tuple(int(d) for d in sinfo.shape.values), str(sinfo.dtype)))
    return out


class _BucketMerger:
    """Merges the per-bucket modules into one: each bucket's main becomes main_b<N>, helper
    functions the importer emitted (e.g. PrimFuncs for Clip) are renamed apart or shared when
    identical, and equal constants become one object so each weight is stored once."""

    def __init__(self) -> None:
        import tvm
        from tvm import relax

        self.module = tvm.IRModule()
        constants: dict[tuple[str, tuple[int, ...], bytes], Any] = {}
        self._helpers: dict[int, list[tuple[Any, Any]]] = {}  # structural hash -> [(gv, func)]
        self._names: set[str] = set()

        @relax.expr_functor.mutator
        class Rewriter(relax.PyExprMutator):  # type: ignore[misc]
            def __init__(self, gv_map: dict[Any, Any]) -> None:
                super().__init__()
                self.gv_map = gv_map

            def visit_generic_const_(self, const: Any) -> Any:
                array = const.value.numpy()
                key = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).digest())
                return constants.setdefault(key, const)

            def visit_global_var_(self, gv: Any) -> Any:
                return self.gv_map.get(gv, gv)

        self._rewriter = Rewriter

    def add(self, mod: Any, name: str) -> Any:
        """Add `mod`'s main as `name` with its helpers; returns the rewritten main."""
        import tvm
        import tvm_ffi
        from tvm import relax

        gv_map: dict[Any, Any] = {}
        for gv, func in mod.functions_items():
            if gv.name_hint == "main":
                continue
            digest = tvm_ffi.structural_hash(func)
            same = [
                g for g, f in self._helpers.get(digest, []) if tvm_ffi.structural_equal(f, func)
            ]
            if same:
                gv_map[gv] = same[0]
                continue
            new_name, k = gv.name_hint, 0
            while new_name in self._names:
                k += 1
                new_name = f"{gv.name_hint}_{k}"
            self._names.add(new_name)
            new_gv = tvm.ir.GlobalVar(new_name)
            relax.expr._update_type(new_gv, gv.ty)  # call sites need the callee's type
            self.module[new_gv] = func
            self._helpers.setdefault(digest, []).append((new_gv, func))
            gv_map[gv] = new_gv
        main = self._rewriter(gv_map).visit_expr(mod["main"])
        self.module[name] = main.with_attr("global_symbol", name)
        self._names.add(name)
        return main


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Redirect fd 2 (TVM's C++ logging) into `path` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _host_info() -> dict[str, Any]:
    from tvm.target import codegen

    from .. import _core

    return {
        "arch": _core.host_arch(),
        "cpu": str(codegen.llvm_get_system_cpu()),
        "cpu_features": sorted(_core.host_cpu_features()),
        "platform": platform.platform(),
    }


def compile(
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: str | Mapping[str, Any] = "cpu",
    batch_sizes: Sequence[int] | None = (1, 8, 16, 32),
    output: str | os.PathLike[str] | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int | None]] | None = None,
    batch_axis: int | Mapping[str, int | None] | None = None,
    name: str | None = None,
    kernel_library: str | None = "auto",
    conv_layout: str = "auto",
    tune: TuneBudget | None = None,
    precision: str = "fp32",
    calibration: Iterable[Mapping[str, np.ndarray]] | Calibration | None = None,
    calibration_method: str = "minmax",
    progress: Progress | None = None,
) -> Artifact:
    """Compile an ONNX model into an artifact directory for `target`, one function per bucket.

    batch_sizes: the buckets to compile (None: the declared shapes, for models without a batch
    axis). input_shapes: sizes of symbolic dims other than the batch axis, e.g.
    {"x": (None, 128, 768)}. batch_axis: override the detected batch axis (int or per input).
    output: the artifact directory (default: ./<model name>.ember). kernel_library: "dnnl" sends
    conv/matmul to oneDNN kernels in the C++ core, None keeps everything in TVM, "auto" picks
    oneDNN on x86-64 and aarch64. conv_layout: activation layout of library convs, "NHWC",
    "NCHW8c" or "auto" (the layout oneDNN runs most of the model's conv FLOPs fastest in: NCHW8c
    for depthwise, 1x1 and few-channel convs, NHWC for dense convs with more channels; aarch64
    targets always use NHWC).
    tune: a `TuneBudget` runs MetaSchedule on the loop nests TVM still generates, caching the
    results on disk so that compiling the same model again skips the search (default: no tuning;
    default schedules only).
    precision: "fp32"; "int8-static": MatMuls and Convs (after ReLU) with constant weights run on
    int8 kernels with activation scales from `calibration` (input dicts, or an
    `ember.quantize.Calibration`), computed by `calibration_method` ("minmax", "percentile",
    "entropy"; not for aarch64 targets); "int8-weight": MatMul and Conv weights are stored as
    int8 per output channel (the artifact is ~4x smaller) and dequantized once when the kernels
    prepack them, so compute stays float and so does the speed. Models that already carry QDQ
    nodes run their QDQ ops in int8 at any precision.
    """
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    proto, source_bytes, default_name = _load_model(model)
    model_name = name or default_name
    resolved = resolve_target(target)
    _check_host_can_build(resolved)
    if precision == "int8-static":
        _check_static_int8(resolved, "precision 'int8-static'", "use 'fp32' or 'int8-weight'")
    proto, quantization = _apply_precision(proto, precision, calibration, calibration_method, say)
    library = _choose_kernel_library(kernel_library, resolved)
    if tune is not None and not isinstance(tune, TuneBudget):
        raise CompileError(f"tune must be a TuneBudget or None, got {tune!r}")
    if conv_layout not in CONV_LAYOUTS:
        raise CompileError(f"conv_layout must be one of {CONV_LAYOUTS}, got {conv_layout!r}")
    batched = batch_sizes is not None
    buckets = _validate_buckets(batch_sizes)
    inputs = onnx_prep.graph_inputs(proto)
    if not inputs:
        raise CompileError("the model has no inputs")
    specs = onnx_prep.resolve_input_shapes(inputs, input_shapes, batch_axis, batched)
    dtypes = {i.name: i.dtype for i in inputs}

    requantized = folded = 0
    if library == "dnnl":  # its int8 kernels quantize their own inputs (onnx_prep explains)
        proto, requantized = onnx_prep.float_requantizations(proto)
        proto, folded = onnx_prep.fold_constant_dequantizations(proto)
    merger = _BucketMerger()
    outputs_per_bucket: dict[int, list[tuple[tuple[int, ...], str]]] = {}
    for bucket in buckets or [0]:
        shapes = {n: tuple(bucket if d is None else d for d in s) for n, (s, _) in specs.items()}
        say(
            f"[ember] importing {model_name} at batch {bucket}"
            if batched
            else f"[ember] importing {model_name}"
        )
        prepared = onnx_prep.prepare(proto, shapes)
        check_supported(prepared)
        mod = _import_relax(prepared, shapes, dtypes)
        func = merger.add(mod, f"main_b{bucket}" if batched else "main")
        outputs_per_bucket[bucket] = _output_signature(func)

    output_names = [o.name for o in proto.graph.output]
    out_specs = _output_specs(proto, specs, output_names, outputs_per_bucket, batched)
    in_specs = [TensorSpec(i.name, i.dtype, specs[i.name][0], specs[i.name][1]) for i in inputs]

    module = merger.module
    library_stats: dict[str, Any] = {}
    if library == "dnnl":
        from .dispatch import dispatch_to_dnnl

        # The Winograd kernel's dispatch rule was measured on x86-64 (AVX2) only.
        module, library_stats = dispatch_to_dnnl(
            module, _conv_layout_for(resolved, conv_layout), winograd=resolved.arch == "x86_64"
        )
        if requantized:
            library_stats["float_requantizations"] = requantized
        if folded:
            library_stats["folded_dequantizations"] = folded
        if library_stats.get("matmul_q8") or library_stats.get("conv2d_q8"):
            _check_static_int8(resolved, "this QDQ (int8) model", "use kernel_library=None")
        wino = library_stats.get("conv2d_wino", 0)
        say(
            f"[ember] {library_stats['calls']} conv/matmul chains dispatched to oneDNN"
            f" (convs in {library_stats['conv_layout']}"
            + (f"; {wino} by the Winograd kernel)" if wino else ")")
        )
    out_dir = Path(output) if output is not None else Path(f"{model_name}.ember")
    say(f"[ember] building for {resolved.name} ({resolved.tvm.get('mcpu', 'generic')})")
    tuning = _build_library(module, resolved, out_dir, tune, say)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "source": {
            "sha256": hashlib.sha256(source_bytes).hexdigest(),
            "opset": onnx_prep.opset_version(proto),
            "producer": proto.producer_name,
        },
        "inputs": [s.to_json() for s in in_specs],
        "outputs": [s.to_json() for s in out_specs],
        "batch_sizes": list(buckets) if batched else None,
        "library": LIBRARY_FILE,
        "target": resolved.to_json(),
        "precision": _precision_label(precision, library_stats),
        "quantization": _quantization_record(quantization, library_stats),
        "kernel_library": {"name": library, **library_stats} if library else None,
        "tuning": tuning.to_json() if tuning is not None else None,
        # CUDA targets: the GPU code the library holds, checked by the core (compiler/cuda.py).
        **(device_manifest(resolved) if resolved.kind == "cuda" else {}),
        "versions": {
            "ember": _ember_version(),
            "tvm": metadata.version("apache-tvm"),
            "tvm_ffi": metadata.version("apache-tvm-ffi"),
        },
        "build_host": _host_info(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "compile_seconds": round(time.perf_counter() - started, 3),
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    write_checksums(out_dir)
    say(f"[ember] wrote {out_dir} in {manifest['compile_seconds']:.1f} s")
    return Artifact(out_dir)


# Artifacts are deployables, not debug builds: strip symbols and debug info (-s; dlsym needs only
# the dynamic symbols), and keep code and constants in one page-aligned segment instead of
# padding each to its own page (-z noseparate-code), which for small models is most of the file.
_LINK_OPTIONS = ["-s", "-Wl,-z,noseparate-code"]

PRECISIONS = ("fp32", "int8-static", "int8-weight", "fp16", "bf16")


def _apply_precision(
    proto: onnx.ModelProto,
    precision: str,
    calibration: Iterable[Mapping[str, np.ndarray]] | Calibration | None,
    method: str,
    say: Progress,
) -> tuple[onnx.ModelProto, dict[str, Any] | None]:
    """The model to compile for `precision` and what quantization did (None for fp32)."""
    if precision not in PRECISIONS:
        raise CompileError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "int8-static" and calibration is not None:
        raise CompileError("calibration data is only used with precision='int8-static'")
    if precision == "fp32":
        return proto, None
    if precision in ("fp16", "bf16"):
        features = set(_host_info().get("cpu_features", []))
        fast = {"fp16": {"avx512_fp16"}, "bf16": {"avx512_bf16", "amx_bf16"}}[precision]
        if not features & fast:
            raise CompileError(
                f"precision {precision!r} refused: this CPU has none of {sorted(fast)}, so "
                f"{precision} would run slower than fp32 (emulated); use 'fp32' or 'int8-static'"
            )
        raise CompileError(f"precision {precision!r} is not implemented yet; use 'fp32'")
    if precision == "int8-weight":
        from ..quantize import quantize_weight_only

        say("[ember] quantizing weights to int8 (per output channel, symmetric)")
        return quantize_weight_only(proto), {"method": "weight-only", "weight_bits": 8}
    from ..quantize import calibrate, quantize_static
    from ..quantize.calibrate import Calibration as _Calibration
    from .dispatch import host_needs_seven_bit_weights

    if calibration is None:
        raise CompileError(
            "precision 'int8-static' needs calibration=: a list or iterator of input dicts "
            "(or an ember.quantize.Calibration)"
        )
    if not isinstance(calibration, _Calibration):
        say(f"[ember] calibrating activations ({method})")
        calibration = calibrate(proto, calibration, method=method)  # type: ignore[arg-type]
    seven_bit = host_needs_seven_bit_weights()
    quantized = quantize_static(proto, calibration, seven_bit_weights=seven_bit)
    return quantized, {
        "method": calibration.method,
        "samples": calibration.samples,
        "activations": len(calibration.ranges),
        "weight_bits": 7 if seven_bit else 8,
    }


def _precision_label(precision: str, library_stats: Mapping[str, Any]) -> str:
    if precision == "fp32" and (library_stats.get("matmul_q8") or library_stats.get("conv2d_q8")):
        return "int8 (QDQ model)"
    return precision


def _quantization_record(
    quantization: dict[str, Any] | None, library_stats: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What quantization did: for int8-static, calibration method and samples, calibrated
    activations and weight bits; how many library calls (over all buckets) run in int8
    (`int8_calls`) and how many take int8 weights into float compute (`int8_weight_calls`)."""
    if quantization is None:
        return None
    calls = int(library_stats.get("matmul_q8", 0)) + int(library_stats.get("conv2d_q8", 0))
    weight_calls = int(library_stats.get("matmul_w8", 0)) + int(library_stats.get("conv2d_w8", 0))
    return {**quantization, "int8_calls": calls, "int8_weight_calls": weight_calls}


def _ember_version() -> str:
    from .. import __version__

    return __version__


def _choose_kernel_library(requested: str | None, target: Target) -> str | None:
    if requested is None:
        return None
    if requested not in ("auto", "dnnl"):
        raise CompileError(f"kernel_library must be 'auto', 'dnnl' or None, got {requested!r}")
    if target.kind == "cuda":
        if requested == "dnnl":
            raise CompileError("oneDNN is a CPU kernel library; CUDA targets do not use it")
        return None
    if target.arch in ("x86_64", "aarch64"):  # the aarch64 bundle's core registers them too
        return "dnnl"
    if requested == "dnnl":
        raise CompileError(
            f"the oneDNN kernels are built for x86-64 and aarch64 only, not {target.arch}"
        )
    return None


def _conv_layout_for(target: Target, requested: str) -> str:
    """The conv layout for the oneDNN kernels on `target`: NCHW8c (the blocked layout of oneDNN's
    AVX2 kernels) is an x86 choice; on aarch64 convs run in NHWC."""
    if target.arch != "aarch64":
        return requested
    if requested == "NCHW8c":
        raise CompileError("conv_layout 'NCHW8c' is for x86-64; aarch64 targets use 'NHWC'")
    return "NHWC"


def _check_static_int8(target: Target, what: str, instead: str) -> None:
    """The aarch64 runtime links oneDNN 2.x (Debian's arm64 package), which cannot take the
    execution-time scales of ember's static int8 kernels: they refuse to run there
    (cpp/src/kernels/dnnl_kernels.cc), so refuse to build what would call them."""
    if target.arch == "aarch64":
        raise CompileError(
            f"{what} is not supported for target {target.name} ({target.arch}): its oneDNN 2.x "
            f"runtime has no static int8 kernels; {instead}"
        )


def _validate_buckets(batch_sizes: Sequence[int] | None) -> list[int]:
    if batch_sizes is None:
        return []
    if isinstance(batch_sizes, int):
        batch_sizes = [batch_sizes]
    buckets = sorted(set(batch_sizes))
    if not buckets or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in buckets):
        raise CompileError(f"batch_sizes must be positive integers, got {list(batch_sizes)!r}")
    return buckets


# Cross compilers for the architectures ember can build for from another host.
CROSS_COMPILERS = {"aarch64": "aarch64-linux-gnu-g++"}


def _cross_compiler(target: Target) -> str | None:
    """The C++ compiler that links the library for `target`: None for the host toolchain, else
    the cross compiler, which must be installed (clear error naming the package otherwise)."""
    from .. import _core

    if target.arch == _core.host_arch():
        return None
    compiler = CROSS_COMPILERS.get(target.arch)
    if compiler is None:
        raise CompileError(
            f"cannot build for {target.arch} on {_core.host_arch()}: no cross toolchain known "
            f"(cross-compiling supports {', '.join(CROSS_COMPILERS)})"
        )
    if shutil.which(compiler) is None:
        raise CompileError(
            f"building for {target.name} ({target.arch}) on {_core.host_arch()} needs the cross "
            f"compiler {compiler}: apt-get install g++-{compiler.removesuffix('-g++')}"
        )
    return compiler


def _check_host_can_build(target: Target) -> None:
    """The compiled library is linked with the host toolchain or a cross compiler: check the
    one needed is there before spending minutes on compilation."""
    if target.kind == "llvm":
        _cross_compiler(target)


def _output_specs(
    proto: onnx.ModelProto,
    specs: Mapping[str, tuple[tuple[int | None, ...], int | None]],
    names: Sequence[str],
    per_bucket: Mapping[int, list[tuple[tuple[int, ...], str]]],
    batched: bool,
) -> list[TensorSpec]:
    buckets = sorted(per_bucket)
    first = per_bucket[buckets[0]]
    if len(first) != len(names):
        raise CompileError(f"the model declares {len(names)} outputs, TVM produced {len(first)}")
    probe: dict[str, tuple[int, ...] | None] = {}
    if batched and len(buckets) == 1:
        # One bucket cannot show which axis scales with the batch: infer shapes at bucket + 1.
        other = buckets[0] + 1
        shapes = {n: tuple(other if d is None else d for d in s) for n, (s, _) in specs.items()}
        probe = onnx_prep.output_shapes(onnx_prep.prepare(proto, shapes))
    out = []
    for k, name in enumerate(names):
        shape, dtype = first[k]
        axis: int | None = None
        if batched:
            if len(buckets) > 1:
                second = per_bucket[buckets[1]][k][0]
                diffs = [d for d in range(len(shape)) if shape[d] != second[d]]
            else:
                other_shape = probe.get(name)
                diffs = (
                    [d for d in range(len(shape)) if shape[d] != other_shape[d]]
                    if other_shape is not None and len(other_shape) == len(shape)
                    else [d for d in range(len(shape)) if shape[d] == buckets[0]][:1]
                )
            if len(diffs) > 1:
                raise CompileError(f"output '{name}' changes in several axes with the batch size")
            if diffs:
                axis = diffs[0]
                for bucket in buckets:
                    if per_bucket[bucket][k][0][axis] != bucket:
                        raise CompileError(
                            f"output '{name}' axis {axis} does not equal the batch size"
                        )
        dims = tuple(None if d == axis else int(v) for d, v in enumerate(shape))
        out.append(TensorSpec(name, dtype, dims, axis))
    return out


def _build_library(
    mod: Any, target: Target, out_dir: Path, tune: TuneBudget | None, say: Progress
) -> TuningReport | None:
    if target.kind == "cuda":  # built in a worker process that can load TVM's CUDA runtime
        build_cuda_library(mod, target, out_dir, tune, say, _LINK_OPTIONS)
        return None
    import tvm

    from .pipeline import cpu_pipeline, front_passes

    tvm_target = tvm.target.Target(target.tvm)
    database, report = None, None
    if tune is not None:
        with tvm_target:
            legal = tvm.transform.Sequential(front_passes(tvm_target))(mod)
        database, report = tune_module(legal, tvm_target, tune, say)
    try:
        # cpu_pipeline: TVM's CPU passes (with fusion) plus ember's default schedules, so no
        # TVM-generated loop nest runs serial and scalar.
        pipeline = cpu_pipeline(tvm_target, database=database)
        executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    except Exception as exc:
        raise CompileError(f"TVM failed to compile for {target.name}: {exc}") from exc
    if out_dir.exists():
        if not out_dir.is_dir():
            raise CompileError(f"output '{out_dir}' exists and is not a directory")
        for stale in (MANIFEST_FILE, "checksums.json", LIBRARY_FILE):
            (out_dir / stale).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "export.log"
        tmp_lib = Path(tmp) / LIBRARY_FILE
        cross = _cross_compiler(target)
        link: dict[str, Any] = {"options": _LINK_OPTIONS}
        if cross is not None:
            from tvm.support import cc

            # The triple also targets the imports blob (devc.o) TVM packs when no compiled
            # function carries one (every op in library calls): by default the host's.
            triple = cc.get_target_by_dump_machine(cross)
            link = {
                "fcompile": cc.cross_compiler(
                    cross, options=_LINK_OPTIONS, get_target_triple=triple
                )
            }
        try:
            with _stderr_to(log):  # export_library prints "Scope Saving" noise on fd 2
                executable.export_library(str(tmp_lib), **link)
        except Exception as exc:
            detail = log.read_text(errors="replace")[-2000:]
            raise CompileError(f"linking the compiled library failed: {exc}\n{detail}") from exc
        shutil.move(str(tmp_lib), out_dir / LIBRARY_FILE)
    return report
