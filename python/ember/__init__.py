"""ember: compile ONNX models with TVM into versioned artifacts and run them from a C++ core."""

from __future__ import annotations

from ._threads import configure_from_environment as _configure_threads

# Before the extension loads OpenMP and before TVM's pool starts: both size themselves from the
# environment once (see _threads.py). Unset, TVM would use half the logical CPUs.
NUM_THREADS = _configure_threads()

from .artifact import Artifact, TensorSpec  # noqa: E402
from .engine import Distribution, Engine, EngineMetrics  # noqa: E402
from .errors import (  # noqa: E402
    ArtifactNotFoundError,
    CompileError,
    EmberError,
    EngineClosedError,
    ExecutionError,
    IncompatibleArtifactError,
    IntegrityError,
    InternalError,
    InvalidInputError,
    QueueFullError,
    TimeoutError,
    UnknownTargetError,
    UnsupportedOperatorError,
)
from .model import Model, load  # noqa: E402
from .tune import TuneBudget  # noqa: E402

__version__ = "0.1.0"


def compile(*args: object, **kwargs: object) -> Artifact:
    """Compile an ONNX model into an artifact; see ember.compiler.compile for the parameters."""
    from .compiler import compile as _compile

    return _compile(*args, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "NUM_THREADS",
    "Artifact",
    "ArtifactNotFoundError",
    "CompileError",
    "Distribution",
    "EmberError",
    "Engine",
    "EngineClosedError",
    "EngineMetrics",
    "ExecutionError",
    "IncompatibleArtifactError",
    "IntegrityError",
    "InternalError",
    "InvalidInputError",
    "Model",
    "QueueFullError",
    "TensorSpec",
    "TimeoutError",
    "TuneBudget",
    "UnknownTargetError",
    "UnsupportedOperatorError",
    "__version__",
    "compile",
    "load",
]
