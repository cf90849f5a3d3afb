"""ember's exception hierarchy: every error ember raises is an EmberError with a precise message.

The C++ core maps each Status code to exactly one class here (cpp/bindings/errors.cc); `.code`
carries the core's code name ("InvalidArgument", "IntegrityError", ...).
"""

from __future__ import annotations

import builtins


class EmberError(Exception):
    """Base class of every error raised by ember."""

    code: str = "Internal"


class InvalidInputError(EmberError, ValueError):
    """Inputs do not match the model: unknown or missing name, wrong dtype, rank or shape."""

    code = "InvalidArgument"


class ArtifactNotFoundError(EmberError, FileNotFoundError):
    """The artifact directory or one of its files does not exist."""

    code = "NotFound"


class IntegrityError(EmberError):
    """An artifact's files do not match their recorded checksums; nothing was loaded."""

    code = "IntegrityError"


class IncompatibleArtifactError(EmberError):
    """The artifact was built for another CPU, architecture or runtime version."""

    code = "Incompatible"


class ExecutionError(EmberError, RuntimeError):
    """The TVM runtime failed while loading or running compiled code."""

    code = "RuntimeError"


class InternalError(EmberError):
    """A bug in ember; please report it with the message."""

    code = "Internal"


class TimeoutError(EmberError, builtins.TimeoutError):
    """A request's deadline passed while it waited in the engine's queue; it never ran."""

    code = "DeadlineExceeded"


class QueueFullError(EmberError):
    """The engine's queue holds max_queue_size requests; this one was refused at once."""

    code = "QueueFull"


class EngineClosedError(EmberError):
    """The engine is closed, or was closed without draining while this request waited."""

    code = "Closed"


class CompileError(EmberError):
    """A model could not be compiled."""

    code = "CompileError"


class UnsupportedOperatorError(CompileError):
    """The model uses an ONNX operator the compiler cannot import; the message names the node."""

    code = "UnsupportedOperator"


class UnknownTargetError(CompileError, ValueError):
    """The requested compile target is not a known name nor a valid TVM target dict."""

    code = "UnknownTarget"


__all__ = [
    "ArtifactNotFoundError",
    "CompileError",
    "EmberError",
    "EngineClosedError",
    "ExecutionError",
    "IncompatibleArtifactError",
    "IntegrityError",
    "InternalError",
    "InvalidInputError",
    "QueueFullError",
    "TimeoutError",
    "UnknownTargetError",
    "UnsupportedOperatorError",
]
