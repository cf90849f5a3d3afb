"""The model registry: numbered versions of artifacts in a content-addressed store, aliases that
point at versions, and a history of every change, indexed by SQLite so that many processes can
share one registry directory.

Layout of a registry root:
    registry.db                  SQLite index (WAL): models, versions, aliases, events
    blobs/<sha[:2]>/<sha>/       one read-only copy of each distinct artifact content
    tmp/                         staging copies and blobs on their way out
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..artifact import CHECKSUMS_FILE, Artifact
from ..errors import ArtifactNotFoundError, EmberError, IncompatibleArtifactError, IntegrityError
from ..model import Model
from ..model import load as load_model
from ._content import content_digest, differences, hash_tree, make_read_only

DB_FILE = "registry.db"
BLOBS_DIR = "blobs"
TMP_DIR = "tmp"
# How long a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT_S = 30.0
SCHEMA_VERSION = 1

# Kinds the registry writes itself; record_event may not forge them.
REGISTRY_EVENT_KINDS = frozenset({"register", "alias", "delete"})

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
# An alias never starts with a digit, so "3" always means version 3.
_ALIAS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_EVENT_KIND = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS models (
        name TEXT PRIMARY KEY,
        next_version INTEGER NOT NULL,
        created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS versions (
        name TEXT NOT NULL REFERENCES models(name),
        version INTEGER NOT NULL,
        digest TEXT NOT NULL,
        files TEXT NOT NULL,
        metadata TEXT NOT NULL,
        actor TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (name, version))""",
    "CREATE INDEX IF NOT EXISTS versions_by_digest ON versions(digest)",
    """CREATE TABLE IF NOT EXISTS aliases (
        name TEXT NOT NULL REFERENCES models(name),
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, alias))""",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        alias TEXT,
        version INTEGER,
        previous_version INTEGER,
        time REAL NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_name ON events(name, id)",
)


class RegistryError(EmberError):
    """A registry operation was refused or its input is invalid; the message says why."""

    code = "RegistryError"


class VersionNotFoundError(RegistryError, KeyError):
    """No such model, version or alias; the message lists what the registry does hold."""

    code = "NotFound"

    def __str__(self) -> str:
        # KeyError would print the message with quotes around it.
        return str(self.args[0]) if self.args else ""


class InvalidNameError(RegistryError, ValueError):
    """A model, alias or event name does not follow the registry's naming rules."""

    code = "InvalidArgument"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its content digest, when and by whom, its metadata and where the
    stored artifact directory lives (shared with every version of identical content)."""

    name: str
    version: int
    digest: str
    created_at: float
    metadata: dict[str, Any]
    actor: str
    path: Path


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of a model's history: a registration, alias move, deletion or recorded event.

    Alias moves carry the alias, the new `version` (None when removed) and `previous_version`
    (None when first set).
    """

    name: str
    kind: str
    alias: str | None
    version: int | None
    previous_version: int | None
    time: float
    reason: str
    actor: str
    detail: dict[str, Any]


def default_actor() -> str:
    """Who is acting, for the history: "user@host:pid"."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dump_mapping(value: Mapping[str, Any] | None, what: str) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise RegistryError(f"{what} must be a mapping (dict), got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} must be JSON serialisable: {exc}") from None


def _check_name(pattern: re.Pattern[str], value: object, what: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidNameError(f"invalid {what} {value!r}: expected {rule}")
    return value


def _check_model_name(name: object) -> str:
    return _check_name(
        _MODEL_NAME,
        name,
        "model name",
        "1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
    )


def _check_alias_name(alias: object) -> str:
    return _check_name(
        _ALIAS_NAME,
        alias,
        "alias",
        "1-64 letters, digits, '_', '.' or '-', starting with a letter or '_'",
    )


def _check_version_number(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"a version must be a positive integer, got {version!r}")
    return version


class Registry:
    """Versions, aliases and history of models, stored under one root directory.

    Thread-safe: one Registry may be shared by threads; a lock serialises its single SQLite
    connection, while copying and hashing artifacts run outside it. Process-safe: any number of
    processes may open the same root; every write runs in a `BEGIN IMMEDIATE` transaction, so
    version numbers, alias moves and history are serialised across processes. After a fork the
    child opens its own connection.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._blobs = self.root / BLOBS_DIR
        self._tmp = self.root / TMP_DIR
        for directory in (self.root, self._blobs, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Shared with the finalizer, which closes whatever connection is open at GC.
        self._slot = _ConnectionSlot()
        self._finalizer = weakref.finalize(self, self._slot.close)
        with self._lock:
            self._connection()

    # -- connection and transactions --------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        slot = self._slot
        if slot.connection is not None and slot.pid == os.getpid():
            return slot.connection
        conn = sqlite3.connect(
            self.root / DB_FILE,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # guarded by self._lock
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = _switch_to_wal(conn)
            if mode.lower() != "wal":
                raise RegistryError(
                    f"registry database {self.root / DB_FILE} cannot use WAL journaling "
                    f"(got {mode!r}); is the root on a network file system?"
                )
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found == 0:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif found != SCHEMA_VERSION:
                    raise RegistryError(
                        f"registry database {self.root / DB_FILE} has schema version {found}; "
                        f"this ember reads version {SCHEMA_VERSION}"
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        slot.pid, slot.connection = os.getpid(), conn
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (disk full, ...)
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot across several queries."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection; a later call reopens it."""
        with self._lock:
            self._slot.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- lookups ----------------------------------------------------------------------------

    def _require_model(self, conn: sqlite3.Connection, name: str) -> None:
        _check_model_name(name)
        if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is None:
            known = [row[0] for row in conn.execute("SELECT name FROM models ORDER BY name")]
            raise VersionNotFoundError(
                f"no model {name!r} in registry {self.root}; "
                f"models: {', '.join(known) if known else 'none registered'}"
            )

    def _require_version(self, conn: sqlite3.Connection, name: str, version: int) -> None:
        self._require_model(conn, name)
        _check_version_number(version)
        row = conn.execute(
            "SELECT 1 FROM versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        if row is None:
            known = [
                str(r[0])
                for r in conn.execute(
                    "SELECT version FROM versions WHERE name = ? ORDER BY version", (name,)
                )
            ]
            raise VersionNotFoundError(
                f"model {name!r} has no version {version}; "
                f"versions: {', '.join(known) if known else 'none'}"
            )

    def _resolve(self, conn: sqlite3.Connection, name: str, alias_or_version: str | int) -> int:
        self._require_model(conn, name)
        if isinstance(alias_or_version, int) and not isinstance(alias_or_version, bool):
            version = alias_or_version
        elif isinstance(alias_or_version, str) and alias_or_version.strip().isdecimal():
            version = int(alias_or_version.strip())
        elif isinstance(alias_or_version, str):
            row = conn.execute(
                "SELECT version FROM aliases WHERE name = ? AND alias = ?",
                (name, alias_or_version),
            ).fetchone()
            if row is None:
                known = self._aliases(conn, name)
                listed = ", ".join(f"{a} -> {v}" for a, v in known.items()) or "none set"
                raise VersionNotFoundError(
                    f"model {name!r} has no alias {alias_or_version!r}; aliases: {listed}"
                )
            version = int(row[0])
        else:
            raise RegistryError(
                f"expected a version number or alias name for model {name!r}, "
                f"got {alias_or_version!r}"
            )
        self._require_version(conn, name, version)
        return version

    @staticmethod
    def _aliases(conn: sqlite3.Connection, name: str) -> dict[str, int]:
        rows = conn.execute(
            "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,)
        )
        return {alias: int(version) for alias, version in rows}

    def _blob_path(self, digest: str) -> Path:
        return self._blobs / digest[:2] / digest

    def _version_record(
        self, name: str, alias_or_version: str | int
    ) -> tuple[int, str, dict[str, str]]:
        """(version, content digest, per-file sha256 map) of a version, from one snapshot."""
        with self._read() as conn:
            version = self._resolve(conn, name, alias_or_version)
            digest, files = conn.execute(
                "SELECT digest, files FROM versions WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
        return version, str(digest), json.loads(files)

    def resolve(self, name: str, alias_or_version: str | int) -> int:
        """The version number that `alias_or_version` means: 3, "3" or an alias such as
        "production"; VersionNotFoundError when it names nothing that exists."""
        with self._read() as conn:
            return self._resolve(conn, name, alias_or_version)

    def alias(self, name: str, alias: str) -> int | None:
        """The version `alias` points to, or None when the alias is not set."""
        _check_alias_name(alias)
        with self._read() as conn:
            self._require_model(conn, name)
            row = conn.execute(
                "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
        return None if row is None else int(row[0])

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of the model and the version it points to."""
        with self._read() as conn:
            self._require_model(conn, name)
            return self._aliases(conn, name)

    def models(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        with self._read() as conn:
            rows = conn.execute("SELECT DISTINCT name FROM versions ORDER BY name").fetchall()
        return [str(row[0]) for row in rows]

    def versions(self, name: str) -> list[ModelVersion]:
        """The model's versions, oldest first (deleted versions are gone)."""
        with self._read() as conn:
            self._require_model(conn, name)
            rows = conn.execute(
                "SELECT version, digest, created_at, metadata, actor FROM versions "
                "WHERE name = ? ORDER BY version",
                (name,),
            ).fetchall()
        return [
            ModelVersion(
                name=name,
                version=int(version),
                digest=str(digest),
                created_at=float(created_at),
                metadata=json.loads(metadata),
                actor=str(actor),
                path=self._blob_path(str(digest)),
            )
            for version, digest, created_at, metadata, actor in rows
        ]

    def history(self, name: str) -> list[HistoryEvent]:
        """Everything that happened to the model, oldest first."""
        with self._read() as conn:
            self._require_model(conn, name)
            rows = conn.execute(
                "SELECT kind, alias, version, previous_version, time, reason, actor, detail "
                "FROM events WHERE name = ? ORDER BY id",
                (name,),
            ).fetchall()
        return [
            HistoryEvent(
                name=name,
                kind=str(kind),
                alias=alias,
                version=None if version is None else int(version),
                previous_version=None if previous is None else int(previous),
                time=float(at),
                reason=str(reason),
                actor=str(actor),
                detail=json.loads(detail),
            )
            for kind, alias, version, previous, at, reason, actor, detail in rows
        ]

    # -- artifacts --------------------------------------------------------------------------

    def artifact_path(self, name: str, alias_or_version: str | int, *, verify: bool = True) -> Path:
        """The stored artifact directory of a version. With `verify`, every file is hashed and
        compared with the registry's record first; IntegrityError names any file that differs,
        is missing or was added."""
        version, digest, files = self._version_record(name, alias_or_version)
        path = self._blob_path(digest)
        if not verify:
            return path
        if not path.is_dir():
            raise IntegrityError(
                f"stored artifact of model {name!r} version {version} is missing: {path} "
                "does not exist"
            )
        problems = differences(files, hash_tree(path))
        if problems:
            raise IntegrityError(
                f"stored artifact of model {name!r} version {version} ({path}) does not match "
                f"the registry's record: {'; '.join(problems)}; it will not be used"
            )
        return path

    def load(self, name: str, alias_or_version: str | int) -> Model:
        """Verify the stored artifact against the registry's record, then `ember.load` it."""
        return load_model(self.artifact_path(name, alias_or_version, verify=True))

    def register(
        self,
        name: str,
        artifact: str | os.PathLike[str] | Artifact,
        metadata: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> int:
        """Copy an artifact directory into the store as the model's next version (1, 2, ...).

        The artifact's checksums must verify (IntegrityError otherwise); one built for another
        CPU is accepted and refused only when loaded. Identical content registered again becomes
        a new version sharing the stored copy.
        """
        _check_model_name(name)
        metadata_json = _dump_mapping(metadata, "metadata")
        source = Path(artifact.path if isinstance(artifact, Artifact) else artifact)
        if not source.is_dir():
            raise ArtifactNotFoundError(
                f"cannot register {source} as model {name!r}: not an artifact directory"
            )
        # Checksums are verified before compatibility, so an IncompatibleArtifactError means the
        # content is intact: an artifact built for another machine may be stored here.
        with contextlib.suppress(IncompatibleArtifactError):
            Artifact(source).verify()
        actor = actor or default_actor()
        staging = Path(tempfile.mkdtemp(prefix="register-", dir=self._tmp))
        try:
            staged = staging / "artifact"
            shutil.copytree(source, staged, symlinks=False)
            files = hash_tree(staged)
            _check_copy_matches_checksums(source, staged, files)
            digest = content_digest(files)
            make_read_only(staged)
            target = self._blob_path(digest)
            # Hash an existing copy outside the write lock; re-checked under it only if needed.
            existing_ok = target.is_dir() and not differences(files, hash_tree(target))
            with self._write() as conn:
                self._store_blob(staged, target, files, existing_ok, staging)
                conn.execute(
                    "INSERT OR IGNORE INTO models (name, next_version, created_at) "
                    "VALUES (?, 1, ?)",
                    (name, time.time()),
                )
                # Under BEGIN IMMEDIATE no other writer can take the same number. The counter
                # never goes back, so a deleted version's number is never reused.
                (version,) = conn.execute(
                    "SELECT max(next_version, coalesce((SELECT max(version) + 1 FROM versions "
                    "WHERE name = ?), 1)) FROM models WHERE name = ?",
                    (name, name),
                ).fetchone()
                now = time.time()
                conn.execute(
                    "INSERT INTO versions (name, version, digest, files, metadata, actor, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, version, digest, json.dumps(files), metadata_json, actor, now),
                )
                conn.execute(
                    "UPDATE models SET next_version = ? WHERE name = ?", (version + 1, name)
                )
                self._insert_event(
                    conn,
                    name,
                    "register",
                    version=version,
                    actor=actor,
                    detail={"digest": digest, "source": str(source.absolute())},
                    at=now,
                )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return int(version)

    def _store_blob(
        self,
        staged: Path,
        target: Path,
        files: Mapping[str, str],
        existing_ok: bool,
        staging: Path,
    ) -> None:
        """Move the staged copy into place, under the write lock (so garbage collection cannot
        remove the blob between here and the version's INSERT)."""
        if target.is_dir() and (existing_ok or not differences(files, hash_tree(target))):
            return  # identical content is already stored; the staged copy is discarded
        if target.exists():
            # A damaged copy of this content (its versions fail verification): replace it.
            target.rename(staging / "damaged")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, target)

    # -- aliases, events, deletion ----------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        reason: str = "",
        *,
        actor: str | None = None,
    ) -> None:
        """Point `alias` at `version`, recording the move (previous version, reason, actor)."""
        self._move_alias(name, alias, _check_version_number(version), reason, actor, {})

    def remove_alias(
        self, name: str, alias: str, reason: str = "", *, actor: str | None = None
    ) -> None:
        """Unset `alias` (recorded as a move to version None); VersionNotFoundError if unset."""
        self._move_alias(name, alias, None, reason, actor, {})

    def rollback(
        self,
        name: str,
        alias: str = "production",
        to: str | int | None = None,
        reason: str = "",
        *,
        actor: str | None = None,
    ) -> int:
        """Move `alias` back: to `to`, or else to the version it pointed at before its latest
        move. Returns the version the alias now points to."""
        _check_alias_name(alias)
        with self._write() as conn:
            self._require_model(conn, name)
            if to is not None:
                target = self._resolve(conn, name, to)
            else:
                row = conn.execute(
                    "SELECT previous_version FROM events WHERE name = ? AND kind = 'alias' "
                    "AND alias = ? ORDER BY id DESC LIMIT 1",
                    (name, alias),
                ).fetchone()
                if row is None or row[0] is None:
                    raise RegistryError(
                        f"alias {alias!r} of model {name!r} has no earlier version to roll back "
                        "to; name one explicitly (to=..., or --to VERSION on the command line)"
                    )
                target = int(row[0])
            self._move_alias_in(conn, name, alias, target, reason, actor, {"via": "rollback"})
        return target

    def _move_alias(
        self,
        name: str,
        alias: str,
        version: int | None,
        reason: str,
        actor: str | None,
        detail: Mapping[str, Any],
    ) -> None:
        _check_alias_name(alias)
        with self._write() as conn:
            self._move_alias_in(conn, name, alias, version, reason, actor, detail)

    def _move_alias_in(
        self,
        conn: sqlite3.Connection,
        name: str,
        alias: str,
        version: int | None,
        reason: str,
        actor: str | None,
        detail: Mapping[str, Any],
    ) -> None:
        if version is None:
            self._require_model(conn, name)
        else:
            self._require_version(conn, name, version)
        row = conn.execute(
            "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
        ).fetchone()
        previous = None if row is None else int(row[0])
        if version is None:
            if previous is None:
                raise VersionNotFoundError(f"model {name!r} has no alias {alias!r} to remove")
            conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        else:
            conn.execute(
                "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
                "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                (name, alias, version),
            )
        self._insert_event(
            conn,
            name,
            "alias",
            alias=alias,
            version=version,
            previous_version=previous,
            reason=reason,
            actor=actor,
            detail=detail,
        )

    def record_event(
        self,
        name: str,
        kind: str,
        *,
        version: int | None = None,
        reason: str = "",
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append a free-form event (a router's "canary_start", "rollback", ...) to the model's
        history. `detail` must be JSON serialisable (numpy values are converted)."""
        _check_name(_EVENT_KIND, kind, "event kind", "a word of letters, digits, '_', '.' or '-'")
        if kind in REGISTRY_EVENT_KINDS:
            raise RegistryError(
                f"event kind {kind!r} is written by the registry itself; use set_alias, register "
                "or delete, or another kind"
            )
        if version is not None:
            _check_version_number(version)
        with self._write() as conn:
            self._require_model(conn, name)
            self._insert_event(
                conn, name, kind, version=version, reason=reason, actor=actor, detail=detail
            )

    def _insert_event(
        self,
        conn: sqlite3.Connection,
        name: str,
        kind: str,
        *,
        alias: str | None = None,
        version: int | None = None,
        previous_version: int | None = None,
        reason: str = "",
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        if not isinstance(reason, str):
            raise RegistryError(f"reason must be a string, got {type(reason).__name__}")
        conn.execute(
            "INSERT INTO events (name, kind, alias, version, previous_version, time, reason, "
            "actor, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                kind,
                alias,
                version,
                previous_version,
                time.time() if at is None else at,
                reason,
                actor or default_actor(),
                _dump_mapping(detail, "event detail"),
            ),
        )

    def delete(self, name: str, version: int, *, actor: str | None = None) -> None:
        """Remove a version; refused while an alias points at it. Its stored copy is removed
        once no other version shares it. The number is never reused."""
        _check_version_number(version)
        with self._write() as conn:
            self._require_version(conn, name, version)
            pointing = [a for a, v in self._aliases(conn, name).items() if v == version]
            if pointing:
                raise RegistryError(
                    f"refusing to delete model {name!r} version {version}: "
                    f"{'aliases' if len(pointing) > 1 else 'alias'} {', '.join(pointing)} "
                    f"{'point' if len(pointing) > 1 else 'points'} at it; move or remove "
                    f"{'them' if len(pointing) > 1 else 'it'} first"
                )
            (digest,) = conn.execute(
                "SELECT digest FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            conn.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, version))
            self._insert_event(
                conn, name, "delete", version=version, actor=actor, detail={"digest": digest}
            )
        self._collect_blob(str(digest))

    def _collect_blob(self, digest: str) -> None:
        """Remove a stored copy that no version references. Decided under the write lock, where
        registrations place blobs, so a copy being registered again is never removed."""
        target = self._blob_path(digest)
        doomed = self._tmp / f"collect-{uuid.uuid4().hex}"
        with self._write() as conn:
            referenced = conn.execute(
                "SELECT 1 FROM versions WHERE digest = ? LIMIT 1", (digest,)
            ).fetchone()
            if referenced or not target.exists():
                return
            target.rename(doomed)
            with contextlib.suppress(OSError):  # the <sha[:2]> directory, if now empty
                target.parent.rmdir()
        shutil.rmtree(doomed, ignore_errors=True)


def _check_copy_matches_checksums(source: Path, copy: Path, files: Mapping[str, str]) -> None:
    """The copy must agree with its own checksums.json, as the source did when it was verified
    (guards against the source changing while it was copied)."""
    try:
        recorded = json.loads((copy / CHECKSUMS_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"artifact {source} changed while it was being registered: "
            f"its {CHECKSUMS_FILE} is unreadable ({exc})"
        ) from None
    changed = [name for name, sha in recorded.items() if files.get(name) != sha]
    if changed:
        raise IntegrityError(
            f"artifact {source} changed while it was being registered: "
            f"{', '.join(repr(n) for n in changed)} no longer match checksums.json"
        )


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """Set WAL journaling and return the mode SQLite reports.

    Switching a fresh database to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY
    without calling the busy handler when waiting could deadlock (several processes opening a
    new root at once), so the switch is retried here for up to BUSY_TIMEOUT_S.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause_s = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as error:
            code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+; 3.10 has the text
            if code is None:
                busy = "locked" in str(error)  # "database is locked" / "... table is locked"
            else:
                busy = (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # primary code
            if not busy or time.monotonic() + pause_s > deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.05)


class _ConnectionSlot:
    """The open connection and the process that opened it (a forked child opens its own)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.connection: sqlite3.Connection | None = None

    def close(self) -> None:
        connection, pid = self.connection, self.pid
        self.connection = self.pid = None
        if connection is not None and pid == os.getpid():
            connection.close()
