"""Optional MetaSchedule tuning: a tuned compile stays correct, and a second compile of the same
model with the same budget finds every task in the on-disk cache and searches nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import assert_matches_ort, make_model, ort_run
from onnx import TensorProto, helper

import ember
from ember.compiler.tuning import database_dir


def _norm_log_softmax_model() -> tuple[object, dict[str, np.ndarray]]:
    """LayerNorm + LogSoftmax: no library kernel covers them (Softmax has one), so both are TVM
    loop nests to tune."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "shift"], ["n"], axis=-1),
        helper.make_node("LogSoftmax", ["n"], ["y"], axis=-1),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 64])],
        [("scale", np.full(64, 1.5, np.float32)), ("shift", np.full(64, 0.25, np.float32))],
    )
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 16, 64)).astype(np.float32)}
    return model, feeds


def test_second_tuned_compile_hits_the_cache(tmp_path: Path) -> None:
    model, feeds = _norm_log_softmax_model()
    budget = ember.TuneBudget(trials=2, cache_dir=tmp_path / "cache", cost_model="random")
    reports = []
    for name in ("first", "second"):
        artifact = ember.compile(model, batch_sizes=(4,), output=tmp_path / name, tune=budget)
        reports.append(artifact.manifest["tuning"])
        assert_matches_ort(ember.load(artifact.path).run(feeds), ort_run(model, feeds))
    first, second = reports
    assert first["tasks"] == 2 and first["tuned"] == 2 and first["cached"] == 0
    assert second["tasks"] == 2 and second["cached"] == 2 and second["tuned"] == 0
    assert first["database"] == second["database"]
    assert Path(first["database"]).is_relative_to(tmp_path / "cache")


def test_each_target_and_budget_has_its_own_database(tmp_path: Path) -> None:
    """A schedule searched with 8 trials is not what a request for 200 wants, nor one target's
    schedule another's."""
    budget = ember.TuneBudget(trials=8, cache_dir=tmp_path)
    paths = {
        database_dir(budget, "llvm -mcpu=znver3"),
        database_dir(ember.TuneBudget(trials=200, cache_dir=tmp_path), "llvm -mcpu=znver3"),
        database_dir(budget, "llvm -mcpu=skylake"),
    }
    assert len(paths) == 3 and all(p.parent == tmp_path for p in paths)
    assert database_dir(budget, "llvm -mcpu=znver3") == database_dir(budget, "llvm -mcpu=znver3")


def test_untuned_compiles_record_no_tuning(tmp_path: Path) -> None:
    model, _ = _norm_log_softmax_model()
    assert ember.compile(model, batch_sizes=(4,), output=tmp_path / "a").manifest["tuning"] is None


@pytest.mark.parametrize(
    "kwargs",
    [{"trials": 0}, {"trials": 4, "trials_per_task": 0}, {"trials": 4, "cost_model": "magic"}],
)
def test_bad_budgets_are_compile_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ember.CompileError):
        ember.TuneBudget(**kwargs)  # type: ignore[arg-type]
