"""Timing and memory measurement shared by the in-process runners (ember local, ONNX Runtime)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

Outputs = Mapping[str, np.ndarray]

MIN_REQUESTS_PER_CLIENT = 3
RSS_SAMPLE_INTERVAL_S = 0.01
PERCENTILE_POINTS = (50.0, 90.0, 95.0, 99.0, 99.9)


@dataclass
class Measured:
    """What one runner measured for one (batch, concurrency) cell."""

    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    throughput_rows_s: float
    peak_rss_mb: float | None
    requests: int
    outputs: dict[str, np.ndarray]


class CellSkipped(Exception):
    """Raised by a runner for a cell it does not run (e.g. concurrency over RPC), with why."""


def percentiles_ms(latencies_ms: Sequence[float]) -> tuple[float, float, float, float, float]:
    """p50, p90, p95, p99, p99.9 (numpy's linear interpolation, so always ordered)."""
    values = np.percentile(np.asarray(latencies_ms, dtype=np.float64), PERCENTILE_POINTS)
    p50, p90, p95, p99, p999 = (float(v) for v in values)
    return p50, p90, p95, p99, p999


class RssSampler:
    """Peak resident memory of a process while the context is open: a thread samples psutil's
    RSS every RSS_SAMPLE_INTERVAL_S (peaks shorter than that can be missed)."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="ember-bench-rss", daemon=True)

    def _sample(self) -> None:
        import psutil

        while True:
            try:
                self._peak = max(self._peak, self._process.memory_info().rss)
            except psutil.Error:  # the process ended
                return
            if self._stop.wait(RSS_SAMPLE_INTERVAL_S):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float | None:
        """The highest RSS seen, in MB (None if no sample could be taken)."""
        return self._peak / 2**20 if self._peak else None


def closed_loop(
    call: Callable[[], Outputs], rows: int, concurrency: int, min_time_s: float
) -> Measured:
    """Time `call` (one request of `rows` rows) from `concurrency` client threads, each sending
    its next request when the previous one returns, for `min_time_s` after a warm-up.
    Latency is per request; throughput is rows completed over the wall time of the timed part.
    """
    warmup_s = min(0.5, max(0.05, 0.25 * min_time_s))
    with RssSampler() as rss:
        first = {name: np.array(value, copy=True) for name, value in call().items()}
        if concurrency == 1:
            spans = [_client(call, warmup_s, min_time_s, None)]
        else:
            spans = _threaded(call, concurrency, warmup_s, min_time_s)
    latencies = [ms for _, _, samples in spans for ms in samples]
    wall_s = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    p50, p90, p95, p99, p999 = percentiles_ms(latencies)
    return Measured(
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        p999_ms=p999,
        throughput_rows_s=rows * len(latencies) / wall_s,
        peak_rss_mb=rss.peak_mb,
        requests=len(latencies),
        outputs=first,
    )


Span = tuple[float, float, list[float]]  # start, end (perf_counter seconds), latencies in ms


def _client(
    call: Callable[[], Outputs],
    warmup_s: float,
    min_time_s: float,
    barrier: threading.Barrier | None,
) -> Span:
    clock = time.perf_counter
    warm_until = clock() + warmup_s
    n = 0
    while n < 2 or clock() < warm_until:
        call()
        n += 1
    if barrier is not None:
        barrier.wait()
    samples: list[float] = []
    start = clock()
    deadline = start + min_time_s
    now = start
    while now < deadline or len(samples) < MIN_REQUESTS_PER_CLIENT:
        call()
        after = clock()
        samples.append((after - now) * 1e3)
        now = after
    return start, now, samples


def _threaded(
    call: Callable[[], Outputs], concurrency: int, warmup_s: float, min_time_s: float
) -> list[Span]:
    barrier = threading.Barrier(concurrency)
    spans: list[Span | None] = [None] * concurrency
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            spans[index] = _client(call, warmup_s, min_time_s, barrier)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()  # release the others instead of leaving them waiting

    threads = [
        threading.Thread(target=client, args=(i,), name=f"ember-bench-client-{i}")
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real_errors = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real_errors or errors:
        raise (real_errors or errors)[0]
    return [span for span in spans if span is not None]
