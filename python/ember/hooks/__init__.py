"""Hooks that close the loop production -> monitor -> retrain -> register -> canary -> promote.

loop = ModelLoop(router, registry, DriftDetector(reference_rows), retrain=my_retrain)
loop.on_drift(print); loop.on_promote(notify); loop.on_rollback(page_someone)
outputs = loop.infer({"x": batch})
"""

from __future__ import annotations

from .loop import LoopEvent, ModelLoop, RetrainHook

__all__ = ["LoopEvent", "ModelLoop", "RetrainHook"]
