"""The one schema of `ember bench` results: a row per measured cell, whatever ran it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EmberError

SCHEMA_VERSION = "ember.bench/1"
RUNNERS = ("local", "emulated", "remote", "baseline")
STATUSES = ("ok", "skipped", "failed")
PERCENTILES = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms")
EMULATED_LABEL = "emulated (qemu) — correctness only, not device speed"

TOP_LEVEL_KEYS = (
    "schema",
    "created_at",
    "command",
    "model",
    "targets",
    "batch_sizes",
    "concurrency",
    "baseline",
    "min_time_s",
    "threads",
    "host",
    "remote",
    "methods",
    "artifacts",
    "results",
)


class BenchError(EmberError):
    """A benchmark run cannot start or go on: bad model, target, remote or option."""


@dataclass
class Result:
    """One row of results.json: a (target, runner, batch, concurrency) cell, or a whole target
    that was skipped (batch and concurrency None). Times in ms, rates in rows/s, memory in MB;
    None where the runner does not measure the value."""

    target: str
    runner: str
    emulated: bool
    batch: int | None
    concurrency: int | None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    throughput_rows_s: float | None = None
    peak_rss_mb: float | None = None
    compile_s: float | None = None
    tune_s: float | None = None
    max_abs_delta: float | None = None
    cosine: float | None = None
    requests: int | None = None
    device: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as plain JSON types."""
        return asdict(self)


RESULT_KEYS = tuple(Result.__dataclass_fields__)


def _number_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_results(doc: Mapping[str, Any]) -> None:
    """Check a results.json document against the schema; raises BenchError listing every
    problem (missing or extra keys, wrong types, unordered percentiles, bad throughput)."""
    problems: list[str] = []
    missing = [k for k in TOP_LEVEL_KEYS if k not in doc]
    if missing:
        problems.append(f"missing top-level keys {missing}")
    if doc.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA_VERSION!r}")
    rows = doc.get("results")
    if not isinstance(rows, list):
        raise BenchError("; ".join([*problems, "'results' is not a list"]))
    for i, row in enumerate(rows):
        problems += [f"results[{i}]: {p}" for p in _row_problems(row)]
    if problems:
        raise BenchError("results do not match the schema: " + "; ".join(problems))


def _row_problems(row: Any) -> list[str]:
    if not isinstance(row, Mapping):
        return ["not an object"]
    problems = []
    keys = set(row)
    if keys != set(RESULT_KEYS):
        problems.append(
            f"keys differ: missing {sorted(set(RESULT_KEYS) - keys)}, "
            f"extra {sorted(keys - set(RESULT_KEYS))}"
        )
        return problems
    if row["runner"] not in RUNNERS:
        problems.append(f"runner {row['runner']!r} not one of {RUNNERS}")
    if row["status"] not in STATUSES:
        problems.append(f"status {row['status']!r} not one of {STATUSES}")
    if row["emulated"] is not (row["runner"] == "emulated"):
        problems.append("'emulated' must be true exactly for the emulated runner")
    if not isinstance(row["device"], Mapping):
        problems.append("'device' is not an object")
    elif row["emulated"] and row["device"].get("emulated") is not True:
        problems.append("an emulated row's device must say emulated: true")
    numeric = (*PERCENTILES, "throughput_rows_s", "peak_rss_mb", "compile_s", "tune_s")
    for key in (*numeric, "max_abs_delta", "cosine"):
        if not _number_or_none(row[key]):
            problems.append(f"{key} is {row[key]!r}, not a finite number or null")
    for key in ("batch", "concurrency", "requests"):
        value = row[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            problems.append(f"{key} is {value!r}, not an integer or null")
    if row["status"] != "ok":
        if not row["reason"]:
            problems.append(f"a {row['status']} row needs a reason")
        return problems
    present = [row[k] for k in PERCENTILES if row[k] is not None]
    if row["p50_ms"] is None or row["p99_ms"] is None:
        problems.append("an ok row needs p50_ms and p99_ms")
    if any(a > b for a, b in itertools.pairwise(present)):
        problems.append(f"percentiles not ordered: {present}")
    if present and present[0] <= 0:
        problems.append("p50_ms must be > 0")
    if not isinstance(row["throughput_rows_s"], int | float) or row["throughput_rows_s"] <= 0:
        problems.append(f"throughput_rows_s is {row['throughput_rows_s']!r}, expected > 0")
    if row["batch"] is None or row["concurrency"] is None:
        problems.append("an ok row needs batch and concurrency")
    return problems
