"""ONNX -> TVM Relax -> artifact compiler (needs the TVM compiler; the runtime does not)."""

from .build import check_supported, compile
from .targets import TARGETS, Target, resolve_target

__all__ = ["TARGETS", "Target", "check_supported", "compile", "resolve_target"]
