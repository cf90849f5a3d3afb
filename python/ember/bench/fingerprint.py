"""Device fingerprints: what a measurement ran on (CPU, cores, ISA, memory, OS, versions, GPU)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import lru_cache
from typing import Any


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _isa_features() -> list[str]:
    """The host's ISA extensions that compiled code may use (the flags targets can require)."""
    from .. import _core
    from ..compiler.targets import _AARCH64_FEATURES, _X86_FEATURES

    relevant = {*_X86_FEATURES.values(), *_AARCH64_FEATURES.values(), "sse", "sse2"}
    return sorted(set(_core.host_cpu_features()) & relevant)


@lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    """Names of the NVIDIA GPUs nvidia-smi lists; empty without a working nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in done.stdout.splitlines() if line.strip())


@lru_cache(maxsize=1)
def host_fingerprint() -> dict[str, Any]:
    """This machine: CPU model, cores, arch, ISA features, memory, OS, versions, GPUs."""
    import psutil

    from .. import NUM_THREADS, __version__, _core

    return {
        "kind": "host",
        "emulated": False,
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "arch": _core.host_arch(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_usable": len(os.sched_getaffinity(0)),
        "threads": NUM_THREADS,
        "isa_features": _isa_features(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "ember": __version__,
            "tvm": _version("apache-tvm"),
            "tvm_ffi": _version("apache-tvm-ffi"),
            "onnxruntime": _version("onnxruntime"),
        },
        "gpus": list(gpu_names()),
    }


def short_label(device: dict[str, Any]) -> str:
    """One line for tables: '<cpu model>, <n> cores, <arch>' (plus the GPU or emulator)."""
    if device.get("emulated"):
        return f"{device.get('emulator', 'emulator')} on {device.get('cpu_model', '?')}"
    label = (
        f"{device.get('cpu_model', '?')}, {device.get('cores_usable', '?')} cores, "
        f"{device.get('arch', '?')}"
    )
    if device.get("gpu"):
        label = f"{device['gpu']} ({label})"
    if device.get("remote"):
        label = f"{device['remote']}: {label}"
    return label
