"""`Router`: one registry model served through `ember.Engine`s, with canaries, splits and shadows.

The router holds one Engine per version in use. Each request picks a version (sticky by key,
weighted at random otherwise), runs on that version's Engine, and is accounted to the canary's
current window; windows are judged inline, under the router's lock, right after the request that
closes them, so there is no background thread. Routing changes (weights, canary start, ramp,
promote, rollback, shadow start / stop) are logged to the "ember.routing" logger, passed to the
listeners and recorded in the registry's history.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from ..engine import Engine
from ..errors import EmberError
from .hashing import WeightedChooser, validate_weights
from .policy import (
    DEFAULT_GUARD,
    DEFAULT_RAMP,
    INCUMBENT_BASELINE_SIZE,
    CanaryWindow,
    GuardPolicy,
    RampPolicy,
    WindowVerdict,
    evaluate_window,
)

logger = logging.getLogger("ember.routing")

Outputs = dict[str, np.ndarray]
EngineFactory = Callable[[Path, int], Engine]


class RoutingError(EmberError):
    """A routing change conflicts with the router's state (closed, canary running, ...)."""

    code = "RoutingError"


class RegistryClient(Protocol):
    """The part of `ember.registry.Registry` the router uses."""

    def resolve(self, name: str, alias_or_version: str | int) -> int: ...

    def artifact_path(self, name: str, alias_or_version: str | int) -> Path: ...

    def set_alias(
        self, name: str, alias: str, version: int, reason: str = "", *, actor: str | None = None
    ) -> None: ...

    def record_event(
        self,
        name: str,
        kind: str,
        *,
        version: int | None = None,
        reason: str = "",
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None: ...


class MetricsSink(Protocol):
    """The part of `ember.telemetry.MetricsRegistry` the router uses."""

    def track_engine(self, model: str, version: str | int, engine: Engine) -> None: ...

    def untrack(self, model: str, version: str | int) -> None: ...

    def observe_request(
        self, model: str, version: str | int, latency_us: float, ok: bool = True
    ) -> None: ...


@dataclass(frozen=True)
class RouterEvent:
    """One routing change or closed canary window, as passed to listeners.

    `kind`: "weights", "canary_start", "ramp", "promote", "rollback", "shadow_start",
    "shadow_stop" or "window"; `time` is unix time; `detail` holds the numbers behind it.
    """

    time: float
    kind: str
    model: str
    version: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class ShadowStats:
    """What a shadow saw: requests mirrored to it, answers compared, disagreements, errors."""

    version: int
    fraction: float
    mirrored: int
    compared: int
    disagreements: int
    errors: int

    @property
    def disagreement_rate(self) -> float | None:
        """Disagreements over compared answers (None before any comparison)."""
        return self.disagreements / self.compared if self.compared else None


@dataclass(eq=False)
class _Slot:
    """A version's Engine and how many requests (or admin calls) are using it right now."""

    version: int
    engine: Engine
    users: int = 0
    retired: bool = True  # until installed in the router's slots
    closed: bool = False


@dataclass(eq=False)
class _Canary:
    version: int
    incumbent: int
    ramp: RampPolicy
    guard: GuardPolicy
    reason: str
    window: CanaryWindow
    step_index: int = 0
    windows: int = 0
    healthy_windows: int = 0
    consecutive_breaches: int = 0
    last_verdict: WindowVerdict | None = None
    incumbent_baseline_us: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=INCUMBENT_BASELINE_SIZE)
    )

    @property
    def share(self) -> float:
        return self.ramp.steps[self.step_index]


@dataclass(eq=False)
class _Shadow:
    version: int
    fraction: float
    guard: GuardPolicy
    mirrored: int = 0
    compared: int = 0
    disagreements: int = 0
    errors: int = 0

    def stats(self) -> ShadowStats:
        return ShadowStats(
            self.version,
            self.fraction,
            self.mirrored,
            self.compared,
            self.disagreements,
            self.errors,
        )


@dataclass(eq=False)
class _Route:
    """One request's plan, taken under the lock: which slots it holds and what to account."""

    version: int
    primary: _Slot
    fallback: _Slot | None  # the incumbent, when the primary is another version
    canary: _Canary | None
    compare: bool
    shadow: _Shadow | None
    shadow_slot: _Slot | None
    to_close: list[_Slot] = field(default_factory=list)

    def slots(self) -> list[_Slot]:
        held = [self.primary]
        if self.fallback is not None:
            held.append(self.fallback)
        if self.shadow_slot is not None:
            held.append(self.shadow_slot)
        return held


@dataclass(eq=False)
class _PendingEvent:
    event: RouterEvent
    level: int
    message: str
    record: Callable[[], None] | None


class Router:
    """Serves the registry model `name` through Engines: weighted splits, sticky keys, canaries
    with guarded ramps and automatic rollback, and shadow traffic.

    Thread-safe: any number of threads (and event loops, via `infer_async`) may call `infer`
    concurrently with each other and with the routing changes. A failed request on a
    non-incumbent version is answered by the incumbent (and counted against the candidate);
    an error on the incumbent reaches the caller. Engines of versions that leave the routing are
    closed (draining) once no request holds them.
    """

    def __init__(
        self,
        registry: RegistryClient,
        name: str,
        *,
        alias: str = "production",
        engine_options: Mapping[str, Any] | None = None,
        metrics: MetricsSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        engine_factory: EngineFactory | None = None,
        actor: str | None = None,
        seed: int | None = 0,
    ) -> None:
        self._registry = registry
        self._name = name
        self._alias = alias
        self._engine_options = dict(engine_options or {})
        self._metrics = metrics
        self._clock = clock
        self._engine_factory = engine_factory or self._default_engine
        self._actor = actor
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # routing state, slots, windows, stats
        self._admin_lock = threading.RLock()  # serialises routing changes made by callers
        self._emit_lock = threading.RLock()  # delivers queued events in order
        self._pending: collections.deque[_PendingEvent] = collections.deque()
        self._listeners: list[Callable[[RouterEvent], None]] = []
        self._slots: dict[int, _Slot] = {}
        self._routed: collections.Counter[int] = collections.Counter()
        self._canary: _Canary | None = None
        self._shadow: _Shadow | None = None
        self._closed = False

        incumbent = registry.resolve(name, alias)
        slot = self._open_slot(incumbent)
        slot.retired = False
        self._slots[incumbent] = slot
        self._incumbent = incumbent
        self._chooser = WeightedChooser({incumbent: 1.0})
        logger.info("router for %r serves v%d (alias %r)", name, incumbent, alias)

    # --- serving ------------------------------------------------------------------------------

    def infer(self, inputs: Mapping[str, np.ndarray], *, key: str | None = None) -> Outputs:
        """Answer one request from the version chosen for `key` (or at random by weight)."""
        route = self._route(key)
        try:
            started = time.perf_counter_ns()
            try:
                outputs = route.primary.engine.run(inputs)
            except Exception:
                failed_us = _elapsed_us(started)
                if route.fallback is None:
                    self._observe(route.version, failed_us, ok=False)
                    raise
                started = time.perf_counter_ns()
                try:
                    outputs = route.fallback.engine.run(inputs)
                except Exception:
                    self._incumbent_failed(route, failed_us, _elapsed_us(started))
                    raise
                self._fell_back(route, failed_us, _elapsed_us(started))
            else:
                self._served_by_primary(route, inputs, outputs, _elapsed_us(started))
            self._mirror(route, inputs, outputs)
            return outputs
        finally:
            self._release(route)

    async def infer_async(
        self, inputs: Mapping[str, np.ndarray], *, key: str | None = None
    ) -> Outputs:
        """`infer` for coroutines: awaits `Engine.infer`, so no thread waits per request."""
        route = self._route(key)
        try:
            started = time.perf_counter_ns()
            try:
                outputs = await route.primary.engine.infer(inputs)
            except Exception:
                failed_us = _elapsed_us(started)
                if route.fallback is None:
                    self._observe(route.version, failed_us, ok=False)
                    raise
                started = time.perf_counter_ns()
                try:
                    outputs = await route.fallback.engine.infer(inputs)
                except Exception:
                    self._incumbent_failed(route, failed_us, _elapsed_us(started))
                    raise
                self._fell_back(route, failed_us, _elapsed_us(started))
            else:
                self._served_by_primary(route, inputs, outputs, _elapsed_us(started))
            self._mirror(route, inputs, outputs)
            return outputs
        finally:
            self._release(route)

    def route(self, key: str | None = None) -> int:
        """The version a request with `key` would go to now (unkeyed: a fresh weighted draw)."""
        _check_key(key)
        with self._lock:
            return self._chooser.choose(key, self._rng)

    # --- routing changes ----------------------------------------------------------------------

    def set_weights(self, weights: Mapping[int, float], reason: str = "") -> None:
        """Split traffic between versions by weight (normalised), loading their engines as needed.

        The incumbent stays loaded as the fallback even at weight 0; not allowed during a canary.
        """
        split = validate_weights(weights)
        with self._admin_lock:
            self._check_open()
            if self._canary is not None:
                raise RoutingError(
                    f"cannot set weights for {self._name!r}: a canary of v{self._canary.version} "
                    "is running; wait for its promotion or rollback"
                )
            for version in split:
                self._registry.resolve(self._name, version)
            pinned = self._pin_versions(split)
            try:
                with self._lock:
                    self._check_open()
                    self._install(pinned)
                    self._chooser = WeightedChooser(split)
                    detail = {"weights": _json_weights(split), "incumbent": self._incumbent}
                    self._queue_event(
                        "weights",
                        None,
                        detail,
                        logging.INFO,
                        f"weights {_format_weights(split)}" + (f": {reason}" if reason else ""),
                        record=self._recorder("weights", None, reason, detail),
                    )
            finally:
                self._unpin(pinned)
        self._flush_events()

    def start_canary(
        self,
        version: int,
        *,
        ramp: RampPolicy = DEFAULT_RAMP,
        guard: GuardPolicy = DEFAULT_GUARD,
        reason: str = "",
    ) -> None:
        """Send `ramp.steps[0]` of the traffic to `version` and ramp it up while its windows stay
        healthy; promote it after the last step, roll it back after `guard.breach_windows`."""
        _check_version(version)
        with self._admin_lock:
            self._check_open()
            self._registry.resolve(self._name, version)
            if self._canary is not None:
                raise RoutingError(
                    f"cannot start a canary of v{version} for {self._name!r}: a canary of "
                    f"v{self._canary.version} is already running"
                )
            if version == self._incumbent:
                raise RoutingError(
                    f"cannot start a canary of v{version} for {self._name!r}: "
                    "it is already the incumbent"
                )
            pinned = self._pin_versions([version])
            try:
                with self._lock:
                    self._check_open()
                    self._install(pinned)
                    canary = _Canary(
                        version=version,
                        incumbent=self._incumbent,
                        ramp=ramp,
                        guard=guard,
                        reason=reason,
                        window=CanaryWindow(started_at=self._clock()),
                    )
                    self._canary = canary
                    self._chooser = WeightedChooser(self._canary_split(canary))
                    detail = {
                        "incumbent": self._incumbent,
                        "steps": list(ramp.steps),
                        "share": canary.share,
                        "windows_per_step": ramp.windows_per_step,
                        "guard": _guard_detail(guard),
                    }
                    self._queue_event(
                        "canary_start",
                        version,
                        detail,
                        logging.INFO,
                        f"canary v{version} at {canary.share:.2%} against v{self._incumbent}"
                        + (f": {reason}" if reason else ""),
                        record=self._recorder("canary_start", version, reason, detail),
                    )
                    self._retire_unneeded()
            finally:
                self._unpin(pinned)
        self._flush_events()

    def start_shadow(
        self, version: int, fraction: float, *, guard: GuardPolicy = DEFAULT_GUARD
    ) -> None:
        """Mirror `fraction` of the requests to `version` in the background and compare its
        answers with the ones served (by `guard.agreement`); its answers are never returned."""
        _check_version(version)
        if not (isinstance(fraction, (int, float)) and math.isfinite(fraction)) or not (
            0 < fraction <= 1
        ):
            raise ValueError(f"shadow fraction: expected a number in (0, 1], got {fraction!r}")
        with self._admin_lock:
            self._check_open()
            self._registry.resolve(self._name, version)
            if self._shadow is not None:
                raise RoutingError(
                    f"cannot shadow v{version} for {self._name!r}: v{self._shadow.version} is "
                    "already shadowed; call stop_shadow() first"
                )
            pinned = self._pin_versions([version])
            try:
                with self._lock:
                    self._check_open()
                    self._install(pinned)
                    self._shadow = _Shadow(version, float(fraction), guard)
                    detail = {"fraction": float(fraction), "incumbent": self._incumbent}
                    self._queue_event(
                        "shadow_start",
                        version,
                        detail,
                        logging.INFO,
                        f"shadow v{version} on {fraction:.2%} of the requests",
                        record=self._recorder("shadow_start", version, "", detail),
                    )
            finally:
                self._unpin(pinned)
        self._flush_events()

    def stop_shadow(self) -> ShadowStats:
        """Stop mirroring; returns the shadow's stats once the mirrors it had queued finished."""
        with self._admin_lock:
            with self._lock:
                shadow = self._shadow
                if shadow is None:
                    raise RoutingError(f"no shadow is running for {self._name!r}")
                self._shadow = None
                to_close = self._retire_unneeded()
            self._close_slots(to_close)  # drains the shadow's queue: its callbacks have run
            with self._lock:
                stats = shadow.stats()
                detail = _shadow_detail(stats)
                self._queue_event(
                    "shadow_stop",
                    shadow.version,
                    detail,
                    logging.INFO,
                    f"shadow v{shadow.version} stopped: {stats.mirrored} mirrored, "
                    f"{stats.disagreements}/{stats.compared} disagreed, {stats.errors} errors",
                    record=self._recorder("shadow_stop", shadow.version, "", detail),
                )
        self._flush_events()
        return stats

    def add_listener(self, callback: Callable[[RouterEvent], None]) -> None:
        """Call `callback(event)` on every routing change and closed canary window."""
        with self._lock:
            self._listeners.append(callback)

    # --- introspection ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The registry model this router serves."""
        return self._name

    @property
    def incumbent(self) -> int:
        """The version that answers by default and backs up every other version."""
        with self._lock:
            return self._incumbent

    @property
    def candidate(self) -> int | None:
        """The canary's version, None when no canary is running."""
        with self._lock:
            return None if self._canary is None else self._canary.version

    @property
    def weights(self) -> dict[int, float]:
        """The traffic split now in effect (normalised; zero-weight versions absent)."""
        with self._lock:
            return self._chooser.weights

    def status(self) -> dict[str, Any]:
        """A snapshot: incumbent, weights, loaded engines, requests routed per version, the
        canary's step / windows / breaches and the shadow's stats."""
        with self._lock:
            canary = self._canary
            canary_status: dict[str, Any] | None = None
            if canary is not None:
                window = canary.window
                canary_status = {
                    "version": canary.version,
                    "step": canary.step_index,
                    "steps": list(canary.ramp.steps),
                    "share": canary.share,
                    "windows": canary.windows,
                    "healthy_windows": canary.healthy_windows,
                    "consecutive_breaches": canary.consecutive_breaches,
                    "window": {
                        "candidate_requests": window.candidate_requests,
                        "candidate_errors": window.candidate_errors,
                        "incumbent_requests": window.incumbent_requests,
                        "compared": window.compared,
                        "disagreements": window.disagreements,
                        "age_s": self._clock() - window.started_at,
                    },
                    "last_window": None
                    if canary.last_verdict is None
                    else {
                        **canary.last_verdict.stats,
                        "breaches": list(canary.last_verdict.breaches),
                    },
                }
            return {
                "model": self._name,
                "alias": self._alias,
                "incumbent": self._incumbent,
                "candidate": None if canary is None else canary.version,
                "weights": self._chooser.weights,
                "engines": sorted(self._slots),
                "routed": dict(sorted(self._routed.items())),
                "canary": canary_status,
                "shadow": None if self._shadow is None else _shadow_detail(self._shadow.stats()),
                "closed": self._closed,
            }

    def close(self) -> None:
        """Close every engine (draining what they queued); later requests raise RoutingError."""
        with self._admin_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._canary = None
                self._shadow = None
                slots = list(self._slots.values())
                self._slots.clear()
                for slot in slots:
                    slot.retired = slot.closed = True
            self._close_slots(slots)
        logger.info("router for %r closed", self._name)
        self._flush_events()

    def __enter__(self) -> Router:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Router({self._name!r}, incumbent=v{self._incumbent}, weights={self.weights})"

    # --- request bookkeeping --------------------------------------------------------------------

    def _route(self, key: str | None) -> _Route:
        _check_key(key)
        with self._lock:
            if self._closed:
                raise RoutingError(f"the router for {self._name!r} is closed")
            version = self._chooser.choose(key, self._rng)
            primary = self._slots[version]
            primary.users += 1
            self._routed[version] += 1
            fallback = None
            compare = False
            canary = self._canary
            if version != self._incumbent:
                fallback = self._slots[self._incumbent]
                fallback.users += 1
                if canary is not None and version == canary.version:
                    fraction = canary.guard.compare_fraction
                    compare = fraction > 0 and self._rng.random() < fraction
            shadow = self._shadow
            shadow_slot = None
            if shadow is not None and self._rng.random() < shadow.fraction:
                shadow_slot = self._slots[shadow.version]
                shadow_slot.users += 1
            else:
                shadow = None
            return _Route(version, primary, fallback, canary, compare, shadow, shadow_slot)

    def _release(self, route: _Route) -> None:
        with self._lock:
            for slot in route.slots():
                slot.users -= 1
                if slot.retired and slot.users == 0 and not slot.closed:
                    slot.closed = True
                    route.to_close.append(slot)
        self._close_slots(route.to_close)
        self._flush_events()

    def _served_by_primary(
        self, route: _Route, inputs: Mapping[str, np.ndarray], outputs: Outputs, latency_us: float
    ) -> None:
        self._observe(route.version, latency_us, ok=True)
        canary = route.canary
        if canary is None:
            return
        if route.version == canary.version:
            self._account_candidate(route, ok=True, latency_us=latency_us)
            if route.compare and route.fallback is not None:
                self._submit_compare(route.fallback, canary, inputs, outputs)
        elif route.version == canary.incumbent:
            self._account_incumbent(route, latency_us)

    def _fell_back(self, route: _Route, failed_us: float, incumbent_us: float) -> None:
        """The primary failed and the incumbent answered: the failure counts against the primary."""
        assert route.fallback is not None
        self._observe(route.version, failed_us, ok=False)
        self._observe(route.fallback.version, incumbent_us, ok=True)
        canary = route.canary
        if canary is not None and route.version == canary.version:
            self._account_candidate(route, ok=False, latency_us=failed_us)
            self._account_incumbent(route, incumbent_us)

    def _incumbent_failed(self, route: _Route, failed_us: float, incumbent_us: float) -> None:
        """Both failed: the request itself is at fault, so the canary's window is not charged."""
        assert route.fallback is not None
        self._observe(route.version, failed_us, ok=False)
        self._observe(route.fallback.version, incumbent_us, ok=False)

    def _account_candidate(self, route: _Route, *, ok: bool, latency_us: float) -> None:
        canary = route.canary
        with self._lock:
            if canary is None or self._canary is not canary:
                return  # the canary ended while this request ran
            window = canary.window
            window.candidate_requests += 1
            if ok:
                window.candidate_latencies_us.append(latency_us)
            else:
                window.candidate_errors += 1
            route.to_close.extend(self._maybe_close_window(canary))

    def _account_incumbent(self, route: _Route, latency_us: float) -> None:
        canary = route.canary
        with self._lock:
            if canary is None or self._canary is not canary:
                return
            canary.window.incumbent_requests += 1
            canary.window.incumbent_latencies_us.append(latency_us)
            canary.incumbent_baseline_us.append(latency_us)
            route.to_close.extend(self._maybe_close_window(canary))

    def _submit_compare(
        self, incumbent: _Slot, canary: _Canary, inputs: Mapping[str, np.ndarray], outputs: Outputs
    ) -> None:
        """Run the request on the incumbent in the background and compare when it finishes."""
        candidate_outputs = _copy_arrays(outputs)
        try:
            future = incumbent.engine.submit(_copy_arrays(inputs))
        except Exception:
            self._compare_failed(canary)
            return
        future.add_done_callback(functools.partial(self._compare_done, canary, candidate_outputs))

    def _compare_done(
        self,
        canary: _Canary,
        candidate_outputs: Outputs,
        future: concurrent.futures.Future[Outputs],
    ) -> None:
        try:
            agrees = canary.guard.agrees(future.result(), candidate_outputs)
        except Exception:
            logger.debug("comparison for canary v%d failed", canary.version, exc_info=True)
            self._compare_failed(canary)
            return
        with self._lock:
            if self._canary is canary:
                canary.window.compared += 1
                canary.window.disagreements += not agrees

    def _compare_failed(self, canary: _Canary) -> None:
        with self._lock:
            if self._canary is canary:
                canary.window.compare_errors += 1

    def _mirror(self, route: _Route, inputs: Mapping[str, np.ndarray], outputs: Outputs) -> None:
        """Queue the request on the shadow; its answer is only compared with the one served."""
        shadow, slot = route.shadow, route.shadow_slot
        if shadow is None or slot is None:
            return
        served = _copy_arrays(outputs)
        with self._lock:
            shadow.mirrored += 1
        try:
            future = slot.engine.submit(_copy_arrays(inputs))
        except Exception:
            logger.debug("mirroring to shadow v%d failed", shadow.version, exc_info=True)
            with self._lock:
                shadow.errors += 1
            return
        future.add_done_callback(functools.partial(self._shadow_done, shadow, served))

    def _shadow_done(
        self, shadow: _Shadow, served: Outputs, future: concurrent.futures.Future[Outputs]
    ) -> None:
        try:
            agrees = shadow.guard.agrees(served, future.result())
        except Exception:
            logger.debug("shadow v%d failed a mirrored request", shadow.version, exc_info=True)
            with self._lock:
                shadow.errors += 1
            return
        with self._lock:
            shadow.compared += 1
            shadow.disagreements += not agrees

    def _observe(self, version: int, latency_us: float, *, ok: bool) -> None:
        if self._metrics is None:
            return
        try:
            self._metrics.observe_request(self._name, version, latency_us, ok)
        except Exception:
            logger.exception("metrics.observe_request failed for %s v%d", self._name, version)

    # --- canary windows (called with the lock held) ---------------------------------------------

    def _maybe_close_window(self, canary: _Canary) -> list[_Slot]:
        now = self._clock()
        if not canary.window.ready(canary.guard, now):
            return []
        verdict = evaluate_window(canary.window, canary.guard, canary.incumbent_baseline_us, now)
        canary.windows += 1
        canary.last_verdict = verdict
        canary.window = CanaryWindow(started_at=now)
        detail = {
            "window": canary.windows,
            "step": canary.step_index,
            "share": canary.share,
            **verdict.stats,
            "breaches": list(verdict.breaches),
        }
        self._queue_event(
            "window",
            canary.version,
            detail,
            logging.DEBUG,
            f"canary v{canary.version} window {canary.windows}: "
            + ("; ".join(verdict.breaches) if verdict.breaches else "healthy"),
            record=None,
        )
        if not verdict.healthy:
            canary.consecutive_breaches += 1
            canary.healthy_windows = 0
            if canary.consecutive_breaches >= canary.guard.breach_windows:
                return self._rollback(canary, verdict)
            return []
        canary.consecutive_breaches = 0
        canary.healthy_windows += 1
        if canary.healthy_windows < canary.ramp.windows_per_step:
            return []
        if canary.step_index + 1 < len(canary.ramp.steps):
            self._ramp(canary, verdict)
            return []
        return self._promote(canary, verdict)

    def _ramp(self, canary: _Canary, verdict: WindowVerdict) -> None:
        previous = canary.share
        canary.step_index += 1
        canary.healthy_windows = 0
        self._chooser = WeightedChooser(self._canary_split(canary))
        reason = f"healthy at {previous:.2%}; ramping to {canary.share:.2%}"
        detail = {"step": canary.step_index, "share": canary.share, "window": verdict.stats}
        self._queue_event(
            "ramp",
            canary.version,
            detail,
            logging.INFO,
            f"canary v{canary.version}: {reason}",
            record=self._recorder("ramp", canary.version, reason, detail),
        )

    def _rollback(self, canary: _Canary, verdict: WindowVerdict) -> list[_Slot]:
        self._canary = None
        self._chooser = WeightedChooser({self._incumbent: 1.0})
        reason = (
            f"v{canary.version} breached its guards in {canary.consecutive_breaches} consecutive "
            f"windows at {canary.share:.2%}: " + "; ".join(verdict.breaches)
        )
        detail = {
            "incumbent": self._incumbent,
            "step": canary.step_index,
            "share": canary.share,
            "breaches": list(verdict.breaches),
            "window": verdict.stats,
            "reason": reason,
        }
        self._queue_event(
            "rollback",
            canary.version,
            detail,
            logging.WARNING,
            f"rollback of canary {reason}",
            record=self._recorder("rollback", canary.version, reason, detail),
        )
        return self._retire_unneeded()

    def _promote(self, canary: _Canary, verdict: WindowVerdict) -> list[_Slot]:
        previous = self._incumbent
        self._incumbent = canary.version
        self._canary = None
        self._chooser = WeightedChooser({canary.version: 1.0})
        alias = canary.ramp.promote_alias
        reason = canary.reason or (
            f"canary v{canary.version} stayed healthy through steps {list(canary.ramp.steps)}"
        )
        detail = {
            "previous": previous,
            "alias": alias,
            "windows": canary.windows,
            "window": verdict.stats,
        }
        registry, name, actor, version = self._registry, self._name, self._actor, canary.version

        def record() -> None:
            registry.set_alias(name, alias, version, reason, actor=actor)
            registry.record_event(
                name, "promote", version=version, reason=reason, actor=actor, detail=detail
            )

        self._queue_event(
            "promote",
            version,
            detail,
            logging.INFO,
            f"promoted v{version} over v{previous} (alias {alias!r}): {reason}",
            record=record,
        )
        return self._retire_unneeded()

    def _canary_split(self, canary: _Canary) -> dict[int, float]:
        return {canary.incumbent: 1.0 - canary.share, canary.version: canary.share}

    # --- engines ------------------------------------------------------------------------------

    def _default_engine(self, path: Path, version: int) -> Engine:
        return Engine(path, **self._engine_options)

    def _open_slot(self, version: int) -> _Slot:
        path = self._registry.artifact_path(self._name, version)
        engine = self._engine_factory(Path(path), version)
        if self._metrics is not None:
            try:
                self._metrics.track_engine(self._name, version, engine)
            except Exception:
                logger.exception("metrics.track_engine failed for %s v%d", self._name, version)
        logger.info("opened an engine for %s v%d", self._name, version)
        return _Slot(version, engine)

    def _pin_versions(self, versions: Mapping[int, float] | list[int]) -> list[_Slot]:
        """A held slot per version: the live one, or a newly opened one (not yet installed)."""
        pinned: list[_Slot] = []
        try:
            for version in versions:
                with self._lock:
                    slot = self._slots.get(version)
                    if slot is not None:
                        slot.users += 1
                if slot is None:
                    slot = self._open_slot(version)
                    slot.users += 1
                pinned.append(slot)
        except BaseException:
            self._unpin(pinned)
            raise
        return pinned

    def _install(self, pinned: list[_Slot]) -> None:
        """Make the pinned slots the live ones for their versions (lock held)."""
        for slot in pinned:
            live = self._slots.get(slot.version)
            if live is not None and live is not slot:
                continue  # cannot happen under the admin lock; keep the live one
            slot.retired = False
            self._slots[slot.version] = slot

    def _unpin(self, pinned: list[_Slot]) -> None:
        to_close = []
        with self._lock:
            for slot in pinned:
                slot.users -= 1
                if slot.retired and slot.users == 0 and not slot.closed:
                    slot.closed = True
                    to_close.append(slot)
        self._close_slots(to_close)

    def _retire_unneeded(self) -> list[_Slot]:
        """Drop the slots no role needs; returns those free to close now (lock held)."""
        needed = set(self._chooser.weights) | {self._incumbent}
        if self._canary is not None:
            needed.add(self._canary.version)
        if self._shadow is not None:
            needed.add(self._shadow.version)
        to_close = []
        for version in [v for v in self._slots if v not in needed]:
            slot = self._slots.pop(version)
            slot.retired = True
            if slot.users == 0 and not slot.closed:
                slot.closed = True
                to_close.append(slot)
        return to_close

    def _close_slots(self, slots: list[_Slot]) -> None:
        for slot in slots:
            try:
                slot.engine.close(drain=True)
            except Exception:
                logger.exception("closing the engine of %s v%d failed", self._name, slot.version)
            logger.info("closed the engine of %s v%d", self._name, slot.version)
            if self._metrics is not None:
                with self._lock:
                    reopened = slot.version in self._slots
                if not reopened:
                    try:
                        self._metrics.untrack(self._name, slot.version)
                    except Exception:
                        logger.exception(
                            "metrics.untrack failed for %s v%d", self._name, slot.version
                        )

    def _check_open(self) -> None:
        if self._closed:
            raise RoutingError(f"the router for {self._name!r} is closed")

    # --- events -------------------------------------------------------------------------------

    def _recorder(
        self, kind: str, version: int | None, reason: str, detail: dict[str, Any]
    ) -> Callable[[], None]:
        registry, name, actor = self._registry, self._name, self._actor

        def record() -> None:
            registry.record_event(
                name, kind, version=version, reason=reason, actor=actor, detail=detail
            )

        return record

    def _queue_event(
        self,
        kind: str,
        version: int | None,
        detail: dict[str, Any],
        level: int,
        message: str,
        *,
        record: Callable[[], None] | None,
    ) -> None:
        """Queue an event (lock held); `_flush_events` delivers it once the lock is released."""
        event = RouterEvent(time.time(), kind, self._name, version, detail)
        self._pending.append(_PendingEvent(event, level, message, record))

    def _flush_events(self) -> None:
        """Log, record and announce queued events, in order, outside the state lock."""
        with self._emit_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    pending = self._pending.popleft()
                    listeners = list(self._listeners)
                logger.log(pending.level, "%s: %s", self._name, pending.message)
                if pending.record is not None:
                    try:
                        pending.record()
                    except Exception:
                        logger.exception(
                            "recording %r for %s in the registry failed",
                            pending.event.kind,
                            self._name,
                        )
                for listener in listeners:
                    try:
                        listener(pending.event)
                    except Exception:
                        logger.exception("a router listener failed on %r", pending.event.kind)


def _elapsed_us(started_ns: int) -> float:
    return (time.perf_counter_ns() - started_ns) / 1e3


def _copy_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Private copies, so a caller reusing its arrays cannot change what is compared later."""
    return {name: np.array(value, copy=True) for name, value in arrays.items()}


def _check_key(key: object) -> None:
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key: expected a str or None, got {type(key).__name__}")


def _check_version(version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected a registry version number (int >= 1), got {version!r}")


def _json_weights(weights: Mapping[int, float]) -> dict[str, float]:
    return {str(version): weight for version, weight in weights.items()}


def _format_weights(weights: Mapping[int, float]) -> str:
    return ", ".join(f"v{version}={weight:.2%}" for version, weight in weights.items())


def _shadow_detail(stats: ShadowStats) -> dict[str, Any]:
    return {**dataclasses.asdict(stats), "disagreement_rate": stats.disagreement_rate}


def _guard_detail(guard: GuardPolicy) -> dict[str, Any]:
    return {
        "max_error_rate": guard.max_error_rate,
        "max_p99_ratio": guard.max_p99_ratio,
        "max_p99_us": guard.max_p99_us,
        "max_disagreement": guard.max_disagreement,
        "window_requests": guard.window_requests,
        "window_seconds": guard.window_seconds,
        "min_window_requests": guard.min_window_requests,
        "breach_windows": guard.breach_windows,
        "compare_fraction": guard.compare_fraction,
        "agreement": "default" if guard.agreement is None else repr(guard.agreement),
    }
