"""`ember registry ...`: list, show, register, promote, rollback and history from the shell.

Errors are EmberErrors, reported by `ember.cli.main` like every other command (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .store import Registry, RegistryError

ROOT_ENV = "EMBER_REGISTRY"
DEFAULT_ROOT = "./ember-registry"
DIGEST_PREFIX = 12


def add_registry_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `registry` command and its subcommands to ember's parser."""
    parser = sub.add_parser("registry", help="manage model versions, aliases and their history")
    parser.add_argument(
        "--root",
        default=None,
        help=f"registry directory (default: ${ROOT_ENV}, else {DEFAULT_ROOT})",
    )
    commands = parser.add_subparsers(dest="registry_command", required=True)

    p = commands.add_parser("list", help="models with their version count and aliases")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser("show", help="a model's versions: digest, created, aliases, metadata")
    p.add_argument("name")
    p.set_defaults(func=_cmd_show)

    p = commands.add_parser("register", help="store an artifact directory as the next version")
    p.add_argument("name")
    p.add_argument("artifact", help="artifact directory (from `ember compile`)")
    p.add_argument("--metadata", default=None, help="JSON object, e.g. '{\"accuracy\": 0.97}'")
    p.set_defaults(func=_cmd_register)

    p = commands.add_parser("promote", help="point an alias at a version")
    p.add_argument("name")
    p.add_argument("version", help="version number, or an alias whose version to take")
    p.add_argument("--alias", default="production", help="alias to move (default: production)")
    p.add_argument("--reason", default="", help="why, for the history")
    p.set_defaults(func=_cmd_promote)

    p = commands.add_parser(
        "rollback", help="move an alias back to where it pointed before its latest move"
    )
    p.add_argument("name")
    p.add_argument("--alias", default="production", help="alias to move (default: production)")
    p.add_argument("--to", default=None, help="version (or alias) to roll back to instead")
    p.add_argument("--reason", default="", help="why, for the history")
    p.set_defaults(func=_cmd_rollback)

    p = commands.add_parser("history", help="registrations, alias moves, deletions and events")
    p.add_argument("name")
    p.set_defaults(func=_cmd_history)


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(args.root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _compact(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True) if value else "-"


def _version_or_dash(version: int | None) -> str:
    return "-" if version is None else str(version)


def _cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    with registry:
        rows = []
        for name in registry.models():
            versions = registry.versions(name)
            aliases = registry.aliases(name)
            rows.append(
                (
                    name,
                    str(len(versions)),
                    str(versions[-1].version) if versions else "-",
                    ", ".join(f"{a}={v}" for a, v in aliases.items()) or "-",
                )
            )
    if not rows:
        print(f"no models in registry {registry.root}")
        return 0
    print(format_table(("MODEL", "VERSIONS", "LATEST", "ALIASES"), rows))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    with registry:
        versions = registry.versions(args.name)
        aliases = registry.aliases(args.name)
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    rows = [
        (
            str(v.version),
            v.digest[:DIGEST_PREFIX],
            _when(v.created_at),
            ", ".join(by_version.get(v.version, [])) or "-",
            v.actor,
            _compact(v.metadata),
        )
        for v in versions
    ]
    if not rows:
        print(f"model {args.name!r} has no versions left")
        return 0
    print(format_table(("VERSION", "DIGEST", "CREATED", "ALIASES", "ACTOR", "METADATA"), rows))
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    metadata = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as exc:
            raise RegistryError(f"--metadata is not valid JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise RegistryError(
                f"--metadata must be a JSON object, got {type(metadata).__name__}: {args.metadata}"
            )
    registry = _registry(args)
    with registry:
        version = registry.register(args.name, args.artifact, metadata)
        digest = registry.versions(args.name)[-1].digest
    print(f"registered {args.name} version {version} (digest {digest[:DIGEST_PREFIX]})")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    with registry:
        version = registry.resolve(args.name, args.version)
        previous = registry.alias(args.name, args.alias)
        registry.set_alias(args.name, args.alias, version, args.reason)
    print(f"{args.name}: {args.alias} {_version_or_dash(previous)} -> {version}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    registry = _registry(args)
    with registry:
        previous = registry.alias(args.name, args.alias)
        version = registry.rollback(args.name, args.alias, args.to, args.reason)
    print(f"{args.name}: {args.alias} {_version_or_dash(previous)} -> {version} (rolled back)")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    registry = _registry(args)
    with registry:
        events = registry.history(args.name)
    rows = []
    for event in events:
        if event.kind == "alias":
            version = f"{_version_or_dash(event.previous_version)} -> "
            version += _version_or_dash(event.version)
        else:
            version = _version_or_dash(event.version)
        rows.append(
            (
                _when(event.time),
                event.kind,
                event.alias or "-",
                version,
                event.actor,
                event.reason or "-",
                _compact(event.detail),
            )
        )
    print(format_table(("TIME", "KIND", "ALIAS", "VERSION", "ACTOR", "REASON", "DETAIL"), rows))
    return 0
