"""`ember.routing`: serve a registry model through Engines with canaries, splits and shadows.

`Router` picks a version per request (weighted rendezvous hashing on a key, or a seeded weighted
draw), ramps a canary through `RampPolicy.steps` while the `GuardPolicy` windows stay healthy,
promotes it in the registry, or rolls it back on errors, latency or disagreeing outputs.
"""

from __future__ import annotations

from .hashing import WeightedChooser, rendezvous_score, unit_hash
from .policy import GuardPolicy, RampPolicy, default_agreement
from .router import (
    MetricsSink,
    RegistryClient,
    Router,
    RouterEvent,
    RoutingError,
    ShadowStats,
)

__all__ = [
    "GuardPolicy",
    "MetricsSink",
    "RampPolicy",
    "RegistryClient",
    "Router",
    "RouterEvent",
    "RoutingError",
    "ShadowStats",
    "WeightedChooser",
    "default_agreement",
    "rendezvous_score",
    "unit_hash",
]
