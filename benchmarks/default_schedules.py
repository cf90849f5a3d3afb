"""TVM's default CPU pipelines (no schedules) vs ember's cpu_pipeline (default schedules).

Builds each workload three ways in this process, checks they agree, then times them alternately
(same inputs, same VM settings) and prints medians and ratios:

  tvm.compile    tvm.compile(mod, target): relax's "default" build pipeline, which on CPU is
                 LegalizeOps without FoldConstant/FuseOps/FuseTIR (one kernel per op)
  cpu_generic    tvm.relax.backend.cpu_generic.get_default_pipeline: legalize + fuse, unscheduled
  ember          ember.compiler.pipeline.cpu_pipeline: cpu_generic + default_cpu_schedule

    TVM_NUM_THREADS=2 python benchmarks/default_schedules.py            # all workloads
    python benchmarks/default_schedules.py --only layer_norm softmax    # name substrings
    python benchmarks/default_schedules.py --rounds 9 --min-parallel 32768

TVM_NUM_THREADS defaults to 2 here (TVM would otherwise use hardware_concurrency / 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM starts its thread pool

import numpy as np
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from ember.compiler.pipeline import cpu_pipeline
from ember.compiler.schedule import DEFAULT_MIN_PARALLEL_ELEMENTS, ScheduleStats

R = relax.op


@dataclass
class Workload:
    name: str
    shapes: list[tuple[int, ...]]
    build: Callable[..., Any]  # relax vars -> relax expr


def _layer_norm(x: Any, g: Any, b: Any) -> Any:
    return R.nn.layer_norm(x, g, b, axes=[-1])


def _heads(x: Any) -> Any:  # BERT: (B, S, 768) -> (B, 12, S, 64)
    b, s, _ = (int(d) for d in x.ty.shape.values)
    return R.permute_dims(R.reshape(x, (b, s, 12, 64)), [0, 2, 1, 3])


WORKLOADS = [
    Workload("layer_norm 32x128x768", [(32, 128, 768), (768,), (768,)], _layer_norm),
    Workload("softmax 32x12x128x128", [(32, 12, 128, 128)], lambda x: R.nn.softmax(x, -1)),
    Workload("transpose heads 32x128x768", [(32, 128, 768)], _heads),
    Workload(
        "transpose K^T 32x12x128x64",
        [(32, 12, 128, 64)],
        lambda x: R.permute_dims(x, [0, 1, 3, 2]),
    ),
    Workload(
        "NCHW->NHWC 32x64x56x56",
        [(32, 64, 56, 56)],
        lambda x: R.permute_dims(x, [0, 2, 3, 1]),
    ),
    Workload(
        "layout_transform NHWC 32x64x56x56",
        [(32, 64, 56, 56)],
        lambda x: R.layout_transform(x, index_map=lambda n, c, h, w: (n, h, w, c)),
    ),
    Workload(
        "add+relu 32x128x768",
        [(32, 128, 768), (768,)],
        lambda x, b: R.nn.relu(R.add(x, b)),
    ),
    Workload("mean(axis=1) 32x128x768", [(32, 128, 768)], lambda x: R.mean(x, axis=[1])),
    Workload(
        "max_pool 3x3/2 32x64x112x112",
        [(32, 64, 112, 112)],
        lambda x: R.nn.max_pool2d(x, (3, 3), (2, 2), padding=(1, 1)),
    ),
    Workload(
        "global_avg_pool 32x2048x7x7",
        [(32, 2048, 7, 7)],
        lambda x: R.nn.adaptive_avg_pool2d(x, (1, 1)),
    ),
    Workload("layer_norm 1x128x768", [(1, 128, 768), (768,), (768,)], _layer_norm),
    Workload("softmax 1x12x128x128", [(1, 12, 128, 128)], lambda x: R.nn.softmax(x, -1)),
    Workload("add+relu 1x64", [(1, 64), (64,)], lambda x, b: R.nn.relu(R.add(x, b))),
]


def build_module(work: Workload) -> Any:
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(work.shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(work.build(*params))
        bb.emit_func_output(out)
    return bb.get()


def host_target() -> Any:
    from tvm.target import codegen

    return tvm.target.Target(
        {
            "kind": "llvm",
            "mcpu": str(codegen.llvm_get_system_cpu()),
            "num-cores": len(os.sched_getaffinity(0)),
        }
    )


def time_once(vm: Any, args: list[Any], min_ms: float) -> float:
    """Seconds per call, averaged over enough calls to fill `min_ms`."""
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=1, min_repeat_ms=int(min_ms))
    return float(timer(*args).mean)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[], help="run workloads matching these")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds")
    parser.add_argument("--min-ms", type=float, default=100.0, help="time per round and build")
    parser.add_argument("--min-parallel", type=int, default=DEFAULT_MIN_PARALLEL_ELEMENTS)
    args = parser.parse_args(argv)

    target = host_target()
    works = [w for w in WORKLOADS if not args.only or any(s in w.name for s in args.only)]
    print(
        f"target {target}, TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}, "
        f"{args.rounds} rounds x >= {args.min_ms:.0f} ms, medians\n"
    )
    header = (
        f"{'workload':33s} {'tvm.compile':>11s} {'cpu_generic':>11s} {'ember':>10s} "
        f"{'vs tvm.compile':>14s} {'vs cpu_generic':>14s}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    failures: list[str] = []
    for work in works:
        mod = build_module(work)
        inputs = [rng.standard_normal(s).astype("float32") for s in work.shapes]
        tensors = [tvm.runtime.tensor(x) for x in inputs]
        stats = ScheduleStats()
        pipelines = {
            "tvm.compile": "default",
            "cpu_generic": cpu_generic.get_default_pipeline(target),
            "ember": cpu_pipeline(target, min_parallel_elements=args.min_parallel, stats=stats),
        }
        vms = {
            name: relax.VirtualMachine(
                tvm.compile(mod, target=target, relax_pipeline=pipeline), tvm.cpu()
            )
            for name, pipeline in pipelines.items()
        }
        expect = vms["tvm.compile"]["main"](*tensors).numpy()
        for name in ("cpu_generic", "ember"):
            got = vms[name]["main"](*tensors).numpy()
            np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5, err_msg=work.name)
        times: dict[str, list[float]] = {name: [] for name in vms}
        for _ in range(args.rounds):
            for name, vm in vms.items():
                times[name].append(time_once(vm, tensors, args.min_ms))
        med = {name: statistics.median(t) for name, t in times.items()}
        print(
            f"{work.name:33s} {_fmt(med['tvm.compile']):>11s} {_fmt(med['cpu_generic']):>11s} "
            f"{_fmt(med['ember']):>10s} {med['tvm.compile'] / med['ember']:13.1f}x "
            f"{med['cpu_generic'] / med['ember']:13.1f}x"
        )
        if stats.failed:
            failures.append(f"{work.name}: {stats.failed}")
        sys.stdout.flush()
        time.sleep(0.1)
    for line in failures:
        print(f"left unscheduled: {line}")
    return 0


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


if __name__ == "__main__":
    sys.exit(main())
