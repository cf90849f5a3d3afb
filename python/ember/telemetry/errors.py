"""Errors raised by ember.telemetry (subclasses of ember.EmberError)."""

from __future__ import annotations

from ..errors import EmberError


class TelemetryError(EmberError, ValueError):
    """Bad input to a telemetry API: a negative latency, a port already served, a bad option."""

    code = "InvalidArgument"


class DriftError(TelemetryError):
    """Data a drift detector cannot test: too few rows, a feature count mismatch, NaN or inf."""
