"""Canary policies: how a candidate's traffic ramps up, and the guards that roll it back.

A canary is judged in windows of candidate traffic. Each window records the candidate's served
requests, errors and latencies, the incumbent's latencies over the same period, and how often the
two disagreed on requests run on both. A window breaches when any guard fails; `breach_windows`
breaches in a row roll the candidate back, `windows_per_step` healthy windows advance the ramp.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Outputs = Mapping[str, np.ndarray]
Agreement = Callable[[Outputs, Outputs], bool]

# Incumbent latencies kept across windows, for windows where the incumbent served too little
# (at a 100% step it serves nothing) to give its own p99.
INCUMBENT_BASELINE_SIZE = 4096
# Incumbent latencies kept per window (the most recent): bounds memory when the candidate's share
# is small and its windows long.
INCUMBENT_WINDOW_SIZE = 16384


@dataclass(frozen=True)
class GuardPolicy:
    """When a candidate is rolled back: error rate, latency and output-disagreement guards.

    A window closes after `window_requests` candidate requests, or after `window_seconds` once it
    holds `min_window_requests`. `agreement(incumbent_outputs, candidate_outputs)` decides whether
    two answers agree (default: `default_agreement`).
    """

    max_error_rate: float = 0.01
    max_p99_ratio: float = 2.0
    max_p99_us: float | None = None
    max_disagreement: float = 0.05
    window_requests: int = 200
    window_seconds: float = 10.0
    min_window_requests: int = 20
    breach_windows: int = 3
    compare_fraction: float = 0.1
    agreement: Agreement | None = None

    def __post_init__(self) -> None:
        _check_fraction("GuardPolicy.max_error_rate", self.max_error_rate)
        _check_fraction("GuardPolicy.max_disagreement", self.max_disagreement)
        _check_fraction("GuardPolicy.compare_fraction", self.compare_fraction)
        if not (math.isfinite(self.max_p99_ratio) and self.max_p99_ratio > 0):
            raise ValueError(
                f"GuardPolicy.max_p99_ratio: expected a finite number > 0, got {self.max_p99_ratio}"
            )
        if self.max_p99_us is not None and not (
            math.isfinite(self.max_p99_us) and self.max_p99_us > 0
        ):
            raise ValueError(
                f"GuardPolicy.max_p99_us: expected None or a number > 0, got {self.max_p99_us}"
            )
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ValueError(
                f"GuardPolicy.window_seconds: expected a number > 0, got {self.window_seconds}"
            )
        _check_count("GuardPolicy.window_requests", self.window_requests)
        _check_count("GuardPolicy.min_window_requests", self.min_window_requests)
        _check_count("GuardPolicy.breach_windows", self.breach_windows)
        if self.min_window_requests > self.window_requests:
            raise ValueError(
                f"GuardPolicy.min_window_requests ({self.min_window_requests}) must not exceed "
                f"window_requests ({self.window_requests})"
            )
        if self.agreement is not None and not callable(self.agreement):
            raise ValueError(
                "GuardPolicy.agreement: expected a callable(incumbent_outputs, "
                f"candidate_outputs) -> bool, got {self.agreement!r}"
            )

    def agrees(self, incumbent: Outputs, candidate: Outputs) -> bool:
        """Whether two answers to the same request agree, by `agreement` or the default rule."""
        rule = self.agreement or default_agreement
        return bool(rule(incumbent, candidate))


@dataclass(frozen=True)
class RampPolicy:
    """How a canary's traffic share grows: the steps, and healthy windows needed at each.

    After the last step stays healthy the candidate is promoted: `promote_alias` is moved to it.
    """

    steps: tuple[float, ...] = (0.01, 0.05, 0.25, 1.0)
    windows_per_step: int = 1
    promote_alias: str = "production"

    def __post_init__(self) -> None:
        steps = tuple(float(s) for s in self.steps)
        if not steps:
            raise ValueError("RampPolicy.steps: expected at least one traffic share, got ()")
        for share in steps:
            if not (math.isfinite(share) and 0 < share <= 1):
                raise ValueError(
                    f"RampPolicy.steps: each share must be in (0, 1], got {share} in {steps}"
                )
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"RampPolicy.steps: expected strictly increasing shares, got {steps}")
        object.__setattr__(self, "steps", steps)
        _check_count("RampPolicy.windows_per_step", self.windows_per_step)
        if not isinstance(self.promote_alias, str) or not self.promote_alias:
            raise ValueError(
                f"RampPolicy.promote_alias: expected a non-empty alias name, "
                f"got {self.promote_alias!r}"
            )


def default_agreement(incumbent: Outputs, candidate: Outputs) -> bool:
    """Classification (first output is float [rows, classes>1]): same argmax in every row;
    otherwise every output allclose(rtol=1e-3, atol=1e-4). Different names or shapes disagree."""
    if set(incumbent) != set(candidate):
        return False
    names = list(incumbent)
    if not names:
        return True
    for name in names:
        if np.shape(incumbent[name]) != np.shape(candidate[name]):
            return False
    first_incumbent = np.asarray(incumbent[names[0]])
    first_candidate = np.asarray(candidate[names[0]])
    if (
        first_incumbent.ndim == 2
        and first_incumbent.shape[1] > 1
        and np.issubdtype(first_incumbent.dtype, np.floating)
    ):
        return bool(
            np.array_equal(np.argmax(first_incumbent, axis=1), np.argmax(first_candidate, axis=1))
        )
    return all(
        bool(np.allclose(incumbent[name], candidate[name], rtol=1e-3, atol=1e-4)) for name in names
    )


@dataclass
class CanaryWindow:
    """What one evaluation window saw (mutable; the router fills it in under its lock)."""

    started_at: float
    candidate_requests: int = 0
    candidate_errors: int = 0
    candidate_latencies_us: list[float] = field(default_factory=list)
    incumbent_requests: int = 0
    incumbent_latencies_us: deque[float] = field(
        default_factory=lambda: deque(maxlen=INCUMBENT_WINDOW_SIZE)
    )
    compared: int = 0
    disagreements: int = 0
    compare_errors: int = 0

    def ready(self, guard: GuardPolicy, now: float) -> bool:
        """Whether the window should close: enough candidate requests, or enough time and some."""
        if self.candidate_requests >= guard.window_requests:
            return True
        return (
            self.candidate_requests >= guard.min_window_requests
            and now - self.started_at >= guard.window_seconds
        )


@dataclass(frozen=True)
class WindowVerdict:
    """A closed window's numbers and the guards it breached (empty: healthy)."""

    stats: dict[str, Any]
    breaches: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.breaches


def p99(values: list[float] | deque[float]) -> float | None:
    """The 99th percentile (None for no values)."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), 99))


def evaluate_window(
    window: CanaryWindow,
    guard: GuardPolicy,
    incumbent_baseline_us: deque[float],
    now: float,
) -> WindowVerdict:
    """Apply the guards to a closed window.

    The incumbent p99 comes from the same window when it served at least `min_window_requests`
    there, else from its recent latencies across windows; with neither the ratio guard is skipped.
    """
    served = window.candidate_requests
    error_rate = window.candidate_errors / served if served else 0.0
    candidate_p99 = p99(window.candidate_latencies_us)
    if window.incumbent_requests >= guard.min_window_requests:
        incumbent_p99, incumbent_source = p99(window.incumbent_latencies_us), "window"
    elif len(incumbent_baseline_us) >= guard.min_window_requests:
        incumbent_p99, incumbent_source = p99(incumbent_baseline_us), "recent"
    else:
        incumbent_p99, incumbent_source = None, "none"
    disagreement = window.disagreements / window.compared if window.compared else None
    p99_ratio = (
        candidate_p99 / incumbent_p99
        if candidate_p99 is not None and incumbent_p99 is not None and incumbent_p99 > 0
        else None
    )
    breaches = []
    if error_rate > guard.max_error_rate:
        breaches.append(
            f"error rate {error_rate:.3f} ({window.candidate_errors}/{served}) "
            f"> max {guard.max_error_rate}"
        )
    if p99_ratio is not None and p99_ratio > guard.max_p99_ratio:
        breaches.append(
            f"p99 {candidate_p99:.0f}us is {p99_ratio:.2f}x the incumbent's "
            f"{incumbent_p99:.0f}us > max {guard.max_p99_ratio}x"
        )
    if (
        guard.max_p99_us is not None
        and candidate_p99 is not None
        and candidate_p99 > guard.max_p99_us
    ):
        breaches.append(f"p99 {candidate_p99:.0f}us > max {guard.max_p99_us:.0f}us")
    if disagreement is not None and disagreement > guard.max_disagreement:
        breaches.append(
            f"disagreement {disagreement:.3f} ({window.disagreements}/{window.compared}) "
            f"> max {guard.max_disagreement}"
        )
    stats: dict[str, Any] = {
        "duration_s": now - window.started_at,
        "candidate_requests": served,
        "candidate_errors": window.candidate_errors,
        "error_rate": error_rate,
        "candidate_p99_us": candidate_p99,
        "incumbent_requests": window.incumbent_requests,
        "incumbent_p99_us": incumbent_p99,
        "incumbent_p99_source": incumbent_source,
        "p99_ratio": p99_ratio,
        "compared": window.compared,
        "disagreements": window.disagreements,
        "compare_errors": window.compare_errors,
        "disagreement": disagreement,
    }
    return WindowVerdict(stats=stats, breaches=tuple(breaches))


def _check_fraction(what: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{what}: expected a fraction in [0, 1], got {value!r}")


def _check_count(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}: expected an int >= 1, got {value!r}")


# The defaults of Router.start_canary / start_shadow (frozen, so safe to share).
DEFAULT_GUARD = GuardPolicy()
DEFAULT_RAMP = RampPolicy()
