#!/usr/bin/env bash
# Careless and hostile use of the command-line programs: each defect of the hostile-use issue,
# reproduced, must now be refused (exit 2 and a message naming the problem and a fix) or
# handled (nothing lost, nothing replaced through a link, no hang, no abort).
#   tests/hostile_test.sh BUILD_NATIVE_DIR
set -u
bin=$(cd "$1" && pwd)
train=$bin/ekvae_train
eval=$bin/ekvae_eval
data=$bin/ekvae_data
. "$(dirname "$0")/check.sh"
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT # it makes read-only folders
cd "$tmp"
C=(--restarts 1 --image-size 8 --enc-hidden "[16]" --dec-hidden "[16]" --alpha-hidden "[8]" --K 2
   --train-sequences 8 --test-sequences 2 --batch 4 --window 8 --eval-every 0 --threads 1)
# expect STATUS PATTERN CMD...: exit status and a stderr line matching PATTERN, within 20 s
expect() {
  local want=$1 pattern=$2
  shift 2
  local out rc
  out=$(timeout -k 5 20 "$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq "$want" ] && echo "$out" | grep -qiE -- "$pattern"; then ok "exit $rc: $(echo "$out" | grep -iE -- "$pattern" | head -n1)"
  else bad "expected exit $want and /$pattern/ from $*; got $rc: $(echo "$out" | head -n 3)"; fi
}
"$train" "${C[@]}" --steps 30 --out good >/dev/null 2>&1 || bad "a tiny run failed"
M=good/model.safetensors

# 1. n_u other than 1: refused by the config (flags and model files), never an abort
expect 2 "n_u = 2.*must be 1" "$train" "${C[@]}" --steps 5 --n-u 2 --out nu2
python3 - "$M" nu2.safetensors <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
m = h["__metadata__"]; c = json.loads(m["config"]); c["n_u"] = 2; m["config"] = json.dumps(c)
m.pop("checksum"); m["version"] = "1"
t = json.dumps(h).encode(); t += b" " * ((8 - (8 + len(t)) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])
PY
expect 2 "n_u" "$eval" --model nu2.safetensors --sequences 4

# 2. paths that are not UTF-8: a clear error or a working run, never an uncaught exception
expect 2 "not valid UTF-8" "$train" --data $'bad\xffname.st' --steps 2 "${C[@]}" --out utf
cp "$M" $'m\xfe.safetensors'
if "$eval" --model $'m\xfe.safetensors' --sequences 4 --figures F >/dev/null 2>F.err && [ -s F/figures.json ]; then ok "figures for a model whose path is not UTF-8"
else bad "figures for a non-UTF-8 path: $(tail -n 2 F.err)"; fi

# 3. temporary files: a link planted at the old predictable name is never followed, and the
#    temporary is created exclusively beside the target
echo "precious" > victim
bash -c 'ln -s "$PWD/victim" "out.safetensors.tmp.$$"; exec "$0" --out out.safetensors --sequences 2 --steps 2 --image-size 8' "$data" >/dev/null 2>&1
[ "$(cat victim)" = "precious" ] && [ -f out.safetensors ] && ok "a planted link at NAME.tmp.<pid> is not followed" || bad "the planted link was followed: victim now $(head -c 40 victim)"
ln -s "$PWD/victim" linked.safetensors
expect 2 "symbolic link" "$data" --out linked.safetensors --sequences 2 --steps 2 --image-size 8
[ "$(cat victim)" = "precious" ] && ok "a link at the target is refused, its target untouched" || bad "victim changed"

# 4. device nodes and other non-regular files are never replaced
if mknod fakenull c 1 3 2>/dev/null; then
  expect 2 "device" "$data" --out "$PWD/fakenull" --sequences 2 --steps 2 --image-size 8
  [ -c fakenull ] && ok "the device node is still a device" || bad "fakenull was replaced"
else ok "(mknod not permitted here: device case skipped)"; fi
mkfifo fifo-out
expect 2 "FIFO" "$data" --out fifo-out --sequences 2 --steps 2 --image-size 8

# 5. FIFOs as inputs: refused at once, no hang
mkfifo ff
expect 2 "FIFO" "$eval" --model ff
expect 2 "FIFO" "$train" "${C[@]}" --data ff --steps 2 --out fifo-data
expect 2 "FIFO" "$train" --config ff --steps 2 --out fifo-config
cp -r good fiforun && rm fiforun/checkpoint.safetensors && mkfifo fiforun/checkpoint.safetensors
expect 2 "FIFO" "$train" --resume --out fiforun --steps 2

# 6. an existing run is never silently replaced, and one run directory has one process
lines=$(wc -l < good/train.jsonl)
expect 2 "already holds a run.*--resume.*--force" "$train" "${C[@]}" --steps 5 --out good
[ "$(wc -l < good/train.jsonl)" -eq "$lines" ] && ok "the refused run left train.jsonl as it was ($lines lines)" || bad "train.jsonl changed"
"$train" "${C[@]}" --steps 100000 --out busy >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do [ -f busy/config.json ] && break; sleep 0.1; done
expect 2 "in use by another" "$train" --resume --out busy --steps 5
kill -INT $pid; wait $pid
"$train" "${C[@]}" --steps 5 --out good --force >/dev/null 2>&1 && [ "$(grep -c '"D"' good/train.jsonl)" -eq 5 ] && ok "--force starts the run over" || bad "--force"

# 7. memory: runs that cannot fit are refused with an estimate before allocating; running out
#    anyway is an error message, not an abort
expect 2 "needs about .* of memory.*--batch" "$train" --batch 4096 --window 4096 --sequence-steps 4096 --train-sequences 8 --restarts 1 --steps 2 --out oom1
if [ -n "${ASAN_OPTIONS:-}" ]; then
  # AddressSanitizer reserves terabytes of address space (ulimit -v cannot apply) and inflates RSS:
  # the limit and peak-memory checks run in the plain build's ctest only
  echo "note: ulimit and peak-memory checks skipped under ASan"
else
expect 2 "needs about .* of memory" bash -c "ulimit -v 1000000; exec \"$train\" --train-sequences 60000 --restarts 1 --steps 2 --out oom2"
expect 2 "needs about .* of memory.*--sequences" bash -c "ulimit -v 150000; exec \"$eval\" --model \"$M\" --sequences 5000"
expect 2 "needs about .* of memory.*--sequences" bash -c "ulimit -v 300000; exec \"$data\" --out big.st --sequences 20000 --steps 64"
# (running out of memory past the estimate is cli_main's bad_alloc message: tests/test_cli.cpp)
"$data" --out mid.st --sequences 600 --steps 64 --seed 5 >/dev/null
size=$(stat -c %s mid.st)
rss=$( { /usr/bin/time -f "%M" "$train" --restarts 1 --data mid.st --steps 1 --test-sequences 2 --eval-every 0 --out memrun >/dev/null 2>/dev/null; } 2>&1 | tail -n1)
base=$( { /usr/bin/time -f "%M" "$train" --restarts 1 --steps 1 --train-sequences 2 --test-sequences 2 --eval-every 0 --out memrun0 >/dev/null 2>/dev/null; } 2>&1 | tail -n1)
extra=$(( (rss - base) * 1024 ))
if [ "$extra" -lt $(( size * 13 / 10 )) ]; then ok "a $((size >> 20)) MiB data file adds $((extra >> 20)) MiB to the peak (at most 1.3x its size)"
else bad "a $((size >> 20)) MiB data file adds $((extra >> 20)) MiB to the peak"; fi
fi

# 8. SIGPIPE and SIGHUP lose nothing; the log reaches the disk while training goes on
# (a run that goes on well after head has closed the pipe: natively 3000 steps take ~0.3 s; under
# ASan a step is ~6 ms, so 500 steps, ~3 s, where 3000 took 19 s)
ps=3000
[ -n "${ASAN_OPTIONS:-}" ] && ps=500
"$train" "${C[@]}" --steps $ps --log-every 1 --out pipe 2>&1 | head -n 2 >/dev/null
[ -s pipe/model.safetensors ] && [ -s pipe/checkpoint.safetensors ] && [ "$(grep -c '"D"' pipe/train.jsonl)" -eq $ps ] &&
  ok "a closed pipe on stderr: the run finished ($ps log lines, checkpoint, model)" || bad "closed pipe: $(ls pipe) $(wc -l < pipe/train.jsonl)"
"$train" "${C[@]}" --steps 10000000 --out hup >/dev/null 2>&1 &
pid=$!
n=0
for _ in $(seq 200); do  # up to 20 s
  sleep 0.1
  n=$(grep -c '"D"' hup/train.jsonl 2>/dev/null) || n=0
  [ "$n" -gt 0 ] && break
done
[ "$n" -gt 0 ] && kill -0 $pid 2>/dev/null && ok "the log has $n lines on disk while the run goes on" || bad "the log is empty after 20 s (or the run ended)"
kill -HUP $pid; wait $pid; rc=$?
[ $rc -eq 129 ] && [ -s hup/checkpoint.safetensors ] && [ -s hup/model.safetensors ] && ok "SIGHUP: saved, exit 129" || bad "SIGHUP: exit $rc"
"$train" "${C[@]}" --steps 10000000 --out term >/dev/null 2>&1 &
pid=$!
sleep 1; kill -TERM $pid; wait $pid; rc=$?
[ $rc -eq 143 ] && [ -s term/checkpoint.safetensors ] && ok "SIGTERM: saved, exit 143" || bad "SIGTERM: exit $rc"

# 9. non-finite metrics and absurd data are errors
python3 - "$M" huge.safetensors <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read()); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
h["__metadata__"].pop("checksum"); h["__metadata__"]["version"] = "1"
body = b[8 + n:]; s = h["A"]["data_offsets"][0]; body[s:s + 4] = struct.pack("<f", 3e38)
t = json.dumps(h).encode(); t += b" " * ((8 - (8 + len(t)) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(t)) + t + bytes(body))
PY
expect 1 "not finite" "$eval" --model huge.safetensors --sequences 4
"$data" --out act.st --sequences 4 --steps 48 --image-size 8 >/dev/null
python3 - act.st act-huge.st <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read()); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
h["__metadata__"].pop("checksum", None)
body = b[8 + n:]; s = h["actions"]["data_offsets"][0]; body[s:s + 4] = struct.pack("<f", 1e30)
t = json.dumps(h).encode(); t += b" " * ((8 - (8 + len(t)) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(t)) + t + bytes(body))
PY
expect 2 "far outside the declared torque range" "$train" "${C[@]}" --data act-huge.st --steps 2 --out acts
expect 2 "far outside the declared torque range" "$eval" --model "$M" --data act-huge.st

# 10. --resume --config: the file is treated exactly like flags
echo '{"lr": 0.5}' > new.json
expect 2 "lr.*from --config.*cannot change when resuming" "$train" --resume --config new.json --out good --steps 2
echo '{"threads": 1, "lr": 0.001}' > same.json
"$train" --resume --config same.json --out good --steps 2 >/dev/null 2>&1 && ok "--resume --config with unchanged or run-control keys" || bad "--resume --config same.json refused"

# 11. smaller ones
"$train" "${C[@]}" --n_z 2 --steps 2 --out underscores >/dev/null 2>&1 && grep -q '"n_z": 2' underscores/config.json && ok "--n_z is --n-z" || bad "--n_z refused"
echo '{"lr": 0.1,, }' > bad.json
expect 2 "line 1, column" "$train" --config bad.json --steps 2 --out badjson
echo '{"lr": 0.1, "lr": 0.2}' > dup.json
expect 2 "duplicate key 'lr'" "$train" --config dup.json --steps 2 --out dup
expect 2 "between 4 and" "$data" --out tiny.st --sequences 2 --steps 2 --image-size 2
long=$(printf 'x%.0s' $(seq 250))
expect 2 "file name has|shorter" "$data" --out "$long" --sequences 2 --steps 2 --image-size 8
ls "$long" 2>/dev/null && bad "a file with the too-long name exists" || true
mkdir closed
( exec 2>&-; "$train" "${C[@]}" --steps 60 --log-every 1 --out closed/run >/dev/null )
! grep -q "steps/s" closed/run/train.jsonl && [ "$(grep -c '"D"' closed/run/train.jsonl)" -eq 60 ] && ok "with stderr closed, progress lines stay out of train.jsonl" || bad "progress lines in train.jsonl"
mkdir dangling && ln -s "$tmp/elsewhere.jsonl" dangling/train.jsonl
expect 2 "already holds a run" "$train" "${C[@]}" --steps 2 --out dangling
expect 2 "symbolic link" "$train" "${C[@]}" --steps 2 --out dangling --force
[ ! -e elsewhere.jsonl ] || [ -L dangling/train.jsonl ] && [ ! -e elsewhere.jsonl ] && ok "the dangling link was not followed" || bad "elsewhere.jsonl was created"
expect 2 "lambda_init.*out of range" "$train" --lambda-min 0 --lambda-init 0 --steps 2 --out lam0
expect 2 "D0.*out of range" "$train" --D0 -1 --steps 2 --out d0
python3 - "$M" flipped.safetensors <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.index(b"q_min"); j = b.index(b"0001", i)
b[j - 1] = ord("4") if b[j - 1] != ord("4") else ord("5")
open(sys.argv[2], "wb").write(bytes(b))
PY
expect 2 "checksum mismatch" "$eval" --model flipped.safetensors
cp good/checkpoint.safetensors ck-backup.safetensors
python3 - good/checkpoint.safetensors <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-3] ^= 0x10; open(p, "wb").write(bytes(b))
PY
expect 2 "checksum mismatch" "$train" --resume --out good --steps 2

finish
