"""Smoke test for benchmarks/batching.py (CI runs benchmarks once with --benchmark-disable): the
whole script on the digits MLP at 1 and 4 clients for a fraction of a second per configuration,
checking that every mode served requests without errors and the engine's answers were checked.
The real measurement is `python benchmarks/batching.py` (numbers in the issue notes)."""

from __future__ import annotations

import json
from pathlib import Path

import batching


def test_batching_script_runs_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "batching.json"
    argv = ["--models", "digits_mlp", "--clients", "1,4", "--seconds", "0.3", "--warmup", "0.05"]
    argv += ["--overhead-rounds", "2", "--workdir", str(tmp_path), "--json", str(out)]
    assert batching.main(argv) == 0
    (report,) = json.loads(out.read_text())
    results = report["results"]
    assert {(r["kind"], r["clients"], r["mode"]) for r in results} == {
        (kind, clients, mode)
        for kind in ("threads", "asyncio")
        for clients in (1, 4)
        for mode in batching.MODES
        if kind == "asyncio" or mode not in batching.ASYNCIO_ONLY
    }
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in results)
    assert report["engine_us"] > 0 and report["direct_us"] > 0
    assert any(label.startswith("1-client overhead") for label, _, _ in report["checks"])


def test_targets_are_checked_only_against_the_baselines_that_ran() -> None:
    def result(mode: str, rps: float) -> batching.Result:
        return batching.Result("resnet18", "threads", 64, mode, 100, 1.0, rps, 1e5, 2e5)

    report = batching.ModelReport("resnet18", (1, 32), delay_us=2000, offline_rows_per_s=60.0)
    report.batch_compute_ms = 500.0
    report.engine_us = report.direct_us = 30_000.0
    report.results = [result("engine", 57.0)]  # run with --modes engine: no ORT to compare with
    batching.evaluate(report)
    labels = {label: ok for label, ok, _ in report.checks}
    assert labels["threads: engine >= 0.9x offline"] is True
    assert not any("ort" in label for label in labels)

    report.checks.clear()
    report.results.append(result("ort", 57.0))  # level with ORT does not beat it
    batching.evaluate(report)
    assert {label: ok for label, ok, _ in report.checks}["threads: engine beats ort"] is False
