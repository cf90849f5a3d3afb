"""100k requests from 64 threads through one Engine, with random row counts and priorities: every
caller gets its own rows' results (checked against one direct run), none is lost or duplicated,
and the memory pool stops growing once warm. Then asyncio tasks, threads and abandoned requests
on one engine at once."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import ember

THREADS = 64
REQUESTS_PER_THREAD = 1563  # 64 x 1563 = 100,032
ATOL = 1e-5  # batched vs one big direct run: the same kernels, another reduction order at most


def test_100k_requests_from_64_threads_each_get_their_own_results(
    mlp_model: ember.Model,
) -> None:
    rng = np.random.default_rng(7)
    row_counts = rng.integers(1, 5, size=(THREADS, REQUESTS_PER_THREAD))
    priorities = rng.integers(0, 4, size=(THREADS, REQUESTS_PER_THREAD))
    total_requests = row_counts.size
    thread_rows = row_counts.sum(axis=1)
    thread_start = np.concatenate([[0], np.cumsum(thread_rows)[:-1]])
    x = rng.standard_normal((int(thread_rows.sum()), 16)).astype(np.float32)  # distinct rows
    expected = mlp_model.run({"x": x})["y"]
    got = np.full_like(expected, np.nan)

    done = 0
    done_lock = threading.Lock()
    halfway_stats: dict[str, int] = {}
    failures: list[BaseException] = []

    with ember.Engine(mlp_model, lanes=2, threads_per_lane=1, max_queue_delay_us=200) as engine:

        def client(t: int) -> None:
            nonlocal done
            offset = int(thread_start[t])
            try:
                for n, priority in zip(row_counts[t], priorities[t], strict=True):
                    rows = slice(offset, offset + int(n))
                    # Copied out, so the pooled output block goes back at once.
                    got[rows] = engine.run({"x": x[rows]}, priority=int(priority))["y"]
                    offset += int(n)
                    with done_lock:
                        done += 1
                        if done == total_requests // 2:
                            halfway_stats.update(engine.memory_stats())
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        clients = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=600)
        assert not any(c.is_alive() for c in clients), "a request never returned"
        assert not failures, failures[:3]
        metrics = engine.metrics()
        end_stats = engine.memory_stats()

    # None lost, none duplicated, every row the caller's own.
    assert done == total_requests
    assert metrics.requests == metrics.successes == total_requests
    assert metrics.rows == len(x)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, expected, atol=ATOL)
    assert metrics.batch_rows.max > 4, "64 callers never shared a batch"
    # The pool served the second half from blocks it already had.
    assert end_stats["allocations"] == halfway_stats["allocations"], (halfway_stats, end_stats)
    assert end_stats["bytes_in_use"] == 0


def test_asyncio_tasks_threads_and_cancellations_share_one_engine(
    mlp_model: ember.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 asyncio tasks (every 50th request's task cancelled once it has submitted, so its
    outputs land after the task is gone) beside 8 threads calling run(): each finished request
    has its own rows, every submitted one ran exactly once, and no block stays in use."""
    rng = np.random.default_rng(11)
    tasks, per_task, threads, per_thread = 64, 300, 8, 400
    x = rng.standard_normal((4096, 16)).astype(np.float32)
    expected = mlp_model.run({"x": x})["y"]
    starts = rng.integers(0, len(x) - 4, size=(tasks + threads, max(per_task, per_thread)))
    counts = rng.integers(1, 5, size=starts.shape)
    failures: list[BaseException] = []
    abandoned = 0
    unraisable: list[object] = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)

    def check(who: int, i: int, y: np.ndarray) -> None:
        lo = int(starts[who, i])
        np.testing.assert_allclose(y, expected[lo : lo + int(counts[who, i])], atol=ATOL)

    with ember.Engine(mlp_model, max_queue_delay_us=200) as engine:

        def thread_client(who: int) -> None:
            try:
                for i in range(per_thread):
                    lo, n = int(starts[who, i]), int(counts[who, i])
                    check(who, i, engine.run({"x": x[lo : lo + n]}, priority=i % 3)["y"])
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        async def task_client(who: int) -> None:
            nonlocal abandoned
            for i in range(per_task):
                lo, n = int(starts[who, i]), int(counts[who, i])
                request = engine.infer({"x": x[lo : lo + n]}, priority=i % 3)
                if i % 50 == 49:
                    task = asyncio.ensure_future(request)
                    await asyncio.sleep(0)  # its first step submits, then it awaits the loop
                    abandoned += task.cancel()
                    continue
                check(who, i, (await request)["y"])

        async def serve() -> None:
            await asyncio.wait_for(asyncio.gather(*(task_client(t) for t in range(tasks))), 600)

        workers = [
            threading.Thread(target=thread_client, args=(tasks + t,)) for t in range(threads)
        ]
        for w in workers:
            w.start()
        asyncio.run(serve())
        for w in workers:
            w.join(timeout=600)
        assert not any(w.is_alive() for w in workers), "a run() never returned"
        assert not failures, failures[:3]
        engine.close(drain=True)  # the abandoned requests finish too
        metrics = engine.metrics()
        stats = engine.memory_stats()

    submitted = tasks * per_task + threads * per_thread
    assert abandoned > 0  # some requests were given up before they finished
    assert metrics.requests == metrics.successes == submitted
    assert stats["bytes_in_use"] == 0
    assert unraisable == []
