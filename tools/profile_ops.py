"""Per-op profile of an ember artifact: where does one run of `main_b<B>` spend its time?

    python tools/profile_ops.py ARTIFACT_DIR [--batch B] [--repeats R] [--top N] [--json out.json]

A developer tool: it loads the artifact's model.so into TVM's Python Relax VM (the C++ core never
uses this path), runs `main_b<B>` on seeded random inputs built from the manifest, and times every
call the VM makes (TIR PrimFuncs, library kernels such as ember.dnnl.*, vm.builtin.* helpers)
with an instrument callback around each call. Times are self times: a call that makes nested VM
calls (a Relax closure) is charged only for what its callees do not account for.

The instrument is a Python callback, so every call pays a few microseconds of overhead (mostly
converting its arguments); the table shows it as the gap between the instrumented and the plain
end-to-end time. Profiles of models whose ops take milliseconds are accurate; for microsecond ops,
compare `calls` and the plain end-to-end times rather than the per-op times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEED = 0
SPLIT_KINDS = ("library", "packed")  # one name serves many ops: keep their shapes apart
NO_OP = 0  # tvm.relax.VMInstrumentReturnKind.NO_OP: go on with the call (SKIP_RUN = 1 skips it)


@dataclass
class OpRow:
    """One called function, per run: medians over the profiled runs (robust to the odd run a
    busy machine stretches), plus the mean for the record."""

    name: str
    kind: str
    calls_per_run: float
    ms_per_run: float  # median over runs of its self time in the run
    mean_ms_per_run: float
    percent: float  # ms_per_run / median instrumented end-to-end time
    us_per_call: float  # ms_per_run / calls_per_run
    shapes: str  # tensor argument shapes (of its first call where rows are per name)


def kind_of(name: str, func: object) -> str:
    """PrimFunc (TIR, compiled into model.so), library kernel (ember.*), VM builtin, other packed
    function (a dotted global), or Relax function (a VM closure)."""
    if "Closure" in type(func).__name__:
        return "relax"
    if name.startswith("ember."):
        return "library"
    if name.startswith("vm."):
        return "builtin"
    if "." in name:
        return "packed"
    return "primfunc"


def _shapes(args: Sequence[object]) -> str:
    return " ".join("x".join(str(int(d)) for d in a.shape) for a in args if hasattr(a, "shape"))


class Profiler:
    """VM instrument that times each call between its before and after callbacks; one dict of
    key -> [calls, self ns] per run. The key is the function's name, or for library and other
    packed functions (one name, many ops) the name and its argument shapes unless `by_name`."""

    def __init__(self, by_name: bool = False) -> None:
        self.by_name = by_name
        self.runs: list[dict[str, list[int]]] = []
        self.meta: dict[str, tuple[str, str, str]] = {}  # key -> (name, kind, shapes)
        self._kinds: dict[str, str] = {}
        self._stack: list[list[Any]] = []  # [name, start ns, ns spent in nested calls]

    def begin_run(self) -> None:
        self.runs.append({})
        self._stack.clear()

    def __call__(
        self, func: object, func_symbol: str, before_run: bool, ret_value: object, *args: object
    ) -> int:
        now = time.perf_counter_ns()
        if not self.runs:  # not profiling yet
            return NO_OP
        if before_run:
            self._stack.append([str(func_symbol), now, 0])
            return NO_OP
        name, start, nested = self._stack.pop()
        elapsed = now - start
        kind = self._kinds.get(name)
        if kind is None:
            kind = self._kinds[name] = kind_of(name, func)
        key = name
        if kind in SPLIT_KINDS and not self.by_name:
            shapes = _shapes(args)
            key = f"{name} {shapes}"
            if key not in self.meta:
                self.meta[key] = (name, kind, shapes)
        elif key not in self.meta:
            self.meta[key] = (name, kind, _shapes(args))
        entry = self.runs[-1].setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += elapsed - nested
        if self._stack:
            self._stack[-1][2] += elapsed
        return NO_OP


def _clock_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def make_inputs(specs: Sequence[Any], batch: int | None) -> list[np.ndarray]:
    """Seeded random inputs in manifest order: normal floats, 0/1 integers."""
    rng = np.random.default_rng(SEED)
    arrays = []
    for spec in specs:
        shape = tuple((batch or 1) if d is None else int(d) for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
    return arrays


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Per-op profile of an ember artifact.")
    parser.add_argument("artifact", type=Path, help="artifact directory")
    parser.add_argument(
        "--batch", type=int, help="bucket to run (main_b<B>; default: the smallest)"
    )
    parser.add_argument("--repeats", type=int, default=10, help="profiled runs (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unprofiled runs first (default 1)")
    parser.add_argument("--top", type=int, default=25, help="rows to print (0: all)")
    parser.add_argument(
        "--threads",
        type=int,
        help="sets TVM_NUM_THREADS and OMP_NUM_THREADS (default: TVM_NUM_THREADS if set, else "
        "the usable CPUs)",
    )
    parser.add_argument(
        "--by-name",
        action="store_true",
        help="one row per library kernel name, not per name and argument shapes",
    )
    parser.add_argument("--json", type=Path, help="write the full profile here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.top < 0:
        parser.error("--repeats must be >= 1, --warmup and --top >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or int(os.environ.get("TVM_NUM_THREADS", len(os.sched_getaffinity(0))))
    # Before TVM and oneDNN (OpenMP) size their thread pools.
    os.environ["TVM_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)

    import tvm
    from tvm import relax

    import ember

    # ember.load verifies the checksums and registers the library kernels (ember.dnnl.*) that
    # model.so calls; the core model also gives the end-to-end time users see.
    try:
        core = ember.load(args.artifact)
    except ember.EmberError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    artifact = core.artifact
    buckets = artifact.batch_sizes
    if buckets is None:
        batch, function = None, "main"
        if args.batch is not None:
            print("note: the artifact has no batch buckets; --batch ignored", file=sys.stderr)
    else:
        batch = args.batch if args.batch is not None else min(buckets)
        if batch not in buckets:
            print(f"error: no bucket {batch}; the artifact has {list(buckets)}", file=sys.stderr)
            return 1
        function = f"main_b{batch}"

    library = artifact.path / artifact.manifest.get("library", "model.so")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    arrays = make_inputs(artifact.inputs, batch)
    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]
    feeds = {spec.name: a for spec, a in zip(artifact.inputs, arrays, strict=True)}
    entry = vm[function]

    def run_vm() -> object:
        return entry(*tensors)

    def run_core() -> object:
        return core.run(feeds)

    for _ in range(args.warmup):
        run_vm()
        run_core()
    plain_ms, core_ms = [], []
    for _ in range(args.repeats):  # alternate, so drift hits both
        plain_ms.append(_clock_ms(run_vm))
        core_ms.append(_clock_ms(run_core))

    profiler = Profiler(by_name=args.by_name)
    vm.set_instrument(profiler)
    run_vm()  # the instrumented path warms up too
    instrumented_ms = []
    for _ in range(args.repeats):
        profiler.begin_run()
        instrumented_ms.append(_clock_ms(run_vm))
    vm.set_instrument(None)

    report = build_report(profiler, instrumented_ms, plain_ms, core_ms)
    print_report(report, artifact, function, threads, args.top)
    if args.json:
        report.update(
            artifact=str(artifact.path),
            model=artifact.model_name,
            function=function,
            batch=batch,
            threads=threads,
            repeats=args.repeats,
        )
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def build_report(
    profiler: Profiler,
    instrumented_ms: Sequence[float],
    plain_ms: Sequence[float],
    core_ms: Sequence[float],
) -> dict[str, Any]:
    runs = len(profiler.runs)
    e2e_instrumented = statistics.median(instrumented_ms)
    rows = []
    for key, (name, kind, shapes) in profiler.meta.items():
        per_run = [run.get(key, [0, 0]) for run in profiler.runs]
        self_ms = [ns / 1e6 for _, ns in per_run]
        calls = sum(c for c, _ in per_run) / runs
        median_ms = statistics.median(self_ms)
        rows.append(
            OpRow(
                name=name,
                kind=kind,
                calls_per_run=calls,
                ms_per_run=median_ms,
                mean_ms_per_run=statistics.fmean(self_ms),
                percent=100.0 * median_ms / e2e_instrumented,
                us_per_call=1e3 * median_ms / calls if calls else 0.0,
                shapes=shapes,
            )
        )
    rows.sort(key=lambda r: -r.ms_per_run)
    by_kind: dict[str, float] = {}
    for row in rows:
        by_kind[row.kind] = by_kind.get(row.kind, 0.0) + row.ms_per_run
    ops_ms = sum(r.ms_per_run for r in rows)
    return {
        "ops": [asdict(r) for r in rows],
        "by_kind_ms": by_kind,
        "calls_per_run": sum(r.calls_per_run for r in rows),
        "ops_ms": ops_ms,
        "e2e_instrumented_ms": e2e_instrumented,
        "outside_ops_ms": e2e_instrumented - ops_ms,
        "e2e_vm_median_ms": statistics.median(plain_ms),
        "e2e_core_median_ms": statistics.median(core_ms),
    }


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def print_report(
    report: dict[str, Any], artifact: Any, function: str, threads: int, top: int
) -> None:
    ops = report["ops"]
    shown = ops if top == 0 else ops[:top]
    width = max([len("name"), *(len(op["name"]) for op in shown)])
    width = min(width, 64)
    header = (
        f"{'#':>3}  {'name':<{width}}  {'kind':<8}{'calls/run':>10}{'ms/run':>11}{'%':>7}"
        f"{'us/call':>11}  argument shapes"
    )
    print(
        f"{artifact.model_name} ({artifact.path}) {function}, {threads} thread(s), "
        f"{report['calls_per_run']:.0f} calls per run"
    )
    print(header)
    print("-" * len(header))
    for k, op in enumerate(shown, start=1):
        name = _clip(op["name"], width)
        print(
            f"{k:>3}  {name:<{width}}  {op['kind']:<8}{op['calls_per_run']:>10.4g}"
            f"{op['ms_per_run']:>11.3f}{op['percent']:>7.1f}{op['us_per_call']:>11.1f}"
            f"  {_clip(op['shapes'], 60)}"
        )
    if len(shown) < len(ops):
        rest = ops[len(shown) :]
        rest_ms = sum(op["ms_per_run"] for op in rest)
        rest_pct = sum(op["percent"] for op in rest)
        print(f"     ({len(rest)} more functions){'':<{max(width - 20, 0)}}", end="")
        print(f"{'':<8}{'':>10}{rest_ms:>11.3f}{rest_pct:>7.1f}")
    print("-" * len(header))
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(report["by_kind_ms"].items()))
    print(f"by kind (ms/run): {kinds}")
    print(
        f"sum of calls {report['ops_ms']:.3f} ms + outside calls (VM, instrument overhead) "
        f"{report['outside_ops_ms']:.3f} ms = instrumented run {report['e2e_instrumented_ms']:.3f}"
        " ms (medians)"
    )
    print(
        f"end to end, not instrumented (median): Python VM {report['e2e_vm_median_ms']:.3f} ms, "
        f"ember C++ core {report['e2e_core_median_ms']:.3f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
