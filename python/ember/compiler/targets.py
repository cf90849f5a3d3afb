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

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Target:
        """The target an artifact's manifest records (`to_json`'s form); needs no TVM."""
        try:
            return cls(
                name=str(doc["name"]),
                tvm=dict(doc["tvm"]),
                kind=str(doc["kind"]),
                arch=str(doc["arch"]),
                required_cpu_features=tuple(str(f) for f in doc.get("required_cpu_features", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UnknownTargetError(f"malformed target record {dict(doc)!r}: {exc}") from exc


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


@dataclass(frozen=True)
class TargetPreset:
    """A named target: its TVM target dict (None: this machine's CPU), what it is, and what the
    build machine and the device need."""

    name: str
    description: str
    tvm: dict[str, Any] | None
    build_needs: str
    device_needs: str


_AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
_CROSS = "g++-aarch64-linux-gnu (apt), unless building on aarch64"
_EDGE_DEVICE = "aarch64 Linux; the ember-run bundle (tools/build_aarch64_bundle.sh) or ember"
CUDA_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
_CUDA_BUILD = "pip install 'ember-runtime[cuda]' (nvcc, CUDA 13 runtime); no GPU needed"

PRESETS: dict[str, TargetPreset] = {
    p.name: p
    for p in (
        TargetPreset("cpu", "this machine's CPU (its own mcpu and ISA extensions)", None, "-", "-"),
        TargetPreset(
            "x86-avx2",
            "x86-64 with AVX2 + FMA (Haswell, Zen and later)",
            {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"},
            "x86-64 Linux",
            "x86-64 CPU with avx2, fma",
        ),
        TargetPreset(
            "x86-avx512",
            "x86-64 with AVX-512 (Skylake-SP, Ice Lake, Zen 4 and later)",
            {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"},
            "x86-64 Linux",
            "x86-64 CPU with avx512f/bw/dq/vl",
        ),
        TargetPreset("aarch64", "generic 64-bit ARM with NEON", _AARCH64, _CROSS, _EDGE_DEVICE),
        TargetPreset(
            "rpi4",
            "Raspberry Pi 4 (Cortex-A72)",
            {**_AARCH64, "mcpu": "cortex-a72"},
            _CROSS,
            _EDGE_DEVICE,
        ),
        TargetPreset(
            "rpi5",
            "Raspberry Pi 5 (Cortex-A76)",
            {**_AARCH64, "mcpu": "cortex-a76"},
            _CROSS,
            _EDGE_DEVICE,
        ),
        TargetPreset(
            "jetson-orin-cpu",
            "NVIDIA Jetson Orin's CPU (Cortex-A78AE)",
            {**_AARCH64, "mcpu": "cortex-a78ae"},
            _CROSS,
            _EDGE_DEVICE,
        ),
        TargetPreset(
            "cuda",
            "NVIDIA GPU; arch from this machine's GPU, or name it: cuda-sm_80 (75/80/86/89/90)",
            {"kind": "cuda"},
            _CUDA_BUILD,
            "NVIDIA GPU of that arch or newer, driver r580+ (CUDA 13), ember-runtime[cuda]",
        ),
    )
}

# Name -> description, for error messages and `ember targets`.
TARGETS: dict[str, str] = {name: p.description for name, p in PRESETS.items()}


def _cuda_target_dict(name: str) -> dict[str, Any]:
    """`cuda` (the arch of this machine's first GPU) or `cuda-sm_XX`. The host-side code is built
    for the generic CPU of this machine's arch (no mcpu): GPU servers' CPUs differ from the build
    machine's, and the host code is a few launch stubs."""
    arch = name.partition("-")[2] or _detected_cuda_arch()
    if arch not in CUDA_ARCHS:
        raise UnknownTargetError(
            f"unknown CUDA arch '{arch}' in target '{name}'; known: {', '.join(CUDA_ARCHS)} "
            "(e.g. 'cuda-sm_80')"
        )
    from tvm.target import codegen

    host = {"kind": "llvm", "mtriple": codegen.llvm_get_system_triple()}
    return {"kind": "cuda", "arch": arch, "host": host}


def _detected_cuda_arch() -> str:
    """sm_XY of the first GPU nvidia-smi reports; a clear error when there is none."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            text = subprocess.run(
                [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            major, _, minor = text.splitlines()[0].strip().partition(".")
            return f"sm_{int(major)}{int(minor)}"
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    raise UnknownTargetError(
        "target 'cuda' takes its arch from this machine's GPU, and there is none (no working "
        f"nvidia-smi); name the arch instead: {', '.join('cuda-' + a for a in CUDA_ARCHS)}"
    )


def resolve_target(target: str | Mapping[str, Any]) -> Target:
    """Resolve a target name from TARGETS (or `cuda-sm_XX`) or a raw TVM target dict; errors
    list the known names."""
    import tvm

    if isinstance(target, str):
        if target.startswith("cuda"):
            name, tvm_dict = target, _cuda_target_dict(target)
        elif target in PRESETS:
            preset = PRESETS[target]
            name = target
            tvm_dict = dict(preset.tvm) if preset.tvm is not None else _host_target_dict()
        else:
            known = ", ".join(sorted(TARGETS))
            raise UnknownTargetError(
                f"unknown target '{target}'; known targets: {known}, or a TVM target dict such "
                f"as {{'kind': 'llvm', 'mcpu': 'skylake-avx512'}}"
            )
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
    from tvm.target import codegen

    if kind == "cuda":
        host = tvm_dict.get("host") or _host_target_dict()
        triple = str(host.get("mtriple") or codegen.llvm_get_system_triple())
        return Target(name, {**tvm_dict, "host": host}, kind, _arch_of_triple(triple))
    if kind != "llvm":
        raise UnknownTargetError(f"target kind '{kind}' is not supported (llvm CPUs and cuda)")
    triple = str(tvm_dict.get("mtriple") or codegen.llvm_get_system_triple())
    arch = _arch_of_triple(triple)
    return Target(name, tvm_dict, kind, arch, _required_features(tvm_target, arch))
