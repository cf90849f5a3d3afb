"""`ember demo --lifecycle`: the operating loop end to end on the digits model.

v1 (trained on clean digits) serves traffic from a registry through a Router and its Engines.
The inputs then shift (dimmer, offset, noisy digits, as from a new camera); the drift detector
sees it, the retraining hook fits a new MLP to the shifted data (it matches the training pixels'
mean and spread to the recent inputs, so it needs no labels), and the loop compiles, registers
and canaries it; the guards promote it. Then a deliberately broken export (its output layer
scrambled) is canaried and rolled back automatically. Accuracy on the labelled traffic is shown
per phase; the timeline and the registry history are printed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

BATCH = 1  # rows per request (the guards judge disagreement per request)
CHECK_EVERY = 25  # requests between drift checks
PHASE_TIMEOUT_S = 180.0  # a phase waiting for the loop gives up after this long


def shift_digits(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The distribution shift: 30% dimmer, a +0.25 background, Gaussian noise (sd 0.05)."""
    return np.clip(x * 0.7 + 0.25 + rng.normal(0.0, 0.05, x.shape), 0.0, 1.0).astype(np.float32)


def run_lifecycle_demo(workdir: str | os.PathLike[str] | None = None) -> int:
    """Run the demo; returns 0 when drift, retraining, promotion and rollback all happened."""
    from .compiler import compile as ember_compile
    from .hooks import ModelLoop
    from .registry import Registry
    from .routing import GuardPolicy, RampPolicy, Router
    from .samples import load_digits_split, train_digits_mlp
    from .telemetry import DriftDetector, MetricsRegistry

    out = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ember-lifecycle-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    data = load_digits_split()
    rng = np.random.default_rng(0)
    compile_options = {"batch_sizes": (1, BATCH, 32)}
    say("training v1 on clean digits and compiling it")
    v1 = ember_compile(
        train_digits_mlp(data.x_train, data.y_train),
        output=out / "digits-v1.ember",
        **compile_options,  # type: ignore[arg-type]
    )
    for stale in ("registry", "candidates"):  # a fresh registry each run
        shutil.rmtree(out / stale, ignore_errors=True)
    registry = Registry(out / "registry")
    version = registry.register("digits", v1.path, {"trained_on": "clean digits"})
    registry.set_alias("digits", "production", version, "initial release")
    metrics = MetricsRegistry()
    router = Router(registry, "digits", engine_options={"max_queue_delay_us": 100}, metrics=metrics)
    # The window stays below the 450 held-out digits that traffic cycles through, so that it holds
    # distinct rows (repeated rows would break the tests' independence assumption).
    # alpha is the false-alarm rate of one check; the loop checks every 25 requests.
    detector = DriftDetector(data.x_train, alpha=0.001, window=256)

    last_model: list[onnx.ModelProto | None] = [None]

    def retrain(report: object, recent: dict[str, np.ndarray]) -> onnx.ModelProto:
        rows = recent["x"]
        # Match the training pixels' overall mean and spread to the recent (unlabelled) inputs.
        scale = float(rows.std() / data.x_train.std())
        offset = float(rows.mean() - scale * data.x_train.mean())
        say(f"  retraining hook: {len(rows)} recent rows, pixels ~ {scale:.2f} x + {offset:.2f}")
        adapted = np.clip(data.x_train * scale + offset, 0.0, 1.0).astype(np.float32)
        model = train_digits_mlp(adapted, data.y_train)
        last_model[0] = model
        return model

    loop = ModelLoop(
        router,
        registry,
        detector,
        retrain=retrain,
        check_every=CHECK_EVERY,
        min_rows=200,
        retrain_rows=512,
        compile_options=compile_options,
        workdir=out / "candidates",
        ramp=RampPolicy(steps=(0.1, 0.5, 1.0), windows_per_step=1),
        # v1 is wrong on ~16% of shifted digits, so a good candidate disagrees with it that often;
        # a broken one nearly always.
        guard=GuardPolicy(
            window_requests=40,
            min_window_requests=10,
            breach_windows=2,
            max_disagreement=0.35,
            compare_fraction=1.0,
            # Generous: a window's p99 over 40 sub-millisecond requests is one outlier on a
            # shared machine; the broken export is caught by disagreement.
            max_p99_ratio=25.0,
        ),
        cooldown_s=3600.0,
    )
    loop.on_drift(lambda report: say(f"  on_drift: {report.summary()}"))
    loop.on_promote(lambda event: say(f"  on_promote: v{event.version} is production"))
    loop.on_rollback(lambda event: say(f"  on_rollback: v{event.version} rolled back"))

    def traffic(
        label: str, make: Callable[[np.ndarray], np.ndarray], until: Callable[[], bool]
    ) -> float:
        """Serve labelled requests until `until()`; returns the accuracy of the answers."""
        correct = total = 0
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while time.monotonic() < deadline:
            if not order:
                order.extend(rng.permutation(len(data.x_test)).tolist())
            idx = np.array([order.pop() for _ in range(min(BATCH, len(order)))])
            key = f"user-{total % 97}"
            logits = loop.infer({"x": make(data.x_test[idx])}, key=key)["logits"]
            correct += int((logits.argmax(1) == data.y_test[idx]).sum())
            total += len(idx)
            if until():
                break
        accuracy = correct / max(total, 1)
        say(f"{label}: {total} rows, accuracy {accuracy:.3f}")
        return accuracy

    order: list[int] = []  # held-out rows still to serve in this pass

    def count(kind: str) -> int:
        return sum(1 for e in loop.timeline if e.kind == kind)

    try:
        say("phase 1: clean traffic on v1")
        clean_accuracy = traffic("clean traffic", lambda x: x, _after(1000))
        false_alarms = count("drift")

        say("phase 2: the inputs shift (dimmer, offset, noisy digits)")
        shifted_v1 = traffic(
            "shifted traffic until the retrained model's canary ends",
            lambda x: shift_digits(x, rng),
            lambda: count("promote") + count("rollback") > 0 and not loop.busy,
        )
        say("phase 3: shifted traffic on the new production model")
        shifted_v2 = traffic("shifted traffic", lambda x: shift_digits(x, rng), _after(400))

        say("phase 4: a broken export (its output layer scrambled) goes to canary")
        if loop.busy:  # a retraining in flight (e.g. after a false alarm) finishes first
            traffic("waiting for the loop", lambda x: shift_digits(x, rng), lambda: not loop.busy)
        assert last_model[0] is not None
        loop.submit_candidate(scrambled(last_model[0]), reason="export with a scrambled head")
        traffic(
            "shifted traffic until the broken canary ends",
            lambda x: shift_digits(x, rng),
            lambda: count("rollback") > 0 and not loop.busy,
        )
        print()
        print("timeline:")
        for event in loop.timeline:
            when = time.strftime("%H:%M:%S", time.localtime(event.time))
            tag = f"v{event.version}" if event.version is not None else "-"
            print(f"  {when}  {event.kind:14s} {tag:4s} {event.message}")
        print("registry history of 'digits':")
        for h in registry.history("digits"):
            target = f"v{h.version}" if h.version is not None else "-"
            alias = f" {h.alias}" if h.alias else ""
            print(f"  {h.kind:13s}{alias:12s} {target:4s} {h.reason}")
        text = metrics.render()
        print("prometheus /metrics (excerpt):")
        for line in text.splitlines():
            if line.startswith(("ember_inference_requests_total", "ember_router_requests_total")):
                print(f"  {line}")
        production = registry.resolve("digits", "production")
        checks = {
            "no drift alarm on clean traffic": false_alarms == 0,
            "drift detected after the shift": count("drift") >= 1,
            "retrained model promoted": count("promote") == 1 and production != version,
            "retraining recovered accuracy": shifted_v2 > shifted_v1 + 0.03,
            "broken candidate rolled back": count("rollback") == 1,
            "clean accuracy >= 0.95": clean_accuracy >= 0.95,
        }
        print()
        for name, ok in checks.items():
            print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
        say(f"done; production is v{production}; work dir {out}")
        return 0 if all(checks.values()) else 1
    finally:
        loop.close()
        router.close()
        metrics.close()
        registry.close()


def _after(requests: int) -> Callable[[], bool]:
    """A stop condition: true once called `requests` times."""
    calls = [0]

    def done() -> bool:
        calls[0] += 1
        return calls[0] >= requests

    return done


def scrambled(model: onnx.ModelProto) -> onnx.ModelProto:
    """A broken export of `model`: its last MatMul's output columns (the classes) permuted."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    last = [n for n in broken.graph.node if n.op_type == "MatMul"][-1]
    for i, init in enumerate(broken.graph.initializer):
        if init.name == last.input[1]:
            w = numpy_helper.to_array(init)
            w = w[:, np.roll(np.arange(w.shape[1]), 3)]
            broken.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, init.name))
    return broken
