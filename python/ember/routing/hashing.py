"""Choosing a version for a request: weighted rendezvous hashing for keys, a seeded draw otherwise.

Rendezvous (highest random weight) hashing gives each (key, version) pair a stable uniform draw
u in (0, 1) and sends the key to the version with the highest score -weight / ln(u). A version
wins with probability weight / total, and a version's score depends only on its own weight, so
changing one version's weight moves keys only to or from that version: adding a version with
share s moves about s of the keys, all of them to it, and a canary ramp only pulls keys from the
incumbent.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping

_UNIT_SCALE = 2.0**64


def unit_hash(key: str, version: int) -> float:
    """A stable draw in (0, 1) for (key, version): blake2b, the same in every process and run."""
    digest = hashlib.blake2b(f"{key}\x1f{version}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _UNIT_SCALE


def rendezvous_score(key: str, version: int, weight: float) -> float:
    """The key's score for a version: -weight / ln(u); the highest score wins the key."""
    return -weight / math.log(unit_hash(key, version))


def validate_weights(weights: Mapping[int, float]) -> dict[int, float]:
    """Check a version -> weight split and normalise it to sum to 1, dropping zero weights."""
    if not weights:
        raise ValueError("weights: expected at least one version with a positive weight, got {}")
    cleaned: dict[int, float] = {}
    for version, weight in weights.items():
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"weights: versions must be positive ints, got {version!r}")
        value = float(weight)
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"weights: version {version} has weight {weight!r}; expected a finite number >= 0"
            )
        if value > 0:
            cleaned[version] = value
    total = sum(cleaned.values())
    if total <= 0:
        raise ValueError(f"weights: expected at least one positive weight, got {dict(weights)}")
    return {version: cleaned[version] / total for version in sorted(cleaned)}


class WeightedChooser:
    """Picks a version for each request from a fixed split: sticky by key, random without one.

    Immutable once built (the router swaps in a new one on every weight change), so concurrent
    readers need no lock; the unkeyed draw uses the `random.Random` passed in.
    """

    __slots__ = ("_cumulative", "_versions", "_weights")

    def __init__(self, weights: Mapping[int, float]) -> None:
        self._weights = validate_weights(weights)
        self._versions = tuple(self._weights)
        running = 0.0
        cumulative = []
        for version in self._versions:
            running += self._weights[version]
            cumulative.append(running)
        self._cumulative = tuple(cumulative)

    @property
    def weights(self) -> dict[int, float]:
        """The normalised split (sums to 1; versions with zero weight are absent)."""
        return dict(self._weights)

    def choose(self, key: str | None, rng: random.Random) -> int:
        """The version for one request: rendezvous hashing on `key`, else a weighted draw."""
        if len(self._versions) == 1:
            return self._versions[0]
        if key is not None:
            return self.choose_key(key)
        point = rng.random() * self._cumulative[-1]
        index = bisect.bisect_right(self._cumulative, point)
        return self._versions[min(index, len(self._versions) - 1)]

    def choose_key(self, key: str) -> int:
        """The version `key` sticks to under this split (ties go to the lower version)."""
        best_version = self._versions[0]
        best_score = -math.inf
        for version in self._versions:
            score = rendezvous_score(key, version, self._weights[version])
            if score > best_score:
                best_version, best_score = version, score
        return best_version
