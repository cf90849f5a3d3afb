"""Content addressing for stored artifacts: per-file sha256 maps and the directory digest."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..artifact import sha256_file


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, keyed by its '/'-separated relative path."""
    files: dict[str, str] = {}
    for parent, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(parent, filename)
            files[path.relative_to(directory).as_posix()] = sha256_file(path)
    return dict(sorted(files.items()))


def content_digest(files: Mapping[str, str]) -> str:
    """The artifact's identity: sha256 over its sorted (relative name, file sha256) pairs.

    Each pair is fed as "name\\0sha256\\n", so no two different file maps share a digest input.
    """
    digest = hashlib.sha256()
    for name, file_sha256 in sorted(files.items()):
        digest.update(f"{name}\0{file_sha256}\n".encode())
    return digest.hexdigest()


def differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """One line per file that differs, is missing or was added; empty when the maps agree."""
    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            problems.append(f"'{name}' is missing")
        elif name not in expected:
            problems.append(f"'{name}' was added (not in the registry's record)")
        elif expected[name] != actual[name]:
            problems.append(
                f"'{name}' sha256 differs: expected {expected[name]}, got {actual[name]}"
            )
    return problems


def make_read_only(directory: Path) -> None:
    """Clear the write bits of every file under `directory` (directories stay writable, so the
    store can still remove them): stored artifacts are never edited in place."""
    for parent, _dirnames, filenames in os.walk(directory):
        for filename in filenames:
            path = Path(parent, filename)
            mode = path.stat().st_mode
            path.chmod(stat.S_IMODE(mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
