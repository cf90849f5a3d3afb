"""Prometheus metrics for served models: per (model, version) engine metrics, caller-side latency
and process gauges, in the text exposition format 0.0.4, optionally served over HTTP.

Engines keep fine log-linear histograms (`ember.Distribution.buckets`: (largest value, count)
pairs, not cumulative). Exposition re-buckets them onto fixed `le` edges, so every scrape has the
same series: an engine bucket counts towards an edge when its largest value is <= the edge, which
never counts a value above its `le` (a bucket straddling an edge moves up to the next one).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import urlsplit

import psutil
from prometheus_client import utils as prometheus_utils
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from ..engine import Distribution, EngineMetrics
from .errors import TelemetryError

_log = logging.getLogger("ember.telemetry")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LATENCY_BUCKETS_US: tuple[float, ...] = (
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
)  # fmt: skip
DEFAULT_ROWS_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

_MODEL_LABELS = ("model", "version")


class MetricsSource(Protocol):
    """What `track_engine` needs: an `ember.Engine`, or a wrapper that forwards `metrics()`."""

    def metrics(self) -> EngineMetrics: ...


class FixedHistogram:
    """A histogram over fixed upper edges (value <= edge), O(log edges) per observation.

    Thread-safe: one lock around a few integer updates.
    """

    def __init__(self, edges: Sequence[float] = DEFAULT_LATENCY_BUCKETS_US) -> None:
        self.edges = _validated_edges(edges)
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.edges) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value."""
        index = bisect.bisect_left(self.edges, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[tuple[float, int]], float]:
        """Cumulative (edge, count) pairs ending with (+inf, total) and the sum of the values."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        return _cumulative(self.edges, counts), total


class MetricsRegistry(Collector):
    """Collects metrics for (model, version) pairs and renders Prometheus text.

    Engine metrics are read from each tracked engine at exposition time (no polling thread);
    `observe_request` records what callers saw. Also a prometheus_client collector: it may be
    registered with `prometheus_client.REGISTRY`. Thread-safe.
    """

    def __init__(
        self,
        *,
        latency_buckets_us: Sequence[float] = DEFAULT_LATENCY_BUCKETS_US,
        rows_buckets: Sequence[float] = DEFAULT_ROWS_BUCKETS,
        process_metrics: bool = True,
    ) -> None:
        self.latency_buckets_us = _validated_edges(latency_buckets_us)
        self.rows_buckets = _validated_edges(rows_buckets)
        self.process_metrics = process_metrics
        self._lock = threading.Lock()
        self._engines: dict[tuple[str, str], MetricsSource] = {}
        self._requests: dict[tuple[str, str], _RequestSeries] = {}
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._exposition = CollectorRegistry(auto_describe=False)
        self._exposition.register(self)
        if process_metrics:
            process_stats()  # the first CPU reading only starts psutil's interval

    # --- recording -----------------------------------------------------------------------------

    def track_engine(self, model: str, version: str | int, engine: MetricsSource) -> None:
        """Expose `engine.metrics()` under (model, version); replaces an engine tracked there."""
        if not callable(getattr(engine, "metrics", None)):
            raise TelemetryError(
                f"track_engine needs an ember.Engine (an object with metrics()), got {engine!r}"
            )
        with self._lock:
            self._engines[_key(model, version)] = engine

    def untrack(self, model: str, version: str | int) -> None:
        """Stop exposing (model, version): its engine and its observed requests. Idempotent.

        A request observed afterwards starts the caller-side series again, from zero.
        """
        key = _key(model, version)
        with self._lock:
            self._engines.pop(key, None)
            self._requests.pop(key, None)

    def observe_request(
        self, model: str, version: str | int, latency_us: float, ok: bool = True
    ) -> None:
        """Record one request's latency as its caller saw it (e.g. the router), and its outcome."""
        try:
            latency = float(latency_us)
        except (TypeError, ValueError):
            latency = math.nan
        if not (math.isfinite(latency) and latency >= 0):
            raise TelemetryError(
                f"latency_us must be a finite number of microseconds >= 0, got {latency_us!r}"
            )
        key = _key(model, version)
        series = self._requests.get(key)
        if series is None:
            with self._lock:
                series = self._requests.setdefault(
                    key, _RequestSeries(FixedHistogram(self.latency_buckets_us))
                )
        series.latency.observe(latency)
        with series.lock:
            if ok:
                series.ok += 1
            else:
                series.errors += 1

    def tracked(self) -> list[tuple[str, str]]:
        """The (model, version) pairs with an engine tracked, versions as strings."""
        with self._lock:
            return sorted(self._engines)

    # --- exposition ----------------------------------------------------------------------------

    def render(self) -> str:
        """The current metrics in Prometheus text exposition format 0.0.4."""
        return generate_latest(self._exposition).decode("utf-8")

    def collect(self) -> Iterable[Metric]:
        """Every metric family with its samples (the prometheus_client collector interface)."""
        with self._lock:
            engines = sorted(self._engines.items())
            requests = sorted(self._requests.items())
        families = _families()
        for (model, version), engine in engines:
            try:
                snapshot = engine.metrics()
            except Exception as exc:  # one broken engine must not fail the whole scrape
                _log.warning("metrics of %s version %s unavailable: %s", model, version, exc)
                continue
            self._add_engine(families, [model, version], snapshot)
        for (model, version), series in requests:
            buckets, total = series.latency.snapshot()
            families.router_latency.add_metric([model, version], _le_pairs(buckets), total)
            with series.lock:
                ok, errors = series.ok, series.errors
            families.router_requests.add_metric([model, version, "ok"], ok)
            families.router_requests.add_metric([model, version, "error"], errors)
        yield from families.per_model()
        if self.process_metrics:
            yield from _process_families(process_stats())

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples, so a prometheus_client registry sees the names."""
        yield from _families().per_model()
        if self.process_metrics:
            yield from _process_families(None)

    def _add_engine(self, families: _Families, labels: list[str], snapshot: EngineMetrics) -> None:
        latency = self.latency_buckets_us
        for family, distribution, edges in (
            (families.total, snapshot.total_us, latency),
            (families.queue, snapshot.queue_us, latency),
            (families.compute, snapshot.compute_us, latency),
            (families.batch_rows, snapshot.batch_rows, self.rows_buckets),
        ):
            buckets = rebucket(distribution, edges)
            family.add_metric(labels, _le_pairs(buckets), float(distribution.sum))
        families.requests.add_metric(labels, snapshot.requests)
        families.rows.add_metric(labels, snapshot.rows)
        families.successes.add_metric(labels, snapshot.successes)
        families.rejections.add_metric(labels, snapshot.rejections)
        for kind, count in sorted(snapshot.failures.items()):
            families.failures.add_metric([*labels, kind], count)
        for how, count in sorted(snapshot.wakeups.items()):
            families.wakeups.add_metric([*labels, how], count)

    # --- HTTP ----------------------------------------------------------------------------------

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serve GET /metrics from a background thread; returns the bound (host, port)."""
        with self._lock:
            if self._server is not None:
                bound_host, bound_port = self._server.server_address[:2]
                raise TelemetryError(
                    f"already serving metrics on {bound_host!s}:{bound_port}; close() it first"
                )
            server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
            try:
                server = server_class((host, port), _handler_for(self))
            except OSError as exc:
                raise TelemetryError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
            server.daemon_threads = True
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"ember-metrics-http-{server.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._server, self._server_thread = server, thread
        bound_host, bound_port = server.server_address[:2]
        return str(bound_host), int(bound_port)

    def close(self) -> None:
        """Stop the HTTP server (if serving) and wait for its thread. Idempotent."""
        with self._lock:
            server, thread = self._server, self._server_thread
            self._server = self._server_thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> MetricsRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def rebucket(distribution: Distribution, edges: Sequence[float]) -> list[tuple[float, int]]:
    """An engine distribution as cumulative (le, count) pairs over `edges` plus (+inf, total)."""
    counts = [0] * (len(edges) + 1)
    for upper, count in distribution.buckets:
        counts[bisect.bisect_left(edges, upper)] += count
    return _cumulative(edges, counts)


def process_stats() -> dict[str, float]:
    """This process's rss_bytes, cpu_percent (since the previous call), threads, open_fds.

    cpu_percent may exceed 100 on several cores; open_fds is absent where the OS has no such count.
    """
    with _process_lock:
        process = _this_process()
        with process.oneshot():
            stats = {
                "rss_bytes": float(process.memory_info().rss),
                "cpu_percent": float(process.cpu_percent(interval=None)),
                "threads": float(process.num_threads()),
            }
            if hasattr(process, "num_fds"):
                stats["open_fds"] = float(process.num_fds())
    return stats


# --- internals ---------------------------------------------------------------------------------


@dataclass
class _RequestSeries:
    latency: FixedHistogram
    ok: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Families:
    total: HistogramMetricFamily
    queue: HistogramMetricFamily
    compute: HistogramMetricFamily
    batch_rows: HistogramMetricFamily
    requests: CounterMetricFamily
    rows: CounterMetricFamily
    successes: CounterMetricFamily
    failures: CounterMetricFamily
    rejections: CounterMetricFamily
    wakeups: CounterMetricFamily
    router_latency: HistogramMetricFamily
    router_requests: CounterMetricFamily

    def per_model(self) -> Iterator[Metric]:
        yield from (
            self.total, self.queue, self.compute, self.batch_rows, self.requests, self.rows,
            self.successes, self.failures, self.rejections, self.wakeups, self.router_latency,
            self.router_requests,
        )  # fmt: skip


def _families() -> _Families:
    def histogram(name: str, doc: str) -> HistogramMetricFamily:
        return HistogramMetricFamily(name, doc, labels=_MODEL_LABELS)

    def counter(name: str, doc: str, *extra: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=(*_MODEL_LABELS, *extra))

    return _Families(
        total=histogram(
            "ember_inference_request_duration_us",
            "Engine time from submit to result per successful request, in microseconds.",
        ),
        queue=histogram(
            "ember_inference_queue_duration_us",
            "Time a successful request waited in the engine's queue, in microseconds.",
        ),
        compute=histogram(
            "ember_inference_compute_duration_us",
            "Time the batch holding a successful request took to run, in microseconds.",
        ),
        batch_rows=histogram("ember_inference_batch_rows", "Rows in each batch the engine ran."),
        requests=counter("ember_inference_requests_total", "Requests submitted to the engine."),
        rows=counter("ember_inference_rows_total", "Rows submitted to the engine."),
        successes=counter("ember_inference_successes_total", "Requests that returned outputs."),
        failures=counter(
            "ember_inference_failures_total",
            "Accepted requests that failed, by kind (DeadlineExceeded, RuntimeError, ...).",
            "kind",
        ),
        rejections=counter(
            "ember_inference_rejections_total",
            "Requests refused at submit (queue full, engine closed, bad input).",
        ),
        wakeups=counter(
            "ember_inference_wakeups_total",
            "Callers blocked in engine.run woken, by how: at_once, handed_off (by the caller "
            "before, blocking again) or by_watchdog (that caller did not call again in 500 us).",
            "how",
        ),
        router_latency=histogram(
            "ember_router_request_duration_us",
            "Request latency as the caller (e.g. the router) saw it, in microseconds.",
        ),
        router_requests=counter(
            "ember_router_requests_total", "Requests seen by the caller, by outcome.", "outcome"
        ),
    )


def _process_families(stats: dict[str, float] | None) -> Iterator[Metric]:
    """The process gauges with `stats` as samples; without samples when `stats` is None."""
    for key, name, doc in (
        ("rss_bytes", "ember_process_resident_memory_bytes", "Resident memory of this process."),
        (
            "cpu_percent",
            "ember_process_cpu_percent",
            "CPU use since the last scrape (100 = 1 core).",
        ),
        ("threads", "ember_process_threads", "Threads in this process."),
        ("open_fds", "ember_process_open_fds", "Open file descriptors of this process."),
    ):
        if stats is None:
            yield GaugeMetricFamily(name, doc)
        elif key in stats:
            yield GaugeMetricFamily(name, doc, value=stats[key])


def _key(model: str, version: str | int) -> tuple[str, str]:
    if not isinstance(model, str) or not model:
        raise TelemetryError(f"model must be a non-empty string, got {model!r}")
    if isinstance(version, bool) or not isinstance(version, str | int) or version == "":
        raise TelemetryError(f"version must be an int or a non-empty string, got {version!r}")
    return model, str(version)


def _validated_edges(edges: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(edge) for edge in edges)
    if not values or any(not math.isfinite(v) for v in values):
        raise TelemetryError(f"bucket edges must be finite numbers, at least one; got {edges!r}")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise TelemetryError(f"bucket edges must be strictly ascending, got {edges!r}")
    return values


def _cumulative(edges: Sequence[float], counts: Sequence[int]) -> list[tuple[float, int]]:
    out: list[tuple[float, int]] = []
    running = 0
    for edge, count in zip((*edges, math.inf), counts, strict=True):
        running += count
        out.append((edge, running))
    return out


def _le_pairs(buckets: Sequence[tuple[float, int]]) -> list[tuple[str, float]]:
    return [(_le_label(edge), float(count)) for edge, count in buckets]


# How prometheus_client spells an `le` edge ("250.0", "1e+06", "+Inf"); untyped upstream.
_le_label: Callable[[float], str] = prometheus_utils.floatToGoString


_process_lock = threading.Lock()
_process: tuple[int, psutil.Process] | None = None


def _this_process() -> psutil.Process:
    """psutil's handle on this process, recreated after a fork (cpu_percent keeps its state)."""
    global _process
    if _process is None or _process[0] != os.getpid():
        _process = (os.getpid(), psutil.Process())
    return _process[1]


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler_for(registry: MetricsRegistry) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/metrics":
                self._reply(404, b"not found: metrics are at /metrics\n", "text/plain")
                return
            try:
                body = registry.render().encode("utf-8")
            except Exception as exc:  # report it to the scraper rather than drop the connection
                _log.exception("rendering metrics failed")
                self._reply(500, f"rendering metrics failed: {exc}\n".encode(), "text/plain")
                return
            self._reply(200, body, CONTENT_TYPE)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            _log.debug("metrics http: " + format, *args)

    return MetricsHandler
