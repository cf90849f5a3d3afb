#!/usr/bin/env bash
# Builds the C++ core's tests with AddressSanitizer (+UBSan) in build/asan and ThreadSanitizer in
# build/tsan, and runs each suite with ctest. Debug builds: assertions stay on and stacks are exact.
#
#   tools/sanitize.sh                  # both; uses `python` (activate .venv) to find apache-tvm
#   tools/sanitize.sh address          # only one of them
#   PYTHON=.venv/bin/python tools/sanitize.sh thread
#
# Exits non-zero if any build fails, any test fails or a sanitizer reports anything.
set -euo pipefail

cd "$(dirname "$0")/.."
# An absolute path: FindPython keeps its cached interpreter when given a bare name such as
# `python`, and passes over a relative one (.venv/bin/python) for the first python on PATH. Not
# resolved through symlinks: a venv's python is a symlink, and its target has no venv packages.
python_exe=$(command -v "${PYTHON:-python}") || {
  echo "error: no Python interpreter '${PYTHON:-python}' (activate .venv or set PYTHON)" >&2
  exit 2
}
python_exe=$(realpath -s "$python_exe")

# Runtime options, exported so that they also apply to gtest_discover_tests, which runs each test
# binary at build time to list its tests.
#
# halt_on_error: the first report ends the test binary with a failure instead of scrolling by.
# ASan (with UBSan and LeakSanitizer) needs no exceptions for the prebuilt, uninstrumented
# libtvm_ffi.so / libtvm_runtime.so: their static registries stay reachable at exit, so LSan does
# not report them and detect_leaks stays on (the default) for ember's own code. Should a TVM upgrade
# start leaking at exit, give LSAN_OPTIONS=suppressions=<file> a `leak:libtvm_runtime.so` line
# rather than turning leak detection off.
asan_options=halt_on_error=1:detect_stack_use_after_return=1
asan_options+=:check_initialization_order=1:strict_init_order=1
export ASAN_OPTIONS="$asan_options${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
# tsan.supp: OpenMP regions only (libgomp is uninstrumented; the file says why). history_size=7
# (the most): the suppression matches the region's `_omp_fn` frame, which a worker's old access
# must still have in TSan's history; with the default history, tests run in parallel (ctest -j)
# lost it ("failed to restore the stack") and a Winograd test failed 3 runs in 3 on such a report.
tsan_options="halt_on_error=1:second_deadlock_stack=1:history_size=7"
tsan_options+=":suppressions=$PWD/tools/tsan.supp"
export TSAN_OPTIONS="$tsan_options${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

run_one() {
  local sanitizer=$1 build_dir=$2 extra_cxx_flags=${3:-}
  echo "=== EMBER_SANITIZE=$sanitizer ($build_dir) ==="
  cmake -S . -B "$build_dir" -G Ninja \
    -DCMAKE_CXX_FLAGS="$extra_cxx_flags" \
    -DEMBER_BUILD_TESTS=ON \
    -DEMBER_BUILD_PYTHON=OFF \
    -DEMBER_SANITIZE="$sanitizer" \
    -DCMAKE_BUILD_TYPE=Debug \
    -DPython_EXECUTABLE="$python_exe"
  cmake --build "$build_dir"
  ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$(nproc)"
}

sanitizers=("$@")
if [[ ${#sanitizers[@]} -eq 0 ]]; then sanitizers=(address thread); fi
for sanitizer in "${sanitizers[@]}"; do
  case $sanitizer in
    address) run_one address build/asan ;;
    # -Wno-tsan: GCC >= 12 warns, at every inlined use, that TSan cannot model the
    # __atomic_thread_fence(ACQUIRE) in tvm-ffi's Object::DecRef (tvm/ffi/object.h); -isystem does
    # not silence it. The cost is possible false race reports when a tvm-ffi object's last
    # reference is dropped on a different thread than its creator; none occur today. If one
    # appears, suppress it narrowly in a TSAN_OPTIONS=suppressions= file, saying why.
    thread) run_one thread build/tsan -Wno-tsan ;;
    *) echo "unknown sanitizer '$sanitizer' (address | thread)" >&2; exit 2 ;;
  esac
done
echo "sanitize: all green (${sanitizers[*]})"
