#!/usr/bin/env bash
# The one sanitizer build (clang-14, AddressSanitizer + UndefinedBehaviorSanitizer, the core also
# instrumented for libFuzzer's coverage) that scripts/test_sanitize.sh and scripts/fuzz.sh share:
#   scripts/sanitize_build.sh TARGET...     configures build-asan/ (EKVAE_ASAN_BUILD_DIR) and builds
# -O1 with line tables: fast enough to run the suite, quick to compile, readable stack traces.
# The tests' own files at -O0 (EKVAE_TEST_OPT; the core they test keeps -O1): with clang and the
# sanitizers they compiled in 100 core-seconds against 192 at -O1, and ran in 54 against 36
# (measured 2026-12-06: most of a test's time is in the core).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${EKVAE_ASAN_BUILD_DIR:-build-asan}
jobs=${EKVAE_JOBS:-2}
command -v ninja >/dev/null && export CMAKE_GENERATOR=Ninja  # for a new folder (scripts/test.sh)
if ! command -v clang++-14 >/dev/null; then
  echo "sanitize_build: clang++-14 not found (scripts/setup.sh installs clang-14 and libclang-rt-14-dev)" >&2
  exit 1
fi
# LLVM's linker when it is there (lld-14: scripts/setup.sh): the 23 sanitized links took 28 s
# with GNU ld, 16 s with it (measured 2026-12-06)
lld=""
[ -x /usr/lib/llvm-14/bin/ld.lld ] && lld=1
CC=clang-14 CXX=clang++-14 cmake -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DEKVAE_FUZZ=ON -DEKVAE_NATIVE_ARCH=OFF ${lld:+-DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld} -DEKVAE_TEST_OPT=-O0 >/dev/null
cmake --build "$build" -j"$jobs" --target "$@"
