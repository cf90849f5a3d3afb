"""CUDA targets at build time: GPU code built on a machine without a GPU, and checked.

TVM compiles CUDA kernels only while its CUDA runtime (tvm/lib/libtvm_runtime_cuda.so) is loaded;
when that library cannot load (no libcudart, no NVIDIA driver), `tvm.compile` still "succeeds"
but keeps the kernels as CUDA *source*, which cannot launch. So the build runs in a worker process
whose environment lets that library load without a GPU: the CUDA runtime from the toolkit (or the
pip wheels) and a stub driver, libcuda.so.1, compiled here with `cc`, on LD_LIBRARY_PATH (which the
dynamic loader reads only at process start, hence the separate process). nvcc turns the kernels
into a fatbin: a cubin (SASS) for the target's arch and for each newer GPU generation ember knows,
plus PTX of the target's arch that the driver compiles for any later GPU. Afterwards the library
is checked for exactly that device code and for the absence of CUDA source.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifact import CHECKSUMS_FILE, LIBRARY_FILE, MANIFEST_FILE
from ..errors import CompileError
from .gpu_convs import convs_for_gpu
from .targets import CUDA_ARCHS, Target

# The CUDA runtime that the apache-tvm wheel's libtvm_runtime_cuda.so links (DT_NEEDED).
CUDA_RUNTIME_LIBRARY = "libcudart.so.13"
# Where the nvidia-cuda-nvcc / nvidia-cuda-runtime 13.x wheels install (site-packages/nvidia/cu13).
_WHEEL_DIR = "cu13"
INSTALL_HINT = (
    "pip install 'ember-runtime[cuda]' (the CUDA 13 wheels nvidia-cuda-nvcc and "
    "nvidia-cuda-runtime), or point CUDA_HOME at a CUDA 13 toolkit"
)

# The driver symbols libtvm_runtime_cuda.so imports; the stub defines each to fail with
# CUDA_ERROR_STUB_LIBRARY (34). Nothing calls them during a build: they only have to resolve.
_DRIVER_SYMBOLS = (
    "cuDeviceGetName",
    "cuFuncSetAttribute",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuLaunchKernelEx",
    "cuModuleGetFunction",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuTensorMapEncodeTiled",
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
)


@dataclass(frozen=True)
class CudaToolchain:
    """nvcc and the CUDA runtime library used to build CUDA artifacts, and where they came from."""

    nvcc: Path
    runtime_dir: Path  # holds CUDA_RUNTIME_LIBRARY
    version: tuple[int, int]  # of nvcc: (13, 5)
    origin: str

    @property
    def root(self) -> Path:
        return self.nvcc.parent.parent

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def _wheel_roots() -> list[Path]:
    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(p) / _WHEEL_DIR for p in spec.submodule_search_locations]


def _toolkit_roots() -> Iterator[tuple[Path, str]]:
    """Candidate CUDA roots, most explicit first: CUDA_HOME/CUDA_PATH, the pip wheels, nvcc on
    PATH, /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            yield Path(value), f"{var}={value}"
    for root in _wheel_roots():
        yield root, "the nvidia-cuda-nvcc wheel"
    on_path = shutil.which("nvcc")
    if on_path is not None:
        yield Path(on_path).resolve().parent.parent, f"nvcc on PATH ({on_path})"
    yield Path("/usr/local/cuda"), "/usr/local/cuda"


def _runtime_dir(roots: Sequence[Path]) -> Path | None:
    for root in roots:
        for sub in ("lib", "lib64", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            if (root / sub / CUDA_RUNTIME_LIBRARY).is_file():
                return root / sub
    return None


def _nvcc_version(nvcc: Path) -> tuple[int, int]:
    try:
        text = subprocess.run(
            [str(nvcc), "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileError(f"'{nvcc} --version' failed: {exc}") from exc
    match = re.search(r"release (\d+)\.(\d+)", text)
    if match is None:
        raise CompileError(f"cannot read the CUDA version from '{nvcc} --version': {text!r}")
    return int(match.group(1)), int(match.group(2))


def find_toolchain() -> CudaToolchain:
    """Locate nvcc and the CUDA 13 runtime library; a CompileError naming what to install if
    either is missing."""
    found = next(
        (
            (root / "bin" / "nvcc", origin)
            for root, origin in _toolkit_roots()
            if os.access(root / "bin" / "nvcc", os.X_OK)
        ),
        None,
    )
    if found is None:
        raise CompileError(f"building for a CUDA target needs nvcc; none was found: {INSTALL_HINT}")
    nvcc, origin = found
    runtime = _runtime_dir([nvcc.parent.parent, *_wheel_roots()])
    if runtime is None:
        raise CompileError(
            f"building for a CUDA target needs the CUDA runtime {CUDA_RUNTIME_LIBRARY} (the one "
            f"TVM's CUDA runtime links); not found beside {nvcc} nor in the pip wheels: "
            f"{INSTALL_HINT}"
        )
    return CudaToolchain(nvcc, runtime, _nvcc_version(nvcc), origin)


def _sm_number(arch: str) -> int:
    match = re.fullmatch(r"(?:sm|compute)_(\d+)", arch)
    if match is None:
        raise CompileError(f"malformed CUDA arch '{arch}' (expected e.g. 'sm_80')")
    return int(match.group(1))


@dataclass(frozen=True)
class CodePlan:
    """The device code a CUDA artifact holds: cubins (`sass`, e.g. sm_80 and sm_90) and PTX for
    the driver to compile for GPUs newer than all of them."""

    arch: str
    sass: tuple[str, ...]
    ptx: str

    def nvcc_flags(self) -> list[str]:
        """nvcc options producing exactly this code: every cubin is assembled from the one PTX
        (one front-end pass instead of one per arch, which halves nvcc's time)."""
        return ["-gencode", f"arch={self.ptx},code=[{','.join((*self.sass, self.ptx))}]"]


def code_plan(arch: str) -> CodePlan:
    """The cubins and PTX for target arch `arch`: SASS runs only on GPUs of its own major version
    (sm_80 code runs on sm_86 and sm_89, not sm_90), so one cubin per newer major that ember knows
    is added, and PTX of `arch` covers the rest."""
    number = _sm_number(arch)
    sass = [f"sm_{number}"]
    majors = {number // 10}
    for known in CUDA_ARCHS:
        known_number = _sm_number(known)
        if known_number // 10 not in majors and known_number > number:
            majors.add(known_number // 10)
            sass.append(f"sm_{known_number}")
    return CodePlan(f"sm_{number}", tuple(sass), f"compute_{number}")


def _target_arch(target: Target) -> str:
    arch = target.tvm.get("arch")
    if not isinstance(arch, str) or not arch.startswith("sm_"):
        raise CompileError(
            f"CUDA target {target.name} names no GPU arch; use e.g. 'cuda-sm_80' or a target dict "
            'with "arch": "sm_80"'
        )
    return arch


def device_manifest(target: Target) -> dict[str, Any]:
    """The manifest's "device" entry for a CUDA artifact: the arch it was compiled for, the
    cubins and PTX its library holds and the CUDA version that built them (the core checks the
    GPU and driver against these before loading any code)."""
    plan = code_plan(_target_arch(target))
    toolchain = find_toolchain()
    return {
        "device": {
            "kind": "cuda",
            "arch": plan.arch,
            "sass": list(plan.sass),
            "ptx": plan.ptx,
            "cuda_version": toolchain.version_text,
        }
    }


# --- What a built library holds. ---

_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
_FATBIN_PTX, _FATBIN_ELF = 1, 2
# Text only CUDA C source has: TVM's fallback module keeps kernels as `extern "C" __global__ ...`.
_CUDA_SOURCE_MARKER = b"__global__"


@dataclass(frozen=True)
class DeviceCode:
    """The GPU code found in a library: cubins by arch (sm_80), PTX by arch (compute_80), and
    whether it holds CUDA source (TVM's fallback when its CUDA runtime did not load)."""

    sass: tuple[str, ...]
    ptx: tuple[str, ...]
    cuda_source: bool


def _fatbin_entries(data: bytes) -> Iterator[tuple[int, int]]:
    """(kind, sm number) of each entry of every well-formed fatbin in `data`: a 16-byte header
    (magic 0xBA55ED50, version 1, header size, payload size), then entries, each a header (kind
    at 0: 1 PTX, 2 ELF cubin; its size at 4; payload size at 8; arch at 28) and its payload."""
    start = 0
    while (at := data.find(_FATBIN_MAGIC, start)) >= 0:
        start = at + 4
        if at + 16 > len(data):
            return
        _, version, header_size, fat_size = struct.unpack_from("<IHHQ", data, at)
        end = at + header_size + fat_size
        if version != 1 or header_size < 16 or end > len(data):
            continue
        entries: list[tuple[int, int]] = []
        pos = at + header_size
        while pos + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, pos)
            (sm,) = struct.unpack_from("<I", data, pos + 28)
            if kind not in (_FATBIN_PTX, _FATBIN_ELF) or entry_header < 32:
                break
            entries.append((kind, sm))
            pos += entry_header + payload
        if entries and pos == end:
            yield from entries
            start = end


def inspect_device_code(path: str | os.PathLike[str]) -> DeviceCode:
    """Read which cubins, PTX and CUDA source a compiled library holds (no code is loaded)."""
    data = Path(path).read_bytes()
    sass: list[str] = []
    ptx: list[str] = []
    for kind, sm in _fatbin_entries(data):
        (sass if kind == _FATBIN_ELF else ptx).append(
            f"sm_{sm}" if kind == _FATBIN_ELF else f"compute_{sm}"
        )
    return DeviceCode(
        tuple(sorted(set(sass))), tuple(sorted(set(ptx))), _CUDA_SOURCE_MARKER in data
    )


def check_device_code(path: str | os.PathLike[str], plan: CodePlan) -> DeviceCode:
    """CompileError unless the library holds every cubin and the PTX of `plan` and no CUDA
    source: the guard against TVM's silent fallback to source that cannot launch."""
    found = inspect_device_code(path)
    if found.cuda_source:
        raise CompileError(
            f"the CUDA build of '{path}' kept its kernels as CUDA source instead of device code: "
            "TVM's CUDA runtime did not load in the build process (check that "
            f"{CUDA_RUNTIME_LIBRARY} and nvcc are usable: {INSTALL_HINT})"
        )
    missing = [sm for sm in plan.sass if sm not in found.sass]
    if plan.ptx not in found.ptx:
        missing.append(plan.ptx)
    if missing:
        held = ", ".join(found.sass + found.ptx) or "no device code at all"
        raise CompileError(
            f"the CUDA build of '{path}' lacks device code for {', '.join(missing)} (it holds "
            f"{held}); expected cubins for {', '.join(plan.sass)} and PTX {plan.ptx}"
        )
    return found


# --- The build. ---


def _build_stub_driver(directory: Path) -> None:
    """Compile the stub libcuda.so.1 into `directory` with the system C compiler."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise CompileError(f"building for a CUDA target needs a C compiler ('{compiler}')")
    source = directory / "stub.c"
    source.write_text(
        "/* Stands in for the NVIDIA driver: TVM's CUDA runtime loads, nothing runs. */\n"
        + "".join(f"int {name}(void) {{ return 34; }}\n" for name in _DRIVER_SYMBOLS)
    )
    result = subprocess.run(
        [compiler, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", "libcuda.so.1", "stub.c"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CompileError(f"compiling the stub CUDA driver failed: {result.stderr[-2000:]}")


def _worker_environment(toolchain: CudaToolchain, stub_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(toolchain.nvcc.parent), env.get("PATH", "")])
    env["CUDA_PATH"] = str(toolchain.root)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(stub_dir), str(toolchain.runtime_dir), env.get("LD_LIBRARY_PATH")) if p
    )
    env["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    # IEEE division, square root and denormals, as the CPU build computes them.
    env["TVM_CUDA_NVCC_NO_FAST_MATH"] = "1"
    env["TVM_DEVICE_BACKEND_AUTOLOAD"] = "1"  # TVM loads its CUDA runtime at import
    return env


def _prepare_output(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise CompileError(f"output '{out_dir}' exists and is not a directory")
        for stale in (MANIFEST_FILE, CHECKSUMS_FILE, LIBRARY_FILE):
            (out_dir / stale).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


_WORKER_ERROR = "ember-cuda-worker-error: "


def build_cuda_library(
    mod: Any,
    target: Target,
    out_dir: Path,
    tune: object,
    say: Callable[[str], None],
    link_options: Sequence[str],
) -> None:
    """Compile the Relax module `mod` for a CUDA target with TVM's CUDA pipeline (DLight GPU
    schedules) into out_dir/model.so holding a fatbin, on this machine, GPU or not."""
    import tvm

    if tune is not None:
        raise CompileError(
            "tuning is not available for CUDA targets (MetaSchedule measures on the GPU itself); "
            "compile without tune= to get TVM's default GPU schedules"
        )
    plan = code_plan(_target_arch(target))
    toolchain = find_toolchain()
    mod, convs = convs_for_gpu(mod)
    if convs.gemm or convs.depthwise:
        say(
            f"[ember] convs for the GPU schedules (per batch bucket): {convs.gemm} as GEMMs, "
            f"{convs.depthwise} depthwise as fused elementwise sums, {convs.kept} left to TVM"
        )
    say(
        f"[ember] compiling kernels with nvcc {toolchain.version_text} ({toolchain.origin}): "
        f"cubins {', '.join(plan.sass)} + PTX {plan.ptx}"
    )
    with tempfile.TemporaryDirectory(prefix="ember-cuda-") as tmp_name:
        tmp = Path(tmp_name)
        _build_stub_driver(tmp)
        (tmp / "module.json").write_text(tvm.ir.save_json(mod))
        spec = {
            "module": str(tmp / "module.json"),
            "target": target.tvm,
            "nvcc_flags": plan.nvcc_flags(),
            "output": str(tmp / LIBRARY_FILE),
            "link_options": list(link_options),
        }
        (tmp / "spec.json").write_text(json.dumps(spec))
        log = tmp / "worker.log"
        with open(log, "wb") as sink:
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from ember.compiler.cuda import _worker_main; "
                    "sys.exit(_worker_main(sys.argv[1]))",
                    str(tmp / "spec.json"),
                ],
                env=_worker_environment(toolchain, tmp),
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                check=False,
            )
        text = log.read_text(errors="replace")
        if result.returncode != 0:
            reason = [line for line in text.splitlines() if line.startswith(_WORKER_ERROR)]
            summary = reason[-1][len(_WORKER_ERROR) :] if reason else f"exit {result.returncode}"
            raise CompileError(
                f"TVM failed to compile for {target.name}: {summary}\n{text[-3000:]}"
            )
        check_device_code(tmp / LIBRARY_FILE, plan)
        _prepare_output(out_dir)
        shutil.move(str(tmp / LIBRARY_FILE), out_dir / LIBRARY_FILE)


def _worker_main(spec_path: str) -> int:
    """The build worker: runs in the environment `build_cuda_library` prepared; compiles and
    exports the library. Returns the process exit code."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        import tvm
        import tvm_ffi
        from tvm.relax.backend.cuda.pipeline import get_default_pipeline
        from tvm.support import nvcc

        if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
            raise RuntimeError(f"TVM's CUDA runtime did not load: {_cuda_runtime_load_error()}")
        flags = list(spec["nvcc_flags"])

        def compile_kernels(code: str) -> bytearray:
            fatbin = nvcc.compile_cuda(code, target_format="fatbin", arch=flags, compiler="nvcc")
            return bytearray(fatbin)

        tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_kernels, override=True)
        mod = tvm.ir.load_json(Path(spec["module"]).read_text())
        target = tvm.target.Target(spec["target"])
        pipeline = get_default_pipeline(target)  # DLight GPU schedules; without: no kernels
        with target:  # nvcc and DLight read the arch from the current target
            executable = tvm.compile(mod, target=target, relax_pipeline=pipeline)
        executable.export_library(spec["output"], options=list(spec["link_options"]))
    except Exception as exc:
        import traceback

        traceback.print_exc()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{_WORKER_ERROR}{type(exc).__name__}: {first_line}", file=sys.stderr)
        return 2
    return 0


def _cuda_runtime_load_error() -> str:
    """Why tvm/lib/libtvm_runtime_cuda.so does not load here (the dynamic loader's message)."""
    import ctypes

    import tvm

    library = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    if not library.is_file():
        return f"{library} is missing from this TVM build"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc)
    return "it loads but registers no CUDA module factory"
