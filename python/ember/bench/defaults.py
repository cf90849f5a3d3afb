"""Defaults shared by the `ember bench` options and the runners (kept import-light for the CLI)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_BUNDLE = Path("build/aarch64-bundle")
# qemu's -L: the cross toolchain's sysroot, unless Debian's multiarch arm64 libc is installed (it
# is, with libdnnl-dev:arm64): then "/", since mixing the cross toolchain's ld.so with the
# multiarch libc.so.6 makes pthread_create loop forever (as the bundle's run.sh also decides).
DEFAULT_SYSROOT = (
    Path("/")
    if Path("/lib/aarch64-linux-gnu/libc.so.6").exists()
    else Path("/usr/aarch64-linux-gnu")
)
DEFAULT_QEMU = "qemu-aarch64"
DEFAULT_RPC_PORT = 9090
