#!/usr/bin/env bash
# Every benchmark of docs/performance.md in one command: installs what it needs
# (scripts/setup.sh, scripts/setup_bench.sh: PyTorch and OpenBLAS), builds build-bench (native,
# Release) and build-wasm-bench (Emscripten), then runs bench/run_bench.py, which prints a table
# and writes bench/results.json. Takes about 5 minutes; not a test.
#   scripts/bench.sh [--quick] [--rounds N]
# Measure on an otherwise idle machine (no ekvae_train running) for absolute figures; the
# ekvae/PyTorch and step/floor ratios are measured in one run, alternating.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/setup.sh >/dev/null
scripts/setup_bench.sh
export NODE_PATH=/usr/share/nodejs
echo "bench: building build-bench and build-wasm-bench" >&2
cmake -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target bench_ekvae bench_frame ekvae_train ekvae_data ekvae_eval >/dev/null
emcmake cmake -B build-wasm-bench -DCMAKE_BUILD_TYPE=Release >/dev/null 2>&1
cmake --build build-wasm-bench -j2 --target bench_frame_wasm bench_ekvae_wasm >/dev/null
/usr/bin/python3 bench/run_bench.py --build build-bench --wasm-build build-wasm-bench "$@"
