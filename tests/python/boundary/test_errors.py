"""Every core Status code becomes one ember.EmberError subclass carrying the full message."""

from __future__ import annotations

import pytest

import ember
from ember import _core

CODES = [
    (1, "InvalidArgument", ember.InvalidInputError),
    (2, "NotFound", ember.ArtifactNotFoundError),
    (3, "IntegrityError", ember.IntegrityError),
    (4, "Incompatible", ember.IncompatibleArtifactError),
    (5, "RuntimeError", ember.ExecutionError),
    (6, "Internal", ember.InternalError),
    (7, "DeadlineExceeded", ember.TimeoutError),
    (8, "QueueFull", ember.QueueFullError),
    (9, "Closed", ember.EngineClosedError),
]


@pytest.mark.parametrize(("code", "name", "cls"), CODES)
def test_status_codes_map_to_exception_classes(code: int, name: str, cls: type) -> None:
    message = f"long message for {name}: " + "x" * 5000  # never cut to a fixed buffer
    with pytest.raises(cls) as info:
        _core._raise_status(code, message)
    assert type(info.value) is cls
    assert isinstance(info.value, ember.EmberError)
    assert str(info.value) == message
    assert info.value.code == name == _core._status_code_name(code)


def test_python_builtin_bases_let_generic_handlers_work() -> None:
    assert issubclass(ember.InvalidInputError, ValueError)
    assert issubclass(ember.ArtifactNotFoundError, FileNotFoundError)
    assert issubclass(ember.ExecutionError, RuntimeError)
    assert issubclass(ember.UnknownTargetError, ValueError)
    assert issubclass(ember.TimeoutError, TimeoutError)
