"""What `ember bench` runs: the model (an ONNX file or a sample name) and its seeded inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .schema import BenchError

Shape = tuple[int | None, ...]
Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One model input: its dtype and shape with None at the batch axis (None: no batch axis)."""

    name: str
    dtype: str
    shape: Shape
    batch_axis: int | None


@dataclass(frozen=True)
class BenchModel:
    """The model under test: what to pass to `ember.compile` and to ONNX Runtime, and its
    sha256 (as the artifact manifest records it, to find reusable artifacts)."""

    name: str
    source: str
    compile_input: Any  # the .onnx path, or the sample's ModelProto
    serialized: bytes
    sha256: str
    input_shapes: dict[str, Shape] | None
    inputs: tuple[InputSpec, ...]

    @property
    def is_digits(self) -> bool:
        """A sample trained on sklearn's digits: benchmarked on real held-out digits."""
        return self.source in ("sample:digits_mlp", "sample:digits_cnn")


def resolve_model(spec: str, input_shapes: Mapping[str, Shape] | None = None) -> BenchModel:
    """An ONNX path or a name from `ember.samples.SAMPLES`; errors name both possibilities."""
    import onnx

    from ..samples import INPUT_SHAPES, SAMPLES

    path = Path(spec)
    shapes: dict[str, Shape] | None = dict(input_shapes) if input_shapes else None
    if path.is_file():
        data = path.read_bytes()
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:  # protobuf raises DecodeError and others
            raise BenchError(f"MODEL '{spec}' is not a valid ONNX model: {exc}") from exc
        name, source, compile_input = path.stem, str(path), str(path)
    elif spec in SAMPLES:
        proto = SAMPLES[spec]()
        data = proto.SerializeToString()
        name, source, compile_input = spec, f"sample:{spec}", proto
        shapes = shapes or dict(INPUT_SHAPES[spec])
    else:
        raise BenchError(
            f"MODEL '{spec}' is neither an ONNX file nor a sample name; samples: "
            f"{', '.join(SAMPLES)}"
        )
    return BenchModel(
        name=name,
        source=source,
        compile_input=compile_input,
        serialized=data,
        sha256=hashlib.sha256(data).hexdigest(),
        input_shapes=shapes,
        inputs=tuple(_input_specs(proto, shapes)),
    )


def _input_specs(proto: Any, shapes: Mapping[str, Shape] | None) -> list[InputSpec]:
    """The inputs as `ember.compile` resolves them (same batch axis, same concrete dims)."""
    from ..compiler import onnx_prep
    from ..errors import CompileError

    declared = onnx_prep.graph_inputs(proto)
    if not declared:
        raise BenchError("the model has no inputs")
    try:
        specs = onnx_prep.resolve_input_shapes(declared, shapes, None, True)
    except CompileError as exc:
        raise BenchError(f"{exc} (give the sizes with --input-shape NAME=none,d1,...)") from exc
    return [InputSpec(i.name, i.dtype, *specs[i.name]) for i in declared]


def make_inputs(model: BenchModel, batch: int, seed: int = 0) -> Inputs:
    """Inputs with `batch` rows: held-out digits for the digits samples, else seeded random
    values (floats ~ N(0, 1), integers in [0, 16), booleans)."""
    rng = np.random.default_rng([seed, batch])
    out: Inputs = {}
    digits = _digits_rows(model, batch) if model.is_digits else None
    for spec in model.inputs:
        shape = tuple(batch if d is None else d for d in spec.shape)
        if digits is not None:
            out[spec.name] = np.ascontiguousarray(digits.reshape(shape), dtype=spec.dtype)
            continue
        kind = np.dtype(spec.dtype).kind
        if kind == "f":
            value = rng.standard_normal(shape).astype(spec.dtype)
        elif kind in "iu":
            value = rng.integers(0, 16, shape).astype(spec.dtype)
        elif kind == "b":
            value = rng.integers(0, 2, shape).astype(bool)
        else:
            raise BenchError(f"input '{spec.name}' has dtype {spec.dtype}, which bench cannot fill")
        out[spec.name] = value
    return out


def _digits_rows(model: BenchModel, batch: int) -> np.ndarray:
    from ..samples import load_digits_split

    test = load_digits_split().x_test
    rows = np.resize(np.arange(len(test)), batch)  # cycle through the held-out digits
    return np.asarray(test[rows], dtype=np.float32)


def outputs_delta(
    got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> tuple[float, float]:
    """Max absolute difference and cosine similarity over all outputs (matched by name)."""
    missing = sorted(set(expected) - set(got))
    if missing:
        raise BenchError(f"outputs {missing} are missing (got {sorted(got)})")
    a = np.concatenate([np.asarray(got[k], np.float64).ravel() for k in sorted(expected)])
    b = np.concatenate([np.asarray(expected[k], np.float64).ravel() for k in sorted(expected)])
    if a.shape != b.shape:
        raise BenchError(f"outputs have {a.size} values, the baseline's {b.size}")
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(np.dot(a, b) / norms) if norms > 0 else float(np.array_equal(a, b))
    return max_abs, cosine


def parse_shape(text: str) -> tuple[str, Shape]:
    """NAME=d0,d1,... with the batch dim as none (as `ember compile --input-shape`)."""
    name, sep, dims = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--input-shape wants NAME=d0,d1,..., got {text!r}")
    try:
        shape = tuple(
            None if d.strip().lower() in ("none", "batch", "?") else int(d) for d in dims.split(",")
        )
    except ValueError:
        raise ValueError(f"bad dimension in --input-shape {text!r}") from None
    return name, shape


def positive_ints(text: str, what: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32] (sorted, unique); errors name the option and the bad value."""
    parts: Sequence[str] = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = sorted({int(p) for p in parts})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise ValueError(f"{what} wants positive integers like 1,8,32, got {text!r}")
    return values
