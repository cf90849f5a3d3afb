"""ember's Relax pipeline for CPU targets: TVM's default CPU pipeline plus default schedules."""

from __future__ import annotations

import contextlib
from typing import Any

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from .schedule import DEFAULT_MIN_PARALLEL_ELEMENTS, ScheduleStats, default_cpu_schedule

__all__ = ["cpu_pipeline", "front_passes"]


def front_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """The passes before scheduling (library dispatch, legalization, fusion): their output holds
    the PrimFuncs that default schedules or tuning act on. Run them inside `with target:`."""
    passes: list[tvm.transform.Pass] = [
        *cpu_generic.library_dispatch_passes(target),
        *cpu_generic.legalize_passes(target),
    ]
    return passes


def cpu_pipeline(
    target: tvm.target.Target,
    *,
    min_parallel_elements: int = DEFAULT_MIN_PARALLEL_ELEMENTS,
    stats: ScheduleStats | None = None,
    database: Any = None,
) -> tvm.transform.Pass:
    """The passes of `tvm.relax.backend.cpu_generic.get_default_pipeline` with
    `default_cpu_schedule` right after FuseTIR, all run inside `with target:`. Use it as
    `tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))`.

    (Note: `tvm.compile(mod, target)` with no relax_pipeline does not run the cpu_generic
    pipeline on CPU targets but relax's `default_build_pipeline`: LegalizeOps without
    FoldConstant, FuseOps or FuseTIR, one kernel per op.) min_parallel_elements and stats are
    passed to `default_cpu_schedule`. With a MetaSchedule `database` (from tuning), its best
    schedules replace the PrimFuncs it has records for first; default schedules take the rest."""

    def transform(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target, database if database is not None else contextlib.nullcontext():
            tuned = (
                [tvm.relax.transform.MetaScheduleApplyDatabase()] if database is not None else []
            )
            passes = (
                front_passes(target)
                + tuned
                + [default_cpu_schedule(target, min_parallel_elements, stats=stats)]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return tvm.transform.module_pass(transform, opt_level=0, name="EmberCPUPipeline")
