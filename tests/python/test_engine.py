"""ember.Engine from Python: results equal to the model's direct run under concurrency (threads,
futures, asyncio), priorities, deadlines, the bounded queue, close with and without drain, metrics
and the memory pool's steady state. The C++ scheduler itself is tested in tests/cpp/engine_test.cc.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import mlp

import ember
from ember.engine import YIELD_EVERY_INLINE

ATOL = 1e-5  # batched vs single rows: the same kernels, at most a different reduction order


@pytest.fixture()
def engine(mlp_model: ember.Model) -> ember.Engine:
    with ember.Engine(mlp_model, max_queue_delay_us=1000) as eng:
        yield eng


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


def test_run_matches_the_model_for_every_row_count(
    engine: ember.Engine, mlp_model: ember.Model
) -> None:
    for n in (1, 2, 3, 4, 7, 8, 9, 20):  # buckets are (1, 4, 8): padded, exact and oversized
        x = rows(n, n)
        got = engine.run({"x": x})["y"]
        assert got.shape == (n, 5)
        np.testing.assert_allclose(got, mlp_model.run({"x": x})["y"], atol=ATOL)


def test_many_threads_each_get_their_own_rows(engine: ember.Engine, mlp_model: ember.Model) -> None:
    inputs = [rows(1 + i % 3, i) for i in range(400)]
    expected = [mlp_model.run({"x": x})["y"] for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda x: engine.run({"x": x})["y"], inputs))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL)
    metrics = engine.metrics()
    assert metrics.successes == metrics.requests == 400
    assert metrics.rows == sum(len(x) for x in inputs)
    assert metrics.batch_rows.max > 1, "32 concurrent callers never shared a batch"
    # Every blocked caller was woken exactly once; in a shared batch only the first at once.
    assert sum(metrics.wakeups.values()) == 400
    assert metrics.wakeups["handed_off"] + metrics.wakeups["by_watchdog"] > 0


def test_a_caller_that_stops_calling_does_not_hold_back_the_others(
    engine: ember.Engine, mlp_model: ember.Model
) -> None:
    # A thread returning from run() wakes the next finished caller only when it blocks in run()
    # again; one that goes off to other work loses that turn to the engine's watchdog.
    returned, finish = threading.Event(), threading.Event()

    def leaves_after_one_call() -> None:
        engine.run({"x": rows(1, 0)})
        returned.set()
        finish.wait()  # blocked in Python, not in run(): never hands its turn on itself

    leaver = threading.Thread(target=leaves_after_one_call)
    leaver.start()
    try:
        assert returned.wait(10)
        inputs = [rows(1 + i % 2, i) for i in range(64)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(lambda x=x: engine.run({"x": x})["y"]) for x in inputs]
            for x, future in zip(inputs, futures, strict=True):
                np.testing.assert_allclose(
                    future.result(timeout=10), mlp_model.run({"x": x})["y"], atol=ATOL
                )
    finally:
        finish.set()
        leaver.join()
    assert engine.metrics().wakeups["by_watchdog"] >= 1


def test_submit_returns_futures_that_concurrent_futures_understands(
    engine: ember.Engine, mlp_model: ember.Model
) -> None:
    inputs = [rows(2, i) for i in range(50)]
    futures = [engine.submit({"x": x}) for x in inputs]
    _, not_done = concurrent.futures.wait(futures, timeout=30)
    assert not not_done
    for future, x in zip(futures, inputs, strict=True):
        np.testing.assert_allclose(future.result()["y"], mlp_model.run({"x": x})["y"], atol=ATOL)
    callback_saw: list[object] = []
    future = engine.submit({"x": inputs[0]})
    future.add_done_callback(callback_saw.append)
    future.result(timeout=10)
    assert callback_saw == [future]


def test_asyncio_infer_without_a_thread_per_request(
    engine: ember.Engine, mlp_model: ember.Model
) -> None:
    inputs = [rows(1, i) for i in range(200)]
    threads_before = threading.active_count()

    async def serve() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(engine.infer({"x": x}) for x in inputs))

    results = asyncio.run(serve())
    assert threading.active_count() <= threads_before + 1
    for got, x in zip(results, inputs, strict=True):
        np.testing.assert_allclose(got["y"], mlp_model.run({"x": x})["y"], atol=ATOL)
    assert engine.metrics().batch_rows.max > 1, "200 concurrent tasks never shared a batch"


def test_a_task_calling_infer_in_a_loop_still_lets_other_tasks_run(
    engine: ember.Engine, mlp_model: ember.Model
) -> None:
    """A lone caller of a fast model may get each result during submit, without a loop round
    (the core resolves the future itself); it must still yield regularly, as awaiting a pending
    future does, or a task inferring in a loop would starve every other task of the loop."""
    x = rows(1, 3)
    want = mlp_model.run({"x": x})["y"]
    calls = 20 * YIELD_EVERY_INLINE
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def scenario() -> int:
        """The most calls in a row during which the ticker never ran."""
        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)  # the ticker runs
        longest = streak = 0
        for _ in range(calls):
            before = ticks
            got = await engine.infer({"x": x})
            np.testing.assert_allclose(got["y"], want, atol=ATOL)
            streak = streak + 1 if ticks == before else 0
            longest = max(longest, streak)
        task.cancel()
        return longest

    assert asyncio.run(scenario()) < YIELD_EVERY_INLINE


def test_asyncio_requests_that_outlast_a_loop_round_wake_their_tasks(
    mlp_model: ember.Model,
) -> None:
    """A task whose request is still queued after its one loop round attaches a future for the
    loop to wake it: here no batch can close before the 20 ms delay (preferred size 8, 3 rows)."""
    with ember.Engine(mlp_model, max_queue_delay_us=20_000, preferred_batch_sizes=(8,)) as eng:
        inputs = [rows(1, i) for i in range(3)]

        async def scenario() -> list[dict[str, np.ndarray]]:
            return await asyncio.wait_for(
                asyncio.gather(*(eng.infer({"x": x}) for x in inputs)), 10
            )

        results = asyncio.run(scenario())
        for got, x in zip(results, inputs, strict=True):
            np.testing.assert_allclose(got["y"], mlp_model.run({"x": x})["y"], atol=ATOL)
        assert eng.metrics().queue_us.max >= 20_000  # they did wait for the delay


def test_a_cancelled_asyncio_task_leaves_the_engine_serving(
    mlp_model: ember.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    with ember.Engine(mlp_model, max_queue_delay_us=20_000, preferred_batch_sizes=(8,)) as eng:

        async def scenario() -> np.ndarray:
            waiting = asyncio.ensure_future(eng.infer({"x": rows(1, 0)}))
            for _ in range(3):  # it submits, gives the loop its round, then waits on a future
                await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            # The cancelled request still runs at the delay; its outputs are dropped with it.
            return (await asyncio.wait_for(eng.infer({"x": rows(1, 1)}), 10))["y"]

        got = asyncio.run(scenario())
        np.testing.assert_allclose(got, mlp_model.run({"x": rows(1, 1)})["y"], atol=ATOL)
        eng.close()
        assert eng.metrics().successes == 2
    assert unraisable == []


def test_an_async_result_is_taken_once_and_only_when_done(engine: ember.Engine) -> None:
    result = engine._core.submit_async({"x": rows(1, 0)}, 0, -1)
    deadline = time.monotonic() + 10
    while not result.done and time.monotonic() < deadline:
        pass  # a lone request of a fast model: done within microseconds
    assert result.done
    assert result.take()["y"].shape == (1, 5)
    with pytest.raises(ember.InternalError, match="already taken"):
        result.take()
    with ember.Engine(engine.model, max_queue_delay_us=10_000_000, preferred_batch_sizes=(8,)) as e:
        pending = e._core.submit_async({"x": rows(1, 0)}, 0, -1)
        with pytest.raises(ember.InternalError, match="not finished yet"):
            pending.take()
        e.close(drain=False)
        assert pending.done
        with pytest.raises(ember.EngineClosedError):
            pending.take()


def test_infer_is_a_coroutine_that_does_nothing_until_awaited(
    engine: ember.Engine, mlp_model: ember.Model
) -> None:
    x = rows(2, 4)
    want = mlp_model.run({"x": x})["y"]
    call = engine.infer({"x": x})
    assert asyncio.iscoroutine(call)
    unawaited = engine.infer({"x": x})
    unawaited.close()  # as for any coroutine: dropped before it ran, it submits nothing
    del unawaited
    assert engine.metrics().requests == 0

    async def scenario() -> dict[str, np.ndarray]:
        task = asyncio.create_task(call)  # a task, as with an async def coroutine
        got = await task
        with pytest.raises(ember.InternalError, match="already awaited"):
            await call
        return got

    np.testing.assert_allclose(asyncio.run(scenario())["y"], want, atol=ATOL)
    assert engine.metrics().requests == 1

    async def by_hand(eng: ember.Engine) -> dict[str, np.ndarray]:
        """The generator protocol (send / StopIteration), as a framework other than asyncio's
        Task would drive it; a yielded future is awaited the way a Task waits on it."""
        call = eng.infer({"x": x})
        while True:
            try:
                yielded = call.send(None)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if yielded is not None:  # a future, flagged for a Task: take it over as one does
                assert yielded._asyncio_future_blocking
                yielded._asyncio_future_blocking = False
                await yielded

    np.testing.assert_allclose(asyncio.run(by_hand(engine))["y"], want, atol=ATOL)
    # A batch that only closes at its 20 ms delay: the call yields its loop round, then a future.
    with ember.Engine(mlp_model, max_queue_delay_us=20_000, preferred_batch_sizes=(8,)) as slow:
        np.testing.assert_allclose(asyncio.run(by_hand(slow))["y"], want, atol=ATOL)

    async def thrown_into() -> None:
        call = engine.infer({"x": x})
        call.send(None)  # submitted (a lone fast request may already have returned)
        call.throw(ValueError, ValueError("from the caller"))

    with pytest.raises((ValueError, StopIteration)):
        asyncio.run(thrown_into())


def test_asyncio_errors_reach_the_awaiting_task(engine: ember.Engine) -> None:
    async def bad() -> None:
        await engine.infer({"x": np.zeros((1, 3), np.float32)})

    with pytest.raises(ember.InvalidInputError, match="dimension 1 must be 16"):
        asyncio.run(bad())


def test_bad_inputs_are_refused_at_once_with_the_models_message(engine: ember.Engine) -> None:
    with pytest.raises(ember.InvalidInputError, match="expected dtype float32, got float64"):
        engine.run({"x": np.zeros((2, 16))})
    with pytest.raises(ember.InvalidInputError, match="unknown input 'z'"):
        engine.submit({"z": rows(1, 0)})
    with pytest.raises(ember.InvalidInputError, match="must be a numpy array"):
        engine.run({"x": [[0.0] * 16]})  # type: ignore[dict-item]
    assert engine.metrics().rejections == 2  # the list never became a request: refused in Python


def test_higher_priority_requests_run_first(mlp_model: ember.Model) -> None:
    # max_batch_size=1 runs one request per batch; a long delay never closes a batch early. The
    # first request holds the lane while the rest queue; completion order follows priority.
    with ember.Engine(mlp_model, max_batch_size=1) as eng:
        order: list[int] = []
        lock = threading.Lock()

        def record(tag: int) -> object:
            def done(_: concurrent.futures.Future[dict[str, np.ndarray]]) -> None:
                with lock:
                    order.append(tag)

            return done

        big = rows(20000, 0)  # keeps the lane busy while the others queue
        first = eng.submit({"x": big})
        futures = []
        for tag, priority in ((1, 0), (2, 5), (3, -1), (4, 5)):
            future = eng.submit({"x": rows(1, tag)}, priority=priority)
            future.add_done_callback(record(tag))
            futures.append(future)
        first.result(timeout=30)
        concurrent.futures.wait(futures, timeout=30)
    if eng.metrics().queue_us.max == 0:
        pytest.skip("the first request finished before the others queued")
    assert order == [2, 4, 1, 3]


def test_a_request_past_its_deadline_raises_timeout_and_never_runs(
    mlp_model: ember.Model,
) -> None:
    with ember.Engine(mlp_model, max_batch_size=1) as eng:
        blocker = eng.submit({"x": rows(20000, 0)})  # ~ms of work ahead of the next one
        late = eng.submit({"x": rows(1, 1)}, timeout_us=1)
        with pytest.raises(ember.TimeoutError, match="deadline passed"):
            late.result(timeout=30)
        assert isinstance(late.exception(), TimeoutError)  # also the builtin
        blocker.result(timeout=30)
        assert eng.metrics().failures == {"DeadlineExceeded": 1}
        assert eng.metrics().successes == 1


def test_a_full_queue_refuses_at_once(mlp_model: ember.Model) -> None:
    # Single rows wait for a batch of 8 or a 10 s delay, so the queue stays full until close().
    eng = ember.Engine(
        mlp_model, max_queue_delay_us=10_000_000, preferred_batch_sizes=(8,), max_queue_size=2
    )
    accepted = [eng.submit({"x": rows(1, i)}) for i in range(2)]
    assert eng.queue_size == 2
    with pytest.raises(ember.QueueFullError, match="max_queue_size=2"):
        eng.submit({"x": rows(1, 9)})
    assert not any(future.done() for future in accepted)
    eng.close(drain=True)
    for i, future in enumerate(accepted):
        np.testing.assert_allclose(
            future.result(timeout=0)["y"], mlp_model.run({"x": rows(1, i)})["y"], rtol=1e-6
        )
    assert eng.metrics().rejections == 1


def test_close_with_drain_finishes_everything_queued(mlp_model: ember.Model) -> None:
    eng = ember.Engine(mlp_model, max_queue_delay_us=10_000_000, preferred_batch_sizes=(8,))
    futures = [eng.submit({"x": rows(1, i)}) for i in range(5)]  # 5 rows wait for 8 or 10 s
    start = time.perf_counter()
    eng.close(drain=True)
    assert time.perf_counter() - start < 5, "drain waited for the batching delay"
    assert all(f.done() for f in futures)
    assert all(f.result()["y"].shape == (1, 5) for f in futures)
    with pytest.raises(ember.EngineClosedError):
        eng.run({"x": rows(1, 0)})


def test_close_without_drain_fails_what_is_queued_and_no_future_hangs(
    mlp_model: ember.Model,
) -> None:
    eng = ember.Engine(mlp_model, max_queue_delay_us=10_000_000, preferred_batch_sizes=(8,))
    futures = [eng.submit({"x": rows(1, i)}) for i in range(5)]
    eng.close(drain=False)
    for future in futures:
        assert future.done()
        assert isinstance(future.exception(), ember.EngineClosedError)
    eng.close()  # idempotent


def test_an_abandoned_engine_fails_its_pending_futures(mlp_model: ember.Model) -> None:
    eng = ember.Engine(mlp_model, max_queue_delay_us=10_000_000, preferred_batch_sizes=(8,))
    future = eng.submit({"x": rows(1, 0)})
    del eng
    gc.collect()
    with pytest.raises(ember.EngineClosedError):
        future.result(timeout=10)


def test_asyncio_futures_resolve_when_closed_without_drain(mlp_model: ember.Model) -> None:
    eng = ember.Engine(mlp_model, max_queue_delay_us=10_000_000, preferred_batch_sizes=(8,))

    async def scenario() -> list[BaseException | dict[str, np.ndarray]]:
        tasks = [asyncio.ensure_future(eng.infer({"x": rows(1, i)})) for i in range(3)]
        await asyncio.sleep(0)  # one loop round: each task submits and awaits its future
        assert eng.queue_size == 3
        eng.close(drain=False)
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

    results = asyncio.run(scenario())
    assert all(isinstance(r, ember.EngineClosedError) for r in results)


def test_a_cancelled_future_is_skipped_not_an_error(engine: ember.Engine) -> None:
    future = engine.submit({"x": rows(3, 0)})  # 3 rows wait for the 1 ms delay
    future.cancel()
    assert engine.run({"x": rows(1, 1)})["y"].shape == (1, 5)
    engine.close()
    assert future.cancelled()


def test_metrics_count_requests_and_report_percentiles(engine: ember.Engine) -> None:
    for i in range(30):
        engine.run({"x": rows(1 + i % 2, i)})
    m = engine.metrics()
    assert (m.requests, m.successes, m.rows) == (30, 30, 45)
    assert m.total_us.count == 30
    assert 0 < m.total_us.p50 <= m.total_us.p90 <= m.total_us.p99 <= m.total_us.p999
    assert m.total_us.p999 <= m.total_us.max * 1.0625 + 1
    assert m.compute_us.p50 <= m.total_us.p50 * 1.07
    assert sum(count for _, count in m.total_us.buckets) == 30
    assert m.batch_rows.count >= 1


def test_outputs_view_pooled_memory_and_return_it_when_dropped(engine: ember.Engine) -> None:
    for i in range(20):  # warm up: every size class the requests need is cached
        engine.run({"x": rows(1 + i % 4, i)})
    warm = engine.memory_stats()
    kept = [engine.run({"x": rows(1 + i % 4, i)}) for i in range(200)]
    assert engine.memory_stats()["bytes_in_use"] > warm["bytes_in_use"]  # held by `kept`
    out = kept[0]["y"]
    assert not out.flags["OWNDATA"] and out.base is not None  # a view of a pooled block
    del kept, out
    gc.collect()
    assert engine.memory_stats()["bytes_in_use"] == 0
    before = engine.memory_stats()
    for i in range(300):
        engine.run({"x": rows(1 + i % 4, i)})
    after = engine.memory_stats()
    assert after["allocations"] == before["allocations"], "steady state allocated from the system"
    assert after["hits"] >= before["hits"] + 600  # inputs and outputs of each request reuse blocks


def test_a_returned_result_is_the_only_holder_of_its_pooled_memory(engine: ember.Engine) -> None:
    # Once run() or a future returns, nothing in the engine may still hold the request's blocks:
    # dropping the result must give them back at once, not when the lane gets round to it.
    loop = asyncio.new_event_loop()
    calls: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {
        "run": engine.run,
        "submit": lambda inputs: engine.submit(inputs).result(timeout=10),
        "infer": lambda inputs: loop.run_until_complete(engine.infer(inputs)),
    }
    try:
        for name, call in calls.items():
            late = 0
            for i in range(1000):
                result = call({"x": rows(3, i)})  # 3 rows run padded to 4: a batch-owned block too
                assert engine.memory_stats()["bytes_in_use"] > 0  # the result's own output block
                del result
                late += engine.memory_stats()["bytes_in_use"] != 0
            assert late == 0, f"{name}: {late} of 1000 results still shared their memory"
    finally:
        loop.close()


def test_lanes_times_threads_may_not_exceed_the_cores(mlp_model: ember.Model) -> None:
    with pytest.raises(ember.InvalidInputError, match=r"exceeds the \d+ cores"):
        ember.Engine(mlp_model, lanes=ember.NUM_THREADS, threads_per_lane=2)
    with pytest.raises(ember.InvalidInputError, match="preferred batch size 64"):
        ember.Engine(mlp_model, preferred_batch_sizes=(64,))


def test_several_lanes_serve_correctly(mlp_model: ember.Model) -> None:
    lanes = max(1, ember.NUM_THREADS)
    with ember.Engine(mlp_model, lanes=lanes, threads_per_lane=1) as eng:
        assert eng.options["lanes"] == lanes
        inputs = [rows(1 + i % 5, i) for i in range(300)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda x: eng.run({"x": x})["y"], inputs))
    for got, x in zip(results, inputs, strict=True):
        np.testing.assert_allclose(got, mlp_model.run({"x": x})["y"], atol=ATOL)


def test_the_gil_is_free_while_a_caller_waits_for_its_batch(mlp_model: ember.Model) -> None:
    # 3 rows are no preferred size, so the batch waits the whole 200 ms delay.
    with ember.Engine(mlp_model, max_queue_delay_us=200_000, preferred_batch_sizes=(8,)) as eng:
        done = threading.Event()

        def call() -> None:
            eng.run({"x": rows(3, 0)})
            done.set()

        caller = threading.Thread(target=call)
        start = time.perf_counter()
        caller.start()
        ticks = 0
        while not done.is_set():
            ticks += 1
            time.sleep(0)  # yields the GIL: counts only advance if the waiting caller lets go
        caller.join()
        waited_ms = (time.perf_counter() - start) * 1e3
    assert waited_ms >= 190
    # Holding the GIL while waiting would allow about one tick per 5 ms switch interval.
    assert ticks > 10 * waited_ms / 5, (ticks, waited_ms)


def test_a_model_without_batch_axis_runs_one_request_per_batch(tmp_path: Path) -> None:
    static = mlp(batch_dim=3)  # type: ignore[arg-type]  # a fixed leading dimension, not a batch axis
    artifact = ember.compile(static, batch_sizes=None, output=tmp_path / "static")
    model = ember.load(artifact.path)
    with pytest.raises(ember.InvalidInputError, match="no batch axis"):
        ember.Engine(model, max_batch_size=4)
    with ember.Engine(model) as eng:
        assert eng.options["max_batch_size"] == 1
        inputs = [rows(3, i) for i in range(20)]
        futures = [eng.submit({"x": x}) for x in inputs]
        for future, x in zip(futures, inputs, strict=True):
            np.testing.assert_allclose(future.result(10)["y"], model.run({"x": x})["y"], atol=ATOL)
        with pytest.raises(ember.InvalidInputError, match="dimension 0 must be 3"):
            eng.run({"x": rows(4, 0)})
        assert eng.metrics().batch_rows.max == 1
