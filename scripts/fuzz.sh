#!/usr/bin/env bash
# Fuzzes the four loaders with libFuzzer (clang-14, AddressSanitizer + UBSan), one at a time at
# nice 10 (above the test command's background wasm build at 19): safetensors_parse, dataset_from_safetensors, ekvae_load, Trainer::restore.
#   scripts/fuzz.sh [SECONDS]        SECONDS per target (default 15, ~1 minute in all)
#   EKVAE_FUZZ_MERGE=1 scripts/fuzz.sh 600   also merge inputs reaching new code into
#                                            tests/fuzz/corpus/<target>/ (the committed corpus)
# Builds the fuzzers in the sanitizer build (scripts/sanitize_build.sh, build-asan/). Each run starts from the
# committed corpus plus what earlier runs found (build-asan/fuzz-corpus/<target>/); crashing
# inputs land in build-asan/fuzz-artifacts/<target>/ and fail the script. Executions per run are
# appended to build-asan/fuzz-stats.tsv. See docs/robustness.md.
set -euo pipefail
secs=${1:-15}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${EKVAE_ASAN_BUILD_DIR:-build-asan}
targets=${EKVAE_FUZZ_TARGETS:-safetensors dataset model checkpoint}

if [ "$targets" = "safetensors dataset model checkpoint" ]; then
  scripts/sanitize_build.sh ekvae_fuzzers   # one target: the four build in parallel
else
  scripts/sanitize_build.sh $(for t in $targets; do echo "fuzz_$t"; done)
fi

failed=()
stats=$build/fuzz-stats.tsv
[ -f "$stats" ] || printf 'date\ttarget\tseconds\texecutions\tcoverage\tcorpus\tstatus\n' > "$stats"
for t in $targets; do
  work=$build/fuzz-corpus/$t
  artifacts=$build/fuzz-artifacts/$t
  log=$build/fuzz-$t.log
  mkdir -p "$work" "$artifacts"
  rc=0
  nice -n 10 "$build/tests/fuzz/fuzz_$t" "$work" "tests/fuzz/corpus/$t" \
    -dict=tests/fuzz/safetensors.dict -max_total_time="$secs" -max_len=16384 -timeout=10 \
    -malloc_limit_mb=128 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n1 | cut -d' ' -f2)
  corpus=$(ls "$work" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -Is)" "$t" "$secs" "${execs:-0}" "${cov:-?}" "$corpus" "$rc" >> "$stats"
  if [ $rc -ne 0 ]; then
    echo "FAIL fuzz_$t (exit $rc): $(grep -m1 -E 'ERROR|invariant|SUMMARY' "$log" || tail -n 3 "$log")"
    echo "     log: $log, crashing input: $(ls -t "$artifacts" | head -n1)"
    failed+=("$t")
  else
    echo "ok   fuzz_$t: ${execs:-?} executions in ${secs} s, coverage ${cov:-?}, corpus $corpus inputs"
  fi
  if [ "${EKVAE_FUZZ_MERGE:-0}" = 1 ] && [ $rc -eq 0 ]; then
    # a coverage-minimal subset of everything found, then its smallest inputs up to a budget
    # (EKVAE_FUZZ_CORPUS_KB per target, default 64) join the committed corpus
    min=$build/fuzz-min/$t
    rm -rf "$min" && mkdir -p "$min"
    "$build/tests/fuzz/fuzz_$t" -merge=1 -max_len=16384 -timeout=10 -malloc_limit_mb=128 \
      "$min" "tests/fuzz/corpus/$t" "$work" >"$build/fuzz-merge-$t.log" 2>&1
    budget=$(( ${EKVAE_FUZZ_CORPUS_KB:-64} * 1024 ))
    used=$(cat "tests/fuzz/corpus/$t"/* | wc -c)
    for f in $(ls -Sr "$min"); do
      [ -e "tests/fuzz/corpus/$t/$f" ] && continue
      size=$(stat -c %s "$min/$f")
      [ $((used + size)) -gt "$budget" ] && break
      cp "$min/$f" "tests/fuzz/corpus/$t/$f"
      used=$((used + size))
    done
    echo "     merged: $(ls "$min" | wc -l) inputs cover what was found; tests/fuzz/corpus/$t now has $(ls "tests/fuzz/corpus/$t" | wc -l) inputs, $((used / 1024)) KB"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
