#!/usr/bin/env bash
# Trains the shipped models and the objective comparison of docs/results.md:
# both objectives (constrained, elbo) x seeds 0..4 on the default 'pendulum' preset, each
# evaluated by ekvae_eval on a fresh test set (seed 3, 200 sequences, never used in training).
# Seed 0 of each objective is copied into models/ with its config, log and metrics.
#   scripts/train_models.sh [STEPS] [SEEDS...]        (defaults: 24000 steps, seeds 0 1 2 3 4)
# Two runs at a time; runs/ holds everything. A run that already has a checkpoint is resumed
# up to STEPS (resuming is exact, so 12000 + 12000 resumed equals 24000 in one go).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
steps=${1:-24000}
shift || true
seeds=${*:-0 1 2 3 4}
build=${EKVAE_BUILD_DIR:-build}
cmake -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j2 --target ekvae_train ekvae_eval >/dev/null
mkdir -p runs models

checkpoint_step() { # the step stored in a checkpoint (0 if none)
  /usr/bin/python3 - "$1" <<'PY'
import json, struct, sys
try:
    b = open(sys.argv[1], "rb").read()
except OSError:
    print(0); sys.exit()
n = struct.unpack("<Q", b[:8])[0]
s, e = json.loads(b[8:8 + n])["train.step"]["data_offsets"]
print(struct.unpack("<q", b[8 + n + s:8 + n + s + 8])[0])
PY
}

train() { # objective seed
  local dir=runs/$1-s$2 done_steps
  done_steps=$(checkpoint_step "$dir/checkpoint.safetensors")
  if [ "$done_steps" -eq 0 ]; then
    "$build/native/ekvae_train" --objective "$1" --seed "$2" --steps "$steps" --out "$dir" > "$dir.log" 2>&1
  elif [ "$done_steps" -lt "$steps" ]; then
    "$build/native/ekvae_train" --resume --steps $((steps - done_steps)) --out "$dir" >> "$dir.log" 2>&1
  fi
  "$build/native/ekvae_eval" --model "$dir/model.safetensors" --seed 3 --sequences 200 --json > "$dir/eval.json"
  /usr/bin/python3 -c "import json,sys; e=json.load(open(sys.argv[1])); print(sys.argv[2], 'r2 omega %.3f, angle error %.3f @10 %.3f @32' % (e['r2']['omega'], e['forecast_angle_err']['10'], e['forecast_angle_err']['32']))" "$dir/eval.json" "$dir"
}

for s in $seeds; do
  train constrained "$s" &
  train elbo "$s" &
  wait
done

for obj in constrained elbo; do
  dir=runs/$obj-s0
  [ -f "$dir/model.safetensors" ] || continue
  cp "$dir/model.safetensors" "models/pendulum-$obj.safetensors"
  cp "$dir/config.json" "models/pendulum-$obj.config.json"
  cp "$dir/train.jsonl" "models/pendulum-$obj.train.jsonl"
  cp "$dir/eval.json" "models/pendulum-$obj.eval.json"
done
echo "done: models/ updated from runs/*-s0"
