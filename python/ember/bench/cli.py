"""The `ember bench` and `ember rpc-server` subcommands (wired into ember.cli)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .defaults import DEFAULT_BUNDLE, DEFAULT_QEMU, DEFAULT_RPC_PORT, DEFAULT_SYSROOT


def _list_type(what: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        from .inputs import positive_ints

        try:
            return positive_ints(text, what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _shape_type(text: str) -> tuple[str, tuple[int | None, ...]]:
    from .inputs import parse_shape

    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"wants seconds > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"wants an integer >= 1, got {text!r}")
    return value


def _targets_type(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"wants target names like cpu,aarch64, got {text!r}")
    return names


def _cmd_bench(args: argparse.Namespace) -> int:
    from .emulated import Emulator
    from .runner import BenchConfig, run_bench

    config = BenchConfig(
        model=args.model,
        targets=args.targets,
        batch_sizes=args.batch_sizes,
        concurrency=args.concurrency,
        baseline=args.baseline,
        min_time_s=args.min_time,
        out_dir=args.out,
        reuse=args.reuse,
        remote=args.remote,
        emulator=Emulator(
            bundle=args.aarch64_bundle,
            qemu=args.qemu,
            sysroot=args.aarch64_sysroot,
            iterations=args.emulated_iterations,
            threads=args.emulated_threads,
            timeout_s=args.emulated_timeout,
        ),
        input_shapes=dict(args.input_shape) if args.input_shape else None,
        seed=args.seed,
    )
    config.command = _command_line(config)
    run = run_bench(config)
    if run.failed:
        print(
            f"ember bench: {len(run.failed)} measurement(s) failed; see {run.markdown_path}",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_rpc_server(args: argparse.Namespace) -> int:
    from .remote import serve

    def ready(host: str, port: int) -> None:
        print(f"ember rpc-server: listening on {host}:{port}", flush=True)

    serve(args.host, args.port, quiet=args.quiet, ready=ready)
    return 0


def _command_line(config: Any) -> str:
    """The run as one canonical command line (every option that matters spelled out)."""
    words = ["ember", "bench", str(config.model), "--targets", ",".join(config.targets)]
    words += ["--batch-sizes", ",".join(map(str, config.batch_sizes))]
    words += ["--concurrency", ",".join(map(str, config.concurrency))]
    words += ["--baseline", config.baseline, "--min-time", f"{config.min_time_s:g}"]
    if config.out_dir is not None:
        words += ["--out", str(config.out_dir)]
    if config.reuse:
        words.append("--reuse")
    if config.remote:
        words += ["--remote", config.remote]
    return shlex.join(words)


def add_bench_parsers(sub: Any) -> None:
    """Add `bench` and `rpc-server` to ember's subcommands (`sub` from add_subparsers)."""
    p = sub.add_parser(
        "bench",
        help="compare a model across targets (and ONNX Runtime): JSON, Markdown and a plot",
    )
    p.add_argument("model", help="an .onnx file or a sample name (digits_mlp, resnet18, ...)")
    p.add_argument(
        "--targets",
        type=_targets_type,
        default=["cpu"],
        help="comma-separated targets from `ember targets` (default cpu), e.g. cpu,cuda,aarch64",
    )
    p.add_argument(
        "--batch-sizes",
        type=_list_type("--batch-sizes"),
        default=[1, 8, 32],
        help="batch sizes, compiled as the buckets (default 1,8,32)",
    )
    p.add_argument(
        "--concurrency",
        type=_list_type("--concurrency"),
        default=[1],
        help="concurrent clients per cell (default 1); > 1 uses an ember.Engine",
    )
    p.add_argument(
        "--baseline",
        default="onnxruntime",
        choices=("onnxruntime", "none"),
        help="reference runtime for speed and output deltas (default onnxruntime)",
    )
    p.add_argument(
        "--min-time", type=_positive_float, default=2.0, help="timed seconds per cell (default 2)"
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (bench-<model>/)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse <out>/artifacts/<model>-<target>.ember when built from the same model",
    )
    p.add_argument("--remote", default=None, help="HOST:PORT of an `ember rpc-server` device")
    p.add_argument(
        "--aarch64-bundle",
        type=Path,
        default=DEFAULT_BUNDLE,
        help=f"ember-run bundle for emulated aarch64 runs (default {DEFAULT_BUNDLE})",
    )
    p.add_argument("--qemu", default=DEFAULT_QEMU, help="qemu user-mode emulator for aarch64")
    p.add_argument(
        "--aarch64-sysroot",
        type=Path,
        default=DEFAULT_SYSROOT,
        help=f"qemu -L sysroot (default {DEFAULT_SYSROOT})",
    )
    p.add_argument(
        "--emulated-iterations",
        type=_positive_int,
        default=10,
        help="ember-run iterations under qemu",
    )
    p.add_argument(
        "--emulated-threads",
        type=_positive_int,
        default=1,
        help="ember-run threads under qemu (default 1: parallel runs can spin for minutes there)",
    )
    p.add_argument(
        "--emulated-timeout",
        type=_positive_float,
        default=300.0,
        help="seconds one ember-run call under qemu may take (default 300)",
    )
    p.add_argument(
        "--input-shape",
        type=_shape_type,
        action="append",
        help="sizes of symbolic dims, batch as 'none': x=none,128,768 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "rpc-server",
        help="a TVM RPC server that can run ember artifacts (for `ember bench --remote`)",
        description="Run on the device: a TVM RPC server whose sessions can open ember "
        "artifacts (checksums and CPU checked, ember's kernels registered). It runs code that "
        "clients upload: use it on trusted networks only.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_RPC_PORT,
        help=f"port to listen on (default {DEFAULT_RPC_PORT})",
    )
    p.add_argument("--quiet", action="store_true", help="log only warnings")
    p.set_defaults(func=_cmd_rpc_server)
