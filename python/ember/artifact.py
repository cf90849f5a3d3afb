"""The artifact format: a directory with manifest.json, the compiled library and checksums.json.

The manifest says exactly what the artifact is; checksums.json proves its files are the ones that
were built. The C++ core verifies both before loading any code (see cpp/src/artifact.cc).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactNotFoundError, IntegrityError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
CHECKSUMS_FILE = "checksums.json"
LIBRARY_FILE = "model.so"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, dtype and shape, with None at the batch axis."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    batch_axis: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest form: the batch axis is stored as -1."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": [-1 if d is None else int(d) for d in self.shape],
            "batch_axis": -1 if self.batch_axis is None else self.batch_axis,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Read the manifest form written by to_json."""
        axis = int(data["batch_axis"])
        shape = tuple(None if int(d) < 0 else int(d) for d in data["shape"])
        return cls(str(data["name"]), str(data["dtype"]), shape, None if axis < 0 else axis)

    def __str__(self) -> str:
        dims = ", ".join("batch" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: Path) -> dict[str, str]:
    """Record the sha256 of every regular file in `directory` (except checksums.json itself)."""
    files = {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != CHECKSUMS_FILE
    }
    payload = {"algorithm": "sha256", "files": files}
    (directory / CHECKSUMS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return files


class Artifact:
    """A compiled model on disk. Reading its manifest never loads code; `ember.load` does."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ArtifactNotFoundError(
                f"'{self.path}' is not an ember artifact: no {MANIFEST_FILE}"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"{manifest_path} is not valid JSON: {exc}") from exc

    @property
    def model_name(self) -> str:
        return str(self.manifest["model_name"])

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(s) for s in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(s) for s in self.manifest["outputs"]]

    @property
    def batch_sizes(self) -> tuple[int, ...] | None:
        sizes = self.manifest.get("batch_sizes")
        return None if sizes is None else tuple(int(b) for b in sizes)

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.manifest["target"])

    def verify(self) -> None:
        """Check checksums and host compatibility in the C++ core, without loading code."""
        from . import _core

        _core.verify_artifact(str(self.path))

    def __repr__(self) -> str:
        return (
            f"Artifact({str(self.path)!r}, model={self.model_name!r}, "
            f"target={self.target.get('name')!r}, batch_sizes={self.batch_sizes})"
        )
