"""Target registry: friendly names mapped to TVM target dicts, plus what a target needs of a CPU."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnknownTargetError

# LLVM feature name -> the /proc/cpuinfo flag the loader checks. Only ISA extensions that code
# generation may use; micro-architectural tuning flags never make code unrunnable.
_X86_FEATURES = {
    "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "popcnt": "popcnt",
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2",
    "movbe": "movbe", "lzcnt": "abm", "avx512f": "avx512f", "avx512cd": "avx512cd",
    "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
    "avx512vbmi": "avx512vbmi", "avxvnni": "avx_vnni", "amx-tile": "amx_tile",
    "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
}  # fmt: skip
_AARCH64_FEATURES = {
    "neon": "asimd", "dotprod": "asimddp", "fullfp16": "fphp", "sve": "sve", "sve2": "sve2",
    "i8mm": "i8mm", "bf16": "bf16",
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A resolved compile target: the TVM target dict and what the running machine must offer."""

    name: str
    tvm: dict[str, Any]
    kind: str
    arch: str
    required_cpu_features: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "arch": self.arch,
            "tvm": self.tvm,
            "required_cpu_features": list(self.required_cpu_features),
        }


def _host_target_dict() -> dict[str, Any]:
    from tvm.target import codegen

    return {
        "kind": "llvm",
        "mtriple": codegen.llvm_get_system_triple(),
        "mcpu": codegen.llvm_get_system_cpu(),
        "num-cores": len(os.sched_getaffinity(0)),
    }


def _arch_of_triple(triple: str) -> str:
    arch = triple.split("-", 1)[0]
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def _required_features(tvm_target: Any, arch: str) -> tuple[str, ...]:
    from tvm.target import codegen

    table = _X86_FEATURES if arch == "x86_64" else _AARCH64_FEATURES if arch == "aarch64" else {}
    enabled = {str(k) for k in codegen.llvm_get_cpu_features(tvm_target)}
    return tuple(sorted(table[f] for f in enabled if f in table))


TARGETS: dict[str, str] = {
    "cpu": "this machine's CPU (LLVM, its own mcpu and ISA extensions)",
}


def resolve_target(target: str | Mapping[str, Any]) -> Target:
    """Resolve a target name from TARGETS or a raw TVM target dict; errors list the known names."""
    import tvm

    if isinstance(target, str):
        if target not in TARGETS:
            known = ", ".join(sorted(TARGETS))
            raise UnknownTargetError(
                f"unknown target '{target}'; known targets: {known}, or a TVM target dict such "
                f"as {{'kind': 'llvm', 'mcpu': 'skylake-avx512'}}"
            )
        name, tvm_dict = target, _host_target_dict()
    elif isinstance(target, Mapping):
        tvm_dict = dict(target)
        name = str(tvm_dict.get("kind", "?"))
    else:
        raise UnknownTargetError(f"target must be a name or a TVM target dict, got {target!r}")
    try:
        tvm_target = tvm.target.Target(tvm_dict)
    except Exception as exc:  # TVM raises its own error types for bad dicts
        raise UnknownTargetError(f"invalid TVM target {tvm_dict!r}: {exc}") from exc
    kind = str(tvm_target.kind.name)
    if kind != "llvm":
        raise UnknownTargetError(f"target kind '{kind}' is not supported yet (only 'llvm' CPUs)")
    from tvm.target import codegen

    triple = str(tvm_dict.get("mtriple") or codegen.llvm_get_system_triple())
    arch = _arch_of_triple(triple)
    return Target(name, tvm_dict, kind, arch, _required_features(tvm_target, arch))
