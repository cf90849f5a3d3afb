"""ember's model registry: numbered versions of compiled artifacts in a content-addressed store,
aliases such as "production" that point at versions, integrity checks on every use and a history
of every change. Safe to share between threads and between processes.

    registry = Registry("ember-registry")
    version = registry.register("digits", "out/digits.ember", {"accuracy": 0.97})
    registry.set_alias("digits", "production", version, reason="beats v3 offline")
    model = registry.load("digits", "production")
"""

from __future__ import annotations

from ._content import content_digest, hash_tree
from .store import (
    HistoryEvent,
    InvalidNameError,
    ModelVersion,
    Registry,
    RegistryError,
    VersionNotFoundError,
    default_actor,
)

__all__ = [
    "HistoryEvent",
    "InvalidNameError",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "VersionNotFoundError",
    "content_digest",
    "default_actor",
    "hash_tree",
]
