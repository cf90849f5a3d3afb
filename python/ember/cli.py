"""The `ember` command: compile, run, inspect artifacts, and the demo (the main job end to end)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EmberError
from .tune import TuneBudget

# Mirrors ember.compiler.dispatch.CONV_LAYOUTS (not imported: it would load the compiler).
CONV_LAYOUT_CHOICES = ("auto", "NHWC", "NCHW8c")


def _parse_batch_sizes(text: str) -> list[int] | None:
    if text.strip().lower() in ("none", "static"):
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--batch-sizes wants e.g. 1,8,32 or none, got {text!r}"
        ) from None


def _parse_input_shape(text: str) -> tuple[str, tuple[int | None, ...]]:
    name, sep, dims = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--input-shape wants NAME=d0,d1,... got {text!r}")
    try:
        shape = tuple(
            None if d.strip().lower() in ("none", "batch", "?") else int(d) for d in dims.split(",")
        )
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad dimension in --input-shape {text!r}") from None
    return name, shape


def _parse_input(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--input wants NAME=FILE.npy, got {text!r}")
    return name, Path(path)


def _cmd_compile(args: argparse.Namespace) -> int:
    from .compiler import compile as ember_compile

    target: Any = args.target
    if target.lstrip().startswith("{"):
        target = json.loads(target)
    artifact = ember_compile(
        args.model,
        target=target,
        batch_sizes=args.batch_sizes,
        output=args.output,
        input_shapes=dict(args.input_shape) if args.input_shape else None,
        batch_axis=args.batch_axis,
        name=args.name,
        conv_layout=args.conv_layout,
        tune=TuneBudget(trials=args.tune_trials) if args.tune_trials else None,
        precision=args.precision,
        calibration=_calibration_batches(args.calibration) if args.calibration else None,
        calibration_method=args.calibration_method,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    print(artifact.path)
    return 0


CALIBRATION_BATCH = 32


def _calibration_batches(path: Path) -> list[dict[str, np.ndarray]]:
    """Calibration samples from an .npz: one array per input name, samples along axis 0, cut
    into batches of CALIBRATION_BATCH rows."""
    if not path.is_file():
        raise SystemExit(f"ember compile: calibration file '{path}' does not exist")
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    counts = {name: len(a) for name, a in arrays.items()}
    if not arrays or len(set(counts.values())) != 1:
        raise SystemExit(
            f"ember compile: '{path}' must hold one array per input with the same number of "
            f"samples along axis 0, got {counts or 'no arrays'}"
        )
    total = next(iter(counts.values()))
    return [
        {name: a[i : i + CALIBRATION_BATCH] for name, a in arrays.items()}
        for i in range(0, total, CALIBRATION_BATCH)
    ]


def _cmd_run(args: argparse.Namespace) -> int:
    from .model import load

    inputs = {}
    for name, path in args.input:
        if not path.is_file():
            raise SystemExit(f"ember run: input file '{path}' does not exist")
        inputs[name] = np.load(path, allow_pickle=False)
    model = load(args.artifact)
    outputs = model.run(inputs)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, value in outputs.items():
        line = f"{name}: {value.dtype}{list(value.shape)}"
        if value.size:
            line += f" min={value.min():.6g} max={value.max():.6g} mean={value.mean():.6g}"
        if out_dir is not None:
            np.save(out_dir / f"{name}.npy", value)
            line += f" -> {out_dir / (name + '.npy')}"
        print(line)
    return 0


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _cmd_info(args: argparse.Namespace) -> int:
    from .artifact import Artifact

    artifact = Artifact(args.artifact)
    m = artifact.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    target = m["target"]
    rows = [
        ("model", m["model_name"]),
        ("format", str(m["format_version"])),
        ("source sha256", m["source"]["sha256"]),
        ("opset", str(m["source"].get("opset", "?"))),
        (
            "target",
            f"{target['name']} ({target['kind']}, {target['arch']}, "
            f"mcpu={target['tvm'].get('mcpu', 'generic')})",
        ),
        ("needs CPU", ", ".join(target["required_cpu_features"]) or "-"),
        ("batch buckets", ", ".join(map(str, m["batch_sizes"])) if m["batch_sizes"] else "none"),
        ("precision", m.get("precision", "fp32")),
    ]
    quantization = m.get("quantization")
    if quantization and quantization["method"] == "weight-only":
        rows.append(
            (
                "quantization",
                f"weight-only, {quantization['weight_bits']}-bit weights per output channel, "
                f"{quantization.get('int8_weight_calls', 0)} library calls dequantize them "
                "once at load",
            )
        )
    elif quantization:
        rows.append(
            (
                "quantization",
                f"{quantization['method']} calibration on {quantization['samples']} samples, "
                f"{quantization['activations']} activations, "
                f"{quantization['weight_bits']}-bit weights, "
                f"{quantization['int8_calls']} int8 library calls",
            )
        )
        report = quantization.get("report")
        if report:
            for result in report["methods"]:
                mark = (
                    "chosen"
                    if result["method"] == report["chosen"]
                    else ("pass" if result["passed"] else "rejected: " + result["reason"])
                )
                accuracy = "-" if result["accuracy"] is None else f"{result['accuracy']:.4f}"
                rows.append(
                    (
                        f"  {result['method']}",
                        f"accuracy {accuracy}, cosine {result['cosine']:.5f}, top-1 agreement "
                        f"{result['top1_agreement']:.4f}, speedup {result['speedup']:.2f}x, "
                        f"{result['artifact_bytes'] / 1e6:.2f} MB ({mark})",
                    )
                )
    rows += [("input", str(s)) for s in artifact.inputs]
    rows += [("output", str(s)) for s in artifact.outputs]
    versions = m["versions"]
    rows += [
        (
            "built with",
            f"ember {versions['ember']}, TVM {versions['tvm']}, tvm-ffi {versions['tvm_ffi']}",
        ),
        ("built on", f"{m['build_host']['arch']} {m['build_host']['cpu']}, {m['created_at']}"),
        ("compile time", f"{m.get('compile_seconds', 0):.2f} s"),
    ]
    print(_table(rows))
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from .compiler.targets import PRESETS

    if args.json:
        print(json.dumps({name: vars(p) for name, p in PRESETS.items()}, indent=2))
        return 0
    rows = [("target", "what", "build machine needs", "device needs")]
    rows += [(p.name, p.description, p.build_needs, p.device_needs) for p in PRESETS.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    example = json.dumps({"kind": "llvm", "mcpu": "znver3"})
    print(f"\nOr any TVM target dict as JSON, e.g. --target '{example}'.")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.lifecycle:
        from .lifecycle_demo import run_lifecycle_demo

        return run_lifecycle_demo(args.workdir)
    from .demo import run_demo

    return run_demo(args.workdir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember", description="Compile ONNX models with TVM and run them from ember's C++ core."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model into an artifact directory")
    p.add_argument("model", help="path to the .onnx file")
    p.add_argument("--target", default="cpu", help="target name or TVM target dict as JSON")
    p.add_argument(
        "--batch-sizes",
        type=_parse_batch_sizes,
        default=[1, 8, 16, 32],
        help="batch buckets, e.g. 1,8,16,32 (or 'none' for the declared shapes)",
    )
    p.add_argument(
        "--input-shape",
        type=_parse_input_shape,
        action="append",
        help="sizes of symbolic dims, batch as 'none': x=none,3,224,224 (repeatable)",
    )
    p.add_argument("--batch-axis", type=int, default=None, help="override the batch axis")
    p.add_argument("--name", default=None, help="model name in the manifest")
    p.add_argument(
        "--conv-layout", default="auto", choices=CONV_LAYOUT_CHOICES, help="library conv layout"
    )
    p.add_argument(
        "--tune-trials",
        type=int,
        default=0,
        help="MetaSchedule trials for TVM-generated loops (0: none); cached on disk",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8-static", "int8-weight", "fp16", "bf16"),
        help="int8-static needs --calibration",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help=".npz with one array per input name, samples along axis 0 (fed in batches of 32)",
    )
    p.add_argument(
        "--calibration-method",
        default="minmax",
        choices=("minmax", "percentile", "entropy"),
        help="how activation ranges are chosen",
    )
    p.add_argument("-o", "--output", required=True, help="artifact directory to write")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("run", help="run an artifact on .npy inputs through the C++ core")
    p.add_argument("artifact")
    p.add_argument(
        "--input",
        type=_parse_input,
        action="append",
        required=True,
        help="NAME=FILE.npy (repeatable)",
    )
    p.add_argument("--output-dir", default=None, help="save each output as NAME.npy here")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("info", help="show an artifact's manifest")
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("targets", help="list the compile targets and what each needs")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=_cmd_targets)

    p = sub.add_parser("demo", help="train, compile and serve the digits model; compare with ORT")
    p.add_argument("--workdir", default=None, help="where to write the model and artifact")
    p.add_argument(
        "--lifecycle",
        action="store_true",
        help="the operating loop instead: registry, canary, drift, retraining, rollback",
    )
    p.set_defaults(func=_cmd_demo)

    from .registry.cli import add_registry_parser  # imported here: `import ember.cli` stays light

    add_registry_parser(sub)
    from .bench.cli import add_bench_parsers  # `bench` and `rpc-server`; their work loads lazily

    add_bench_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EmberError as exc:
        print(f"ember {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
