"""`ember bench`: one model compiled for several targets, run wherever each can run (this host,
qemu for aarch64, a device over TVM RPC), compared with ONNX Runtime in one JSON schema, a
Markdown table and a plot. Emulated numbers are always labelled as such, never as device speed.

The names below load on first use, so that `ember --help` does not import the runners.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .emulated import Emulator
    from .runner import BenchConfig, BenchRun, check_targets, run_bench
    from .schema import RESULT_KEYS, SCHEMA_VERSION, BenchError, Result, validate_results

_HOMES = {
    "Emulator": "emulated",
    "BenchConfig": "runner",
    "BenchRun": "runner",
    "check_targets": "runner",
    "run_bench": "runner",
    "RESULT_KEYS": "schema",
    "SCHEMA_VERSION": "schema",
    "BenchError": "schema",
    "Result": "schema",
    "validate_results": "schema",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ember.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


__all__ = [
    "RESULT_KEYS",
    "SCHEMA_VERSION",
    "BenchConfig",
    "BenchError",
    "BenchRun",
    "Emulator",
    "Result",
    "check_targets",
    "run_bench",
    "validate_results",
]
