"""ember vs ONNX Runtime on the sample models, measured side by side in one process.

For each model and batch size: build the sample ONNX model, compile it with `ember.compile` (or
reuse a matching artifact from --workdir), check that ember's outputs match ONNX Runtime's on the
same random input, then time both interleaved (ember and ORT alternate within every round, so
machine drift hits both alike) and report medians, the ember/ORT ratio and the GFLOP/s each
reaches. Only ember's public API is used, so this keeps working as the compiler improves.

    python benchmarks/vs_onnxruntime.py --models digits_mlp,digits_cnn --batch-sizes 1,32
    python benchmarks/vs_onnxruntime.py --models resnet18 --batch-sizes 1 --json out.json

Exit status: 0 when every model compiled and matched ORT, 1 otherwise (2 for usage errors).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

if TYPE_CHECKING:
    import onnxruntime as ort

    import ember

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO / "models" / "out" / "bench"
DEFAULT_MODELS = ("digits_mlp", "digits_cnn", "resnet18", "mobilenet", "bert_encoder")
SEED = 0
RTOL = 1e-3
ATOL_SCALE = 1e-3  # atol = ATOL_SCALE * max|ORT output|
MIN_ROUNDS = 5  # never report a median of fewer timed rounds than this
WARMUP_RUNS = 20
WARMUP_SECONDS = 1.0
BLOCK_SECONDS = 0.02  # target length of one engine's block of consecutive runs in a round
# Pause between blocks so the previous engine's spinning worker threads have gone idle: a
# deployed engine never shares its cores with the other engine's spinners. ORT's intra-op pool
# keeps spinning for 20-100 ms after a run (measured: ResNet-18 b1 in ember took 55 ms 20 ms after
# an ORT run and 30 ms 100 ms after); OpenMP's spin ends within a millisecond.
QUIESCE_SECONDS = 0.15
MAX_BLOCK_RUNS = 50
UNSTABLE_P90 = 2.0  # flag an engine whose 90th percentile run is this many times its median
FINGERPRINT_FILE = "bench-fingerprint.json"  # written beside (not inside) each artifact


# --------------------------------------------------------------------------------------------
# FLOPs


@dataclass
class FlopCount:
    """FLOPs of one run (2 * multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm)."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)  # nodes whose shapes were not inferred

    def add(self, op_type: str, flops: int) -> None:
        self.total += flops
        self.by_op[op_type] = self.by_op.get(op_type, 0) + flops


def _static_model(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs have the concrete `shapes`."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    for value in static.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, shapes[value.name], strict=True):
            dim.Clear()
            dim.dim_value = int(size)
    return static


def _known_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Fully static shapes of every value shape inference could resolve, initializers included."""
    shapes: dict[str, list[int]] = {}
    graph = model.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [int(d.dim_value) for d in dims]
    for init in graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    for node in graph.node:  # Constant nodes feeding MatMul (rare, but torch emits them)
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = [int(d) for d in attr.t.dims]
    return shapes


def count_flops(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """FLOPs of one run of `model` at the given input shapes, from ONNX shape inference.

    Counts 2 * MACs for Conv/ConvTranspose (groups included), MatMul (batched, broadcast) and Gemm;
    cheap ops (elementwise, pooling, softmax, normalization) are ignored.
    """
    inferred = onnx.shape_inference.infer_shapes(
        _static_model(model, shapes), data_prop=True, strict_mode=False
    )
    known = _known_shapes(inferred)
    count = FlopCount()
    for node in inferred.graph.node:
        ins = [known.get(name) for name in node.input]
        out = known.get(node.output[0]) if node.output else None
        try:
            macs = _node_macs(node, ins, out)
        except (IndexError, ValueError, ZeroDivisionError):
            macs = None
        if macs is None:
            if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
                count.uncounted.append(node.name or node.output[0])
            continue
        count.add(node.op_type, 2 * macs)
    return count


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _node_macs(
    node: onnx.NodeProto, ins: Sequence[list[int] | None], out: list[int] | None
) -> int | None:
    """Multiply-accumulates of one node, or None when it is cheap or its shapes are unknown."""
    op = node.op_type
    if op == "Conv":
        weight = ins[1] if len(ins) > 1 else None
        if out is None or weight is None:
            return None
        # out [N, M, *spatial], weight [M, C/group, *kernel]: each output element reads C/group *
        # prod(kernel) inputs, which already accounts for groups (depthwise: C/group = 1).
        return math.prod(out) * math.prod(weight[1:])
    if op == "ConvTranspose":
        x, weight = (ins[0], ins[1]) if len(ins) > 1 else (None, None)
        if x is None or weight is None:
            return None
        # x [N, C, *spatial], weight [C, M/group, *kernel]: each input element scatters into
        # M/group * prod(kernel) outputs.
        return math.prod(x) * math.prod(weight[1:])
    if op == "MatMul":
        a, b = (ins[0], ins[1]) if len(ins) > 1 else (None, None)
        if out is None or a is None or b is None:
            return None
        k = a[-1] if len(a) >= 1 else 1
        if len(a) == 1 or len(b) == 1:  # vector operands: out has the other dims
            return max(math.prod(out), 1) * k
        return math.prod(out) * k
    if op == "Gemm":
        a, b = (ins[0], ins[1]) if len(ins) > 1 else (None, None)
        if a is None or b is None:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * n * k
    return None


# --------------------------------------------------------------------------------------------
# Engines, inputs and checks


def ort_session(model_bytes: bytes, threads: int) -> ort.InferenceSession:
    """ONNX Runtime at its best on CPU: all graph optimizations, `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def aligned_array(values: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A C-contiguous copy of `values` whose data starts on an `alignment`-byte boundary (the
    layout ember hands to TVM without a copy; ORT gets the very same array)."""
    buffer = np.empty(values.nbytes + alignment, dtype=np.uint8)
    offset = (-buffer.ctypes.data) % alignment
    out = buffer[offset : offset + values.nbytes].view(values.dtype).reshape(values.shape)
    out[...] = values
    return out


def make_inputs(specs: Sequence[ember.TensorSpec], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic random inputs for the artifact's input specs at `batch` rows."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(batch if d is None else int(d) for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            values = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iub":
            values = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise ValueError(f"input '{spec.name}' has unsupported dtype {spec.dtype}")
        feeds[spec.name] = aligned_array(values)
    return feeds


@dataclass
class Agreement:
    """How closely ember's outputs match ORT's (worst output)."""

    ok: bool
    max_abs: float  # max |ember - ORT|
    max_rel: float  # max |ember - ORT| / max |ORT| (error relative to the output's scale)
    detail: str = ""


def compare_outputs(
    ours: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> Agreement:
    """np.allclose(ours, ref, rtol=1e-3, atol=1e-3 * max|ref|) for every output by name."""
    ok, worst_abs, worst_rel, problems = True, 0.0, 0.0, []
    for name, ref in reference.items():
        got = ours.get(name)
        if got is None:
            ok = False
            problems.append(f"ember has no output '{name}'")
            continue
        if got.shape != ref.shape:
            ok = False
            problems.append(f"'{name}' shape {got.shape} != ORT {ref.shape}")
            continue
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        max_abs = float(diff.max()) if diff.size else 0.0
        worst_abs = max(worst_abs, max_abs)
        worst_rel = max(worst_rel, max_abs / scale if scale > 0 else max_abs)
        if not np.isfinite(got).all():
            ok = False
            problems.append(f"'{name}' has non-finite values")
        elif not np.allclose(got, ref, rtol=RTOL, atol=ATOL_SCALE * scale):
            ok = False
            problems.append(f"'{name}' differs (max abs {max_abs:.3g}, max|ORT| {scale:.3g})")
    return Agreement(ok, worst_abs, worst_rel, "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Timing


@dataclass
class Timing:
    """Per-run wall times (ms) of each engine, and each round's median ratio ember/ORT."""

    ember_ms: list[float]
    ort_ms: list[float]
    round_ratios: list[float]
    block_runs: tuple[int, int]  # consecutive runs of (ember, ORT) per round

    @property
    def rounds(self) -> int:
        return len(self.round_ratios)

    @staticmethod
    def summary(samples: Sequence[float]) -> dict[str, float]:
        ordered = sorted(samples)
        q1, _, q3 = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
        return {
            "median_ms": statistics.median(ordered),
            "min_ms": ordered[0],
            "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "iqr_ms": q3 - q1,
            "mean_ms": statistics.fmean(ordered),
            "runs": len(ordered),
        }

    @property
    def paired_ratio(self) -> float:
        """Median over rounds of ember/ORT within the same round (robust to slow drift)."""
        return statistics.median(self.round_ratios)


def _clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def _warm_up(fn: Callable[[], object]) -> float:
    """Run `fn` WARMUP_RUNS times (fewer if that takes over WARMUP_SECONDS); returns the fastest
    run's milliseconds, which sizes the blocks. (A median of the first few runs once sized a
    35 us model's blocks at one run when those runs were slow, and every timed run became a
    cold one; see time_interleaved.)"""
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < WARMUP_RUNS and (
        not samples or time.perf_counter() - start < WARMUP_SECONDS
    ):
        samples.append(_clock(fn))
    return min(samples)


def time_interleaved(
    run_ember: Callable[[], object],
    run_ort: Callable[[], object],
    min_time: float,
    max_rounds: int,
) -> Timing:
    """Warm both up, then time rounds: a block of ember runs and a block of ORT runs (which goes
    first alternates per round), each block about BLOCK_SECONDS long (one run for slow models),
    every run timed on its own. Stops once `min_time` seconds have passed and at least MIN_ROUNDS
    rounds ran, or after `max_rounds` rounds.

    Blocks rather than single alternating runs, with a QUIESCE_SECONDS pause before each: right
    after one engine finishes, its worker threads still spin for a while and slow the other
    engine's next run (measured: up to 2x on either side), which says nothing about either engine.
    The first run of every block is untimed: after the pause the engine's worker threads sleep,
    and on this VM waking them took up to 10 ms (for a 0.035 ms model) for either engine.
    """
    est_ember, est_ort = _warm_up(run_ember), _warm_up(run_ort)
    blocks = (
        max(1, min(MAX_BLOCK_RUNS, round(BLOCK_SECONDS * 1e3 / max(est_ember, 1e-6)))),
        max(1, min(MAX_BLOCK_RUNS, round(BLOCK_SECONDS * 1e3 / max(est_ort, 1e-6)))),
    )
    ember_ms: list[float] = []
    ort_ms: list[float] = []
    ratios: list[float] = []
    start = time.perf_counter()
    while len(ratios) < max_rounds:
        order = [(run_ember, blocks[0]), (run_ort, blocks[1])]
        if len(ratios) % 2:
            order.reverse()
        medians: dict[int, float] = {}
        for fn, runs in order:
            time.sleep(QUIESCE_SECONDS)
            fn()  # wakes the engine's sleeping worker threads; untimed
            samples: list[float] = []
            while len(samples) < runs and sum(samples) < 2e3 * BLOCK_SECONDS:
                samples.append(_clock(fn))  # a block ends early when runs get slow (stalls)
            (ember_ms if fn is run_ember else ort_ms).extend(samples)
            medians[id(fn)] = statistics.median(samples)
        ratios.append(medians[id(run_ember)] / medians[id(run_ort)])
        if len(ratios) >= MIN_ROUNDS and time.perf_counter() - start >= min_time:
            break
    return Timing(ember_ms, ort_ms, ratios, blocks)


class CpuSampler:
    """How busy other processes kept this machine's CPUs during a measurement: all CPUs' busy
    time from /proc/stat minus this process's CPU time, as a fraction of all CPUs' capacity."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return None
        if fields[0] != "cpu" or len(fields) < 9:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
        hz = os.sysconf("SC_CLK_TCK")
        busy = (user + nice + system + irq + softirq + steal) / hz
        own = sum(os.times()[:2])  # this process's user + system seconds, every thread
        return busy, own, time.monotonic()

    def others_fraction(self) -> float | None:
        end = self._read()
        if self._start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self._start, end, strict=True))
        capacity = wall * (os.cpu_count() or 1)
        return max(0.0, min(1.0, (busy - own) / capacity)) if capacity > 0 else None


# --------------------------------------------------------------------------------------------
# Artifacts


def compiler_fingerprint() -> dict[str, str]:
    """What decides the compiled code besides the model: ember's sources and extension, and the
    TVM versions. An artifact built under another fingerprint is rebuilt, not reused, so that
    compiler improvements always show up in the numbers."""
    import ember

    digest = hashlib.sha256()
    for root in sorted({Path(p).resolve() for p in ember.__path__}):
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".so") and path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return {
        "ember_sources_sha256": digest.hexdigest(),
        "ember": ember.__version__,
        "tvm": _version("apache-tvm"),
        "tvm_ffi": _version("apache-tvm-ffi"),
    }


def _reusable(
    path: Path,
    source_sha256: str,
    batch: int,
    input_shapes: Mapping[str, Sequence[int | None]],
    fingerprint: Mapping[str, str],
) -> bool:
    import ember

    try:
        artifact = ember.Artifact(path)
        recorded = json.loads((path.parent / f"{path.name}.{FINGERPRINT_FILE}").read_text())
    except (ember.EmberError, OSError, ValueError):
        return False
    manifest = artifact.manifest
    shapes = {spec.name: tuple(spec.shape) for spec in artifact.inputs}
    wanted = {name: tuple(shape) for name, shape in input_shapes.items()}
    return (
        manifest.get("source", {}).get("sha256") == source_sha256
        and manifest.get("batch_sizes") == list(buckets_for(batch))
        and all(shapes.get(name) == shape for name, shape in wanted.items())
        and recorded == dict(fingerprint)
    )


def buckets_for(batch: int) -> tuple[int, ...]:
    """The buckets compiled for a batch size: the batch itself, plus its half, so that on 2+
    threads ember can run a full batch as two single-threaded halves in parallel (the core's batch
    splitting; ember's default buckets (1, 8, 16, 32) allow the same at 32 rows)."""
    return (batch // 2, batch) if batch > 1 else (batch,)


def compiled_artifact(
    model: onnx.ModelProto,
    name: str,
    batch: int,
    input_shapes: Mapping[str, Sequence[int | None]],
    workdir: Path,
    fingerprint: Mapping[str, str],
    rebuild: bool,
) -> tuple[ember.Artifact, float | None]:
    """The artifact for (model, batch) in `workdir`: reused when its source sha256, bucket, input
    shapes and compiler fingerprint match, else compiled. Returns it and the compile seconds
    (None when reused)."""
    import ember

    model_bytes = model.SerializeToString()
    source_sha256 = hashlib.sha256(model_bytes).hexdigest()
    dims = "-".join(
        "x".join("N" if d is None else str(d) for d in shape) for shape in input_shapes.values()
    )
    path = workdir / f"{name}_{dims}_b{batch}.ember"
    stamp = path.parent / f"{path.name}.{FINGERPRINT_FILE}"
    if not rebuild and _reusable(path, source_sha256, batch, input_shapes, fingerprint):
        return ember.Artifact(path), None
    stamp.unlink(missing_ok=True)
    start = time.perf_counter()
    artifact = ember.compile(
        model,
        batch_sizes=buckets_for(batch),
        input_shapes=dict(input_shapes),
        output=path,
        name=name,
    )
    seconds = time.perf_counter() - start
    stamp.write_text(json.dumps(dict(fingerprint), indent=2) + "\n")
    return artifact, seconds


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Row:
    model: str
    batch: int
    status: str  # "ok", "MISMATCH" or "ERROR"
    ember_ms: float | None = None
    ort_ms: float | None = None
    ratio: float | None = None  # ember median / ORT median
    paired_ratio: float | None = None  # median over rounds of ember/ORT in the same round
    gflop: float | None = None  # per run
    ember_gflops: float | None = None  # GFLOP/s
    ort_gflops: float | None = None
    rounds: int = 0
    others_cpu: float | None = None  # share of all CPUs other processes used while timing
    block_runs: list[int] = field(default_factory=list)  # consecutive [ember, ORT] runs per round
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    compile_s: float | None = None  # None: artifact reused
    artifact: str | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    ember_stats: dict[str, float] = field(default_factory=dict)
    ort_stats: dict[str, float] = field(default_factory=dict)
    flops_by_op: dict[str, int] = field(default_factory=dict)
    error: str = ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    import ember

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = "unknown"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commit = head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "threads": threads,
        "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "ember": ember.__version__,
            "tvm": _version("apache-tvm"),
            "tvm_ffi": _version("apache-tvm-ffi"),
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
        },
        "git_commit": commit,
    }


def bench_one(
    name: str,
    model: onnx.ModelProto,
    batch: int,
    input_shapes: Mapping[str, Sequence[int | None]],
    args: argparse.Namespace,
    fingerprint: Mapping[str, str],
) -> Row:
    import ember

    row = Row(name, batch, "ok")
    artifact, compile_s = compiled_artifact(
        model, name, batch, input_shapes, args.workdir, fingerprint, args.rebuild
    )
    row.compile_s = None if compile_s is None else round(compile_s, 2)
    row.artifact = str(artifact.path)
    print(
        f"  compiled in {compile_s:.1f} s -> {artifact.path}"
        if compile_s is not None
        else f"  reusing {artifact.path}",
        flush=True,
    )

    feeds = make_inputs(artifact.inputs, batch, SEED)
    row.input_shapes = {k: list(v.shape) for k, v in feeds.items()}
    flops = count_flops(model, {k: v.shape for k, v in feeds.items()})
    if flops.uncounted:
        print(f"  note: shapes unknown for {len(flops.uncounted)} heavy nodes; GFLOP/s undercount")
    row.gflop = flops.total / 1e9 if flops.total else None
    row.flops_by_op = flops.by_op

    compiled = ember.load(artifact.path)
    session = ort_session(model.SerializeToString(), args.threads)
    ort_names = [o.name for o in session.get_outputs()]

    def run_ember() -> dict[str, np.ndarray]:
        return compiled.run(feeds)

    def run_ort() -> dict[str, np.ndarray]:
        return dict(zip(ort_names, session.run(ort_names, feeds), strict=True))

    agreement = compare_outputs(run_ember(), run_ort())
    row.max_abs_err, row.max_rel_err = agreement.max_abs, agreement.max_rel
    print(
        f"  outputs vs ORT: max abs err {agreement.max_abs:.2e}, "
        f"max abs err / max|ORT| {agreement.max_rel:.2e}",
        flush=True,
    )
    if not agreement.ok:
        row.status, row.error = "MISMATCH", agreement.detail
        banner = "!" * 78
        print(f"{banner}\n!!! MISMATCH {name} batch {batch}: {agreement.detail}\n{banner}")

    sampler = CpuSampler()
    timing = time_interleaved(run_ember, run_ort, args.min_time, args.repeats)
    row.others_cpu = sampler.others_fraction()
    row.rounds = timing.rounds
    row.block_runs = list(timing.block_runs)
    row.ember_stats = timing.summary(timing.ember_ms)
    row.ort_stats = timing.summary(timing.ort_ms)
    row.ember_ms = row.ember_stats["median_ms"]
    row.ort_ms = row.ort_stats["median_ms"]
    row.ratio = row.ember_ms / row.ort_ms
    row.paired_ratio = timing.paired_ratio
    if row.gflop:
        row.ember_gflops = row.gflop / (row.ember_ms / 1e3)
        row.ort_gflops = row.gflop / (row.ort_ms / 1e3)
    for engine, stats in (("ember", row.ember_stats), ("ORT", row.ort_stats)):
        if stats["p90_ms"] > UNSTABLE_P90 * stats["median_ms"]:
            print(
                f"  note: {engine} times are unstable (p90 {stats['p90_ms']:.3f} ms vs median "
                f"{stats['median_ms']:.3f} ms): CPU contention or spinning thread pools?"
            )
    print(
        f"  ember {row.ember_ms:.3f} ms, ORT {row.ort_ms:.3f} ms, ratio {row.ratio:.2f} "
        f"({row.rounds} rounds of {timing.block_runs[0]} + {timing.block_runs[1]} runs; other "
        f"processes used {_fmt(None if row.others_cpu is None else 100 * row.others_cpu, '.0f')}%"
        " of the CPUs)",
        flush=True,
    )
    return row


def geomean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: Sequence[Row], threads: int) -> dict[str, float]:
    """Prints the results table and the geometric means; returns the geomeans by label."""
    header = (
        f"{'model':<14}{'batch':>6}{'ember ms':>12}{'ORT ms':>11}{'ember/ORT':>11}"
        f"{'MFLOP':>10}{'ember GF/s':>12}{'ORT GF/s':>10}{'rounds':>8}{'others%':>9}  status"
    )
    print(f"\nember vs ONNX Runtime, {threads} thread(s), medians of interleaved runs")
    print(header)
    print("-" * len(header))
    for r in rows:
        mflop = None if r.gflop is None else r.gflop * 1e3
        others = None if r.others_cpu is None else 100 * r.others_cpu
        mflop_text = _fmt(mflop, ".0f" if mflop is not None and mflop >= 100 else ".3g")
        print(
            f"{r.model:<14}{r.batch:>6}{_fmt(r.ember_ms, '.3f'):>12}{_fmt(r.ort_ms, '.3f'):>11}"
            f"{_fmt(r.ratio, '.2f'):>11}{mflop_text:>10}{_fmt(r.ember_gflops, '.1f'):>12}"
            f"{_fmt(r.ort_gflops, '.1f'):>10}{r.rounds:>8}{_fmt(others, '.0f'):>9}  {r.status}"
        )
    means: dict[str, float] = {}
    timed = [r for r in rows if r.ratio is not None]
    for batch in sorted({r.batch for r in timed}):
        ratios = [r.ratio for r in timed if r.batch == batch and r.ratio is not None]
        means[f"batch {batch}"] = geomean(ratios)
    if timed:
        means["overall"] = geomean([r.ratio for r in timed if r.ratio is not None])
    if means:
        print("-" * len(header))
        for label, value in means.items():
            print(f"geomean ember/ORT, {label}: {value:.2f}")
    return means


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ember vs ONNX Runtime on the sample models (one process, interleaved).",
    )
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help="comma-separated sample names"
    )
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated, e.g. 1,32")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for both engines (default: CPUs this process may use)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1000, help="stop after at most this many timed rounds"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=3.0,
        help=f"time rounds for at least this many seconds (and >= {MIN_ROUNDS} rounds)",
    )
    parser.add_argument("--seq", type=int, default=128, help="bert_encoder sequence length")
    parser.add_argument("--json", type=Path, help="write every row and machine info here")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"where artifacts are built and reused (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument("--rebuild", action="store_true", help="compile even if reusable")
    args = parser.parse_args(argv)
    args.models = _csv(args.models)
    try:
        args.batch_sizes = [int(b) for b in _csv(args.batch_sizes)]
    except ValueError:
        parser.error(f"--batch-sizes must be integers, got {args.batch_sizes!r}")
    if not args.models or not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("need at least one model and positive batch sizes")
    if args.threads < 1 or args.repeats < 1 or args.seq < 1:
        parser.error("--threads, --repeats and --seq must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # TVM sizes its pool from TVM_NUM_THREADS, and oneDNN kernels (OpenMP) from OMP_NUM_THREADS:
    # set both before ember, TVM or oneDNN are loaded.
    os.environ["TVM_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from ember.samples import INPUT_SHAPES, SAMPLES

    unknown = [m for m in args.models if m not in SAMPLES]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {sorted(SAMPLES)}", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info(args.threads)
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"{info['cpu']}, {info['affinity_cpus']} CPUs usable, {args.threads} thread(s)")
    print(f"{versions}; git {info['git_commit']}")
    fingerprint = compiler_fingerprint()

    rows: list[Row] = []
    for name in args.models:
        print(f"[{name}] building the ONNX model", flush=True)
        model = SAMPLES[name]()
        shapes = dict(INPUT_SHAPES[name])
        if name == "bert_encoder":
            shapes = {k: (None, args.seq, *v[2:]) for k, v in shapes.items()}
        for batch in args.batch_sizes:
            print(f"[{name}] batch {batch}", flush=True)
            try:
                rows.append(bench_one(name, model, batch, shapes, args, fingerprint))
            except Exception as exc:  # report it and go on with the other models
                message = f"{type(exc).__name__}: {exc}"
                print(f"!!! ERROR {name} batch {batch}: {message}", flush=True)
                rows.append(Row(name, batch, "ERROR", error=message))

    means = print_table(rows, args.threads)
    failed = [r for r in rows if r.status != "ok"]
    for r in failed:
        print(f"!!! {r.status}: {r.model} batch {r.batch}: {r.error}")
    if args.json:
        payload = {
            "machine": info,
            "settings": {
                "threads": args.threads,
                "repeats": args.repeats,
                "min_time_s": args.min_time,
                "min_rounds": MIN_ROUNDS,
                "seq": args.seq,
                "seed": SEED,
                "rtol": RTOL,
                "atol_scale": ATOL_SCALE,
            },
            "compiler_fingerprint": fingerprint,
            "rows": [asdict(r) for r in rows],
            "geomean_ratio": means,
            "ok": not failed,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
