#!/usr/bin/env bash
# The whole native test suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang-14):
#   scripts/test_sanitize.sh
# builds build-asan/ (scripts/sanitize_build.sh: the build scripts/fuzz.sh uses too) and runs ctest there: the doctest suites, the fuzz corpus replay, the CLI tests
# (their binaries sanitized too) and the kill test (shorter: EKVAE_KILL_STEPS). Any sanitizer
# report aborts the process and fails its test. Exit status 0 only when everything passed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${EKVAE_ASAN_BUILD_DIR:-build-asan}
jobs=${EKVAE_JOBS:-2}
started=$(date +%s)

# only what ctest runs (not the benchmarks or the viewer): the CLIs and every doctest suite, as
# the one target ekvae_ctest_binaries (tests/CMakeLists.txt) so that they compile in parallel
scripts/sanitize_build.sh ekvae_ctest_binaries
built=$(date +%s)

# abort on the first report (UBSan is already -fno-sanitize-recover); leaks count as failures
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# the kill test's run under ASan: its 18 kills end near step 640 on a 2-core AMD EPYC (measured
# 2026-12-06), so 2000 steps leave a 3x margin (an upper bound: the test trains only to 300 past the
# last kill); a run too short for them fails the test
export EKVAE_KILL_STEPS=${EKVAE_KILL_STEPS:-2000}
rc=0
ctest --test-dir "$build" --output-on-failure -j"$jobs" --timeout 900 || rc=$?
echo "sanitizer build: $((built - started)) s to build, $(( $(date +%s) - built )) s of tests"
exit $rc
