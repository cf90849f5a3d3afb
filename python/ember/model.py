"""`ember.load`: a compiled artifact served by the C++ core (never by Python's TVM VM)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from . import _core
from .artifact import Artifact, TensorSpec


class Model:
    """A loaded artifact. `run` validates inputs, buckets the batch and runs in C++ without the GIL.

    Thread-safe: concurrent `run` calls are serialized on the model's single VM instance; for
    parallel serving use an Engine. Arrays that are not C-contiguous are copied once, and those in
    the other byte order are converted.
    """

    __slots__ = ("_core_model", "artifact")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # The core verifies checksums and compatibility before any code from the artifact loads.
        self._core_model = _core.Model(os.fspath(path))
        self.artifact = Artifact(path)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on named numpy arrays; returns the outputs by name, with the input's row count."""
        if not isinstance(inputs, dict):
            inputs = dict(inputs)
        return self._core_model.run(inputs)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._core_model.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._core_model.outputs

    @property
    def batch_sizes(self) -> tuple[int, ...] | None:
        sizes = self._core_model.batch_sizes
        return tuple(sizes) if sizes else None

    @property
    def name(self) -> str:
        return self._core_model.model_name

    def __repr__(self) -> str:
        specs = ", ".join(str(s) for s in self.inputs)
        return f"Model({self.name!r}, inputs=[{specs}], batch_sizes={self.batch_sizes})"


def load(path: str | os.PathLike[str]) -> Model:
    """Load an artifact directory: verify checksums, then compatibility, then load its code."""
    return Model(path)
