"""`ember.Engine`: many callers, one model, batched dynamically by the C++ core without the GIL.

Threads call `run` (blocking) or `submit` (a `concurrent.futures.Future`); coroutines `await
infer(...)`. Requests queue in C++; lanes (threads that each own a VM) take batches of rows as the
batch policy closes them, and results come back as numpy arrays viewing pooled memory.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from . import _core
from .artifact import TensorSpec
from .model import Model

Outputs = dict[str, np.ndarray]

# A lone asyncio caller of a fast model gets its result during submit (the core polls for it
# briefly), so `await engine.infer(...)` returns without a loop round; one call in this many
# still yields, so that a task calling in a loop cannot starve the loop's other tasks for longer
# than a few milliseconds. The core decides; this names its number.
YIELD_EVERY_INLINE: int = _core.YIELD_EVERY_INLINE


@dataclass(frozen=True)
class Distribution:
    """A histogram snapshot: count, sum, max, mean, percentiles and the non-empty buckets.

    Percentiles are bucket upper edges: never below the true value, at most 6.25% above it.
    `buckets` holds (upper edge, count) pairs in ascending order, for exporters.
    """

    count: int
    sum: int
    max: int
    mean: float
    p50: int
    p90: int
    p99: int
    p999: int
    buckets: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class EngineMetrics:
    """Counters and distributions since the engine started (times in microseconds).

    `failures` counts requests that were accepted but failed, by core status name
    ("DeadlineExceeded", "Closed", "RuntimeError", ...); `rejections` counts refused submits.
    """

    requests: int
    rows: int
    successes: int
    rejections: int
    failures: dict[str, int]
    queue_us: Distribution
    compute_us: Distribution
    total_us: Distribution
    batch_rows: Distribution
    # How blocked `run()` callers were woken: "at_once" (no woken caller held the turn),
    # "handed_off" (by the previous caller, blocking again) or "by_watchdog" (the previous
    # caller did not call again within 500 us): many of those mean callers do long work between
    # calls and wait for the watchdog.
    wakeups: dict[str, int] = field(default_factory=dict)


def _distribution(raw: dict[str, Any]) -> Distribution:
    return Distribution(**{**raw, "buckets": tuple(raw["buckets"])})


_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_live_engines() -> None:
    # Lane threads must stop before the interpreter and the runtime libraries tear down.
    for engine in list(_live_engines):
        engine.close(drain=False)


class Engine:
    """Serves one model to many concurrent callers with dynamic batching in the C++ core.

    A batch closes at `max_batch_size` rows, at one of `preferred_batch_sizes` (default: the
    artifact's buckets) when nothing more is queued, or when its oldest request has waited
    `max_queue_delay_us`. Higher `priority` runs first; a request whose `timeout_us` passes before
    it starts fails with `ember.TimeoutError` and never runs; a full queue raises
    `ember.QueueFullError` at once. `lanes` threads each own a VM and `threads_per_lane` cores
    (lanes x threads may not exceed ember's threads). By default the cores are divided among the
    lanes, except for models whose full batch runs in under 1 ms (timed once at creation, which
    also warms the model up): they get one thread per lane, leaving the other cores to the callers.
    `lanes=None` (the default) means one lane, or, for such fast models on the CPU, half of
    ember's cores as lanes (1 on 2 cores, 8 on 16), so that many callers' batches run side by side.

    Thread-safe. Close it (or use `with`) to finish or fail everything pending; no future hangs.
    """

    def __init__(
        self,
        artifact: str | os.PathLike[str] | Model,
        *,
        lanes: int | None = None,
        threads_per_lane: int | None = None,
        max_batch_size: int | None = None,
        max_queue_delay_us: int = 500,
        preferred_batch_sizes: tuple[int, ...] | list[int] | None = None,
        max_queue_size: int = 4096,
        default_timeout_us: int | None = None,
    ) -> None:
        self.model = artifact if isinstance(artifact, Model) else Model(artifact)
        self._core = _core.Engine(
            self.model._core_model,
            lanes=0 if lanes is None else lanes,
            threads_per_lane=threads_per_lane or 0,
            max_batch_size=max_batch_size or 0,
            max_queue_delay_us=max_queue_delay_us,
            preferred_batch_sizes=list(preferred_batch_sizes or ()),
            max_queue_size=max_queue_size,
            default_timeout_us=default_timeout_us or 0,
        )
        self._lock = threading.Lock()
        self._futures_queue: _core.CompletionQueue | None = None
        self._dispatcher: threading.Thread | None = None
        self._loop_queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _core.CompletionQueue
        ] = weakref.WeakKeyDictionary()
        self._last_loop_queue: tuple[asyncio.AbstractEventLoop, _core.CompletionQueue] | None = None
        _live_engines.add(self)

    # --- requests -----------------------------------------------------------------------------

    def run(
        self, inputs: Mapping[str, np.ndarray], *, priority: int = 0, timeout_us: int | None = None
    ) -> Outputs:
        """Queue one request and wait for its outputs (the GIL is released while waiting)."""
        return self._core.run(_as_dict(inputs), priority, _timeout(timeout_us))

    def submit(
        self, inputs: Mapping[str, np.ndarray], *, priority: int = 0, timeout_us: int | None = None
    ) -> concurrent.futures.Future[Outputs]:
        """Queue one request; the future resolves to its outputs or to the ember error."""
        future: concurrent.futures.Future[Outputs] = concurrent.futures.Future()
        self._core.submit(
            _as_dict(inputs), future, self._dispatch_queue(), priority, _timeout(timeout_us)
        )
        return future

    def infer(
        self, inputs: Mapping[str, np.ndarray], *, priority: int = 0, timeout_us: int | None = None
    ) -> Coroutine[Any, Any, Outputs]:
        """Queue one request from a coroutine: `await engine.infer(...)`, or schedule it as a task.

        A native coroutine (its steps run in C++): it submits when first awaited, gives the loop
        a round so that the loop's other tasks submit meanwhile, and then usually finds its
        outputs ready (a fast model's call looks again after each round for a few tens of µs);
        only a request still pending then waits on a future, which the loop resolves when an fd
        it watches says the request finished (no thread per request).
        """
        return self._core.infer(_as_dict(inputs), priority, _timeout(timeout_us), self._loop_queue)

    # --- lifecycle and introspection -----------------------------------------------------------

    def close(self, drain: bool = True) -> None:
        """Stop accepting requests; finish (drain) or fail every queued one, then stop the lanes.

        Returns when every request has its result; futures are resolved by then, except asyncio
        futures, which their loop resolves on its next iteration. Idempotent.
        """
        self._core.close(drain)
        with self._lock:
            queue, dispatcher = self._futures_queue, self._dispatcher
            loop_queues = list(self._loop_queues.items())
        if queue is not None:
            queue.close()
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join()
        for loop, loop_queue in loop_queues:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_stop_watching, loop, loop_queue)

    @property
    def closed(self) -> bool:
        return bool(self._core.closed)

    def metrics(self) -> EngineMetrics:
        """A snapshot of the request counters and latency / batch-size distributions."""
        raw = self._core.metrics()
        return EngineMetrics(
            requests=raw["requests"],
            rows=raw["rows"],
            successes=raw["successes"],
            rejections=raw["rejections"],
            failures=dict(raw["failures"]),
            wakeups=dict(raw["wakeups"]),
            **{
                key: _distribution(raw[key])
                for key in ("queue_us", "compute_us", "total_us", "batch_rows")
            },
        )

    def memory_stats(self) -> dict[str, int]:
        """The memory pool's counters: bytes in use / peak / cached, hits, misses, allocations."""
        return dict(self._core.memory_stats())

    @property
    def options(self) -> dict[str, Any]:
        """The options in effect, with defaults resolved."""
        return dict(self._core.options)

    @property
    def queue_size(self) -> int:
        """Requests waiting to run."""
        return int(self._core.queue_size)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.model.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.model.outputs

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(drain=True)

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and not core.closed:
            self.close(drain=False)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"Engine({self.model.name!r}, lanes={o['lanes']}, "
            f"threads_per_lane={o['threads_per_lane']}, max_batch_size={o['max_batch_size']}, "
            f"max_queue_delay_us={o['max_queue_delay_us']})"
        )

    # --- completion delivery -------------------------------------------------------------------

    def _dispatch_queue(self) -> _core.CompletionQueue:
        with self._lock:
            if self._futures_queue is None:
                queue = _core.CompletionQueue(for_asyncio=False)
                self._dispatcher = threading.Thread(
                    target=_dispatch_until_closed,
                    args=(queue,),
                    name=f"ember-engine-futures-{self.model.name}",
                    daemon=True,
                )
                self._dispatcher.start()
                self._futures_queue = queue
            return self._futures_queue

    def _loop_queue(self, loop: asyncio.AbstractEventLoop) -> _core.CompletionQueue:
        last = self._last_loop_queue
        if last is not None and last[0] is loop:  # the common case: one serving loop
            return last[1]
        queue = self._loop_queues.get(loop)
        if queue is None:
            queue = _core.CompletionQueue(for_asyncio=True)
            loop.add_reader(queue.fd, queue.dispatch, 0.0)
            with self._lock:
                self._loop_queues[loop] = queue
        self._last_loop_queue = (loop, queue)
        return queue


def _dispatch_until_closed(queue: _core.CompletionQueue) -> None:
    while queue.dispatch(-1.0) >= 0:
        pass


def _stop_watching(loop: asyncio.AbstractEventLoop, queue: _core.CompletionQueue) -> None:
    queue.dispatch(0.0)  # whatever finished before close
    loop.remove_reader(queue.fd)


def _as_dict(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return inputs if isinstance(inputs, dict) else dict(inputs)


def _timeout(timeout_us: int | None) -> int:
    """None: the engine's default_timeout_us; 0: no deadline."""
    if timeout_us is None:
        return -1
    return int(timeout_us)
