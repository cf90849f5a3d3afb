"""ModelLoop: drift -> collect rows after it -> retraining hook -> compile -> register -> canary ->
promote or roll back, with the on_drift / on_promote / on_rollback callbacks; and the lifecycle
demo end to end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import mlp

import ember
from ember.hooks import ModelLoop
from ember.registry import Registry
from ember.routing import GuardPolicy, RampPolicy, Router
from ember.telemetry import DriftDetector, DriftReport

# These tests are about the loop, not latency: a loaded CI machine's p99 outliers must not roll
# a healthy candidate back.
FAST_GUARD = GuardPolicy(
    window_requests=10,
    min_window_requests=5,
    breach_windows=2,
    max_disagreement=1.0,
    max_p99_ratio=1e6,
)
QUICK_RAMP = RampPolicy(steps=(0.5, 1.0), windows_per_step=1)


@pytest.fixture
def served(tmp_path: Path, mlp_artifact: ember.Artifact) -> tuple[Registry, Router]:
    registry = Registry(tmp_path / "registry")
    version = registry.register("m", mlp_artifact.path)
    registry.set_alias("m", "production", version, "first")
    router = Router(registry, "m", engine_options={"max_queue_delay_us": 0})
    yield registry, router
    router.close()
    registry.close()


def reference(rng: np.random.Generator, rows: int = 400) -> np.ndarray:
    return rng.standard_normal((rows, 16)).astype(np.float32)


def serve(loop: ModelLoop, rng: np.random.Generator, shift: float, requests: int) -> None:
    for _ in range(requests):
        x = (rng.standard_normal((2, 16)) + shift).astype(np.float32)
        y = loop.infer({"x": x})["y"]
        assert y.shape == (2, 5)


def test_drift_retrains_on_rows_after_it_and_promotes(
    served: tuple[Registry, Router], tmp_path: Path
) -> None:
    registry, router = served
    rng = np.random.default_rng(0)
    got: dict[str, object] = {}
    drifts: list[DriftReport] = []
    promoted: list[int | None] = []

    def retrain(report: DriftReport, recent: dict[str, np.ndarray]) -> onnx.ModelProto:
        got["report"], got["rows"] = report, recent["x"]
        return mlp(seed=7)

    loop = ModelLoop(
        router,
        registry,
        DriftDetector(reference(rng), alpha=0.01, window=128),
        retrain=retrain,
        check_every=10,
        min_rows=64,
        retrain_rows=100,
        compile_options={"batch_sizes": (1, 2, 4)},
        ramp=QUICK_RAMP,
        guard=FAST_GUARD,
    )
    loop.on_drift(drifts.append)
    loop.on_promote(lambda event: promoted.append(event.version))
    serve(loop, rng, shift=0.0, requests=100)  # undrifted: no alarm, nothing retrained
    assert not drifts and not loop.busy
    serve(loop, rng, shift=2.0, requests=60)  # drift, then 100 rows (50 requests) collected
    assert drifts and drifts[0].drifted
    assert loop.wait_idle(0) is False  # retraining in the background
    deadline = time.monotonic() + 120
    while loop.busy and time.monotonic() < deadline:
        serve(loop, rng, shift=2.0, requests=5)
    assert not loop.busy
    rows = got["rows"]
    assert isinstance(rows, np.ndarray) and rows.shape == (100, 16)
    assert rows.mean() > 1.5  # only rows from after the drift
    assert promoted == [2] and registry.alias("m", "production") == 2
    kinds = [e.kind for e in loop.timeline]
    assert kinds[:4] == ["drift", "collect", "retrain_start", "registered"]
    assert "promote" in kinds
    # The shifted data is the new normal: no further alarms on it.
    before = len(drifts)
    serve(loop, rng, shift=2.0, requests=60)
    assert len(drifts) == before
    loop.close()


def test_a_failing_retraining_hook_never_breaks_serving(
    served: tuple[Registry, Router],
) -> None:
    registry, router = served
    rng = np.random.default_rng(1)
    calls = threading.Event()

    def retrain(report: DriftReport, recent: dict[str, np.ndarray]) -> onnx.ModelProto:
        calls.set()
        raise RuntimeError("the training cluster is down")

    loop = ModelLoop(
        router,
        registry,
        DriftDetector(reference(rng), window=64),
        retrain=retrain,
        check_every=5,
        min_rows=32,
        retrain_rows=20,
        cooldown_s=3600,
    )
    serve(loop, rng, shift=3.0, requests=40)
    assert calls.wait(30) and loop.wait_idle(30)
    failed = [e for e in loop.timeline if e.kind == "retrain_failed"]
    assert len(failed) == 1 and "training cluster is down" in failed[0].message
    serve(loop, rng, shift=3.0, requests=40)  # still serving; cooling down, no second retrain
    assert len([e for e in loop.timeline if e.kind == "retrain_start"]) == 1
    assert registry.alias("m", "production") == 1
    loop.close()


def test_a_broken_candidate_is_rolled_back_and_reported(
    served: tuple[Registry, Router],
) -> None:
    registry, router = served
    rng = np.random.default_rng(2)
    rollbacks = []
    loop = ModelLoop(
        router,
        registry,
        DriftDetector(reference(rng)),
        compile_options={"batch_sizes": (1, 2)},
        ramp=QUICK_RAMP,
        guard=GuardPolicy(
            window_requests=10,
            min_window_requests=5,
            breach_windows=2,
            max_disagreement=0.2,
            compare_fraction=1.0,
            max_p99_ratio=1e6,
        ),
    )
    loop.on_rollback(rollbacks.append)
    version = loop.submit_candidate(mlp(seed=99), reason="a different model")
    with pytest.raises(ember.EmberError, match="already"):
        loop.submit_candidate(mlp(seed=98), reason="a second one")
    deadline = time.monotonic() + 60
    while loop.busy and time.monotonic() < deadline:
        serve(loop, rng, shift=0.0, requests=5)
    assert [e.version for e in rollbacks] == [version], loop.timeline
    assert registry.alias("m", "production") == 1
    assert [e.kind for e in registry.history("m")][-1] == "rollback"
    loop.close()


def test_the_lifecycle_demo_runs_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ember.cli import main

    assert main(["demo", "--lifecycle", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for line in (
        "[PASS] no drift alarm on clean traffic",
        "[PASS] drift detected after the shift",
        "[PASS] retrained model promoted",
        "[PASS] retraining recovered accuracy",
        "[PASS] broken candidate rolled back",
    ):
        assert line in out
    assert "on_promote: v2 is production" in out and "on_rollback: v3 rolled back" in out
