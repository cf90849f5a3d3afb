"""Builds ember's sample ONNX models into a folder, one `<name>.onnx` each.

Usage: python models/build.py [--out models/out] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent


def _load_samples() -> ModuleType:
    """Imports ember.samples, or in a checkout without the built native core just that package."""
    try:
        import ember.samples

        return ember.samples
    except ImportError:
        pass
    # ember.samples needs only numpy/onnx/sklearn, so the models build without compiling the core.
    folder = REPO / "python" / "ember" / "samples"
    spec = importlib.util.spec_from_file_location(
        "ember_samples", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


samples = _load_samples()

Builder = Callable[[], tuple[onnx.ModelProto, float | None]]


def _without_accuracy(build: Callable[[], onnx.ModelProto]) -> Builder:
    """Adapts a random-weight builder to the (model, accuracy) shape of the digits builders."""
    return lambda: (build(), None)


# name -> builder returning (model, held-out accuracy or None for random-weight models).
BUILDERS: dict[str, Builder] = {
    name: _without_accuracy(build) for name, build in samples.SAMPLES.items()
}
BUILDERS["digits_mlp"] = samples.digits_mlp
BUILDERS["digits_cnn"] = samples.digits_cnn


def count_params(model: onnx.ModelProto) -> int:
    """Number of scalar values stored in the model's initializers."""
    return sum(int(np.prod(init.dims)) for init in model.graph.initializer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "models" / "out", help="output folder")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BUILDERS), metavar="NAME", help="models to build"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(BUILDERS):
        start = time.perf_counter()
        model, accuracy = BUILDERS[name]()
        path = args.out / f"{name}.onnx"
        onnx.save_model(model, str(path))
        seconds = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        line = f"{name:<13} params={count_params(model):>11,}  size={size_mb:8.2f} MB"
        line += f"  time={seconds:5.1f}s"
        if accuracy is not None:
            line += f"  held-out accuracy={accuracy:.4f}"
        print(f"{line}  -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
