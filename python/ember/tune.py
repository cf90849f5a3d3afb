"""`TuneBudget`: the optional tuning request of `ember.compile` (kept free of compiler imports so
that `import ember` stays light)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import CompileError

COST_MODELS = ("auto", "xgb", "random")


@dataclass(frozen=True)
class TuneBudget:
    """How much MetaSchedule search `ember.compile(..., tune=TuneBudget(...))` may spend.

    trials: measured candidates over all tasks; trials_per_task: cap per task (default: trials);
    cache_dir: the tuning database root; cost_model: "xgb" (needs xgboost), "random", or "auto"
    (xgb when xgboost is installed)."""

    trials: int
    trials_per_task: int | None = None
    cache_dir: str | os.PathLike[str] | None = None
    cost_model: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise CompileError(f"TuneBudget.trials must be a positive int, got {self.trials!r}")
        per_task = self.trials_per_task
        if per_task is not None and (not isinstance(per_task, int) or per_task < 1):
            raise CompileError(f"TuneBudget.trials_per_task must be positive, got {per_task!r}")
        if self.cost_model not in COST_MODELS:
            raise CompileError(f"cost_model must be one of {COST_MODELS}, got {self.cost_model!r}")
