#!/usr/bin/env bash
# Builds the C++ core's GoogleTest suite in build/cpp-tests and runs it with ctest.
#
#   tools/test_cpp.sh                  # uses `python` (activate .venv first) to find apache-tvm
#   PYTHON=.venv/bin/python tools/test_cpp.sh
#   BUILD_TYPE=Debug tools/test_cpp.sh # default Release, as the project builds
#
# Extra arguments go to ctest, e.g. `tools/test_cpp.sh -R Manifest`.
# Exits non-zero if configuring, building or any test fails.
set -euo pipefail

cd "$(dirname "$0")/.."
build_dir=build/cpp-tests
# An absolute path: FindPython keeps its cached interpreter when given a bare name such as
# `python`, and passes over a relative one (.venv/bin/python) for the first python on PATH. Not
# resolved through symlinks: a venv's python is a symlink, and its target has no venv packages.
python_exe=$(command -v "${PYTHON:-python}") || {
  echo "error: no Python interpreter '${PYTHON:-python}' (activate .venv or set PYTHON)" >&2
  exit 2
}
python_exe=$(realpath -s "$python_exe")

cmake -S . -B "$build_dir" -G Ninja \
  -DEMBER_BUILD_TESTS=ON \
  -DEMBER_BUILD_PYTHON=OFF \
  -DEMBER_SANITIZE= \
  -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
  -DPython_EXECUTABLE="$python_exe"
cmake --build "$build_dir"
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$(nproc)" "$@"
