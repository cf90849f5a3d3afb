# CMake toolchain file: cross-compiles ember's core and ember-run for 64-bit ARM Linux with
# Debian's cross toolchain (apt-get install g++-aarch64-linux-gnu). Target libraries come from
# Debian's multiarch packages (dpkg --add-architecture arm64; apt-get install libdnnl-dev:arm64
# libgomp1:arm64), installed under /usr/lib/aarch64-linux-gnu, and from the aarch64 TVM wheels
# (EMBER_CROSS_LIB_DIR; see the "Cross build" section of CMakeLists.txt).
# tools/build_aarch64_bundle.sh is the one user:
#   cmake -S . -B build/aarch64-cross -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#     -DEMBER_CROSS_LIB_DIR=... -DEMBER_BUILD_PYTHON=OFF -DEMBER_BUILD_TESTS=OFF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Debian multiarch: find_* looks in /usr/lib/aarch64-linux-gnu (the cross g++ searches it too).
# No CMAKE_FIND_ROOT_PATH: the target's packages live in the host's /usr, not in a sysroot, and
# the host's tvm_ffi package (arch-independent headers) must stay findable.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# Running target binaries, where CMake needs to: user-mode emulation with the cross sysroot.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
