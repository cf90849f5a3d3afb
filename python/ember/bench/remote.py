"""Artifacts on a remote device through TVM's RPC: the client-side runner and `ember rpc-server`.

The artifact's model.so calls ember's oneDNN kernels (`ember.dnnl.*` packed functions), which
exist only in a process that has ember's C++ core and has loaded an artifact through it (the core
registers them on its first load). A stock TVM RPC server has neither, so `ember rpc-server` is a
TVM RPC server whose sessions can open an uploaded artifact with `ember.load` (checksums and CPU
compatibility verified, kernels registered) before the client runs it in TVM's Relax VM.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import resource
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import CHECKSUMS_FILE, LIBRARY_FILE, MANIFEST_FILE, Artifact
from .defaults import DEFAULT_RPC_PORT
from .fingerprint import host_fingerprint
from .inputs import Inputs
from .local import Runner
from .measure import CellSkipped, Measured, percentiles_ms
from .schema import BenchError

RPC_FINGERPRINT = "ember.rpc.fingerprint"
RPC_OPEN_ARTIFACT = "ember.rpc.open_artifact"
RPC_PEAK_RSS = "ember.rpc.peak_rss_mb"
ARTIFACT_FILES = (MANIFEST_FILE, LIBRARY_FILE, CHECKSUMS_FILE)
DNNL_KERNELS = ("ember.dnnl.matmul", "ember.dnnl.conv2d")
CONNECT_TIMEOUT_S = 10.0
MIN_REMOTE_REPEATS = 20
MAX_REMOTE_REPEATS = 50_000


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' -> (host, port); a clear BenchError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"--remote wants HOST:PORT (e.g. 192.168.1.20:9090), got {text!r}")
    return host.strip("[]"), int(port)


# --- server side ---------------------------------------------------------------------------


def _rpc_fingerprint() -> str:
    return json.dumps(host_fingerprint())


def _rpc_open_artifact(stem: str) -> str:
    """Move the uploaded `<stem>.<file>` into the artifact directory `<stem>/` in the session's
    work dir and load it through ember's core; returns the ember functions now registered."""
    import tvm_ffi

    from ..model import load

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stem) or stem.startswith("."):
        raise ValueError(f"bad artifact name {stem!r}")
    workpath = tvm_ffi.get_global_func("tvm.rpc.server.workpath")
    directory = Path(workpath(stem))
    directory.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACT_FILES:
        os.replace(workpath(f"{stem}.{name}"), directory / name)
    load(directory)  # verifies checksums and compatibility; registers ember's kernels
    kernels = sorted(n for n in tvm_ffi.registry.list_global_func_names() if n.startswith("ember."))
    return json.dumps({"dir": str(directory), "functions": kernels})


def _rpc_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def register_rpc_functions() -> None:
    """Register the `ember.rpc.*` functions that ember's RPC sessions offer to clients."""
    import tvm_ffi

    tvm_ffi.register_global_func(RPC_FINGERPRINT, _rpc_fingerprint, override=True)
    tvm_ffi.register_global_func(RPC_OPEN_ARTIFACT, _rpc_open_artifact, override=True)
    tvm_ffi.register_global_func(RPC_PEAK_RSS, _rpc_peak_rss_mb, override=True)


def serve(
    host: str = "0.0.0.0",
    port: int = DEFAULT_RPC_PORT,
    *,
    quiet: bool = False,
    ready: Callable[[str, int], None] | None = None,
) -> None:
    """Run a TVM RPC server with ember's functions until interrupted. Each client session runs
    in a forked process that inherits them. Trusted networks only: TVM RPC runs uploaded code."""
    from tvm.rpc import server as tvm_server

    register_rpc_functions()
    # Sessions are forked so they inherit the registered functions (3.14 defaults to forkserver).
    multiprocessing.set_start_method("fork", force=True)
    if quiet:
        tvm_server.logger.setLevel(logging.WARNING)
    try:
        family = socket.getaddrinfo(host, port, 0, 0, socket.IPPROTO_TCP)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1)
    except OSError as exc:
        raise BenchError(f"ember rpc-server cannot listen on {host}:{port}: {exc}") from exc
    # TVM's own accept/handshake/fork loop (pinned TVM version), in a daemon thread so that
    # Ctrl-C ends the server.
    listener = threading.Thread(
        target=tvm_server._listen_loop,
        args=(sock, port, "", None, None, None),
        name="ember-rpc-listen",
        daemon=True,
    )
    listener.start()
    if ready is not None:
        ready(host, port)
    try:
        while listener.is_alive():
            listener.join(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


# --- client side ---------------------------------------------------------------------------


class RemoteSession:
    """A connection to `ember rpc-server` at HOST:PORT, with the device's fingerprint."""

    def __init__(self, address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        host, port = parse_address(address)
        self.address = f"{host}:{port}"
        start_hint = f"start one on the device with `ember rpc-server --port {port}`"
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            raise BenchError(
                f"cannot reach an RPC server at {self.address}: {exc} ({start_hint})"
            ) from exc
        from tvm import rpc

        try:
            self.session = rpc.connect(host, port)
        except Exception as exc:  # TVM raises its own error types
            raise BenchError(f"RPC handshake with {self.address} failed: {exc}") from exc
        try:
            fingerprint = self.session.get_function(RPC_FINGERPRINT)
        except AttributeError:
            raise BenchError(
                f"{self.address} is a TVM RPC server without ember's functions: ember artifacts "
                f"need ember's kernels there ({start_hint})"
            ) from None
        self.device: dict[str, Any] = {
            **json.loads(str(fingerprint())),
            "kind": "remote",
            "remote": self.address,
        }

    def cannot_run(self, manifest: dict[str, Any]) -> str | None:
        """Why an artifact with this manifest cannot run on the remote device (None: it can)."""
        target = manifest["target"]
        if target["kind"] == "cuda":
            return None if self.device.get("gpus") else f"the device at {self.address} has no GPU"
        if target["arch"] != self.device.get("arch"):
            return (
                f"the device at {self.address} is {self.device.get('arch')}, the artifact is "
                f"for {target['arch']}"
            )
        missing = sorted(set(target["required_cpu_features"]) - set(self.device["isa_features"]))
        if missing:
            return f"the device at {self.address} lacks {', '.join(missing)}"
        return None


class RemoteRunner(Runner):
    """Uploads the artifact, has the server open it with ember (verification, kernels), and
    times `main_b<N>` in TVM's Relax VM on the device with `time_evaluator` (device-side time
    per call, no network); concurrency 1 only."""

    kind = "remote"

    def __init__(self, remote: RemoteSession, artifact: str | os.PathLike[str]) -> None:
        import tvm
        from tvm import relax

        path = Path(artifact)
        manifest = Artifact(path).manifest
        sess = remote.session
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name) + "-" + uuid.uuid4().hex[:8]
        try:
            for name in ARTIFACT_FILES:
                # bytes, not a path: TVM's upload leaves the file it opens unclosed
                sess.upload(bytearray((path / name).read_bytes()), f"{stem}.{name}")
            opened = json.loads(str(sess.get_function(RPC_OPEN_ARTIFACT)(stem)))
            library = sess.load_module(f"{stem}/{LIBRARY_FILE}")
        except Exception as exc:  # RPC errors carry the server's exception text
            raise BenchError(f"the device at {remote.address} cannot open {path}: {exc}") from exc
        visible = []
        for kernel in DNNL_KERNELS:
            try:
                sess.get_function(kernel)
                visible.append(kernel)
            except AttributeError:
                pass
        library_info = manifest.get("kernel_library") or {}
        if library_info.get("name") == "dnnl" and len(visible) != len(DNNL_KERNELS):
            raise BenchError(
                f"the RPC session at {remote.address} does not see ember's kernels "
                f"{sorted(set(DNNL_KERNELS) - set(visible))}"
            )
        self.remote = remote
        self.dev = sess.cuda(0) if manifest["target"]["kind"] == "cuda" else sess.cpu(0)
        self.vm = relax.VirtualMachine(library, self.dev)
        self.input_names = [spec["name"] for spec in manifest["inputs"]]
        self.output_names = [spec["name"] for spec in manifest["outputs"]]
        self._tensor = tvm.runtime.tensor
        self._device = {
            **remote.device,
            "runtime": "TVM Relax VM over RPC, with ember's kernels",
            "ember_functions": opened["functions"],
        }

    @property
    def device(self) -> dict[str, Any]:
        return self._device

    def measure(self, batch: int, concurrency: int, inputs: Inputs, min_time_s: float) -> Measured:
        if concurrency != 1:
            raise CellSkipped("concurrency > 1 is not run over RPC (a session runs one call)")
        function = f"main_b{batch}"
        args = [self._tensor(np.ascontiguousarray(inputs[n]), self.dev) for n in self.input_names]
        self.vm.set_input(function, *args)
        self.vm.invoke_stateful(function)
        outputs = self._outputs(self.vm.get_outputs(function))
        probe = self.vm.time_evaluator("invoke_stateful", self.dev, number=1, repeat=5)(function)
        per_call_s = max(float(probe.median), 1e-7)
        repeat = int(min(MAX_REMOTE_REPEATS, max(MIN_REMOTE_REPEATS, min_time_s / per_call_s)))
        timer = self.vm.time_evaluator("invoke_stateful", self.dev, number=1, repeat=repeat)
        latencies_ms = [float(t) * 1e3 for t in timer(function).results]
        p50, p90, p95, p99, p999 = percentiles_ms(latencies_ms)
        peak = float(self.remote.session.get_function(RPC_PEAK_RSS)())
        return Measured(
            p50_ms=p50,
            p90_ms=p90,
            p95_ms=p95,
            p99_ms=p99,
            p999_ms=p999,
            throughput_rows_s=batch * 1e3 / float(np.mean(latencies_ms)),
            peak_rss_mb=peak,
            requests=len(latencies_ms),
            outputs=outputs,
        )

    def _outputs(self, value: Any) -> dict[str, np.ndarray]:
        values = [value] if hasattr(value, "numpy") else list(value)
        if len(values) != len(self.output_names):
            raise BenchError(
                f"the remote run returned {len(values)} outputs, the manifest names "
                f"{len(self.output_names)}"
            )
        return {n: v.numpy() for n, v in zip(self.output_names, values, strict=True)}
