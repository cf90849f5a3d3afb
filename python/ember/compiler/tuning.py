"""Optional MetaSchedule tuning of the loop nests TVM still generates (after library dispatch),
with an on-disk database that makes a second compile of the same model skip the search.

The cache lives under `TuneBudget.cache_dir` (default `$EMBER_CACHE_DIR/tuning`, else
`~/.cache/ember/tuning`), one MetaSchedule JSON database per (target, budget). Inside it, records
are keyed by workload (the structural hash of each fused PrimFunc), so a task that any earlier
compile tuned for the same target and budget is not searched again, whichever model it came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CompileError
from ..tune import TuneBudget

BUILD_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 60.0


@dataclass
class TuningReport:
    """What one compile's tuning did, recorded in the manifest."""

    trials: int
    tasks: int
    cached: int  # tasks whose best schedule came from the on-disk database
    tuned: int  # tasks searched by this compile
    seconds: float
    database: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@contextlib.contextmanager
def _work_dir() -> Iterator[str]:
    """MetaSchedule's logs: a temporary directory, or EMBER_TUNE_LOG_DIR to keep them."""
    keep = os.environ.get("EMBER_TUNE_LOG_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="ember-tune-") as tmp:
        yield tmp


def default_cache_dir() -> Path:
    root = os.environ.get("EMBER_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "ember") / "tuning"


def database_dir(budget: TuneBudget, target: Any) -> Path:
    """One database per (target, budget): a schedule found with 8 trials is not what a request
    for 200 wants, and one target's schedule is not another's."""
    key = json.dumps(
        {"target": str(target), "trials": budget.trials, "per_task": budget.trials_per_task},
        sort_keys=True,
    )
    root = Path(budget.cache_dir) if budget.cache_dir is not None else default_cache_dir()
    return root / hashlib.sha256(key.encode()).hexdigest()[:16]


def _cost_model(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


def tune(
    legal_mod: Any, target: Any, budget: TuneBudget, say: Callable[[str], None]
) -> tuple[Any, TuningReport]:
    """Tune the PrimFuncs of `legal_mod` (a module after TVM's legalize/fusion passes) that the
    database for (target, budget) has no record of. Returns the database and a report."""
    from tvm.s_tir import meta_schedule as ms

    started = time.perf_counter()
    db_dir = database_dir(budget, target)
    db_dir.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(db_dir), module_equality="structural")
    tasks = [
        t
        for t in ms.relax_integration.extract_tasks(legal_mod, target)
        if not t.dispatched[0].attrs.get("tirx.is_scheduled", False)
    ]
    todo = [
        t
        for t in tasks
        if database.query_tuning_record(t.dispatched[0], target, t.task_name) is None
    ]
    cached = len(tasks) - len(todo)
    say(
        f"[ember] tuning: {len(tasks)} tasks, {cached} from the cache ({db_dir}),"
        f" {len(todo)} to search with {budget.trials} trials"
    )
    if todo:
        with _work_dir() as work_dir:
            per_round = max(1, min(64, budget.trials // len(todo)))
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                todo, work_dir
            )
            try:
                ms.tune_tasks(
                    tasks=contexts,
                    task_weights=weights,
                    work_dir=work_dir,
                    # Every task gets at least one round: the gradient scheduler may otherwise
                    # spend a small budget on the first task alone.
                    max_trials_global=max(budget.trials, per_round * len(todo)),
                    max_trials_per_task=budget.trials_per_task,
                    num_trials_per_iter=per_round,
                    database=database,
                    cost_model=_cost_model(budget.cost_model),
                    # Builder workers import TVM before their first build; at the default 30 s
                    # every build of the first round timed out on the 2-core machine.
                    builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S),
                    runner=ms.runner.LocalRunner(
                        timeout_sec=RUN_TIMEOUT_S,
                        evaluator_config=ms.runner.EvaluatorConfig(
                            number=3, repeat=1, min_repeat_ms=20
                        ),
                    ),
                )
            except Exception as exc:
                raise CompileError(f"tuning failed: {exc}") from exc
    seconds = time.perf_counter() - started
    say(f"[ember] tuning done in {seconds:.1f} s")
    report = TuningReport(
        budget.trials, len(tasks), cached, len(todo), round(seconds, 3), str(db_dir)
    )
    return database, report
