"""`ModelLoop`: monitor -> retrain -> register -> canary -> promote, for one served model.

Requests go through the `Router` (so through Engines); their inputs feed a `DriftDetector`.
Every `check_every` requests its window is tested; on drift the `on_drift` callbacks run and, when
a retraining hook is set, the loop collects the next `retrain_rows` input rows (data from after
the drift, not a mix) and passes them with the drift report to the hook, which returns a new ONNX
model. The loop compiles it, registers it and starts a
canary; from there the router's guards promote it or roll it back, and the `on_promote` /
`on_rollback` callbacks run. After a promotion the detector's reference becomes the recent data
(the new normal); after a rollback or a failed retraining, retraining waits `cooldown_s`.
Retraining and compiling run on one background thread, never on a request's thread.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import EmberError
from ..registry import Registry
from ..routing import GuardPolicy, RampPolicy, Router, RouterEvent
from ..telemetry import DriftDetector, DriftReport

logger = logging.getLogger("ember.hooks")

Outputs = dict[str, np.ndarray]
ModelSource = onnx.ModelProto | str | os.PathLike[str]
# (drift report, {input name: recent rows}) -> the retrained ONNX model (proto or path).
RetrainHook = Callable[[DriftReport, dict[str, np.ndarray]], ModelSource]


@dataclass(frozen=True)
class LoopEvent:
    """One step of the loop's timeline: what happened, when (unix time) and the details."""

    time: float
    kind: str  # drift | collect | retrain_start | retrain_failed | registered | canary_start |
    #            ramp | promote | rollback
    version: int | None
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


class ModelLoop:
    """Serves `router`'s model, watches its inputs for drift and closes the retraining loop.

    `input_name`: the input the detector watches (default: the model's first input; its rows are
    flattened to features). `check_every`: requests between drift checks, once `min_rows` rows
    have been seen. `retrain_rows`: how many rows after the drift the retraining hook gets.
    `compile_options`: passed to `ember.compile` for retrained models (e.g. batch_sizes).
    Each check is one test at the detector's `alpha`; checking often over a long run raises the
    chance of some false alarm above alpha, so choose alpha for the check rate.
    Thread-safe: `infer` may be called from any number of threads.
    """

    def __init__(
        self,
        router: Router,
        registry: Registry,
        detector: DriftDetector,
        *,
        retrain: RetrainHook | None = None,
        input_name: str | None = None,
        check_every: int = 256,
        min_rows: int = 200,
        retrain_rows: int = 512,
        compile_options: Mapping[str, Any] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        ramp: RampPolicy | None = None,
        guard: GuardPolicy | None = None,
        cooldown_s: float = 60.0,
    ) -> None:
        if check_every < 1 or min_rows < 2 or retrain_rows < 2:
            raise EmberError("check_every must be >= 1, min_rows and retrain_rows >= 2")
        self.router = router
        self.registry = registry
        self.detector = detector
        self._retrain = retrain
        self._input = input_name
        self._check_every = check_every
        self._min_rows = min_rows
        self._rows_seen = 0
        self._retrain_rows = retrain_rows
        self._collected: list[np.ndarray] | None = None  # rows after a drift, for retraining
        self._collected_count = 0
        self._drift_report: DriftReport | None = None
        self._compile_options = dict(compile_options or {})
        self._workdir = Path(workdir) if workdir else None
        self._ramp = ramp or RampPolicy()
        self._guard = guard or GuardPolicy()
        self._cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._requests = 0
        self._busy = False  # retraining, compiling or a canary in flight: no new drift checks
        self._cooldown_until = 0.0
        self._retrain_data: np.ndarray | None = None  # what the current candidate was fit to
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ember-loop")
        self._idle = threading.Event()
        self._idle.set()
        self._timeline: list[LoopEvent] = []
        self._drift_callbacks: list[Callable[[DriftReport], None]] = []
        self._promote_callbacks: list[Callable[[RouterEvent], None]] = []
        self._rollback_callbacks: list[Callable[[RouterEvent], None]] = []
        router.add_listener(self._on_router_event)

    # --- hooks -----------------------------------------------------------------------------

    def on_drift(self, callback: Callable[[DriftReport], None]) -> Callable[[DriftReport], None]:
        """Call `callback(report)` whenever a check finds drift (usable as a decorator)."""
        self._drift_callbacks.append(callback)
        return callback

    def on_promote(self, callback: Callable[[RouterEvent], None]) -> Callable[[RouterEvent], None]:
        """Call `callback(event)` when a canary is promoted (usable as a decorator)."""
        self._promote_callbacks.append(callback)
        return callback

    def on_rollback(self, callback: Callable[[RouterEvent], None]) -> Callable[[RouterEvent], None]:
        """Call `callback(event)` when a canary is rolled back (usable as a decorator)."""
        self._rollback_callbacks.append(callback)
        return callback

    # --- serving ---------------------------------------------------------------------------

    def infer(self, inputs: Mapping[str, np.ndarray], *, key: str | None = None) -> Outputs:
        """Serve one request through the router, then account its inputs for drift."""
        outputs = self.router.infer(inputs, key=key)
        self.observe(inputs)
        return outputs

    def observe(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Account a request's inputs (served here or elsewhere); checks drift when it is due."""
        name = self._input or next(iter(inputs))
        rows = np.asarray(inputs[name])
        rows = rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows.reshape(1, -1)
        self.detector.observe(rows)
        retrain: tuple[DriftReport, np.ndarray] | None = None
        with self._lock:
            self._rows_seen += len(rows)
            self._requests += 1
            if self._collected is not None:
                self._collected.append(rows.copy())
                self._collected_count += len(rows)
                if self._collected_count >= self._retrain_rows:
                    assert self._drift_report is not None
                    retrain = (self._drift_report, np.concatenate(self._collected))
                    self._collected, self._collected_count = None, 0
            due = (
                self._requests % self._check_every == 0
                and not self._busy
                and time.monotonic() >= self._cooldown_until
                and self._rows_seen >= self._min_rows
            )
        if retrain is not None:
            self._worker.submit(self._retrain_and_canary, *retrain)
        elif due:
            self.check_drift()

    def check_drift(self) -> DriftReport:
        """Test the detector's window now; on drift, run the callbacks and start retraining."""
        report = self.detector.check()
        if not report.drifted:
            return report
        self._event("drift", None, report.summary(), {"features": list(report.drifted_features)})
        for callback in self._drift_callbacks:
            _call_safely(callback, report)
        with self._lock:
            start = self._retrain is not None and not self._busy
            start = start and time.monotonic() >= self._cooldown_until
            if start:
                self._busy = True
                self._idle.clear()
                self._collected, self._collected_count = [], 0
                self._drift_report = report
        if start:
            self._event(
                "collect", None, f"collecting {self._retrain_rows} rows after the drift to retrain"
            )
        return report

    # --- candidates ------------------------------------------------------------------------

    def submit_candidate(
        self,
        model: onnx.ModelProto | str | os.PathLike[str],
        *,
        reason: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Compile `model`, register it and start its canary now (also used by retraining);
        returns the new version. Refused while another candidate is in flight."""
        with self._lock:
            if self._busy:
                raise EmberError("a candidate is already being retrained or canaried")
            self._busy = True
            self._idle.clear()
        try:
            return self._register_and_canary(model, reason, metadata)
        except BaseException:
            self._finish(cooldown=False)
            raise

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no retraining, compile or canary is in flight; False on timeout."""
        return self._idle.wait(timeout)

    @property
    def timeline(self) -> list[LoopEvent]:
        with self._lock:
            return list(self._timeline)

    @property
    def busy(self) -> bool:
        """A retraining, compile or canary is in flight."""
        with self._lock:
            return self._busy

    def close(self) -> None:
        """Stop the retraining worker (after its current job); the router stays open."""
        self._worker.shutdown(wait=True)

    # --- internals -------------------------------------------------------------------------

    def _retrain_and_canary(self, report: DriftReport, recent: np.ndarray) -> None:
        assert self._retrain is not None
        name = self._input or self._router_input_name()
        self._event("retrain_start", None, f"retraining on {len(recent)} recent rows")
        try:
            model = self._retrain(report, {name: recent})
            with self._lock:
                self._retrain_data = recent
            drifted = f"{len(report.drifted_features)}/{len(report.features)}"
            reason = f"retrained after drift in {drifted} features ({report.method})"
            self._register_and_canary(model, reason, {"drift": report.summary()})
        except Exception as exc:  # a failing hook must not take serving down
            logger.exception("retraining failed")
            self._event("retrain_failed", None, f"{type(exc).__name__}: {exc}")
            self._finish(cooldown=True)

    def _router_input_name(self) -> str:
        """The name of the served model's first input."""
        path = self.registry.artifact_path(self.router.name, self.router.incumbent)
        from ..artifact import Artifact

        return Artifact(path).inputs[0].name

    def _register_and_canary(
        self,
        model: onnx.ModelProto | str | os.PathLike[str],
        reason: str,
        metadata: Mapping[str, Any] | None,
    ) -> int:
        from ..compiler import compile as compile_model

        workdir = self._workdir or Path(self.registry.root) / "candidates"
        workdir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        out = workdir / f"{self.router.name}-{stamp}-{time.monotonic_ns()}.ember"
        artifact = compile_model(model, output=out, **self._compile_options)
        version = self.registry.register(
            self.router.name, artifact.path, {"reason": reason, **(metadata or {})}
        )
        self._event("registered", version, f"registered v{version}: {reason}")
        self.router.start_canary(version, ramp=self._ramp, guard=self._guard, reason=reason)
        return version

    def _on_router_event(self, event: RouterEvent) -> None:
        if event.kind == "canary_start":
            self._event("canary_start", event.version, _describe(event), event.detail)
        elif event.kind == "ramp":
            self._event("ramp", event.version, _describe(event), event.detail)
        elif event.kind == "promote":
            self._event("promote", event.version, _describe(event), event.detail)
            with self._lock:
                data = self._retrain_data
                self._retrain_data = None
            if data is not None and len(data) >= 2:
                self.detector = _rebased(self.detector, data)
                with self._lock:  # the new window must fill before it is tested
                    self._rows_seen = 0
            for callback in self._promote_callbacks:
                _call_safely(callback, event)
            self._finish(cooldown=False)
        elif event.kind == "rollback":
            self._event("rollback", event.version, _describe(event), event.detail)
            with self._lock:
                self._retrain_data = None
            for callback in self._rollback_callbacks:
                _call_safely(callback, event)
            self._finish(cooldown=True)

    def _finish(self, *, cooldown: bool) -> None:
        with self._lock:
            self._busy = False
            if cooldown:
                self._cooldown_until = time.monotonic() + self._cooldown_s
        self._idle.set()

    def _event(
        self, kind: str, version: int | None, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        event = LoopEvent(time.time(), kind, version, message, dict(detail or {}))
        logger.info("%s: %s", kind, message)
        with self._lock:
            self._timeline.append(event)


def _describe(event: RouterEvent) -> str:
    detail = event.detail
    reason = detail.get("reason")
    share = detail.get("share")
    text = f"v{event.version}"
    if share is not None:
        text += f" at {float(share):.0%} of traffic"
    return f"{text}: {reason}" if reason else text


def _rebased(detector: DriftDetector, reference: np.ndarray) -> DriftDetector:
    """A detector with the same settings whose reference is `reference` (the new normal)."""
    return DriftDetector(
        reference,
        alpha=detector.alpha,
        psi_threshold=detector.psi_threshold,
        bins=detector.bins,
        sample_rate=detector.sample_rate,
        window=detector.window,
    )


def _call_safely(callback: Callable[[Any], None], arg: Any) -> None:
    try:
        callback(arg)
    except Exception:  # a user's hook must not break serving or the loop
        logger.exception("hook %r failed", callback)
