#!/usr/bin/env bash
# Trains the shipped models and the objective comparison of docs/results.md:
# both objectives (constrained, elbo) x seeds 0 1 2 on the default 'pendulum' preset, each
# evaluated by ekvae_eval on a fresh test set (seed 3, 200 sequences, never used in training).
# Seed 0 of each objective is copied into models/ with its config, log and metrics.
#   scripts/train_models.sh [STEPS] [SEEDS...]        (defaults: 15000 steps, seeds 0 1 2)
# Two runs at a time (one per core pair of threads); runs/ holds everything.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
steps=${1:-15000}
shift || true
seeds=${*:-0 1 2}
build=${EKVAE_BUILD_DIR:-build}
cmake -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j2 --target ekvae_train ekvae_eval >/dev/null
mkdir -p runs models

train() { # objective seed
  local dir=runs/$1-s$2
  "$build/native/ekvae_train" --objective "$1" --seed "$2" --steps "$steps" --out "$dir" > "$dir.log" 2>&1
  "$build/native/ekvae_eval" --model "$dir/model.safetensors" --seed 3 --sequences 200 --json > "$dir/eval.json"
  echo "$dir: $(grep -o '"forecast_angle_err": {[^}]*}' "$dir/eval.json" | head -1)"
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
