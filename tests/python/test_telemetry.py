"""ember.telemetry.MetricsRegistry: a real Engine's metrics rendered as Prometheus text that
prometheus_client parses, with valid cumulative histograms; caller-side request metrics; process
gauges; the /metrics HTTP endpoint; untracking.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import ember
from ember.telemetry import (
    DEFAULT_LATENCY_BUCKETS_US,
    FixedHistogram,
    MetricsRegistry,
    TelemetryError,
    process_stats,
)
from ember.telemetry.metrics import rebucket

HISTOGRAMS = (
    "ember_inference_request_duration_us",
    "ember_inference_queue_duration_us",
    "ember_inference_compute_duration_us",
    "ember_inference_batch_rows",
    "ember_router_request_duration_us",
)
COUNTERS = (
    "ember_inference_requests_total",
    "ember_inference_rows_total",
    "ember_inference_successes_total",
    "ember_inference_failures_total",
    "ember_inference_rejections_total",
    "ember_inference_wakeups_total",
    "ember_router_requests_total",
)
PROCESS_GAUGES = (
    "ember_process_resident_memory_bytes",
    "ember_process_cpu_percent",
    "ember_process_threads",
)
MLP_1 = {"model": "mlp", "version": "1"}


@pytest.fixture(scope="module")
def served_engine(mlp_artifact: ember.Artifact) -> Iterator[tuple[ember.Engine, int, int]]:
    """An engine that served 30 requests (rows 1..3) and refused one; yields (engine, n, rows)."""
    with ember.Engine(mlp_artifact.path, max_queue_delay_us=0) as engine:
        rng = np.random.default_rng(0)
        sizes = [1 + i % 3 for i in range(30)]
        for rows in sizes:
            engine.run({"x": rng.standard_normal((rows, 16)).astype(np.float32)})
        with pytest.raises(ember.InvalidInputError):
            engine.run({"x": np.zeros((2, 3), np.float32)})
        yield engine, len(sizes), sum(sizes)


@pytest.fixture()
def registry() -> Iterator[MetricsRegistry]:
    with MetricsRegistry() as metrics:
        yield metrics


def samples(text: str) -> list[Sample]:
    """Every sample of a parsed exposition; parsing fails on malformed text."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def find(all_samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        s
        for s in all_samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(all_samples: list[Sample], name: str, **labels: str) -> float:
    (sample,) = find(all_samples, name, **labels)
    return float(sample.value)


def check_histogram(
    all_samples: list[Sample], name: str, **labels: str
) -> list[tuple[float, float]]:
    """Asserts one histogram series is valid; returns its (le, cumulative count) pairs."""
    buckets = sorted(
        (float(s.labels["le"]), float(s.value))
        for s in find(all_samples, f"{name}_bucket", **labels)
    )
    assert buckets, f"{name}{labels} has no buckets"
    assert buckets[-1][0] == float("inf")
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), f"{name} buckets are not cumulative: {counts}"
    assert value(all_samples, f"{name}_count", **labels) == counts[-1]
    assert value(all_samples, f"{name}_sum", **labels) >= 0
    return buckets


def test_engine_metrics_render_as_valid_prometheus_histograms_and_counters(
    registry: MetricsRegistry, served_engine: tuple[ember.Engine, int, int]
) -> None:
    engine, n_requests, n_rows = served_engine
    registry.track_engine("mlp", 1, engine)
    text = registry.render()
    parsed = samples(text)
    snapshot = engine.metrics()

    for name in HISTOGRAMS[:4]:
        assert f"# TYPE {name} histogram" in text and f"# HELP {name} " in text
        check_histogram(parsed, name, **MLP_1)
    total = check_histogram(parsed, "ember_inference_request_duration_us", **MLP_1)
    assert total[-1][1] == n_requests
    assert [le for le, _ in total[:-1]] == list(DEFAULT_LATENCY_BUCKETS_US)
    assert (
        value(parsed, "ember_inference_request_duration_us_sum", **MLP_1) == snapshot.total_us.sum
    )
    batches = check_histogram(parsed, "ember_inference_batch_rows", **MLP_1)
    assert batches[-1][1] == snapshot.batch_rows.count
    assert dict(batches)[4.0] == batches[-1][1], "no batch is larger than 3 rows"

    for name in HISTOGRAMS:
        assert f"# TYPE {name} histogram" in text
    for sample in parsed:
        if not sample.name.startswith("ember_process_"):
            assert {"model", "version"} <= set(sample.labels), sample
    for name in COUNTERS:
        assert f"# TYPE {name} counter" in text and f"# HELP {name} " in text
    assert value(parsed, "ember_inference_requests_total", **MLP_1) == n_requests
    assert value(parsed, "ember_inference_rows_total", **MLP_1) == n_rows
    assert value(parsed, "ember_inference_successes_total", **MLP_1) == n_requests
    assert value(parsed, "ember_inference_rejections_total", **MLP_1) == 1
    # Every accepted run() woke its caller once (the refused one never blocked), by one of the
    # three ways; which one depends on whether its batch finished before it blocked.
    woken = {
        how: value(parsed, "ember_inference_wakeups_total", how=how, **MLP_1)
        for how in ("at_once", "handed_off", "by_watchdog")
    }
    assert sum(woken.values()) == n_requests, woken
    for gauge in PROCESS_GAUGES:
        assert f"# TYPE {gauge} gauge" in text
        (sample,) = find(parsed, gauge)
        assert sample.labels == {}
    assert value(parsed, "ember_process_resident_memory_bytes") > 1e6
    assert value(parsed, "ember_process_threads") >= 1


def test_rebucketing_onto_fixed_edges_is_exact_and_cumulative() -> None:
    distribution = ember.Distribution(
        count=9, sum=2060, max=2000, mean=0, p50=0, p90=0, p99=0, p999=0,
        buckets=((3, 2), (10, 1), (11, 4), (67, 1), (2000, 1)),
    )  # fmt: skip
    assert rebucket(distribution, (10, 100, 1000)) == [
        (10, 3),
        (100, 8),
        (1000, 8),
        (float("inf"), 9),
    ]


class FakeEngine:
    """Stands in for an Engine whose requests failed in ways a test cannot provoke reliably."""

    def __init__(self, failures: dict[str, int]) -> None:
        empty = ember.Distribution(0, 0, 0, 0.0, 0, 0, 0, 0, ())
        self.snapshot = ember.EngineMetrics(
            requests=5, rows=5, successes=0, rejections=0, failures=failures,
            queue_us=empty, compute_us=empty, total_us=empty, batch_rows=empty,
        )  # fmt: skip

    def metrics(self) -> ember.EngineMetrics:
        return self.snapshot


class BrokenEngine:
    def metrics(self) -> ember.EngineMetrics:
        raise ember.InternalError("metrics unavailable")


def test_failures_are_labelled_by_kind_and_a_broken_engine_does_not_fail_the_scrape(
    registry: MetricsRegistry,
) -> None:
    registry.track_engine("fake", "v2", FakeEngine({"DeadlineExceeded": 3, "RuntimeError": 2}))
    registry.track_engine("broken", 1, BrokenEngine())
    parsed = samples(registry.render())
    failures = "ember_inference_failures_total"
    assert value(parsed, failures, model="fake", version="v2", kind="DeadlineExceeded") == 3
    assert value(parsed, failures, model="fake", version="v2", kind="RuntimeError") == 2
    assert check_histogram(parsed, "ember_inference_request_duration_us", model="fake")[-1][1] == 0
    assert not [s for s in parsed if s.labels.get("model") == "broken"]


def test_observe_request_counts_outcomes_and_latencies(registry: MetricsRegistry) -> None:
    for latency in (5, 30, 30, 700, 3e6):
        registry.observe_request("mlp", 1, latency)
    registry.observe_request("mlp", "1", 40.0, ok=False)
    registry.observe_request("mlp", 2, 10)
    parsed = samples(registry.render())
    buckets = dict(check_histogram(parsed, "ember_router_request_duration_us", **MLP_1))
    assert buckets[10.0] == 1 and buckets[50.0] == 4 and buckets[1000.0] == 5
    assert buckets[1e6] == 5 and buckets[float("inf")] == 6
    assert value(parsed, "ember_router_request_duration_us_sum", **MLP_1) == 5 + 60 + 700 + 3e6 + 40
    assert value(parsed, "ember_router_requests_total", outcome="ok", **MLP_1) == 5
    assert value(parsed, "ember_router_requests_total", outcome="error", **MLP_1) == 1
    assert value(parsed, "ember_router_requests_total", model="mlp", version="2", outcome="ok") == 1
    assert not find(parsed, "ember_inference_requests_total"), "no engine is tracked"

    for bad in (-1.0, float("nan"), float("inf"), "fast"):
        with pytest.raises(TelemetryError, match="latency_us must be a finite number"):
            registry.observe_request("mlp", 1, bad)  # type: ignore[arg-type]
    with pytest.raises(TelemetryError, match="version must be"):
        registry.observe_request("mlp", None, 1.0)  # type: ignore[arg-type]


def test_fixed_histogram_counts_every_observation_from_many_threads() -> None:
    histogram = FixedHistogram((1, 10, 100))

    def observe() -> None:
        for i in range(2000):
            histogram.observe(float(i % 200))

    threads = [threading.Thread(target=observe) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    buckets, total = histogram.snapshot()
    assert buckets == [(1, 8 * 20), (10, 8 * 110), (100, 8 * 1010), (float("inf"), 16000)]
    assert total == 8 * 10 * sum(range(200))
    with pytest.raises(TelemetryError, match="strictly ascending"):
        FixedHistogram((10, 5))


def test_serve_exposes_metrics_over_http_and_404s_elsewhere(
    registry: MetricsRegistry, served_engine: tuple[ember.Engine, int, int]
) -> None:
    engine, n_requests, _ = served_engine
    registry.track_engine("mlp", 1, engine)
    host, port = registry.serve(port=0)
    assert host == "127.0.0.1" and port > 0
    with pytest.raises(TelemetryError, match="already serving"):
        registry.serve()
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        parsed = samples(response.read().decode("utf-8"))
    assert value(parsed, "ember_inference_requests_total", **MLP_1) == n_requests
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(f"http://{host}:{port}/other", timeout=10)
    assert not_found.value.code == 404
    not_found.value.close()

    registry.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10)
    registry.close()  # idempotent


def test_untrack_removes_every_series_of_that_version(
    registry: MetricsRegistry, served_engine: tuple[ember.Engine, int, int]
) -> None:
    engine, _, _ = served_engine
    registry.track_engine("mlp", 1, engine)
    registry.track_engine("mlp", 2, engine)
    registry.observe_request("mlp", 1, 12.0)
    assert registry.tracked() == [("mlp", "1"), ("mlp", "2")]
    registry.untrack("mlp", "1")  # the same version as the int 1
    parsed = samples(registry.render())
    assert not [s for s in parsed if s.labels.get("version") == "1"]
    assert value(parsed, "ember_inference_requests_total", model="mlp", version="2") > 0
    registry.untrack("mlp", 1)  # idempotent
    with pytest.raises(TelemetryError, match=r"needs an ember\.Engine"):
        registry.track_engine("mlp", 3, object())  # type: ignore[arg-type]


def test_registers_as_a_prometheus_client_collector(registry: MetricsRegistry) -> None:
    registry.observe_request("mlp", 1, 12.0)
    prometheus = CollectorRegistry()
    prometheus.register(registry)
    parsed = samples(generate_latest(prometheus).decode("utf-8"))
    assert value(parsed, "ember_router_requests_total", outcome="ok", **MLP_1) == 1
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        prometheus.register(MetricsRegistry(process_metrics=False))


def test_process_stats_reports_this_process() -> None:
    stats = process_stats()
    assert stats["rss_bytes"] > 1e6
    assert stats["threads"] >= 1
    assert stats["cpu_percent"] >= 0
    assert stats.get("open_fds", 1) >= 1
    sum(i * i for i in range(200_000))  # some CPU time for the next interval
    assert process_stats()["cpu_percent"] >= 0
