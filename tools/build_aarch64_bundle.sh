#!/usr/bin/env bash
# Builds the aarch64 edge bundle: ember-run cross-compiled for 64-bit ARM Linux, the runtime
# libraries it loads, copies of the given (aarch64) artifacts, a run.sh launcher and a README.txt
# saying how to copy it to a board and run it there.
#
#   tools/build_aarch64_bundle.sh [--out DIR] [ARTIFACT ...]    # default DIR: build/aarch64-bundle
#
# Needs, on a Debian/Ubuntu x86-64 host (installs nothing itself; says what is missing):
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   dpkg --add-architecture arm64 && apt-get update && apt-get install libdnnl-dev:arm64 libgomp1:arm64
# and ember's Python environment (PYTHON, default .venv/bin/python): apache-tvm and apache-tvm-ffi
# give the versions (and tvm-ffi's arch-independent headers); the aarch64 builds of their runtime
# libraries are downloaded once with pip (the matching aarch64 wheels) into build/aarch64-deps.
# The cross build lives in build/aarch64-cross; both are reused, so a second run takes seconds.
# With qemu-aarch64 (or on an aarch64 host) the finished bundle is smoke-tested: run.sh --help.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

out=""
artifacts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "error: --out needs a directory" >&2; exit 2; }
           out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) artifacts+=("$1"); shift ;;
  esac
done

# Paths given on the command line are relative to where the script was started.
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
for i in "${!artifacts[@]}"; do artifacts[i]=$(abspath "${artifacts[i]}"); done
[ -z "$out" ] || out=$(abspath "$out")

cd "$(dirname "$0")/.."
repo=$PWD
out=${out:-$repo/build/aarch64-bundle}
multiarch=/usr/lib/aarch64-linux-gnu

if [ -n "${PYTHON:-}" ]; then
  python_exe=$(command -v "$PYTHON") || { echo "error: no Python interpreter '$PYTHON'" >&2; exit 2; }
  python_exe=$(realpath -s "$python_exe")  # as in tools/test_cpp.sh
elif [ -x .venv/bin/python ]; then
  python_exe=$repo/.venv/bin/python
else
  python_exe=$(command -v python3) || { echo "error: no python3 (set PYTHON)" >&2; exit 2; }
fi

# --- What the host must have: everything missing is listed at once, with its install command.
missing=()
command -v aarch64-linux-gnu-g++ >/dev/null ||
  missing+=("the aarch64 cross compiler: apt-get install g++-aarch64-linux-gnu")
[ -f "$multiarch/libdnnl.so.2" ] && [ -f "$multiarch/cmake/dnnl/dnnl-config.cmake" ] ||
  missing+=("oneDNN for arm64: dpkg --add-architecture arm64 && apt-get update && apt-get install libdnnl-dev:arm64 libgomp1:arm64")
[ -f "$multiarch/libgomp.so.1" ] ||
  missing+=("GNU OpenMP for arm64: dpkg --add-architecture arm64 && apt-get update && apt-get install libgomp1:arm64")
cmake_exe=$(command -v cmake || true)
[ -n "$cmake_exe" ] || [ ! -x "$(dirname "$python_exe")/cmake" ] || cmake_exe=$(dirname "$python_exe")/cmake
[ -n "$cmake_exe" ] || missing+=("cmake >= 3.18: apt-get install cmake (or pip install cmake)")
versions=$("$python_exe" -c "import importlib.metadata as m; \
print(m.version('apache-tvm'), m.version('apache-tvm-ffi'))" 2>/dev/null) ||
  missing+=("apache-tvm and apache-tvm-ffi for $python_exe: pip install -e . (ember's environment; or set PYTHON)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: building the aarch64 bundle needs:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi
read -r tvm_version ffi_version <<<"$versions"

# The artifacts to bundle must be aarch64 ones (checked before minutes of building).
for artifact in ${artifacts[@]+"${artifacts[@]}"}; do
  arch=$("$python_exe" -c "import json, sys; \
print(json.load(open(sys.argv[1]))['target']['arch'])" "$artifact/manifest.json" 2>/dev/null) || {
    echo "error: '$artifact' is not an ember artifact (no readable manifest.json)" >&2
    exit 2
  }
  if [ "$arch" != aarch64 ]; then
    echo "error: '$artifact' was compiled for $arch; compile it for the board, e.g." \
      "ember.compile(model, target='aarch64') (or 'rpi4', 'rpi5', 'jetson-orin-cpu')" >&2
    exit 2
  fi
done

# --- The target's TVM runtime and tvm-ffi libraries, from the aarch64 wheels of the very versions
# this environment compiles artifacts with (an artifact only loads into the same versions).
deps=$repo/build/aarch64-deps/tvm-$tvm_version-ffi-$ffi_version
if [ ! -f "$deps/lib/libtvm_runtime.so" ] || [ ! -f "$deps/lib/libtvm_ffi.so" ]; then
  echo "== downloading the aarch64 wheels of apache-tvm $tvm_version and apache-tvm-ffi $ffi_version"
  rm -rf "$deps/wheels"
  mkdir -p "$deps/wheels" "$deps/lib"
  # Only the shared libraries are used: any CPython version's tvm-ffi wheel has the same one.
  "$python_exe" -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --python-version 3.11 -d "$deps/wheels" \
    "apache-tvm==$tvm_version" "apache-tvm-ffi==$ffi_version"
  "$python_exe" - "$deps/wheels" "$deps/lib" <<'EOF'
import pathlib, shutil, sys, zipfile

wheels, lib = map(pathlib.Path, sys.argv[1:])
wanted = {"tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so"}
for wheel in wheels.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in wanted & set(z.namelist()):
            target = lib / pathlib.Path(name).name
            with z.open(name) as src, open(f"{target}.tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            pathlib.Path(f"{target}.tmp").chmod(0o755)
            pathlib.Path(f"{target}.tmp").rename(target)
            wanted.discard(name)
if wanted:
    sys.exit(f"error: the downloaded wheels lack {sorted(wanted)}")
EOF
  rm -rf "$deps/wheels"  # ~100 MB, of which two libraries are kept
fi

# --- Cross build of the core and ember-run (Release, like every ember build).
build=$repo/build/aarch64-cross
configure=("$cmake_exe" -S "$repo" -B "$build"
  -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/aarch64-linux-gnu.cmake"
  -DCMAKE_BUILD_TYPE=Release
  -DEMBER_CROSS_LIB_DIR="$deps/lib"
  -DEMBER_BUILD_PYTHON=OFF -DEMBER_BUILD_TESTS=OFF -DEMBER_BUILD_BENCHMARKS=OFF
  -DEMBER_BUILD_RUNNER=ON -DEMBER_SANITIZE=
  -DPython_EXECUTABLE="$python_exe")
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then
  configure+=(-G Ninja)
fi
echo "== cross-building ember-run for aarch64 in ${build#"$repo"/}"
"${configure[@]}" >"$build.configure.log" 2>&1 || {
  cat "$build.configure.log" >&2
  exit 1
}
"$cmake_exe" --build "$build" --target ember-run -j "$(nproc)"

# --- The bundle. Only the bundle's own entries are replaced, so a wrong --out loses nothing else.
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/run.sh" ]; then
  echo "error: '$out' exists and is not an ember bundle (no run.sh); choose another --out" >&2
  exit 2
fi
mkdir -p "$out"
rm -rf "${out:?}/bin" "${out:?}/lib" "$out/artifacts" "$out/run.sh" "$out/README.txt"
mkdir -p "$out/bin" "$out/lib" "$out/artifacts"
aarch64-linux-gnu-strip -o "$out/bin/ember-run" "$build/ember-run"
cp "$deps/lib/libtvm_runtime.so" "$deps/lib/libtvm_ffi.so" "$out/lib/"
cp -L "$multiarch/libdnnl.so.2" "$multiarch/libgomp.so.1" "$out/lib/"
# Not bundled: libstdc++.so.6, libgcc_s.so.1 and glibc, which every glibc-based aarch64 Linux has
# (the README states the versions these binaries need).

for artifact in ${artifacts[@]+"${artifacts[@]}"}; do
  cp -R "$artifact" "$out/artifacts/$(basename "$artifact")"
done

cat >"$out/run.sh" <<'EOF'
#!/bin/sh
# Runs this bundle's ember-run with the bundle's libraries: ./run.sh ARTIFACT [options]
# (./run.sh --help lists the options). On an aarch64 board it runs natively; on another
# architecture it runs under qemu-aarch64 (for testing), with QEMU_LD_PREFIX as the aarch64 system
# root: by default Debian's arm64 multiarch libraries when installed (/lib/aarch64-linux-gnu,
# which libdnnl-dev:arm64 brings; prefix /), else the cross toolchain's (/usr/aarch64-linux-gnu).
# Never a mix of both: the cross toolchain's ld.so with the multiarch libc.so.6 (another build of
# glibc) hangs in pthread_create, i.e. at the first parallel loop.
here=$(cd "$(dirname "$0")" && pwd)
case "$(uname -m)" in
  aarch64 | arm64)
    LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    exec "$here/bin/ember-run" "$@"
    ;;
  *)
    if ! command -v qemu-aarch64 >/dev/null; then
      echo "run.sh: this is an aarch64 bundle and this machine is $(uname -m);" \
        "copy it to an aarch64 board, or install qemu-user to emulate it" >&2
      exit 126
    fi
    if [ -z "${QEMU_LD_PREFIX:-}" ]; then
      QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
      [ ! -e /lib/aarch64-linux-gnu/libc.so.6 ] || QEMU_LD_PREFIX=/
    fi
    exec qemu-aarch64 -L "$QEMU_LD_PREFIX" -E "LD_LIBRARY_PATH=$here/lib" "$here/bin/ember-run" "$@"
    ;;
esac
EOF
chmod +x "$out/run.sh"

# What the binaries need of the board's C and C++ runtimes: the newest symbol versions they use.
newest() {
  for f in "$out/bin/ember-run" "$out"/lib/*; do aarch64-linux-gnu-objdump -T "$f"; done |
    grep -o "$1_[0-9][0-9.]*" | sort -u -V | tail -n 1 | sed "s/^$1_//"
}
glibc=$(newest GLIBC)
glibcxx=$(newest GLIBCXX)
dnnl_version=$(sed -n 's/^#define DNNL_VERSION_\(MAJOR\|MINOR\|PATCH\) *\([0-9]*\).*/\2/p' \
  /usr/include/oneapi/dnnl/dnnl_version.h | paste -sd. -)
listed=$(cd "$out/artifacts" && ls -1)

cat >"$out/README.txt" <<EOF
ember aarch64 bundle: ember-run (the Python-free runner) for 64-bit ARM Linux, the libraries it
loads, and compiled artifacts. Built by tools/build_aarch64_bundle.sh.

  bin/ember-run    the runner, cross-compiled with aarch64-linux-gnu-g++
  lib/             libtvm_runtime.so, libtvm_ffi.so (TVM $tvm_version / tvm-ffi $ffi_version, from
                   their aarch64 wheels), libdnnl.so.2 (oneDNN $dnnl_version, the conv/matmul
                   kernels), libgomp.so.1 (GNU OpenMP, the thread pool)
  run.sh           runs bin/ember-run with lib/ on LD_LIBRARY_PATH
  artifacts/       ${listed:-(none: pass artifact directories to tools/build_aarch64_bundle.sh)}

What the board needs
  aarch64 (arm64) Linux with glibc >= $glibc and a libstdc++ that has GLIBCXX_$glibcxx (the newest
  symbol versions these binaries use): e.g. Raspberry Pi OS or Debian 12 (bookworm) and newer,
  Ubuntu 22.04 and newer (JetPack 6 on a Jetson Orin); not Debian 11, Ubuntu 20.04 or JetPack 5
  (glibc 2.31). Nothing else: no Python, no ember, no TVM. Artifacts must be compiled for aarch64
  by an ember with TVM $tvm_version: ember.compile(model, target="rpi4") (or "aarch64", "rpi5",
  "jetson-orin-cpu"), precision "fp32" or "int8-weight".

Copy it to the board and run it
  scp -r build/aarch64-bundle pi@board:
  ssh pi@board
  cd aarch64-bundle
  ./run.sh --help
  ./run.sh artifacts/<model>.ember --random-inputs 1
  ./run.sh artifacts/<model>.ember --input x=x.npy --output-dir out --json
  (outputs land in out/<output name>.npy; --threads N sets the thread count)

Trying it on an x86-64 machine (emulated: for correctness, not speed)
  apt-get install qemu-user, plus an aarch64 glibc: Debian's arm64 multiarch packages
  (dpkg --add-architecture arm64; apt-get install libc6:arm64 libstdc++6:arm64) or the cross
  toolchain's (apt-get install g++-aarch64-linux-gnu), then the same ./run.sh command lines:
  run.sh sees it is not on aarch64 and runs
    qemu-aarch64 -L / -E LD_LIBRARY_PATH=\$PWD/lib bin/ember-run ...              (multiarch)
    qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=\$PWD/lib bin/ember-run ...
  (QEMU_LD_PREFIX overrides the -L system root; with both installed, it must be /: the cross
  toolchain's ld.so with the multiarch libc.so.6 hangs when the first thread starts.)
EOF

# --- Smoke test: the runner starts and finds every library.
if [ "$(uname -m)" = aarch64 ] || command -v qemu-aarch64 >/dev/null; then
  "$out/run.sh" --help >/dev/null || { echo "error: the bundle's ember-run does not start" >&2; exit 1; }
  smoke="run.sh --help works"
else
  smoke="not smoke-tested: no qemu-aarch64 (apt-get install qemu-user)"
fi
echo "== aarch64 bundle in $out ($smoke; board needs glibc >= $glibc)"
