"""The GIL is released while the core loads and runs a model, so Python threads keep running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from helpers import mlp

import ember


def test_python_threads_progress_while_the_core_runs(tmp_path: Path) -> None:
    artifact = ember.compile(
        mlp(in_features=512, hidden=1024, out_features=512),
        batch_sizes=(256,),
        output=tmp_path / "big",
    )
    model = ember.load(artifact.path)
    x = np.ones((256, 512), np.float32)
    model.run({"x": x})  # warm up
    start = time.perf_counter()
    model.run({"x": x})
    single_run_s = time.perf_counter() - start

    done = threading.Event()
    runs = max(3, int(0.3 / max(single_run_s, 1e-4)))

    def work() -> None:
        for _ in range(runs):
            model.run({"x": x})
        done.set()

    ticks = 0
    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0)  # yields the GIL: counts only advance if the worker does not hold it
    worker.join()
    # Holding the GIL for the whole run would allow at most one tick per switch interval
    # (5 ms) of native work; with it released the loop spins freely.
    native_ms = runs * single_run_s * 1e3
    assert ticks > 4 * native_ms / 5, (ticks, native_ms)
