"""aarch64 artifacts on an x86 host: the ember-run bundle under qemu user-mode emulation.

Everything it measures is emulator speed, so every row is labelled emulated; what it is for is
correctness: the outputs, compared with the baseline's on the same inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .defaults import DEFAULT_BUNDLE, DEFAULT_QEMU, DEFAULT_SYSROOT
from .fingerprint import host_fingerprint
from .inputs import Inputs
from .local import Runner
from .measure import CellSkipped, Measured, RssSampler
from .schema import BenchError

BUNDLE_HINT = "run tools/build_aarch64_bundle.sh"
QEMU_HINT = "apt-get install qemu-user"


@dataclass(frozen=True)
class Emulator:
    """How to run aarch64 binaries here: the ember-run bundle, qemu, and the aarch64 sysroot."""

    bundle: Path = DEFAULT_BUNDLE
    qemu: str = DEFAULT_QEMU
    sysroot: Path = DEFAULT_SYSROOT
    iterations: int = 10
    # One thread: parallel runs under qemu can spin for minutes (measured: digits_mlp at batch
    # 32 with 2 threads ran > 7 min under qemu, 0.7 s with 1), and speed is not the point here.
    threads: int = 1
    timeout_s: float = 300.0

    @property
    def runner_binary(self) -> Path:
        return self.bundle / "bin" / "ember-run"

    def unavailable(self) -> str | None:
        """Why emulated runs cannot happen here (None when they can)."""
        if not self.runner_binary.is_file():
            return f"no aarch64 bundle at {self.bundle} ({BUNDLE_HINT})"
        if self.qemu_path() is None:
            return f"{self.qemu} not found ({QEMU_HINT})"
        return None

    def qemu_path(self) -> str | None:
        return shutil.which(self.qemu)

    def qemu_version(self) -> str:
        """The first line of `qemu --version` (what the emulated numbers depend on)."""
        qemu = self.qemu_path()
        try:
            done = subprocess.run(
                [qemu or self.qemu, "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError as exc:
            return f"{self.qemu} (version unknown: {exc})"
        lines = done.stdout.strip().splitlines()
        return lines[0] if lines else f"{self.qemu} (version unknown)"


class EmulatedRunner(Runner):
    """Runs `ember-run ARTIFACT --input ... --output-dir ... --json` from the aarch64 bundle
    under `qemu-aarch64 -L SYSROOT -E LD_LIBRARY_PATH=<bundle>/lib`; concurrency 1 only."""

    kind = "emulated"
    emulated = True

    def __init__(self, artifact: str | os.PathLike[str], emulator: Emulator) -> None:
        reason = emulator.unavailable()
        if reason is not None:
            raise BenchError(reason)
        self.artifact = Path(artifact)
        self.emulator = emulator
        self._workdir = tempfile.TemporaryDirectory(prefix="ember-bench-qemu-")
        host = host_fingerprint()
        self._device = {
            "kind": "emulated",
            "emulated": True,
            "emulator": emulator.qemu_version(),
            "arch": "aarch64",
            "note": "qemu user-mode emulation on the host: correctness only, not device speed",
            "cpu_model": host["cpu_model"],
            "host_arch": host["arch"],
            "threads": emulator.threads,
            "bundle": str(emulator.bundle),
        }

    @property
    def device(self) -> dict[str, Any]:
        return self._device

    def command(self, input_files: dict[str, Path], output_dir: Path) -> list[str]:
        """The qemu command line for one ember-run invocation."""
        qemu = self.emulator.qemu_path() or self.emulator.qemu
        lib = (self.emulator.bundle / "lib").resolve()
        # -E sets the variable for the emulated program only, not for qemu's own loader.
        args = [qemu, "-L", str(self.emulator.sysroot), "-E", f"LD_LIBRARY_PATH={lib}"]
        args.append(str(self.emulator.runner_binary))
        args.append(str(self.artifact))
        for name, path in input_files.items():
            args += ["--input", f"{name}={path}"]
        args += ["--output-dir", str(output_dir), "--warmup", "1"]
        args += [
            "--iterations",
            str(self.emulator.iterations),
            "--threads",
            str(self.emulator.threads),
        ]
        return [*args, "--json"]

    def measure(self, batch: int, concurrency: int, inputs: Inputs, min_time_s: float) -> Measured:
        if concurrency != 1:
            raise CellSkipped("concurrency > 1 is not run emulated (ember-run is one client)")
        cell = Path(self._workdir.name) / f"b{batch}"
        output_dir = cell / "outputs"
        cell.mkdir(parents=True, exist_ok=True)
        files = {}
        for k, (name, value) in enumerate(inputs.items()):
            files[name] = cell / f"input{k}.npy"
            np.save(files[name], value)
        command = self.command(files, output_dir)
        try:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except OSError as exc:
            raise BenchError(f"cannot start {command[0]}: {exc}") from exc
        with RssSampler(proc.pid) as rss:
            try:
                stdout, stderr = proc.communicate(timeout=self.emulator.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise BenchError(
                    f"ember-run under qemu took over {self.emulator.timeout_s:.0f} s"
                ) from None
        if proc.returncode != 0:
            detail = (stderr.strip() or stdout.strip())[-800:]
            raise BenchError(f"ember-run under qemu exited {proc.returncode}: {detail}")
        return _parse_report(stdout, output_dir, rss.peak_mb)

    def close(self) -> None:
        self._workdir.cleanup()


def _parse_report(stdout: str, output_dir: Path, peak_mb: float | None) -> Measured:
    """ember-run's --json report and its --output-dir files, as a Measured (p95/p99.9: None,
    ember-run does not report them)."""
    try:
        report = json.loads(stdout.strip().splitlines()[-1])
        latency = report["latency_ms"]
        outputs = {
            o["name"]: np.load(o["file"] or output_dir / f"{o['name']}.npy", allow_pickle=False)
            for o in report["outputs"]
        }
        return Measured(
            p50_ms=float(latency["p50"]),
            p90_ms=float(latency["p90"]),
            p95_ms=None,
            p99_ms=float(latency["p99"]),
            p999_ms=None,
            throughput_rows_s=float(report["throughput_rows_per_s"]),
            peak_rss_mb=peak_mb,
            requests=int(report["iterations"]),
            outputs=outputs,
        )
    except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
        raise BenchError(
            f"cannot read ember-run's report ({type(exc).__name__}: {exc}); it printed: "
            f"{stdout[-500:]!r}"
        ) from exc
