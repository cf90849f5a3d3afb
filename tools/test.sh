#!/usr/bin/env bash
# Every check ember has, in one command: builds and installs ember (with the C++ extension) into
# .venv, then runs the C++ unit tests (GoogleTest), ruff, mypy, stubtest on ember._core, pytest and
# the benchmark suite once as a smoke test.
# Needs python3 (3.10+), a C++17 compiler, and GoogleTest (Debian: libgtest-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
echo "== installing ember and its test tools (builds the C++ core)"
python -m pip install -q ".[test]"

echo "== C++ unit tests"
PYTHON=.venv/bin/python bash tools/test_cpp.sh

echo "== ruff"
ruff check .
ruff format --check .

echo "== mypy (strict) and stubtest for the extension's .pyi"
mypy
python -m mypy.stubtest ember._core --allowlist .mypy-stubtest-allowlist

echo "== pytest"
python -m pytest "$@"

echo "== benchmarks, once each as smoke tests (timings are for benchmarks/vs_onnxruntime.py)"
python -m pytest benchmarks --benchmark-disable -q
