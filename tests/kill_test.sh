#!/usr/bin/env bash
# Crash safety of ekvae_train: SIGKILL at random moments (and on purpose while a checkpoint is
# being written) never loses the last good checkpoint, and a run resumed after every kill ends
# with exactly the weights of an uninterrupted run of the same steps.
#   tests/kill_test.sh BUILD_NATIVE_DIR [KILLS]   (EKVAE_KILL_SEED: the random delays; EKVAE_KILL_STEPS: run length)
# Each round: start (or --resume) training towards a fixed step count with a checkpoint every
# 0.6 s, kill -9 it after a random delay (every third round: the moment a checkpoint's
# temporary file appears), then check that the checkpoint loads (the next --resume fails with
# exit 2 otherwise) and that its step never went backwards. Finally resume to a few hundred
# steps past the last checkpoint (EKVAE_KILL_TAIL) and compare model.safetensors and
# checkpoint.safetensors byte for byte with an uninterrupted run of that many steps. The killed
# run is planned for EKVAE_KILL_STEPS steps, an upper bound its kills must land before; the
# planned length changes nothing but where a run stops (train_steps is a run key), so the
# reference trains only the steps the killed run did (natively ~25,000 of 100,000: the test took
# 72 s with a full-length reference and final resume, measured 2026-12-06).
set -u
bin=$1
kills=${2:-18}
train=$bin/ekvae_train
. "$(dirname "$0")/check.sh"
RANDOM=${EKVAE_KILL_SEED:-7}
steps=${EKVAE_KILL_STEPS:-100000} # long enough that 18 kills land before the end (a tiny step takes ~0.1 ms)
tail_steps=${EKVAE_KILL_TAIL:-300} # trained after the last kill's checkpoint
tiny=(--restarts 1 --image-size 8 --enc-hidden "[32]" --dec-hidden "[32]" --alpha-hidden "[16]" --K 4
      --train-sequences 16 --test-sequences 4 --batch 4 --window 8 --eval-every 0 --threads 1
      --checkpoint-minutes 0.01 --log-every 100000)
started=$(date +%s%N)

# the step stored in a checkpoint (tensor train.step, I64 [step, rejected]); -1 when absent
ck_step() {
  python3 - "$1" <<'PY' 2>/dev/null || echo -1
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
s, e = json.loads(b[8:8 + n])["train.step"]["data_offsets"]
print(struct.unpack("<q", b[8 + n + s:8 + n + s + 8])[0])
PY
}

run=$tmp/run
last=-1         # step of the last good checkpoint seen
during_write=0  # kills that left a checkpoint's temporary file behind (hit mid-write)
lost=0
resumes=0
for ((i = 1; i <= kills; i++)); do
  if [ -s "$run/checkpoint.safetensors" ]; then
    have=$(ck_step "$run/checkpoint.safetensors")
    cmd=("$train" --out "$run" --resume) # on to the planned $steps
    resumes=$((resumes + 1))
  else
    cmd=("$train" "${tiny[@]}" --steps $steps --out "$run" --force) # a kill before the first checkpoint leaves a log
  fi
  "${cmd[@]}" >"$tmp/seg.txt" 2>&1 &
  pid=$!
  if ((i % 3 == 0)); then
    # on purpose: spin until a checkpoint's temporary file exists, then kill
    while kill -0 $pid 2>/dev/null && ! compgen -G "$run/.checkpoint.safetensors.*.tmp" >/dev/null; do :; done
  else
    sleep "0.$((RANDOM % 10))$((RANDOM % 10))" # 0.00 .. 0.99 s
  fi
  if ! kill -KILL $pid 2>/dev/null; then
    wait $pid
    rc=$?
    if [ $rc -eq 2 ] && grep -q "resume" "$tmp/seg.txt"; then bad "round $i: the checkpoint does not load: $(tail -n1 "$tmp/seg.txt")"; break; fi
    [ $rc -eq 0 ] && { echo "     round $i: the run finished before the kill"; break; }
    bad "round $i: exit $rc: $(tail -n 2 "$tmp/seg.txt")"
    break
  fi
  wait $pid 2>/dev/null
  if compgen -G "$run/.checkpoint.safetensors.*.tmp" >/dev/null; then during_write=$((during_write + 1)); fi
  rm -f "$run"/.*.tmp # debris of the killed writer; the real files are untouched
  now=$(ck_step "$run/checkpoint.safetensors")
  if [ -e "$run/checkpoint.safetensors" ] && [ "$now" -lt 0 ]; then bad "round $i: checkpoint.safetensors unreadable after the kill"; lost=$((lost + 1))
  elif [ "$now" -lt "$last" ]; then bad "round $i: checkpoint went back from step $last to $now"; lost=$((lost + 1))
  fi
  last=$now
done
if [ $((i - 1)) -lt "$kills" ]; then
  bad "only $((i - 1)) of $kills kills landed before the run's $steps steps ended (last checkpoint at step $last): raise EKVAE_KILL_STEPS"
else
  ok "$((i - 1)) kills survived ($during_write while a checkpoint was being written), $resumes resumes, last checkpoint at step $last"
fi
[ $lost -eq 0 ] && ok "no checkpoint was ever lost, torn or older than the one before" || true
[ $during_write -gt 0 ] && ok "kills landed during checkpoint writes" || bad "no kill landed during a checkpoint write"

# resume to the end, $tail_steps steps past the last checkpoint (every kill above is checked to
# have left a loadable checkpoint)
have=$(ck_step "$run/checkpoint.safetensors")
end=$(( (have < 0 ? 0 : have) + tail_steps ))
if [ "$have" -ge 0 ]; then
  "$train" --out "$run" --resume --steps $((end - have)) >"$tmp/seg.txt" 2>&1 || bad "final resume: $(tail -n 2 "$tmp/seg.txt")"
else
  "$train" "${tiny[@]}" --steps $end --out "$run" --force >"$tmp/seg.txt" 2>&1 || bad "final run: $(tail -n 2 "$tmp/seg.txt")"
fi

# the uninterrupted reference: the same configuration, the same $end steps in one go
if "$train" "${tiny[@]}" --steps $end --out "$tmp/ref" >"$tmp/ref.txt" 2>&1; then ok "uninterrupted run of $end steps"
else bad "uninterrupted run: $(tail -n 2 "$tmp/ref.txt")"; echo "$pass passed, $fail failed"; exit 1; fi
if cmp -s "$tmp/ref/model.safetensors" "$run/model.safetensors"; then ok "model.safetensors byte-identical to the uninterrupted run"
else bad "model.safetensors differs from the uninterrupted run"; fi
if cmp -s "$tmp/ref/checkpoint.safetensors" "$run/checkpoint.safetensors"; then ok "checkpoint.safetensors byte-identical to the uninterrupted run"
else bad "checkpoint.safetensors differs from the uninterrupted run"; fi
n=$(grep -c '"D"' "$run/train.jsonl")
[ "$n" -eq $end ] && ok "train.jsonl has one line per step ($end)" || bad "train.jsonl has $n step lines, expected $end"

echo "kill test: $(( ($(date +%s%N) - started) / 1000000 )) ms"
finish
