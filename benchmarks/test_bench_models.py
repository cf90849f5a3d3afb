"""pytest-benchmark suite: ember vs ONNX Runtime on the digits models, side by side.

    pytest benchmarks/ --benchmark-group-by=group           # timings, one group per model/batch
    pytest benchmarks/ --benchmark-disable                  # smoke test (CI): one run each

Every benchmark also asserts that its outputs match ONNX Runtime's (rtol 1e-3, atol 1e-3 of the
output's magnitude), so the smoke run checks correctness too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest

# Importing ember sets TVM_NUM_THREADS to the usable CPUs unless it is set already.
import ember
from ember.samples import INPUT_SHAPES, SAMPLES
from vs_onnxruntime import SEED, compare_outputs, make_inputs, ort_session

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

# Warm up before calibrating: a model's first runs (thread pools starting, kernels prepacking their
# weights) are far slower and would make pytest-benchmark pick too few rounds.
pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=20, min_rounds=50)

MODELS = ("digits_mlp", "digits_cnn")
BATCH_SIZES = (1, 32)
THREADS = int(os.environ["TVM_NUM_THREADS"])


@dataclass
class Engines:
    """One sample model compiled once for every batch size, with its ORT session beside it."""

    name: str
    model: ember.Model
    session: ort.InferenceSession
    output_names: list[str]

    def run_ort(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results, strict=True))


@pytest.fixture(scope="module", params=MODELS)
def engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engines:
    name: str = request.param
    proto = SAMPLES[name]()
    out = tmp_path_factory.mktemp(name) / f"{name}.ember"
    artifact = ember.compile(
        proto, batch_sizes=BATCH_SIZES, input_shapes=INPUT_SHAPES[name], output=out
    )
    session = ort_session(proto.SerializeToString(), THREADS)
    names = [o.name for o in session.get_outputs()]
    return Engines(name, ember.load(artifact.path), session, names)


@dataclass
class Case:
    """Seeded inputs at one batch size (the same arrays for both engines) and ORT's outputs."""

    batch: int
    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]


@pytest.fixture(params=BATCH_SIZES, ids=lambda b: f"b{b}")
def case(request: pytest.FixtureRequest, engines: Engines) -> Case:
    batch: int = request.param
    feeds = make_inputs(engines.model.inputs, batch, SEED)
    return Case(batch, feeds, engines.run_ort(feeds))


def _label(benchmark: BenchmarkFixture, engines: Engines, case: Case) -> None:
    benchmark.group = f"{engines.name} batch {case.batch}"
    benchmark.extra_info["threads"] = THREADS


def test_ember(benchmark: BenchmarkFixture, engines: Engines, case: Case) -> None:
    _label(benchmark, engines, case)
    outputs = benchmark(engines.model.run, case.feeds)
    agreement = compare_outputs(outputs, case.reference)
    assert agreement.ok, agreement.detail


def test_onnxruntime(benchmark: BenchmarkFixture, engines: Engines, case: Case) -> None:
    _label(benchmark, engines, case)
    outputs = benchmark(engines.run_ort, case.feeds)
    agreement = compare_outputs(outputs, case.reference)
    assert agreement.ok, agreement.detail
