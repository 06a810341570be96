#!/usr/bin/env bash
# THE test command: installs what is missing, builds native and WebAssembly, runs every test.
#   scripts/test.sh
# 1. scripts/setup.sh                         (Debian packages, SDL2/ImGui sources, playwright-core)
# 2. native build in build/ (what the tests run) + ctest   (doctest unit tests, CLI tests)
#    + the same suite under ASan/UBSan (scripts/test_sanitize.sh, build-asan/) and 15 s of
#    libFuzzer per loader (scripts/fuzz.sh, the same build-asan/); see docs/robustness.md
#    + scripts/sweep.py through a single-node Slurm against its local executor (tests/slurm_sweep_test.sh),
#      in the background from the end of the native build
# 3. wasm build in build-wasm/ (site in build-wasm/site/), in the background at nice 19 from the end of step 2's build
# 4. browser test: headless Chromium on the built site (web/tests/page.test.mjs);
#    screenshots in build-wasm/test-output/
# 5. ekvae_viewer under Xvfb for 300 frames with the shipped model (when models/ has it), with
#    a screenshot that must not be blank; its --bench timing; a corrupt model file is refused
# Build failures stop at once; test failures are collected and reported at the end.
# Exit status 0 only when everything passed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=${EKVAE_JOBS:-2}
# Build folders (overridable, e.g. to test the script without touching build/).
build=${EKVAE_BUILD_DIR:-build}
wbuild=${EKVAE_WASM_BUILD_DIR:-build-wasm}
# Debian's emscripten needs Debian's node modules (acorn, ...) for optimised links.
export NODE_PATH=/usr/share/nodejs
# New build folders use Ninja (scripts/setup.sh installs it): it compiles a target's files while
# the libraries it links are still being built, where make waits (the sanitizer tree: 230 s
# against 262 s); an existing folder keeps the generator it was made with.
command -v ninja >/dev/null && export CMAKE_GENERATOR=Ninja
failed=()
started=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - started )) s)"; }

step "setup"
scripts/setup.sh

# Only what the tests run: the CLIs and test binaries (ekvae_ctest_binaries) and the viewer
# (when its libraries are there); not the benchmarks (scripts/bench.sh builds and runs those).
step "native build ($build/)"
# A new folder is compiled by clang 14 (setup.sh installs it for the sanitizers): the tests' tree
# took 234 core-seconds against g++ 12's 414 (clang also precompiles the headers), and the
# programs compute the same numbers bit for bit (a 2,000-step training run gave the same model
# file; docs/performance.md). An existing folder keeps its compiler, and CC/CXX set by the user
# win; scripts/bench.sh measures the default compiler's (g++) build.
compiler=()
if [ ! -f "$build/CMakeCache.txt" ] && [ -z "${CC:-}${CXX:-}" ] && command -v clang++-14 >/dev/null; then
  compiler=(-DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14)
fi
cmake -B "$build" -DCMAKE_BUILD_TYPE=Release "${compiler[@]}"
targets=(ekvae_ctest_binaries)
help=$(cmake --build "$build" --target help)   # (not piped into grep -q: pipefail and SIGPIPE)
if grep -q '\bekvae_viewer\b' <<<"$help"; then targets+=(ekvae_viewer); fi
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

# The wasm build runs in the background from here on at the lowest priority: it takes the
# cores the next steps leave idle (ctest's and the sanitizer suite's sequential tails, the
# fuzzers, which run one at a time, and the waits for the Slurm test) and gives them back
# at once when a foreground step wants them. Its output is shown when it is waited for.
step "wasm build ($wbuild/) started in the background (nice 19)"
mkdir -p "$wbuild"
( emcmake cmake -B "$wbuild" && nice -n 19 cmake --build "$wbuild" -j"$jobs" ) > "$wbuild/build.log" 2>&1 &
wasm_pid=$!

# The sweep test through a single-node Slurm: tiny runs (8x8 frames, one thread each) and much
# waiting on the scheduler; it runs in the background beside the next steps, its output shown
# when it is waited for.
step "sweeps on a single-node Slurm against the local executor, started in the background"
( rc=0; bash tests/slurm_sweep_test.sh "$build/native" || rc=$?; scripts/slurm_local.sh stop || true; exit $rc ) \
  > "$build/slurm-test.log" 2>&1 &
slurm_pid=$!
# interrupted (Ctrl-C): the background jobs and the local Slurm go too
trap 'for p in $wasm_pid $slurm_pid; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done; scripts/slurm_local.sh stop >/dev/null 2>&1; exit 130' INT TERM

step "native tests (ctest)"
ctest --test-dir "$build" --output-on-failure -j"$jobs" || failed+=("ctest")

step "sanitizers: the native suite under ASan + UBSan (build-asan/)"
scripts/test_sanitize.sh || failed+=("sanitize")

step "fuzzing: each loader for 15 s under libFuzzer (build-asan/)"
scripts/fuzz.sh 15 || failed+=("fuzz")

step "sweeps on a single-node Slurm against the local executor: waiting for it"
slurm_rc=0
wait "$slurm_pid" || slurm_rc=$?
cat "$build/slurm-test.log"
[ "$slurm_rc" -eq 0 ] || failed+=("slurm")

step "wasm build ($wbuild/): waiting for it"
wasm_rc=0
wait "$wasm_pid" || wasm_rc=$?
tail -n 20 "$wbuild/build.log"
if [ "$wasm_rc" -ne 0 ]; then
  echo "FAIL: the wasm build failed (exit $wasm_rc); its whole log is $wbuild/build.log"
  exit "$wasm_rc"
fi

step "browser test (headless Chromium)"
EKVAE_NATIVE_BIN="$build/native" timeout -k 10 720 node web/tests/page.test.mjs "$wbuild/site" "$wbuild/test-output" || failed+=("browser")

step "native viewer under Xvfb"
viewer=$build/native/ekvae_viewer
model=models/pendulum-constrained.safetensors
if [ ! -x "$viewer" ]; then
  echo "FAIL: $viewer was not built (libimgui-dev, libsdl2-dev and OpenGL are needed)"
  failed+=("viewer")
elif ! command -v xvfb-run >/dev/null; then
  echo "FAIL: xvfb-run not found (apt-get install xvfb xauth)"
  failed+=("viewer")
else
  shot=$build/viewer-test.png
  rm -f "$shot"
  model_args=()
  [ -f "$model" ] && model_args=(--model "$model")
  if out=$(timeout -k 10 180 xvfb-run -a -s "-screen 0 1280x800x24" "$viewer" --frames 300 --screenshot "$shot" "${model_args[@]}" 2>&1); then
    echo "$out"
    colours=$(echo "$out" | sed -n 's/.*colours=\([0-9]*\).*/\1/p')
    if [ -f "$model" ] && ! echo "$out" | grep -q "model pendulum-constrained.safetensors"; then
      echo "FAIL: the viewer did not run $model"
      failed+=("viewer")
    elif [ -s "$shot" ] && [ "${colours:-0}" -ge 50 ]; then
      echo "ok   ekvae_viewer: 300 frames${model_args:+ with $model}, screenshot $shot with $colours colours"
    else
      echo "FAIL: the viewer's screenshot is missing or blank (colours=${colours:-?})"
      failed+=("viewer")
    fi
  else
    echo "$out"
    echo "FAIL: ekvae_viewer under Xvfb exited with an error"
    failed+=("viewer")
  fi
fi

if [ -x "$viewer" ] && [ -f "$model" ]; then
  # model time per frame, natively (a benchmark, not a timed test)
  "$viewer" --model "$model" --bench 1000 | tail -1 || failed+=("viewer-bench")
  # a truncated model file is refused with a message, exit status 1
  head -c 5000 "$model" > "$build/truncated.safetensors"
  if err=$("$viewer" --model "$build/truncated.safetensors" --bench 1 2>&1); then
    echo "FAIL: the viewer accepted a truncated model file"
    failed+=("viewer")
  elif echo "$err" | grep -q "not a valid safetensors file"; then
    echo "ok   ekvae_viewer refuses a truncated model: $(echo "$err" | head -1)"
  else
    echo "FAIL: unexpected output for a truncated model: $err"
    failed+=("viewer")
  fi
fi

step "done"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all tests passed"
