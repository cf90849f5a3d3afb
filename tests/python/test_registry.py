"""ember.registry: versions, aliases, integrity, history, concurrent writers and the CLI."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import ember
from ember import _core
from ember.artifact import write_checksums
from ember.cli import main
from ember.registry import (
    HistoryEvent,
    InvalidNameError,
    ModelVersion,
    Registry,
    RegistryError,
    VersionNotFoundError,
    content_digest,
    hash_tree,
)
from ember.registry.store import DB_FILE


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as reg:
        yield reg


def _variant(artifact: ember.Artifact, tmp_path: Path, note: str) -> Path:
    """The same model with one extra file: still a valid artifact, but different content."""
    path = tmp_path / f"variant-{note}.ember"
    shutil.copytree(artifact.path, path)
    (path / "NOTES.txt").write_text(note)
    return path


def _writable(path: Path) -> Path:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return path


def _flip_byte(path: Path) -> None:
    data = bytearray(_writable(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _blob_dirs(registry: Registry) -> list[Path]:
    return sorted(p for p in (registry.root / "blobs").glob("*/*") if p.is_dir())


# -- registration ------------------------------------------------------------------------------


def test_register_numbers_versions_and_shares_identical_content(
    registry: Registry, mlp_artifact: ember.Artifact
) -> None:
    before = time.time()
    v1 = registry.register("mlp", mlp_artifact, {"accuracy": 0.91, "tags": ["a", "b"]})
    v2 = registry.register("mlp", str(mlp_artifact.path), {"accuracy": np.float32(0.5)})
    assert (v1, v2) == (1, 2)
    assert registry.models() == ["mlp"]

    first, second = registry.versions("mlp")
    assert isinstance(first, ModelVersion)
    assert (first.name, first.version, second.version) == ("mlp", 1, 2)
    expected_digest = content_digest(hash_tree(mlp_artifact.path))
    assert first.digest == second.digest == expected_digest
    assert (
        first.path
        == second.path
        == registry.root / "blobs" / expected_digest[:2] / (expected_digest)
    )
    assert _blob_dirs(registry) == [first.path]  # one stored copy for both versions
    assert first.metadata == {"accuracy": 0.91, "tags": ["a", "b"]}
    assert second.metadata == {"accuracy": 0.5}  # numpy scalars are stored as plain numbers
    assert before <= first.created_at <= second.created_at <= time.time()
    assert re.fullmatch(rf".+@.+:{os.getpid()}", first.actor)

    stored = first.path
    assert sorted(p.name for p in stored.iterdir()) == [
        "checksums.json",
        "manifest.json",
        "model.so",
    ]
    assert (stored / "model.so").read_bytes() == (mlp_artifact.path / "model.so").read_bytes()
    assert stat.S_IMODE((stored / "model.so").stat().st_mode) & 0o222 == 0  # read-only
    assert list((registry.root / "tmp").iterdir()) == []  # staging copies are cleaned up


def test_distinct_content_gets_its_own_blob(
    registry: Registry, mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    registry.register("mlp", mlp_artifact)
    registry.register("mlp", _variant(mlp_artifact, tmp_path, "v2"), actor="ci")
    first, second = registry.versions("mlp")
    assert first.digest != second.digest and second.actor == "ci"
    assert _blob_dirs(registry) == sorted([first.path, second.path])
    assert (registry.artifact_path("mlp", 2) / "NOTES.txt").read_text() == "v2"


def test_register_refuses_artifact_that_fails_verification(
    registry: Registry, mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.ember"
    shutil.copytree(mlp_artifact.path, broken)
    _flip_byte(broken / "model.so")
    with pytest.raises(ember.IntegrityError, match=r"model\.so"):
        registry.register("mlp", broken)
    with pytest.raises(ember.ArtifactNotFoundError, match="not an artifact directory"):
        registry.register("mlp", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ember.ArtifactNotFoundError, match=r"no manifest\.json"):
        registry.register("mlp", tmp_path / "empty")
    assert registry.models() == []
    assert _blob_dirs(registry) == []
    assert list((registry.root / "tmp").iterdir()) == []


def test_artifact_for_another_machine_is_stored_but_not_loaded(
    registry: Registry, mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign.ember"
    shutil.copytree(mlp_artifact.path, foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["target"]["arch"] = "aarch64" if _core.host_arch() != "aarch64" else "x86_64"
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    write_checksums(foreign)  # consistent, as if built on that other machine
    assert registry.register("mlp", foreign) == 1
    assert registry.artifact_path("mlp", 1).is_dir()  # intact content
    with pytest.raises(ember.IncompatibleArtifactError, match="compiled for"):
        registry.load("mlp", 1)


def test_invalid_input_is_refused_with_clear_messages(
    registry: Registry, mlp_artifact: ember.Artifact
) -> None:
    with pytest.raises(InvalidNameError, match="invalid model name 'has space'"):
        registry.register("has space", mlp_artifact)
    with pytest.raises(RegistryError, match="metadata must be JSON serialisable"):
        registry.register("mlp", mlp_artifact, {"model": object()})
    with pytest.raises(RegistryError, match="metadata must be a mapping"):
        registry.register("mlp", mlp_artifact, ["not", "a", "dict"])  # type: ignore[arg-type]
    registry.register("mlp", mlp_artifact)
    with pytest.raises(InvalidNameError, match=r"invalid alias '3'.*starting with a letter"):
        registry.set_alias("mlp", "3", 1)
    with pytest.raises(RegistryError, match="positive integer, got '1'"):
        registry.set_alias("mlp", "production", "1")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="version number or alias name"):
        registry.resolve("mlp", 1.0)  # type: ignore[arg-type]


# -- aliases and lookups -----------------------------------------------------------------------


def test_aliases_and_resolve(registry: Registry, mlp_artifact: ember.Artifact) -> None:
    for _ in range(3):
        registry.register("mlp", mlp_artifact)
    assert registry.alias("mlp", "production") is None
    assert registry.aliases("mlp") == {}
    registry.set_alias("mlp", "production", 3, "best offline")
    registry.set_alias("mlp", "staging", 2)
    assert registry.alias("mlp", "production") == 3
    assert registry.aliases("mlp") == {"production": 3, "staging": 2}
    assert registry.resolve("mlp", 3) == 3
    assert registry.resolve("mlp", "1") == 1
    assert registry.resolve("mlp", "production") == 3
    assert registry.resolve("mlp", "staging") == 2
    assert registry.artifact_path("mlp", "production") == registry.versions("mlp")[2].path

    registry.set_alias("mlp", "production", 1, "regression in 3")
    assert registry.resolve("mlp", "production") == 1
    registry.remove_alias("mlp", "staging", "done")
    assert registry.aliases("mlp") == {"production": 1}
    with pytest.raises(VersionNotFoundError, match="no alias 'staging' to remove"):
        registry.remove_alias("mlp", "staging")


def test_unknown_model_version_and_alias_name_what_exists(
    registry: Registry, mlp_artifact: ember.Artifact
) -> None:
    registry.register("mlp", mlp_artifact)
    registry.register("mlp", mlp_artifact)
    registry.register("other", mlp_artifact)
    registry.set_alias("mlp", "production", 2)

    with pytest.raises(VersionNotFoundError) as info:
        registry.resolve("nope", 1)
    assert str(info.value) == f"no model 'nope' in registry {registry.root}; models: mlp, other"
    assert isinstance(info.value, KeyError) and isinstance(info.value, ember.EmberError)
    with pytest.raises(
        VersionNotFoundError, match=r"^model 'mlp' has no version 7; versions: 1, 2$"
    ):
        registry.artifact_path("mlp", 7)
    with pytest.raises(VersionNotFoundError, match=r"has no version 9; versions: 1, 2"):
        registry.load("mlp", "9")
    with pytest.raises(
        VersionNotFoundError, match=r"^model 'mlp' has no alias 'canary'; aliases: production -> 2$"
    ):
        registry.resolve("mlp", "canary")
    with pytest.raises(VersionNotFoundError, match="has no version 5"):
        registry.set_alias("mlp", "production", 5)
    for call in (registry.versions, registry.history, registry.aliases):
        with pytest.raises(VersionNotFoundError, match="no model 'ghost'"):
            call("ghost")
    with pytest.raises(VersionNotFoundError, match="no model 'ghost'"):
        registry.alias("ghost", "production")
    assert registry.aliases("mlp") == {"production": 2}  # failed calls changed nothing


def test_load_runs_the_stored_model(
    registry: Registry, mlp_artifact: ember.Artifact, mlp_model: ember.Model
) -> None:
    registry.register("mlp", mlp_artifact)
    registry.set_alias("mlp", "production", 1)
    model = registry.load("mlp", "production")
    assert isinstance(model, ember.Model)
    assert model.artifact.path == registry.versions("mlp")[0].path
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_array_equal(model.run({"x": x})["y"], mlp_model.run({"x": x})["y"])


# -- integrity ---------------------------------------------------------------------------------


def _flip_library(path: Path) -> str:
    _flip_byte(path / "model.so")
    return r"'model\.so' sha256 differs"


def _flip_manifest(path: Path) -> str:
    _flip_byte(path / "manifest.json")
    return r"'manifest\.json' sha256 differs"


def _delete_checksums(path: Path) -> str:
    (path / "checksums.json").unlink()
    return r"'checksums\.json' is missing"


def _add_file(path: Path) -> str:
    (path / "backdoor.so").write_bytes(b"\x7fELF")
    return r"'backdoor\.so' was added"


@pytest.mark.parametrize("tamper", [_flip_library, _flip_manifest, _delete_checksums, _add_file])
def test_tampered_stored_artifact_is_refused(
    registry: Registry, mlp_artifact: ember.Artifact, tamper: Callable[[Path], str]
) -> None:
    registry.register("mlp", mlp_artifact)
    registry.set_alias("mlp", "production", 1)
    stored = registry.artifact_path("mlp", 1)
    message = tamper(stored)
    with pytest.raises(ember.IntegrityError, match=message) as info:
        registry.artifact_path("mlp", "production")
    assert "model 'mlp' version 1" in str(info.value)
    with pytest.raises(ember.IntegrityError, match=message):
        registry.load("mlp", 1)
    assert registry.artifact_path("mlp", 1, verify=False) == stored  # the caller's own risk


def test_missing_blob_directory_is_refused(
    registry: Registry, mlp_artifact: ember.Artifact
) -> None:
    registry.register("mlp", mlp_artifact)
    shutil.rmtree(registry.versions("mlp")[0].path)
    with pytest.raises(ember.IntegrityError, match="stored artifact of model 'mlp' version 1 is"):
        registry.load("mlp", 1)


def test_registering_the_content_again_replaces_a_damaged_copy(
    registry: Registry, mlp_artifact: ember.Artifact
) -> None:
    registry.register("mlp", mlp_artifact)
    _flip_library(registry.artifact_path("mlp", 1))
    with pytest.raises(ember.IntegrityError):
        registry.artifact_path("mlp", 1)
    assert registry.register("mlp", mlp_artifact) == 2
    # Both versions share the content, and the store now holds it intact again.
    assert registry.artifact_path("mlp", 1) == registry.artifact_path("mlp", 2)
    assert len(_blob_dirs(registry)) == 1


# -- deletion and garbage collection ---------------------------------------------------------


def test_delete_refuses_aliased_version_and_collects_unreferenced_blobs(
    registry: Registry, mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    registry.register("mlp", mlp_artifact)  # 1: content A
    registry.register("mlp", mlp_artifact)  # 2: content A, same blob
    registry.register("mlp", _variant(mlp_artifact, tmp_path, "b"))  # 3: content B
    blob_a, _, blob_b = (v.path for v in registry.versions("mlp"))
    registry.set_alias("mlp", "production", 1)
    registry.set_alias("mlp", "staging", 1)

    with pytest.raises(RegistryError, match=r"version 1: aliases production, staging point at it"):
        registry.delete("mlp", 1)
    assert [v.version for v in registry.versions("mlp")] == [1, 2, 3]

    registry.delete("mlp", 2, actor="janitor")
    assert blob_a.is_dir()  # version 1 still references it
    with pytest.raises(VersionNotFoundError, match="no version 2; versions: 1, 3"):
        registry.artifact_path("mlp", 2)
    with pytest.raises(VersionNotFoundError, match="no version 2"):
        registry.delete("mlp", 2)

    registry.delete("mlp", 3)
    assert not blob_b.exists() and _blob_dirs(registry) == [blob_a]

    registry.set_alias("mlp", "production", 1)
    registry.remove_alias("mlp", "staging")
    with pytest.raises(RegistryError, match="alias production points at it; move or remove it"):
        registry.delete("mlp", 1)
    registry.remove_alias("mlp", "production")
    registry.delete("mlp", 1)
    assert _blob_dirs(registry) == [] and list((registry.root / "tmp").iterdir()) == []
    assert registry.models() == []
    assert registry.versions("mlp") == []  # the model's history survives its versions
    assert registry.register("mlp", mlp_artifact) == 4  # numbers are never reused
    deletions = [(e.version, e.actor) for e in registry.history("mlp") if e.kind == "delete"]
    assert deletions[0] == (2, "janitor") and [v for v, _ in deletions] == [2, 3, 1]


# -- history ------------------------------------------------------------------------------------


def test_history_records_everything_in_order(
    registry: Registry, mlp_artifact: ember.Artifact
) -> None:
    registry.register("mlp", mlp_artifact, actor="alice")
    registry.register("mlp", mlp_artifact, actor="bob")
    registry.set_alias("mlp", "production", 1, "initial", actor="alice")
    registry.record_event(
        "mlp",
        "canary_start",
        version=2,
        reason="try v2",
        detail={"share": np.float64(0.05), "steps": (0.05, 1.0)},
    )
    registry.set_alias("mlp", "production", 2, "canary healthy", actor="router")
    registry.record_event("mlp", "rollback", version=2, reason="p99 too high", actor="router")
    registry.set_alias("mlp", "production", 1, "rolled back")
    registry.delete("mlp", 2)

    history = registry.history("mlp")
    assert all(isinstance(e, HistoryEvent) and e.name == "mlp" for e in history)
    assert [(e.kind, e.alias, e.version, e.previous_version) for e in history] == [
        ("register", None, 1, None),
        ("register", None, 2, None),
        ("alias", "production", 1, None),
        ("canary_start", None, 2, None),
        ("alias", "production", 2, 1),
        ("rollback", None, 2, None),
        ("alias", "production", 1, 2),
        ("delete", None, 2, None),
    ]
    times = [e.time for e in history]
    assert times == sorted(times)
    assert [e.actor for e in history[:3]] == ["alice", "bob", "alice"]
    assert history[3].detail == {"share": 0.05, "steps": [0.05, 1.0]}
    assert history[3].reason == "try v2"
    assert history[5].reason == "p99 too high" and history[5].actor == "router"
    assert history[0].detail["digest"] == registry.versions("mlp")[0].digest

    with pytest.raises(RegistryError, match="written by the registry itself"):
        registry.record_event("mlp", "alias", version=1)
    with pytest.raises(InvalidNameError, match="invalid event kind ''"):
        registry.record_event("mlp", "")
    with pytest.raises(VersionNotFoundError, match="no model 'ghost'"):
        registry.record_event("ghost", "weights")
    assert len(registry.history("mlp")) == len(history)


def test_rollback_goes_back_one_move_or_to_a_named_version(
    registry: Registry, mlp_artifact: ember.Artifact
) -> None:
    for _ in range(3):
        registry.register("mlp", mlp_artifact)
    with pytest.raises(RegistryError, match="alias 'production' of model 'mlp' has no earlier"):
        registry.rollback("mlp")
    registry.set_alias("mlp", "production", 1)
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("mlp")
    registry.set_alias("mlp", "production", 3)
    assert registry.rollback("mlp", reason="bad v3") == 1
    assert registry.alias("mlp", "production") == 1
    assert registry.rollback("mlp", to="3") == 3
    last = registry.history("mlp")[-1]
    assert (last.kind, last.previous_version, last.version, last.detail) == (
        "alias",
        1,
        3,
        {"via": "rollback"},
    )


# -- concurrency --------------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from ember.registry import Registry

root, artifact, writer, count, go = sys.argv[1:]
while not Path(go).exists():
    time.sleep(0.002)
registry = Registry(root)
for step in range(int(count)):
    version = registry.register("mlp", artifact, {"writer": int(writer), "step": step})
    registry.set_alias("mlp", "production", version, f"writer {writer} step {step}")
    print(version, flush=True)
"""

WRITERS = 4
VERSIONS_PER_WRITER = 10


def test_concurrent_writer_processes_get_gapless_versions_and_chained_alias_history(
    mlp_artifact: ember.Artifact, tmp_path: Path
) -> None:
    root, go = tmp_path / "registry", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(root),
                str(mlp_artifact.path),
                str(writer),
                str(VERSIONS_PER_WRITER),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for writer in range(WRITERS)
    ]
    go.touch()  # all writers start (and create the database) at the same moment
    printed: dict[int, list[int]] = {}
    for writer, child in enumerate(children):
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        printed[writer] = [int(line) for line in out.split()]

    total = WRITERS * VERSIONS_PER_WRITER
    with Registry(root) as registry:
        versions = registry.versions("mlp")
        history = registry.history("mlp")
        final_alias = registry.alias("mlp", "production")
    assert [v.version for v in versions] == list(range(1, total + 1))
    # Every registration is there, exactly once, under the version its writer was given.
    by_origin = {(v.metadata["writer"], v.metadata["step"]): v.version for v in versions}
    assert len(by_origin) == total
    for writer, got in printed.items():
        assert got == [by_origin[(writer, step)] for step in range(VERSIONS_PER_WRITER)]
        assert got == sorted(got)
    assert len({v.path for v in versions}) == 1  # identical content: one shared blob

    registrations = [e.version or 0 for e in history if e.kind == "register"]
    assert sorted(registrations) == list(range(1, total + 1))
    moves = [e for e in history if e.kind == "alias"]
    assert len(moves) == total
    assert sorted(e.version for e in moves if e.version is not None) == list(range(1, total + 1))
    assert moves[0].previous_version is None
    for before, after in itertools.pairwise(moves):
        assert after.previous_version == before.version
    assert final_alias == moves[-1].version
    assert len({e.actor for e in moves}) == WRITERS  # user@host:pid of each writer


def test_opening_a_new_root_waits_out_a_lock_sqlite_will_not_wait_for(tmp_path: Path) -> None:
    # Another process holds the write lock of a database still in rollback mode. Switching it to
    # WAL would deadlock, so SQLite answers "database is locked" at once instead of calling the
    # busy handler; processes opening a new root together hit this (a CI failure). Registry
    # must retry the switch and open once the lock is gone.
    root = tmp_path / "registry"
    root.mkdir()
    holder = sqlite3.connect(root / DB_FILE, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other(x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    try:
        started = time.monotonic()
        with Registry(root) as registry:
            assert registry.models() == []
        assert time.monotonic() - started >= 0.25  # it did wait for the holder
    finally:
        release.join()
        holder.close()


def test_threads_can_share_one_registry(registry: Registry, mlp_artifact: ember.Artifact) -> None:
    registry.register("mlp", mlp_artifact)
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                version = registry.register("mlp", mlp_artifact)
                registry.set_alias("mlp", "production", version)
                registry.artifact_path("mlp", "production")
                results.append(version)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == list(range(2, 14))
    moves = [e for e in registry.history("mlp") if e.kind == "alias"]
    assert [m.previous_version for m in moves[1:]] == [m.version for m in moves[:-1]]


# -- CLI ---------------------------------------------------------------------------------------


def _rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def test_cli_register_list_show_promote_rollback_history(
    mlp_artifact: ember.Artifact,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "registry"
    monkeypatch.setenv("EMBER_REGISTRY", str(root))
    art = str(mlp_artifact.path)
    digest = content_digest(hash_tree(mlp_artifact.path))

    assert main(["registry", "list"]) == 0
    assert capsys.readouterr().out.strip() == f"no models in registry {root}"

    assert main(["registry", "register", "mlp", art, "--metadata", '{"accuracy": 0.97}']) == 0
    assert capsys.readouterr().out.strip() == f"registered mlp version 1 (digest {digest[:12]})"
    other = tmp_path / "elsewhere"  # --root wins over the environment
    assert main(["registry", "--root", str(other), "register", "mlp", art]) == 0
    assert "version 1" in capsys.readouterr().out
    assert main(["registry", "register", "mlp", art]) == 0
    assert "registered mlp version 2" in capsys.readouterr().out
    with Registry(other) as elsewhere:
        assert [v.version for v in elsewhere.versions("mlp")] == [1]

    assert main(["registry", "promote", "mlp", "1", "--reason", "first"]) == 0
    assert capsys.readouterr().out.strip() == "mlp: production - -> 1"
    assert main(["registry", "promote", "mlp", "2"]) == 0
    assert capsys.readouterr().out.strip() == "mlp: production 1 -> 2"
    assert main(["registry", "promote", "mlp", "production", "--alias", "staging"]) == 0
    assert capsys.readouterr().out.strip() == "mlp: staging - -> 2"

    assert main(["registry", "list"]) == 0
    assert _rows(capsys.readouterr().out) == [
        ["MODEL", "VERSIONS", "LATEST", "ALIASES"],
        ["mlp", "2", "2", "production=2, staging=2"],
    ]

    assert main(["registry", "show", "mlp"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0] == ["VERSION", "DIGEST", "CREATED", "ALIASES", "ACTOR", "METADATA"]
    assert [r[0] for r in rows[1:]] == ["1", "2"]
    assert rows[1][1] == digest[:12] and rows[2][1] == digest[:12]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[1][2])
    assert rows[1][3] == "-" and rows[2][3] == "production, staging"
    assert rows[1][5] == '{"accuracy": 0.97}' and rows[2][5] == "-"

    assert main(["registry", "rollback", "mlp", "--reason", "p99 regression"]) == 0
    assert capsys.readouterr().out.strip() == "mlp: production 2 -> 1 (rolled back)"
    assert main(["registry", "rollback", "mlp", "--to", "2"]) == 0
    assert capsys.readouterr().out.strip() == "mlp: production 1 -> 2 (rolled back)"

    assert main(["registry", "history", "mlp"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0] == ["TIME", "KIND", "ALIAS", "VERSION", "ACTOR", "REASON", "DETAIL"]
    assert [(r[1], r[2], r[3]) for r in rows[1:]] == [
        ("register", "-", "1"),
        ("register", "-", "2"),
        ("alias", "production", "- -> 1"),
        ("alias", "production", "1 -> 2"),
        ("alias", "staging", "- -> 2"),
        ("alias", "production", "2 -> 1"),
        ("alias", "production", "1 -> 2"),
    ]
    assert rows[3][5] == "first" and rows[6][5] == "p99 regression"
    assert json.loads(rows[6][6]) == {"via": "rollback"}


def test_cli_errors_exit_1_with_a_message(
    mlp_artifact: ember.Artifact, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["registry", "--root", str(tmp_path / "registry")]
    assert main([*root, "show", "nope"]) == 1
    err = capsys.readouterr().err
    assert "VersionNotFoundError: no model 'nope'" in err and err.startswith("ember registry: ")

    assert main([*root, "register", "mlp", str(mlp_artifact.path), "--metadata", "[1]"]) == 1
    assert "--metadata must be a JSON object, got list" in capsys.readouterr().err
    assert main([*root, "register", "mlp", str(mlp_artifact.path), "--metadata", "{"]) == 1
    assert "--metadata is not valid JSON" in capsys.readouterr().err

    assert main([*root, "register", "mlp", str(mlp_artifact.path)]) == 0
    capsys.readouterr()
    assert main([*root, "rollback", "mlp"]) == 1
    assert "alias 'production' of model 'mlp' has no earlier version" in capsys.readouterr().err
    assert main([*root, "promote", "mlp", "4"]) == 1
    assert "model 'mlp' has no version 4; versions: 1" in capsys.readouterr().err
    assert main([*root, "promote", "mlp", "canary"]) == 1
    assert "has no alias 'canary'; aliases: none set" in capsys.readouterr().err
