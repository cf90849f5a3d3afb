"""Telemetry for served models: Prometheus metrics per model version and input drift detection.

`MetricsRegistry` exposes each tracked `ember.Engine`'s counters and latency histograms, the
latency callers saw (e.g. through the router) and process gauges in Prometheus text format.
`DriftDetector` tests recent inputs against a reference sample (KS and PSI per feature).
"""

from __future__ import annotations

from .drift import (
    EMPTY_BIN_ROWS,
    DriftDetector,
    DriftReport,
    FeatureDrift,
    ks_pvalues,
    psi_thresholds,
)
from .errors import DriftError, TelemetryError
from .metrics import (
    DEFAULT_LATENCY_BUCKETS_US,
    DEFAULT_ROWS_BUCKETS,
    FixedHistogram,
    MetricsRegistry,
    process_stats,
)

__all__ = [
    "DEFAULT_LATENCY_BUCKETS_US",
    "DEFAULT_ROWS_BUCKETS",
    "EMPTY_BIN_ROWS",
    "DriftDetector",
    "DriftError",
    "DriftReport",
    "FeatureDrift",
    "FixedHistogram",
    "MetricsRegistry",
    "TelemetryError",
    "ks_pvalues",
    "process_stats",
    "psi_thresholds",
]
