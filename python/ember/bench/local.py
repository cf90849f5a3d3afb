"""Runners in this process: ember on this host (Model.run or an Engine) and the ONNX Runtime
baseline (one shared session), timed by the same closed loop."""

from __future__ import annotations

import abc
import os
from typing import Any

import numpy as np

from .fingerprint import gpu_names, host_fingerprint
from .inputs import BenchModel, Inputs
from .measure import Measured, closed_loop


class Runner(abc.ABC):
    """Runs one artifact (or the baseline) somewhere and measures (batch, concurrency) cells."""

    kind: str
    emulated = False

    @property
    @abc.abstractmethod
    def device(self) -> dict[str, Any]:
        """The fingerprint of what this runner measures on."""

    @abc.abstractmethod
    def measure(self, batch: int, concurrency: int, inputs: Inputs, min_time_s: float) -> Measured:
        """Measure one cell; raises CellSkipped for cells this runner does not run."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release what the runner holds (models, sessions, connections)."""


class LocalRunner(Runner):
    """ember on this host: concurrency 1 is `Model.run` in a loop; concurrency C > 1 is an
    `ember.Engine` (default options) with C client threads."""

    kind = "local"

    def __init__(self, artifact: str | os.PathLike[str], cuda: bool = False) -> None:
        from ..model import load

        self.model = load(artifact)
        self._device = dict(host_fingerprint())
        if cuda:
            self._device["gpu"] = gpu_names()[0] if gpu_names() else None

    @property
    def device(self) -> dict[str, Any]:
        return self._device

    def measure(self, batch: int, concurrency: int, inputs: Inputs, min_time_s: float) -> Measured:
        if concurrency == 1:
            return closed_loop(lambda: self.model.run(inputs), batch, 1, min_time_s)
        from ..engine import Engine

        with Engine(self.model) as engine:
            return closed_loop(lambda: engine.run(inputs), batch, concurrency, min_time_s)


class BaselineRunner(Runner):
    """ONNX Runtime on this host: one session with ember's thread count, shared by all client
    threads (ORT sessions are thread-safe), on the same inputs."""

    kind = "baseline"

    def __init__(self, model: BenchModel) -> None:
        import onnxruntime as ort

        from .. import NUM_THREADS

        options = ort.SessionOptions()
        options.intra_op_num_threads = NUM_THREADS
        options.inter_op_num_threads = 1
        source = model.compile_input if isinstance(model.compile_input, str) else model.serialized
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._device = {
            **host_fingerprint(),
            "runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        }

    @property
    def device(self) -> dict[str, Any]:
        return self._device

    def run(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """One inference: the outputs by name."""
        values = self.session.run(self.output_names, inputs)
        return {name: np.asarray(v) for name, v in zip(self.output_names, values, strict=True)}

    def measure(self, batch: int, concurrency: int, inputs: Inputs, min_time_s: float) -> Measured:
        return closed_loop(lambda: self.run(inputs), batch, concurrency, min_time_s)
