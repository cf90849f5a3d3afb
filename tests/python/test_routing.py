"""ember.routing.Router over a real registry and real Engines: sticky and weighted routing,
shadows that never touch the response, canaries that ramp and get promoted, and automatic
rollback on injected errors, injected latency and disagreeing outputs."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import mlp

import ember
from ember.registry import Registry, VersionNotFoundError
from ember.routing import (
    GuardPolicy,
    RampPolicy,
    Router,
    RouterEvent,
    RoutingError,
    WeightedChooser,
    default_agreement,
    unit_hash,
)

MODEL = "mlp"
OPTIONS = {"max_queue_delay_us": 0}
# v1 and v2: the same tiny MLP; v3: an MLP of the same shape with other weights.
SAME, OTHER = 2, 3
ATOL = 1e-5  # one version at other batch sizes: the same kernels, another reduction order


@pytest.fixture(scope="module")
def other_artifact(tmp_path_factory: pytest.TempPathFactory) -> ember.Artifact:
    out = tmp_path_factory.mktemp("mlp_other") / "mlp_other.ember"
    return ember.compile(mlp(seed=1), batch_sizes=(1, 4, 8), output=out)


@pytest.fixture()
def registry(
    tmp_path: Path, mlp_artifact: ember.Artifact, other_artifact: ember.Artifact
) -> Registry:
    reg = Registry(tmp_path / "registry")
    assert reg.register(MODEL, mlp_artifact.path) == 1
    assert reg.register(MODEL, mlp_artifact.path) == SAME
    assert reg.register(MODEL, other_artifact.path) == OTHER
    reg.set_alias(MODEL, "production", 1, reason="first")
    return reg


@pytest.fixture()
def reference(registry: Registry) -> Callable[[int, np.ndarray], np.ndarray]:
    """Each version's answer from an Engine of its own, configured like the router's."""
    engines: dict[int, ember.Engine] = {}

    def answer(version: int, x: np.ndarray) -> np.ndarray:
        if version not in engines:
            engines[version] = ember.Engine(registry.artifact_path(MODEL, version), **OPTIONS)
        return engines[version].run({"x": x})["y"]

    yield answer
    for engine in engines.values():
        engine.close()


class FaultyEngine(ember.Engine):
    """A real Engine that fails a seeded fraction of its calls, or sleeps before each one."""

    def __init__(
        self, path: Path, *, error_rate: float = 0.0, delay_s: float = 0.0, **options: Any
    ) -> None:
        super().__init__(path, **options)
        self.error_rate = error_rate
        self.delay_s = delay_s
        self.calls = 0
        self.injected_errors = 0
        self._rng = random.Random(1)
        self._count_lock = threading.Lock()

    def _maybe_fail(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._count_lock:
            self.calls += 1
            fail = self._rng.random() < self.error_rate
            self.injected_errors += fail
        if fail:
            raise ember.ExecutionError("injected failure")

    def run(self, inputs: Mapping[str, np.ndarray], **kwargs: Any) -> dict[str, np.ndarray]:
        self._maybe_fail()
        return super().run(inputs, **kwargs)

    async def infer(self, inputs: Mapping[str, np.ndarray], **kwargs: Any) -> dict[str, np.ndarray]:
        self._maybe_fail()
        return await super().infer(inputs, **kwargs)


class Factory:
    """engine_factory for the router: real Engines, a FaultyEngine for chosen versions."""

    def __init__(self, faulty: Mapping[int, Mapping[str, float]] | None = None) -> None:
        self.faulty = dict(faulty or {})
        self.opened: dict[int, list[ember.Engine]] = collections.defaultdict(list)

    def __call__(self, path: Path, version: int) -> ember.Engine:
        if version in self.faulty:
            engine: ember.Engine = FaultyEngine(path, **self.faulty[version], **OPTIONS)
        else:
            engine = ember.Engine(path, **OPTIONS)
        self.opened[version].append(engine)
        return engine


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_router(registry: Registry, **kwargs: Any) -> tuple[Router, list[RouterEvent]]:
    router = Router(registry, MODEL, engine_options=OPTIONS, actor="test", **kwargs)
    events: list[RouterEvent] = []
    router.add_listener(events.append)
    return router, events


def rows(seed: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


def kinds(events: list[RouterEvent]) -> list[str]:
    return [e.kind for e in events if e.kind != "window"]


def history_kinds(registry: Registry) -> list[str]:
    return [e.kind for e in registry.history(MODEL)]


# --- choosing versions -------------------------------------------------------------------------


def test_rendezvous_keys_move_only_to_the_added_version_and_in_proportion() -> None:
    keys = [f"user-{i}" for i in range(10_000)]
    two = WeightedChooser({1: 0.5, 2: 0.5})
    three = WeightedChooser({1: 0.4, 2: 0.4, 3: 0.2})
    before = [two.choose_key(k) for k in keys]
    after = [three.choose_key(k) for k in keys]
    moved = [i for i in range(len(keys)) if before[i] != after[i]]
    assert all(after[i] == 3 for i in moved), "a key moved between the old versions"
    share, sd = len(moved) / len(keys), math.sqrt(0.2 * 0.8 / len(keys))
    assert abs(share - 0.2) <= 4 * sd, f"{share:.3f} of the keys moved for a 0.2 share"
    # The same key always lands on the same version, in a fresh chooser too.
    again = WeightedChooser({3: 2.0, 1: 4.0, 2: 4.0})  # same split, other order and scale
    assert [again.choose_key(k) for k in keys] == after
    # Changing one version's weight moves keys only to it (raised) or only from it (lowered).
    raised = WeightedChooser({1: 0.4, 2: 0.6, 3: 0.2})
    lowered = WeightedChooser({1: 0.2, 2: 0.4, 3: 0.2})
    for old, up, down in zip(
        after, map(raised.choose_key, keys), map(lowered.choose_key, keys), strict=True
    ):
        assert up in (old, 2)
        assert down == old or old == 1
    assert sum(map(raised.choose_key, keys)) > sum(after), "raising v2 moved no key"
    # Stable across processes: blake2b, not Python's salted hash().
    assert unit_hash("user-0", 1) == pytest.approx(0.39480207642481835, abs=0)


def test_unkeyed_split_is_within_binomial_tolerance() -> None:
    chooser = WeightedChooser({1: 1.0, 2: 4.0})
    rng = random.Random(7)
    n = 5000
    picks = collections.Counter(chooser.choose(None, rng) for _ in range(n))
    assert set(picks) == {1, 2}
    assert abs(picks[1] - 0.2 * n) <= 4 * math.sqrt(n * 0.2 * 0.8)


def test_router_weighted_split_end_to_end(registry: Registry) -> None:
    router, events = make_router(registry, seed=3)
    with router:
        router.set_weights({1: 0.2, OTHER: 0.8}, reason="try v3")
        assert router.weights == pytest.approx({1: 0.2, OTHER: 0.8})
        n = 400
        for i in range(n):
            assert router.infer({"x": rows(i, 1)})["y"].shape == (1, 5)
        routed = router.status()["routed"]
        assert sum(routed.values()) == n
        assert abs(routed[1] - 0.2 * n) <= 4 * math.sqrt(n * 0.2 * 0.8)
    assert kinds(events) == ["weights"]
    (recorded,) = [e for e in registry.history(MODEL) if e.kind == "weights"]
    assert recorded.detail["weights"] == pytest.approx({"1": 0.2, "3": 0.8})
    assert recorded.reason == "try v3" and recorded.actor == "test"


def test_keyed_requests_stick_to_their_version(
    registry: Registry, reference: Callable[[int, np.ndarray], np.ndarray]
) -> None:
    router, _ = make_router(registry)
    with router:
        router.set_weights({1: 0.5, OTHER: 0.5})
        chosen = {f"k{i}": router.route(f"k{i}") for i in range(40)}
        assert set(chosen.values()) == {1, OTHER}
        for repeat in range(2):
            for i, (key, version) in enumerate(chosen.items()):
                x = rows(100 * repeat + i)
                assert router.route(key) == version
                # Served by that version: v1 and v3 answer differently.
                np.testing.assert_array_equal(
                    router.infer({"x": x}, key=key)["y"], reference(version, x)
                )


# --- shadows -----------------------------------------------------------------------------------


def test_shadow_of_another_model_never_changes_the_response(
    registry: Registry, reference: Callable[[int, np.ndarray], np.ndarray]
) -> None:
    factory = Factory()
    router, events = make_router(registry, engine_factory=factory)
    with router:
        router.start_shadow(OTHER, 1.0)
        expected_disagreements = 0
        n = 40
        for i in range(n):
            x = rows(i)
            got = router.infer({"x": x})["y"]
            want = reference(1, x)
            np.testing.assert_array_equal(got, want)
            got[:] = 0  # the caller scribbling on its answer must not change the comparison
            expected_disagreements += not default_agreement({"y": want}, {"y": reference(OTHER, x)})
        stats = router.stop_shadow()
        assert factory.opened[OTHER][0].closed
        assert router.status()["shadow"] is None
    assert (stats.mirrored, stats.compared, stats.errors) == (n, n, 0)
    assert stats.disagreements == expected_disagreements > n // 2
    assert kinds(events) == ["shadow_start", "shadow_stop"]
    assert events[-1].detail["disagreements"] == expected_disagreements
    assert {"shadow_start", "shadow_stop"} <= set(history_kinds(registry))


def test_failing_slow_shadow_never_delays_or_changes_the_response(
    registry: Registry, reference: Callable[[int, np.ndarray], np.ndarray]
) -> None:
    gate = threading.Event()
    workers: list[threading.Thread] = []

    class StuckShadow(ember.Engine):
        """Its answers only come when the test opens the gate, and then they are errors."""

        def submit(self, inputs: Mapping[str, np.ndarray], **kwargs: Any) -> Any:
            future: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()

            def fail_later() -> None:
                gate.wait(10)
                future.set_exception(ember.ExecutionError("shadow crashed"))

            workers.append(threading.Thread(target=fail_later, daemon=True))
            workers[-1].start()
            return future

    def factory(path: Path, version: int) -> ember.Engine:
        cls = StuckShadow if version == SAME else ember.Engine
        return cls(path, **OPTIONS)

    router, _ = make_router(registry, engine_factory=factory)
    with router:
        router.start_shadow(SAME, 0.5)
        n = 30
        for i in range(n):  # would hang (and time out the gate) if a response waited for the shadow
            x = rows(i)
            np.testing.assert_array_equal(router.infer({"x": x})["y"], reference(1, x))
        assert not gate.is_set()
        gate.set()
        for worker in workers:
            worker.join()
        stats = router.stop_shadow()
    assert stats.mirrored == len(workers) == stats.errors
    assert abs(stats.mirrored - n / 2) <= 4 * math.sqrt(n / 4)
    assert stats.compared == 0


# --- canaries ----------------------------------------------------------------------------------


def test_healthy_canary_ramps_through_every_step_and_is_promoted(
    registry: Registry,
    reference: Callable[[int, np.ndarray], np.ndarray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    factory = Factory()
    router, events = make_router(registry, engine_factory=factory)
    ramp = RampPolicy(steps=(0.1, 0.5, 1.0))
    guard = GuardPolicy(
        window_requests=10,
        min_window_requests=5,
        breach_windows=1,
        compare_fraction=0.5,
        max_p99_ratio=1e4,  # identical engines: latency noise on a loaded machine must not breach
    )
    caplog.set_level(logging.INFO, logger="ember.routing")
    with router:
        router.start_canary(SAME, ramp=ramp, guard=guard, reason="retrained")
        assert router.candidate == SAME
        assert router.weights == pytest.approx({1: 0.9, SAME: 0.1})
        for i in range(2000):
            x = rows(i)
            # Comparisons share the incumbent's batches: same kernels, other batch sizes.
            np.testing.assert_allclose(router.infer({"x": x})["y"], reference(1, x), atol=ATOL)
            if router.candidate is None:
                break
        assert kinds(events) == ["canary_start", "ramp", "ramp", "promote"]
        assert [e.detail["share"] for e in events if e.kind == "ramp"] == [0.5, 1.0]
        windows = [e for e in events if e.kind == "window"]
        assert len(windows) == 3 and all(not w.detail["breaches"] for w in windows)
        assert sum(w.detail["compared"] for w in windows) > 0
        assert sum(w.detail["disagreements"] for w in windows) == 0
        assert router.incumbent == SAME and router.weights == {SAME: 1.0}
        assert factory.opened[1][0].closed and not factory.opened[SAME][0].closed
        assert router.status()["engines"] == [SAME]
        np.testing.assert_allclose(
            router.infer({"x": rows(0)})["y"], reference(1, rows(0)), atol=ATOL
        )
    assert factory.opened[SAME][0].closed
    assert registry.alias(MODEL, "production") == SAME
    history = registry.history(MODEL)
    routed = [e.kind for e in history if e.kind in {"canary_start", "ramp", "alias", "promote"}]
    assert routed == ["alias", "canary_start", "ramp", "ramp", "alias", "promote"]
    move = [e for e in history if e.kind == "alias"][-1]
    assert (move.alias, move.previous_version, move.version, move.reason) == (
        "production",
        1,
        SAME,
        "retrained",
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "ember.routing"]
    assert any("canary v2" in m for m in messages) and any("promoted v2" in m for m in messages)


def test_injected_errors_roll_the_canary_back_and_callers_never_see_them(
    registry: Registry, reference: Callable[[int, np.ndarray], np.ndarray]
) -> None:
    factory = Factory({SAME: {"error_rate": 0.3}})
    router, events = make_router(registry, engine_factory=factory)
    guard = GuardPolicy(
        window_requests=20,
        min_window_requests=10,
        breach_windows=2,
        compare_fraction=0.0,
        max_p99_ratio=1e4,
    )
    inputs = [rows(i) for i in range(400)]
    with router:
        router.start_canary(SAME, ramp=RampPolicy(steps=(0.5, 1.0)), guard=guard)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # concurrent callers
            answers = list(pool.map(lambda x: router.infer({"x": x})["y"], inputs))
        for got, x in zip(answers, inputs, strict=True):
            np.testing.assert_allclose(got, reference(1, x), atol=ATOL)
        candidate_engine = factory.opened[SAME][0]
        assert isinstance(candidate_engine, FaultyEngine) and candidate_engine.injected_errors > 0
        assert kinds(events) == ["canary_start", "rollback"]
        rollback = events[-1]
        assert rollback.version == SAME and "error rate" in rollback.detail["reason"]
        assert rollback.detail["window"]["error_rate"] > guard.max_error_rate
        breaching = [e for e in events if e.kind == "window"][-guard.breach_windows :]
        assert all(w.detail["breaches"] for w in breaching)
        assert router.weights == {1: 1.0} and router.candidate is None
        assert candidate_engine.closed
        assert router.status()["engines"] == [1]
    (recorded,) = [e for e in registry.history(MODEL) if e.kind == "rollback"]
    assert recorded.version == SAME and "error rate" in recorded.reason
    assert registry.alias(MODEL, "production") == 1


def test_injected_latency_rolls_the_canary_back(registry: Registry) -> None:
    factory = Factory({SAME: {"delay_s": 0.02}})
    router, events = make_router(registry, engine_factory=factory)
    guard = GuardPolicy(
        window_requests=10,
        min_window_requests=5,
        breach_windows=2,
        compare_fraction=0.0,
        max_p99_ratio=3.0,
    )
    with router:
        router.start_canary(SAME, ramp=RampPolicy(steps=(0.5,)), guard=guard)
        for i in range(300):
            router.infer({"x": rows(i)})
            if router.candidate is None:
                break
        assert kinds(events) == ["canary_start", "rollback"]
        window = events[-1].detail["window"]
        assert window["candidate_p99_us"] >= 20_000 and window["p99_ratio"] > 3.0
        assert "p99" in events[-1].detail["reason"] and window["error_rate"] == 0
        assert router.weights == {1: 1.0} and factory.opened[SAME][0].closed
    assert "rollback" in history_kinds(registry)


def test_disagreeing_candidate_is_rolled_back(registry: Registry) -> None:
    router, events = make_router(registry)
    guard = GuardPolicy(
        window_requests=10,
        min_window_requests=5,
        breach_windows=1,
        compare_fraction=1.0,
        max_p99_ratio=1e4,
    )
    with router:
        router.start_canary(
            OTHER, ramp=RampPolicy(steps=(0.5, 1.0), windows_per_step=3), guard=guard
        )
        for i in range(400):
            router.infer({"x": rows(i)})
            if router.candidate is None:
                break
        assert kinds(events) == ["canary_start", "rollback"]
        detail = events[-1].detail
        assert "disagreement" in detail["reason"] and detail["window"]["disagreement"] > 0.05
        assert detail["window"]["error_rate"] == 0
        assert router.weights == {1: 1.0}
    (recorded,) = [e for e in registry.history(MODEL) if e.kind == "rollback"]
    assert recorded.version == OTHER and "disagreement" in recorded.reason


def test_windows_close_on_time_only_with_enough_requests(registry: Registry) -> None:
    clock = FakeClock()
    router, events = make_router(registry, clock=clock)
    guard = GuardPolicy(window_requests=1000, window_seconds=5.0, min_window_requests=5)
    with router:
        router.start_canary(SAME, ramp=RampPolicy(steps=(1.0,)), guard=guard)
        for i in range(3):
            router.infer({"x": rows(i)})
        clock.now += 6.0  # time is up, but only 3 of the 5 requests a window needs
        router.infer({"x": rows(3)})
        assert router.status()["canary"]["window"]["candidate_requests"] == 4
        assert [e.kind for e in events] == ["canary_start"]
        router.infer({"x": rows(4)})  # the 5th closes it: healthy at the last step -> promote
        window = next(e for e in events if e.kind == "window")
        assert window.detail["candidate_requests"] == 5 and window.detail["duration_s"] == 6.0
        assert window.detail["incumbent_p99_source"] == "none"  # v1 served nothing at 100%
        assert kinds(events) == ["canary_start", "promote"]
    assert registry.alias(MODEL, "production") == SAME


def test_async_requests_fall_back_to_the_incumbent(
    registry: Registry, reference: Callable[[int, np.ndarray], np.ndarray]
) -> None:
    factory = Factory({SAME: {"error_rate": 1.0}})
    metrics = RecordingMetrics()
    router, _ = make_router(registry, engine_factory=factory, metrics=metrics)
    inputs = [rows(i) for i in range(20)]

    async def serve() -> list[np.ndarray]:
        results = await asyncio.gather(*(router.infer_async({"x": x}) for x in inputs))
        return [r["y"] for r in results]

    with router:
        router.set_weights({1: 0.0, SAME: 1.0})
        assert router.weights == {SAME: 1.0} and router.status()["engines"] == [1, SAME]
        answers = asyncio.run(serve())
        for got, x in zip(answers, inputs, strict=True):
            np.testing.assert_allclose(got, reference(1, x), atol=ATOL)
        assert router.status()["routed"] == {SAME: 20}
    # Both failures (v2) and fallbacks (v1) reached the metrics; engines tracked then untracked.
    assert collections.Counter((v, ok) for v, ok in metrics.observed) == {
        (SAME, False): 20,
        (1, True): 20,
    }
    assert sorted(metrics.tracked) == [1, SAME] and sorted(metrics.untracked) == [1, SAME]


class RecordingMetrics:
    """Stands in for ember.telemetry.MetricsRegistry, recording what the router reports."""

    def __init__(self) -> None:
        self.tracked: list[int] = []
        self.untracked: list[int] = []
        self.observed: list[tuple[int, bool]] = []
        self._lock = threading.Lock()

    def track_engine(self, model: str, version: str | int, engine: ember.Engine) -> None:
        assert model == MODEL and isinstance(engine, ember.Engine)
        self.tracked.append(int(version))

    def untrack(self, model: str, version: str | int) -> None:
        self.untracked.append(int(version))

    def observe_request(
        self, model: str, version: str | int, latency_us: float, ok: bool = True
    ) -> None:
        assert latency_us > 0
        with self._lock:
            self.observed.append((int(version), ok))


def test_prometheus_metrics_per_version(registry: Registry) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from ember.telemetry import MetricsRegistry

    metrics = MetricsRegistry(process_metrics=False)
    factory = Factory({SAME: {"error_rate": 1.0}})
    router, _ = make_router(registry, engine_factory=factory, metrics=metrics)
    n = 40
    with router:
        router.set_weights({1: 0.5, SAME: 0.5})
        assert metrics.tracked() == [(MODEL, "1"), (MODEL, "2")]
        for i in range(n):
            router.infer({"x": rows(i)})
        routed = router.status()["routed"]
        samples = {
            (s.name, s.labels["version"], s.labels.get("outcome")): s.value
            for family in text_string_to_metric_families(metrics.render())
            for s in family.samples
            if s.labels.get("model") == MODEL
        }
    assert samples[("ember_router_requests_total", "2", "error")] == routed[SAME] > 0
    assert samples[("ember_router_requests_total", "1", "ok")] == n  # direct and fallbacks
    assert samples[("ember_inference_requests_total", "1", None)] == n
    assert metrics.tracked() == []


def test_incumbent_errors_reach_the_caller(registry: Registry) -> None:
    factory = Factory({1: {"error_rate": 1.0}})
    router, _ = make_router(registry, engine_factory=factory)
    with router, pytest.raises(ember.ExecutionError, match="injected"):
        router.infer({"x": rows(0)})


def test_bad_input_fails_without_charging_the_candidate(registry: Registry) -> None:
    router, _ = make_router(registry)
    guard = GuardPolicy(window_requests=1, min_window_requests=1, breach_windows=1)
    with router:
        router.start_canary(SAME, ramp=RampPolicy(steps=(1.0,)), guard=guard)
        with pytest.raises(ember.InvalidInputError):  # v2 refuses it, and so does the fallback
            router.infer({"x": np.zeros((2, 3), np.float32)})
        assert router.candidate == SAME
        assert router.status()["canary"]["window"]["candidate_requests"] == 0


def test_default_agreement_compares_classes_or_values() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.5]], np.float32)
    assert default_agreement({"y": logits}, {"y": logits * 3 + 1})  # same argmax per row
    assert not default_agreement({"y": logits}, {"y": logits[::-1]})
    values = np.array([[1.0], [2.0]], np.float32)
    assert default_agreement({"y": values}, {"y": values * (1 + 1e-4)})  # within rtol 1e-3
    assert not default_agreement({"y": values}, {"y": values * 1.01})
    assert not default_agreement({"y": values}, {"z": values})
    assert not default_agreement({"y": logits}, {"y": logits[:1]})
    lenient = GuardPolicy(agreement=lambda incumbent, candidate: True)
    assert lenient.agrees({"y": logits}, {"y": logits[::-1]})


# --- bad use -----------------------------------------------------------------------------------


def test_policies_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="max_error_rate"):
        GuardPolicy(max_error_rate=1.5)
    with pytest.raises(ValueError, match="min_window_requests"):
        GuardPolicy(window_requests=10, min_window_requests=20)
    with pytest.raises(ValueError, match="breach_windows"):
        GuardPolicy(breach_windows=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        RampPolicy(steps=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        RampPolicy(steps=(0.0, 1.0))
    with pytest.raises(ValueError, match="at least one"):
        RampPolicy(steps=())
    with pytest.raises(ValueError, match="weight"):
        WeightedChooser({1: -1.0})
    with pytest.raises(ValueError, match="positive weight"):
        WeightedChooser({1: 0.0})


def test_router_refuses_conflicting_changes(registry: Registry) -> None:
    router, _ = make_router(registry)
    with router:
        with pytest.raises(RoutingError, match="already the incumbent"):
            router.start_canary(1)
        with pytest.raises(VersionNotFoundError):
            router.start_canary(99)
        with pytest.raises(ValueError, match="version"):
            router.start_canary(0)
        router.start_canary(SAME)
        with pytest.raises(RoutingError, match="already running"):
            router.start_canary(OTHER)
        with pytest.raises(RoutingError, match="canary of v2 is running"):
            router.set_weights({1: 1.0})
        with pytest.raises(ValueError, match="fraction"):
            router.start_shadow(OTHER, 0.0)
        with pytest.raises(RoutingError, match="no shadow"):
            router.stop_shadow()
        with pytest.raises(TypeError, match="key"):
            router.infer({"x": rows(0)}, key=5)  # type: ignore[arg-type]
        status = router.status()
        assert status["candidate"] == SAME and status["canary"]["step"] == 0
    router.close()  # idempotent
    with pytest.raises(RoutingError, match="closed"):
        router.infer({"x": rows(0)})
    with pytest.raises(RoutingError, match="closed"):
        router.set_weights({1: 1.0})


def test_unset_alias_is_reported(registry: Registry) -> None:
    with pytest.raises(VersionNotFoundError, match="staging"):
        Router(registry, MODEL, alias="staging", engine_options=OPTIONS)
