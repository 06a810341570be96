#!/usr/bin/env bash
# ekvae_train / ekvae_eval through the real binaries: a tiny run, resume, bad input
# (exit status 2 and a message naming the problem), divergence, and that no good file is lost.
#   tests/cli_train_test.sh BUILD_NATIVE_DIR
set -u
bin=$1
train=$bin/ekvae_train
eval=$bin/ekvae_eval
data=$bin/ekvae_data
. "$(dirname "$0")/check.sh"
tiny=(--restarts 1 --image-size 8 --enc-hidden "[32]" --dec-hidden "[32]" --alpha-hidden "[16]" --K 4
      --train-sequences 16 --test-sequences 4 --batch 4 --window 8 --eval-every 10)

# expect_fail STATUS PATTERN CMD...: exit status and a stderr line matching PATTERN
expect_fail() {
  local want=$1 pattern=$2
  shift 2
  local out
  out=$("$@" 2>&1 >/dev/null)
  local rc=$?
  if [ $rc -eq "$want" ] && echo "$out" | grep -qiE -- "$pattern"; then ok "exit $rc: $(echo "$out" | head -n1)"
  else bad "expected exit $want and /$pattern/, got $rc: $out"; fi
}

# a tiny run
if "$train" "${tiny[@]}" --steps 20 --out "$tmp/run" >"$tmp/out.txt" 2>&1; then ok "tiny training run"
else bad "tiny training run: $(cat "$tmp/out.txt")"; fi
for f in config.json train.jsonl checkpoint.safetensors model.safetensors; do
  [ -s "$tmp/run/$f" ] && ok "wrote $f" || bad "missing $f"
done
n=$(grep -c '"D"' "$tmp/run/train.jsonl")
[ "$n" -eq 20 ] && ok "train.jsonl has one line per step (20)" || bad "train.jsonl has $n step lines, expected 20"
grep -q '"probe"' "$tmp/run/train.jsonl" && ok "train.jsonl has r2 probe lines" || bad "no probe lines in train.jsonl"
grep -q '"n_z": 3' "$tmp/run/config.json" && ok "config.json holds the resolved config" || bad "config.json: $(head -c 200 "$tmp/run/config.json")"

# resume continues from the checkpoint's step
if "$train" --out "$tmp/run" --resume --steps 5 >"$tmp/out.txt" 2>&1 && grep -q "at step 25" "$tmp/out.txt"; then ok "--resume continues to step 25"
else bad "--resume: $(cat "$tmp/out.txt")"; fi
n=$(grep -c '"D"' "$tmp/run/train.jsonl")
[ "$n" -eq 25 ] && ok "resumed log has 25 step lines" || bad "resumed log has $n step lines"
# config.json records the run's total steps, not the resumed session's
grep -q '"train_steps": 25' "$tmp/run/config.json" && ok "config.json after the resume: train_steps 25" \
  || bad "config.json after the resume: $(grep train_steps "$tmp/run/config.json")"

# eval on the tiny model
if "$eval" --model "$tmp/run/model.safetensors" --sequences 4 --json >"$tmp/eval.json" 2>"$tmp/err.txt" &&
   grep -q '"forecast_angle_err"' "$tmp/eval.json"; then ok "ekvae_eval --json"
else bad "ekvae_eval: $(cat "$tmp/err.txt")"; fi

# bad input: usage errors exit 2 with a message naming the problem
expect_fail 2 "unknown flag|--frobnicate" "$train" --frobnicate 3
expect_fail 2 "objective" "$train" --objective magic --steps 1 --out "$tmp/x"
expect_fail 2 "batch" "$train" --batch 0 --steps 1 --out "$tmp/x"
expect_fail 2 "minutes or --steps|not both" "$train" --minutes 1 --steps 1 --out "$tmp/x"
expect_fail 2 "resume" "$train" --resume --out "$tmp/nothing-here"
expect_fail 2 "cannot change when resuming" "$train" --resume --out "$tmp/run" --lr 0.1
expect_fail 2 "preset" "$train" --preset cartpole --steps 1
"$data" --out "$tmp/d32.safetensors" --sequences 4 --steps 40 --image-size 32 >/dev/null
expect_fail 2 "image_size|--image-size" "$train" "${tiny[@]}" --data "$tmp/d32.safetensors" --steps 1 --out "$tmp/x"
expect_fail 2 "expects 8x8|--image-size 8" "$eval" --model "$tmp/run/model.safetensors" --data "$tmp/d32.safetensors"
echo '{"lr": "fast"}' > "$tmp/bad.json"
expect_fail 2 "lr" "$train" --config "$tmp/bad.json" --steps 1 --out "$tmp/x"
head -c 1000 "$tmp/run/model.safetensors" > "$tmp/trunc.safetensors"
expect_fail 2 "truncat|longer than|shorter" "$eval" --model "$tmp/trunc.safetensors"
expect_fail 2 "not an ekvae model" "$eval" --model "$tmp/d32.safetensors"

# divergence: an absurd learning rate makes steps non-finite; each is rejected and reported,
# the run stops with exit 1 after 20 in a row, and the weights it writes are the last finite ones
"$train" "${tiny[@]}" --lr 10 --clip-norm 0 --steps 200 --out "$tmp/div" >"$tmp/div.txt" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "training diverged" "$tmp/div.txt" && grep -q "rejected: non-finite" "$tmp/div.txt"; then ok "diverging run: steps rejected and reported, exit 1"
else bad "diverging run: exit $rc, $(tail -n 3 "$tmp/div.txt")"; fi
python3 - "$tmp/div/model.safetensors" <<'PY' && ok "diverged run's model holds only finite weights" || bad "diverged run's model is not finite"
import json, struct, sys, math, array
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
for k, v in h.items():
    if k == "__metadata__" or v["dtype"] != "F32":
        continue
    s, e = v["data_offsets"]
    a = array.array("f", b[8 + n + s:8 + n + e])
    assert all(math.isfinite(x) for x in a), k
PY

# Ctrl-C (SIGINT) saves a checkpoint and the model, exits 130; the run resumes from there
"$train" "${tiny[@]}" --log-every 100000 --steps 1000000 --out "$tmp/int" >"$tmp/int.txt" 2>&1 &
pid=$!
sleep 3
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 130 ] && [ -s "$tmp/int/checkpoint.safetensors" ] && grep -q "interrupted" "$tmp/int.txt"; then ok "SIGINT: checkpoint written, exit 130"
else bad "SIGINT: exit $rc, $(tail -n 2 "$tmp/int.txt")"; fi
# --resume alone continues to the run's planned 1000000 steps (until 2026-12-06 it planned
# 1000000 more: config.json said step + 1000000)
"$train" --out "$tmp/int" --resume >"$tmp/int.txt" 2>&1 &
pid=$!
sleep 2
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 130 ] && grep -q "interrupted" "$tmp/int.txt" && grep -q '"train_steps": 1000000,' "$tmp/int/config.json"; then
  ok "--resume alone: on to the planned 1000000 steps"
else bad "--resume alone: exit $rc, $(grep train_steps "$tmp/int/config.json"), $(tail -n 1 "$tmp/int.txt")"; fi
at=$(sed -n 's/.*interrupted at step \([0-9]*\).*/\1/p' "$tmp/int.txt")
"$train" --out "$tmp/int" --resume --steps 2 >/dev/null 2>&1 && ok "resume after SIGINT" || bad "resume after SIGINT"
# the files' own config says the run's total, as config.json does; a finished run resumed
# without --steps is refused with the way to train more
python3 - "$tmp/int/model.safetensors" $((at + 2)) <<'PY' && ok "the model file's config after --resume --steps 2: train_steps $((at + 2))" \
  || bad "the model file's config after --resume --steps 2 is not train_steps $((at + 2))"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
assert json.loads(json.loads(b[8:8 + n])["__metadata__"]["config"])["train_steps"] == int(sys.argv[2])
PY
expect_fail 2 "already trained its $((at + 2)) steps: add --steps N" "$train" --out "$tmp/int" --resume

ls -a "$tmp"/*/ 2>/dev/null | grep -q "\.tmp$" && bad "temporary files left behind" || ok "no temporary files left"

finish
