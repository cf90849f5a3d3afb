"""`ember bench`: compile (or reuse) a model per target, run it wherever each target can run,
compare with the ONNX Runtime baseline, and write results.json, results.md and results.png."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EmberError, UnknownTargetError
from .emulated import EmulatedRunner, Emulator
from .fingerprint import gpu_names, host_fingerprint
from .inputs import BenchModel, Inputs, Shape, make_inputs, outputs_delta, resolve_model
from .local import BaselineRunner, LocalRunner, Runner
from .measure import RSS_SAMPLE_INTERVAL_S, CellSkipped, Measured
from .remote import RemoteRunner, RemoteSession
from .schema import SCHEMA_VERSION, BenchError, Result, validate_results

if TYPE_CHECKING:
    from ..compiler.targets import Target

Progress = Callable[[str], None]
BASELINES = ("onnxruntime", "none")

METHODS = {
    "latency": "per request, closed loop: each client sends its next request when the previous "
    "returns; warm-up, then at least min_time_s per cell; numpy linear-interpolated percentiles",
    "throughput": "rows completed / wall time of the timed part of the cell",
    "local": "concurrency 1: Model.run in a loop; concurrency C > 1: ember.Engine (default "
    "options) with C client threads sending batch-B requests",
    "baseline": "one onnxruntime.InferenceSession (CPUExecutionProvider, intra-op threads = "
    "ember's threads) shared by the client threads",
    "peak_rss": (
        f"process RSS high-water, sampled with psutil every {RSS_SAMPLE_INTERVAL_S * 1e3:g} ms "
        "during the cell (local, baseline: the whole bench process, interpreter included; "
        "emulated: the qemu process); remote: ru_maxrss of the RPC session process since it "
        "started"
    ),
    "emulated": "ember-run from the aarch64 bundle under qemu user-mode emulation (1 thread by "
    "default): correctness only, not device speed; p95/p99.9 not reported by ember-run",
    "remote": "TVM Relax VM on the device over RPC (ember rpc-server), device-side time per call "
    "from time_evaluator (no network time); concurrency 1 only",
    "delta": "max |ember - baseline| and cosine over all outputs, same inputs, first request",
}


@dataclass
class BenchConfig:
    """What `ember bench` measures and where it writes (the CLI fills one from its options)."""

    model: str
    targets: Sequence[str] = ("cpu",)
    batch_sizes: Sequence[int] = (1, 8, 32)
    concurrency: Sequence[int] = (1,)
    baseline: str = "onnxruntime"
    min_time_s: float = 2.0
    out_dir: Path | None = None
    reuse: bool = False
    remote: str | None = None
    emulator: Emulator = field(default_factory=Emulator)
    input_shapes: Mapping[str, Shape] | None = None
    seed: int = 0
    command: str | None = None


@dataclass
class BenchRun:
    """A finished run: the results.json document and the files written."""

    doc: dict[str, Any]
    json_path: Path
    markdown_path: Path
    png_path: Path | None

    @property
    def results(self) -> list[dict[str, Any]]:
        return list(self.doc["results"])

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows whose measurement failed (skipped rows are not failures)."""
        return [r for r in self.doc["results"] if r["status"] == "failed"]


def check_targets(names: Sequence[str]) -> list[str]:
    """The target names, checked against `ember targets` (cuda-sm_XX included)."""
    from ..compiler.targets import CUDA_ARCHS, PRESETS

    known = [*PRESETS, *(f"cuda-{arch}" for arch in CUDA_ARCHS)]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        problem = f"unknown target {unknown[0]!r}" if unknown else "no targets given"
        raise UnknownTargetError(f"{problem}; known targets: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _check_config(config: BenchConfig) -> None:
    if config.baseline not in BASELINES:
        raise BenchError(f"baseline must be one of {BASELINES}, got {config.baseline!r}")
    for what, values in (("batch sizes", config.batch_sizes), ("concurrency", config.concurrency)):
        if not values or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
        ):
            raise BenchError(f"{what} must be positive integers, got {list(values)!r}")
    if not config.min_time_s > 0:
        raise BenchError(f"min time must be > 0 seconds, got {config.min_time_s}")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_bench(config: BenchConfig, progress: Progress | None = _stderr) -> BenchRun:
    """Run the benchmark described by `config`; progress lines go to `progress` (stderr by
    default). Cells that fail are recorded as failed rows, not raised; bad options raise."""
    say = progress or (lambda _msg: None)
    targets = check_targets(config.targets)
    _check_config(config)
    batches = sorted(set(config.batch_sizes))
    concurrency = sorted(set(config.concurrency))
    remote = RemoteSession(config.remote) if config.remote else None  # fail fast, before compiling
    model = resolve_model(config.model, config.input_shapes)
    out_dir = config.out_dir or Path(f"bench-{model.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    compile_source = _compile_source(model, out_dir)
    say(
        f"[bench] {model.name}: targets {', '.join(targets)}; batch {_csv(batches)}; concurrency "
        f"{_csv(concurrency)}; baseline {config.baseline}; {config.min_time_s:g} s per cell"
    )
    inputs = {b: make_inputs(model, b, config.seed) for b in batches}
    bench = _Bench(config, model, batches, concurrency, inputs, say)

    if config.baseline == "onnxruntime":
        bench.run_baseline()
    for target in targets:
        bench.run_target(target, compile_source, out_dir, remote)

    doc = {
        "schema": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": config.command or f"ember bench {shlex.quote(config.model)}",
        "model": {"name": model.name, "source": model.source, "sha256": model.sha256},
        "targets": targets,
        "batch_sizes": batches,
        "concurrency": concurrency,
        "baseline": None if config.baseline == "none" else config.baseline,
        "min_time_s": config.min_time_s,
        "threads": host_fingerprint()["threads"],
        "host": host_fingerprint(),
        "remote": remote.device if remote else None,
        "methods": METHODS,
        "artifacts": bench.artifacts,
        "results": [r.to_json() for r in bench.results],
    }
    from .report import write_reports

    json_path, md_path, png_path, plot_note = write_reports(doc, out_dir)
    written = ", ".join(str(p) for p in (json_path, md_path, png_path) if p is not None)
    say(f"[bench] wrote {written}" + (f" ({plot_note})" if plot_note else ""))
    validate_results(doc)  # after writing: a schema bug must not lose the measurements
    return BenchRun(doc, json_path, md_path, png_path)


def _csv(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def _compile_source(model: BenchModel, out_dir: Path) -> str:
    """The .onnx file to compile: the given one, or the sample written into the output dir (so
    the manifest's source sha256 is the sha256 of exactly these bytes)."""
    if isinstance(model.compile_input, str):
        return model.compile_input
    path = out_dir / f"{model.name}.onnx"
    if not path.is_file() or path.read_bytes() != model.serialized:
        path.write_bytes(model.serialized)
    return str(path)


@dataclass
class _Compiled:
    path: Path
    compile_s: float
    tune_s: float


class _Bench:
    """The state of one run: inputs, baseline outputs, rows so far, artifacts built."""

    def __init__(
        self,
        config: BenchConfig,
        model: BenchModel,
        batches: list[int],
        concurrency: list[int],
        inputs: dict[int, Inputs],
        say: Progress,
    ) -> None:
        self.config = config
        self.model = model
        self.batches = batches
        self.concurrency = concurrency
        self.inputs = inputs
        self.say = say
        self.reference: dict[int, dict[str, np.ndarray]] = {}
        self.results: list[Result] = []
        self.artifacts: dict[str, dict[str, Any]] = {}

    # --- baseline ------------------------------------------------------------------------

    def run_baseline(self) -> None:
        try:
            baseline = BaselineRunner(self.model)
            for batch in self.batches:
                self.reference[batch] = baseline.run(self.inputs[batch])
        except Exception as exc:  # ORT raises its own error types
            reason = f"onnxruntime cannot run the model: {exc}"
            self._skip("onnxruntime", "baseline", reason, host_fingerprint(), failed=True)
            return
        self._run_cells("onnxruntime", baseline, None, "onnxruntime")

    # --- targets -------------------------------------------------------------------------

    def run_target(
        self, target: str, source: str, out_dir: Path, remote: RemoteSession | None
    ) -> None:
        try:
            runnable, skipped = self._plan(target, out_dir, remote)
        except EmberError as exc:
            self._skip(target, "local", str(exc), {}, failed=True)
            return
        for kind, reason in skipped.items():
            self._skip(target, kind, reason, _skip_device(kind, remote))
        if not runnable:
            return
        try:
            compiled = self._compile(target, source, out_dir)
        except EmberError as exc:
            for kind in runnable:
                self._skip(target, kind, f"compile failed: {exc}", {}, failed=True)
            return
        for kind in runnable:
            label = target if kind == "local" else f"{target} ({kind})"
            runner: Runner | None = None
            try:
                runner = self._runner(kind, compiled.path, target, remote)
                self._run_cells(target, runner, compiled, label)
            except EmberError as exc:
                self._skip(target, kind, str(exc), _skip_device(kind, remote), failed=True)
            finally:
                if runner is not None:
                    runner.close()

    def _plan(
        self, target: str, out_dir: Path, remote: RemoteSession | None
    ) -> tuple[list[str], dict[str, str]]:
        """Which runners can run `target` here, and why the others cannot."""
        from .. import _core
        from ..compiler.targets import resolve_target

        runnable: list[str] = []
        skipped: dict[str, str] = {}
        is_cuda = target.startswith("cuda")
        if is_cuda and not gpu_names():
            skipped["local"] = "no GPU on this host"
            if remote is None or not remote.device.get("gpus"):
                if remote is not None:
                    skipped["remote"] = f"no GPU on the device at {remote.address}"
                return runnable, skipped
        resolved = self._reused_target(target, out_dir) or resolve_target(target)
        host_arch = _core.host_arch()
        if resolved.kind == "cuda":
            if gpu_names():
                runnable.append("local")
        elif resolved.arch == host_arch:
            missing = sorted(set(resolved.required_cpu_features) - _core.host_cpu_features())
            if missing:
                skipped["local"] = f"this CPU lacks {', '.join(missing)}"
            else:
                runnable.append("local")
        elif resolved.arch == "aarch64":
            why = self.config.emulator.unavailable()
            if why is None:
                runnable.append("emulated")
            else:
                skipped["emulated"] = why
        else:
            skipped["local"] = f"cannot run {resolved.arch} code on this {host_arch} host"
        if remote is not None:
            why = remote.cannot_run({"target": resolved.to_json()})
            if why is None:
                runnable.append("remote")
            else:
                skipped["remote"] = why
        return runnable, skipped

    def _artifact_path(self, target: str, out_dir: Path) -> Path:
        return out_dir / "artifacts" / f"{self.model.name}-{target}.ember"

    def _reused_target(self, target: str, out_dir: Path) -> Target | None:
        """The target a reusable artifact records, or None. Planning from it needs neither TVM's
        compiler nor a GPU query, so a host that only runs prebuilt artifacts can bench them."""
        from ..artifact import Artifact
        from ..compiler.targets import Target

        path = self._artifact_path(target, out_dir)
        if not (self.config.reuse and self._reusable(path, target)):
            return None
        return Target.from_json(Artifact(path).manifest["target"])

    def _compile(self, target: str, source: str, out_dir: Path) -> _Compiled:
        from ..artifact import Artifact
        from ..compiler import compile as ember_compile

        path = self._artifact_path(target, out_dir)
        if self.config.reuse and self._reusable(path, target):
            manifest = Artifact(path).manifest
            compiled = _Compiled(path, float(manifest.get("compile_seconds", 0.0)), _tune(manifest))
            self.say(f"[bench] {target}: reusing {path} (same source sha256, target, buckets)")
            self.artifacts[target] = {"path": str(path), "reused": True, **_times(compiled)}
            return compiled
        self.say(f"[bench] compiling {self.model.name} for {target} (batch {_csv(self.batches)})")
        started = time.perf_counter()
        artifact = ember_compile(
            source,
            target=target,
            batch_sizes=self.batches,
            output=path,
            input_shapes=self.model.input_shapes,
            progress=self.say,
        )
        compiled = _Compiled(path, time.perf_counter() - started, _tune(artifact.manifest))
        self.say(
            f"[bench] {target}: compiled in {compiled.compile_s:.1f} s "
            f"(tuning {compiled.tune_s:.1f} s)"
        )
        self.artifacts[target] = {"path": str(path), "reused": False, **_times(compiled)}
        return compiled

    def _reusable(self, path: Path, target: str) -> bool:
        from ..artifact import Artifact

        try:
            manifest = Artifact(path).manifest
            return bool(
                manifest["source"]["sha256"] == self.model.sha256
                and manifest["target"]["name"] == target
                and manifest.get("batch_sizes") == self.batches
            )
        except (EmberError, KeyError, TypeError):
            return False

    def _runner(
        self, kind: str, artifact: Path, target: str, remote: RemoteSession | None
    ) -> Runner:
        if kind == "local":
            return LocalRunner(artifact, cuda=target.startswith("cuda"))
        if kind == "emulated":
            return EmulatedRunner(artifact, self.config.emulator)
        assert remote is not None
        return RemoteRunner(remote, artifact)

    # --- cells ---------------------------------------------------------------------------

    def _run_cells(
        self, target: str, runner: Runner, compiled: _Compiled | None, label: str
    ) -> None:
        for batch in self.batches:
            for concurrency in self.concurrency:
                row = Result(
                    target=target,
                    runner=runner.kind,
                    emulated=runner.emulated,
                    batch=batch,
                    concurrency=concurrency,
                    compile_s=None if compiled is None else round(compiled.compile_s, 3),
                    tune_s=None if compiled is None else round(compiled.tune_s, 3),
                    device=runner.device,
                )
                prefix = f"[bench] {label} b={batch} c={concurrency}"
                try:
                    measured = runner.measure(
                        batch, concurrency, self.inputs[batch], self.config.min_time_s
                    )
                except CellSkipped as why:
                    row.status, row.reason = "skipped", str(why)
                    self.say(f"{prefix}: skipped: {why}")
                except Exception as exc:  # a failed cell is a result, not the end of the run
                    row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}"
                    self.say(f"{prefix}: FAILED: {row.reason}")
                else:
                    self._fill(row, measured, compare=runner.kind != "baseline")
                    self.say(f"{prefix}: {_summary(row)}")
                self.results.append(row)

    def _fill(self, row: Result, measured: Measured, compare: bool) -> None:
        row.p50_ms, row.p90_ms, row.p95_ms = measured.p50_ms, measured.p90_ms, measured.p95_ms
        row.p99_ms, row.p999_ms = measured.p99_ms, measured.p999_ms
        row.throughput_rows_s = measured.throughput_rows_s
        row.peak_rss_mb = None if measured.peak_rss_mb is None else round(measured.peak_rss_mb, 1)
        row.requests = measured.requests
        reference = self.reference.get(row.batch or 0)
        if compare and reference is not None:
            row.max_abs_delta, row.cosine = outputs_delta(measured.outputs, reference)

    def _skip(
        self,
        target: str,
        kind: str,
        reason: str,
        device: dict[str, Any],
        failed: bool = False,
    ) -> None:
        status = "failed" if failed else "skipped"
        self.results.append(
            Result(
                target=target,
                runner=kind,
                emulated=kind == "emulated",
                batch=None,
                concurrency=None,
                device=device,
                status=status,
                reason=reason,
            )
        )
        self.say(f"[bench] {target} ({kind}): {status}: {reason}")


def _skip_device(kind: str, remote: RemoteSession | None) -> dict[str, Any]:
    if kind == "remote" and remote is not None:
        return remote.device
    if kind == "emulated":
        return {"kind": "emulated", "emulated": True}
    return host_fingerprint()


def _tune(manifest: Mapping[str, Any]) -> float:
    tuning = manifest.get("tuning") or {}
    return float(tuning.get("seconds", 0.0) or 0.0)


def _times(compiled: _Compiled) -> dict[str, float]:
    return {"compile_s": round(compiled.compile_s, 3), "tune_s": round(compiled.tune_s, 3)}


def _rate(rows_per_s: float) -> str:
    if rows_per_s >= 1e6:
        return f"{rows_per_s / 1e6:.1f}M"
    if rows_per_s >= 1e3:
        return f"{rows_per_s / 1e3:.1f}k"
    return f"{rows_per_s:.1f}"


def _summary(row: Result) -> str:
    text = f"p50 {row.p50_ms:.3g} ms, {_rate(row.throughput_rows_s or 0.0)} rows/s"
    if row.emulated:
        text += " (emulated, not device speed)"
    if row.max_abs_delta is not None:
        text += f", max |delta| {row.max_abs_delta:.2g}, cosine {row.cosine:.6f}"
    return text
