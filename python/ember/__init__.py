"""ember: compile ONNX models with TVM into versioned artifacts and run them from a C++ core."""

from __future__ import annotations

import os as _os

# TVM sizes its thread pool from TVM_NUM_THREADS when the first kernel runs; unset, it uses half the
# logical CPUs (1 on a 2-vCPU machine). Default to every CPU this process may run on.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0))))

from .artifact import Artifact, TensorSpec
from .errors import (
    ArtifactNotFoundError,
    CompileError,
    EmberError,
    ExecutionError,
    IncompatibleArtifactError,
    IntegrityError,
    InternalError,
    InvalidInputError,
    UnknownTargetError,
    UnsupportedOperatorError,
)
from .model import Model, load

__version__ = "0.1.0"


def compile(*args: object, **kwargs: object) -> Artifact:
    """Compile an ONNX model into an artifact; see ember.compiler.compile for the parameters."""
    from .compiler import compile as _compile

    return _compile(*args, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "Artifact",
    "ArtifactNotFoundError",
    "CompileError",
    "EmberError",
    "ExecutionError",
    "IncompatibleArtifactError",
    "IntegrityError",
    "InternalError",
    "InvalidInputError",
    "Model",
    "TensorSpec",
    "UnknownTargetError",
    "UnsupportedOperatorError",
    "__version__",
    "compile",
    "load",
]
