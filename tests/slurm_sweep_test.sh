#!/usr/bin/env bash
# scripts/sweep.py on a real (single-node) Slurm against the local executor:
#   tests/slurm_sweep_test.sh BUILD_NATIVE_DIR
# 1. a tiny sweep (2 objectives x 2 seeds x 50 steps) through a Slurm job array: every run
#    executed as an array task (its log records SLURM_ARRAY_TASK_ID);
# 2. the same sweep with --executor local: byte-identical models and the same table;
# 3. a task killed mid-run (scancel) is resumed from its checkpoint, to its planned steps, by re-running the sweep,
#    and ends byte-identical to an uninterrupted run.
# Starts the local Slurm with scripts/slurm_local.sh (root or sudo needed).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
export EKVAE_BIN=$(cd "$1" && pwd)
. "$(dirname "$0")/check.sh"
sweep() { /usr/bin/python3 "$top/scripts/sweep.py" "$@"; }

"$top/scripts/slurm_local.sh" start || { bad "the local Slurm did not start"; finish; exit 1; }

tiny='"restarts": 1, "image_size": 8, "enc_hidden": [16], "dec_hidden": [16], "alpha_hidden": [8], "K": 2,
      "train_sequences": 16, "test_sequences": 4, "batch": 4, "window": 8, "eval_every": 0, "threads": 1'
cat > "$tmp/spec.json" <<EOF
{"preset": "pendulum", "objectives": ["constrained", "elbo"], "seeds": [0, 1], "steps": 50,
 "flags": {$tiny}, "eval": {"sequences": 8}}
EOF

# 1. through Slurm
if sweep "$tmp/spec.json" --out "$tmp/slurm" --executor slurm >"$tmp/slurm.txt" 2>&1; then ok "sweep through Slurm: $(grep -c 'trained\|array' "$tmp/slurm.txt") progress lines"
else bad "sweep through Slurm: $(tail -n 5 "$tmp/slurm.txt")"; fi
n=0
for d in "$tmp"/slurm/runs/default/*/; do
  grep -qE "SLURM_ARRAY_TASK_ID=[0-9]+" "$d/sweep.log" && n=$((n + 1))
done
[ $n -eq 4 ] && ok "all 4 runs ran as Slurm array tasks (SLURM_ARRAY_TASK_ID in their logs)" || bad "$n of 4 runs logged an array task id"
[ -s "$tmp/slurm/slurm/array.sh" ] && grep -q -- "--cpus-per-task=1" "$tmp/slurm/slurm/array.sh" && ok "array script with --cpus-per-task = threads" || bad "array.sh"

# 2. the same sweep on this machine
sweep "$tmp/spec.json" --out "$tmp/local" --executor local --jobs 2 >"$tmp/local.txt" 2>&1 || bad "local sweep: $(tail -n 5 "$tmp/local.txt")"
same=0
for d in "$tmp"/slurm/runs/default/*/; do
  r=$(basename "$d")
  cmp -s "$d/model.safetensors" "$tmp/local/runs/default/$r/model.safetensors" && same=$((same + 1))
done
[ $same -eq 4 ] && ok "local and Slurm executors: 4 byte-identical models" || bad "only $same of 4 models identical"
/usr/bin/python3 - "$tmp/slurm/results.json" "$tmp/local/results.json" <<'PY' && ok "the same results table (every metric of every run and setting)" || bad "the results tables differ"
import json, sys
def strip(p):
    r = json.load(open(p))
    for x in r["runs"]:
        x.pop("dir", None); x.pop("minutes", None)
    for g in r["settings"]:
        g.pop("minutes", None)
    return r["runs"], r["settings"]
sys.exit(0 if strip(sys.argv[1]) == strip(sys.argv[2]) else 1)
PY

/usr/bin/python3 - "$tmp"/local/runs/default/*/sweep_run.json <<'PY' && ok "each run records the CPU it trained on (the build is -march=native)" || bad "sweep_run.json without its CPU"
import json, sys
sys.exit(0 if all(len(json.load(open(p)).get("cpus", [])) == 1 and " CPUs, " in json.load(open(p))["cpus"][0] for p in sys.argv[1:]) else 1)
PY

# 2a. --record: the small files a study's table rests on, in a folder of their own (to commit)
sweep "$tmp/spec.json" --out "$tmp/local" --record "$tmp/rec" >"$tmp/rec.txt" 2>&1 || bad "--record: $(tail -n 5 "$tmp/rec.txt")"
n=0
for d in "$tmp"/local/runs/default/*/; do
  r=$tmp/rec/runs/default/$(basename "$d")
  cmp -s "$d/eval.json" "$r/eval.json" && cmp -s "$d/config.json" "$r/config.json" && [ ! -e "$r/model.safetensors" ] &&
    /usr/bin/python3 - "$d/train.jsonl" "$r/train.jsonl" <<'PY' && n=$((n + 1))
import json, sys
full, kept = (open(p).read().splitlines() for p in sys.argv[1:])
steps = [l for l in full if "D" in json.loads(l)]
# the record keeps every line that is not a training step, and of the steps the first, the last
# and every 1000th (none of these 50)
sys.exit(0 if len(steps) == 50 and kept == [l for l in full if l not in steps or l in (steps[0], steps[-1])] else 1)
PY
done
[ $n -eq 4 ] && ok "--record: 4 runs' eval.json and config.json copied, logs thinned, no models" || bad "--record copied $n of 4 runs"
# the thinning rule on a log with everything in it: 2,500 steps, a probe every 700, restarts'
# start_done lines, a probe after the last step (which is no 1000th), a line cut by a kill and
# a last line without its newline
/usr/bin/python3 - "$top/scripts" "$tmp/thin" >/dev/null <<'PY' && ok "--record's thinning: non-step lines, first, last and every 1000th step, in order, one per line" || bad "--record thins a log wrongly"
import json, os, sys
sys.path.insert(0, sys.argv[1]); import sweep_report
out = sys.argv[2]; d = os.path.join(out, "runs", "default", "elbo-s0"); os.makedirs(d)
json.dump({}, open(os.path.join(d, "eval.json"), "w"))
lines = []
for t in range(1, 2501):
    lines.append(json.dumps({"D": 1.0, "R": 0.5, "start": 0, "step": t}))
    if t % 700 == 0: lines.append(json.dumps({"probe": {"r2_omega": 0.5}, "step": t}))
    if t == 1200: lines.append(json.dumps({"heldout": {"D": 1.0}, "start_done": 0, "step": t}))
    if t == 1500: lines.append('{"D": 1.0, "R": 0.5, "st')  # cut by a kill
lines.append(json.dumps({"probe": {"r2_omega": 0.6}, "step": 2500}))
open(os.path.join(d, "train.jsonl"), "w").write("\n".join(lines))  # no newline after the last
sweep_report.record([{"setting": "default", "objective": "elbo", "seed": 0}], out, os.path.join(out, "rec"))
got = open(os.path.join(out, "rec", "runs", "default", "elbo-s0", "train.jsonl")).read()
want = [l for l in lines if not l.endswith('"st') and ("D" not in json.loads(l) or json.loads(l)["step"] in (1, 1000, 2000, 2500))]
sys.exit(0 if got == "\n".join(want) + "\n" and len(want) == 4 + 1 + 4 else 1)
PY
# the training probes' figure, from the logs (the tiny sweep's runs probe nothing; the synthetic log does)
[ ! -e "$tmp/local/figures/probes.png" ] && sweep "$tmp/spec.json" --out "$tmp/thin/rec" --summary >/dev/null 2>&1 &&
  [ -s "$tmp/thin/rec/figures/probes.png" ] && ok "figures/probes.png when the runs' logs hold probes (none without)" || bad "figures/probes.png"
sweep "$tmp/spec.json" --out "$tmp/rec" --summary >/dev/null 2>&1
/usr/bin/python3 - "$tmp/local/results.json" "$tmp/rec/results.json" <<'PY' && ok "--summary on the record: the sweep's table" || bad "--summary on the record differs"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for r in a["runs"] + b["runs"]:
    r.pop("dir")
sys.exit(0 if (a["runs"], a["settings"]) == (b["runs"], b["settings"]) else 1)
PY
# a run that lost its files, with the values written down when it was evaluated (recorded.json)
r=$tmp/rec/runs/default/elbo-s1
/usr/bin/python3 - "$r" <<'PY'
import json, os, sys
d = sys.argv[1]
json.dump({"metrics": {"r2_knn_cos": 0.99, "r2_knn_sin": 0.99, "r2_omega": 0.95, "angle_err_10": 0.1, "angle_err_32": 0.2},
           "source": "a test note"}, open(d + "/recorded.json", "w"))
os.remove(d + "/eval.json")
PY
sweep "$tmp/spec.json" --out "$tmp/rec" --summary >/dev/null 2>&1
/usr/bin/python3 - "$tmp/rec/results.json" <<'PY' && grep -q "elbo-s1 (recorded): a test note" "$tmp/rec/results.md" &&
import json, sys
r = next(x for x in json.load(open(sys.argv[1]))["runs"] if x["name"] == "default/elbo-s1")
sys.exit(0 if r.get("recorded") == "a test note" and r["r2_omega"] == 0.95 and not r.get("missing") and r["bar"] is True else 1)
PY
  ok "a lost run's recorded.json: its values in the table, marked (recorded) with their source" || bad "recorded.json not used"
st=$(sweep "$tmp/spec.json" --out "$tmp/rec" --status 2>&1)
echo "$st" | grep -q "elbo-s1: recorded only (recorded.json" && ok "--status names a recorded run as recorded, not 'not started'" || bad "--status of a recorded run: $st"
err=$( { sweep "$tmp/spec.json" --out "$tmp/rec" --status | true; } 2>&1 )
[ -z "$err" ] && ok "--status piped into a reader that quits: no traceback" || bad "--status | true: $err"
echo '{"metrics": {"r2_omega": 0.95}, "source": "a note without the bar'"'"'s other keys"}' > "$r/recorded.json"
out=$(sweep "$tmp/spec.json" --out "$tmp/rec" --summary 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q "lacks the quality bar's r2_knn_cos" && ok "a recorded.json without the bar's keys: refused, naming them, exit 2" \
  || bad "recorded.json without the bar's keys: $out"
out=$(sweep "$tmp/spec.json" --out "$tmp/local" --record "$tmp/local" 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q "another folder" && ok "--record into the sweep's own folder: refused, exit 2" || bad "--record REC = DIR: $out"

# 2c. --only: some runs of the grid, in the order given; the table still lists the grid
out=$(sweep "$tmp/spec.json" --out "$tmp/only" --jobs 1 --only elbo-s1,default/constrained-s0 2>&1)
ls "$tmp/only/runs/default" > "$tmp/only.txt"
if [ "$(tr '\n' ' ' < "$tmp/only.txt")" = "constrained-s0 elbo-s1 " ] &&
   [ "$tmp/only/runs/default/elbo-s1/eval.json" -ot "$tmp/only/runs/default/constrained-s0/eval.json" ] &&
   cmp -s "$tmp/only/runs/default/elbo-s1/model.safetensors" "$tmp/local/runs/default/elbo-s1/model.safetensors" &&
   [ "$(grep -c '| missing |' "$tmp/only/results.md")" = 2 ]; then
  ok "--only elbo-s1,default/constrained-s0: those two, in that order, the same model; the table lists the other 2 as missing"
else bad "--only: $(cat "$tmp/only.txt") / $out"; fi
# ship_models from a study still running (the --only sweep: one run of each objective evaluated,
# one of each still to run): the records count the seeds so far and say how many are not evaluated yet;
# from the finished sweep they do not (until 2026-12-07 a running study's records read "1 of 1 seeds")
/usr/bin/python3 "$top/scripts/ship_models.py" "$tmp/only" --models-dir "$tmp/ship-only" >"$tmp/ship.txt" 2>&1 &&
  /usr/bin/python3 "$top/scripts/ship_models.py" "$tmp/local" --models-dir "$tmp/ship-all" >>"$tmp/ship.txt" 2>&1
/usr/bin/python3 - "$tmp/ship-only" "$tmp/ship-all" <<'PY' && ok "ship_models from a running study: 'so far, 1 not evaluated yet' in both records and models; a finished one's without" || bad "ship_models' records: $(cat "$tmp/ship.txt")"
import json, os, struct, sys
def records(d):
    st = json.load(open(os.path.join(d, "study.json")))
    out = []
    for o in ("constrained", "elbo"):
        b = open(os.path.join(d, f"pendulum-{o}.safetensors"), "rb").read()
        meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
        if meta["record"] != st[o]["record"]:
            sys.exit(1)
        out.append((st[o]["seeds"], st[o]["not_evaluated"], st[o]["record"]))
    return out
part, full = records(sys.argv[1]), records(sys.argv[2])
sys.exit(0 if all(n == 1 and todo == 1 and " of 1 seeds met the quality bar so far, 1 not evaluated yet (" in r for n, todo, r in part)
         and all(n == 2 and todo == 0 and "so far" not in r and "not evaluated" not in r for n, todo, r in full) else 1)
PY
out=$(/usr/bin/python3 "$top/scripts/ship_models.py" "$tmp/only" --constrained-seed 1 --models-dir "$tmp/ship-s1" 2>&1)
[ $? -eq 1 ] && echo "$out" | grep -q "constrained seed 1 is not evaluated" && [ ! -e "$tmp/ship-s1" ] &&
  ok "ship_models with a seed not evaluated yet: refused with its name, nothing written" || bad "ship_models --constrained-seed 1: $out"
out=$(sweep "$tmp/spec.json" --out "$tmp/only2" --only elbo-s7 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q "no run 'elbo-s7'" && [ ! -e "$tmp/only2" ] && ok "--only with a run the spec lacks: refused before anything is made, exit 2" \
  || bad "--only elbo-s7: $out"

# 2b. what a sweep refuses: a run whose checkpoint is at its planned step without a model (it
#     evaluated an older model or failed on every re-run until 2026-12-07), and a time-limited spec
r=$tmp/local/runs/default/elbo-s1
rm -f "$r/model.safetensors" "$r/eval.json"
out=$(sweep "$tmp/spec.json" --out "$tmp/local" --executor local --jobs 1 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q "but no model.safetensors" && ok "a checkpoint at its planned step without a model: reported, exit 1" \
  || bad "no model beside a finished checkpoint: $out"
echo '{"objectives": ["elbo"], "seeds": [0], "flags": {"train_minutes": 1}}' > "$tmp/minutes.json"
out=$(sweep "$tmp/minutes.json" --out "$tmp/minutes" 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q "step-limited" && ok "a spec with train_minutes: refused, exit 2" || bad "train_minutes spec: $out"
out=$(EKVAE_SWEEP_SAVE_SECONDS=soon sweep "$tmp/spec.json" --out "$tmp/slurm" --status 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q "EKVAE_SWEEP_SAVE_SECONDS='soon': a number of seconds > 0" && ok "EKVAE_SWEEP_SAVE_SECONDS=soon: refused, exit 2" || bad "EKVAE_SWEEP_SAVE_SECONDS=soon: $out"

# 3. a task killed mid-run resumes when the sweep is run again, to the run's planned steps:
#    here a train_steps flag, not the spec's "steps" (until 2026-12-07 the sweep resumed to the
#    default preset's 30,000, and a 120,000-step arm run stopped at 30,000)
cat > "$tmp/long.json" <<EOF
{"preset": "pendulum", "objectives": ["constrained"], "seeds": [0, 1],
 "flags": {$tiny, "train_steps": 100000, "checkpoint_minutes": 0.01}, "eval": {"sequences": 8}}
EOF
EKVAE_SWEEP_SAVE_SECONDS=1 sweep "$tmp/long.json" --out "$tmp/kill" --executor slurm --no-wait >"$tmp/kill.txt" 2>&1
job=$(cat "$tmp/kill/slurm/job_id" 2>/dev/null)
ck=$tmp/kill/runs/default/constrained-s0/checkpoint.safetensors
for _ in $(seq 300); do [ -s "$ck" ] && break; sleep 0.1; done
# the run's time trained so far, from its sweep_run.json (0 when not saved yet)
seconds() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("seconds", 0))' "$1" 2>/dev/null || echo 0; }
at_least() { /usr/bin/python3 -c 'import sys; sys.exit(not float(sys.argv[1]) >= float(sys.argv[2]))' "$1" "$2"; }
meta=$tmp/kill/runs/default/constrained-s0/sweep_run.json
# (let it train past the sweep's first save of its time: every second here, EKVAE_SWEEP_SAVE_SECONDS)
for _ in $(seq 50); do [ -s "$ck" ] && at_least "$(seconds "$meta")" 1 && break; sleep 0.1; done
if [ -n "$job" ] && [ -s "$ck" ] && squeue -h -j "$job" -r | grep -q .; then
  scancel "${job}_0"
  for _ in $(seq 600); do squeue -h -j "$job" -r | grep -q . || break; sleep 0.2; done
  if [ ! -f "$tmp/kill/runs/default/constrained-s0/eval.json" ]; then ok "task 0 cancelled mid-run (a checkpoint, no eval.json)"
  else bad "task 0 finished before it was cancelled"; fi
  # until 2026-12-08 a run's seconds were saved only when ekvae_train returned: a killed task lost them
  s1=$(seconds "$meta")
  at_least "$s1" 1 && ok "the cancelled task kept the time it trained in sweep_run.json ($s1 s)" || bad "the cancelled task's sweep_run.json has $s1 s"
  sweep "$tmp/long.json" --out "$tmp/kill" --executor slurm >"$tmp/kill2.txt" 2>&1 || bad "re-run: $(tail -n 5 "$tmp/kill2.txt")"
  grep -q -- "--resume" "$tmp/kill/runs/default/constrained-s0/sweep.log" && ok "the re-run resumed task 0 from its checkpoint" || bad "task 0 was not resumed"
  # the resumed part's own time: ekvae_train's "done at step N after M:SS" in the run's log
  part=$(sed -n 's/^done at step [0-9]* after \([0-9]*\):\([0-9]*\).*/\1 \2/p' "$tmp/kill/runs/default/constrained-s0/sweep.log" | tail -1 | awk '{print $1 * 60 + $2}')
  s2=$(seconds "$meta")
  [ -n "$part" ] && at_least "$s2" "$(/usr/bin/python3 -c "print($s1 + $part - 1)")" &&
    ok "the resumed run's seconds are the cancelled part's plus the resumed part's ($s1 s + ${part} s -> $s2 s)" || bad "seconds after the resume: $s2 (before: $s1, the resumed part ${part:-?} s)"
  sweep "$tmp/long.json" --out "$tmp/ref" --executor local --jobs 2 >/dev/null 2>&1
  cmp -s "$tmp/kill/runs/default/constrained-s0/model.safetensors" "$tmp/ref/runs/default/constrained-s0/model.safetensors" &&
    ok "the resumed run's model is byte-identical to an uninterrupted run" || bad "the resumed model differs from the uninterrupted one"
else
  bad "could not catch task 0 running (job '$job', checkpoint $( [ -s "$ck" ] && echo yes || echo no))"
fi
st=$(sweep "$tmp/spec.json" --out "$tmp/slurm" --status 2>&1)
[ "$(echo "$st" | grep -c ': done$')" -eq 4 ] && ok "--status lists the 4 runs as done" || bad "--status: $st"

# 4. choosing a run without true states: --validate evaluates the trained runs on the spec's
#    validation set; each objective's results name the run with the best held-out ELBO there
sed 's/"eval": {"sequences": 8}}/"eval": {"sequences": 8}, "validation": {"seed": 9, "sequences": 8}}/' "$tmp/spec.json" > "$tmp/val.json"
sweep "$tmp/val.json" --out "$tmp/slurm" --validate >"$tmp/val.txt" 2>&1 || bad "--validate: $(tail -n 5 "$tmp/val.txt")"
/usr/bin/python3 - "$tmp/slurm" <<'PY' && ok "--validate: validation.json for the 4 runs (another set than eval.json's); each objective chooses its best held-out ELBO there" || bad "--validate: $(cat "$tmp/val.txt")"
import glob, json, os, sys
out = sys.argv[1]
res = json.load(open(os.path.join(out, "results.json")))
md = open(os.path.join(out, "results.md")).read()
runs = sorted(glob.glob(os.path.join(out, "runs/default/*/")))
v = {os.path.basename(r.rstrip("/")): json.load(open(r + "validation.json"))["elbo"] for r in runs}
e = {os.path.basename(r.rstrip("/")): json.load(open(r + "eval.json"))["elbo"] for r in runs}
ok = len(v) == 4 and v != e
for g in res["settings"]:
    mine = {k: x for k, x in v.items() if k.startswith(g["objective"] + "-")}
    best = max(mine, key=mine.get)
    ok = ok and g["chosen"]["run"] == "default/" + best and g["chosen"]["among"] == 2 and \
        f"Chosen without true states, default/{g['objective']}: default/{best}," in md
sys.exit(0 if ok else 1)
PY
# a sweep of a spec with the validation set: a new run gets validation.json after its eval.json
# (the first version of this crashed there, writing to its closed log), and a run done before
# it is evaluated on the set on a re-run, without training again
sweep "$tmp/val.json" --out "$tmp/valrun" --jobs 1 --only constrained-s0 >"$tmp/valrun.txt" 2>&1; rc=$?
v=$tmp/valrun/runs/default/constrained-s0/validation.json
[ $rc -eq 0 ] && /usr/bin/python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["set"] != {"seed": 9, "sequences": 8})' "$v" && ok "a new run of a spec with a validation set: validation.json (its set named) after training" \
  || bad "new run with a validation set: $(tail -n 5 "$tmp/valrun.txt")"
r=$tmp/slurm/runs/default/elbo-s0
cp "$r/model.safetensors" "$tmp/elbo-s0.model"; rm "$r/validation.json"
trains=$(grep -c 'ekvae_train' "$r/sweep.log")
sweep "$tmp/val.json" --out "$tmp/slurm" --jobs 2 >"$tmp/val2.txt" 2>&1; rc=$?
[ $rc -eq 0 ] && [ -s "$r/validation.json" ] && cmp -s "$r/model.safetensors" "$tmp/elbo-s0.model" &&
  [ "$(grep -c 'ekvae_train' "$r/sweep.log")" = "$trains" ] &&
  ok "a run done before the spec had its validation set: evaluated on it by a re-run, not trained again" || bad "re-run with a validation set: $(tail -n 5 "$tmp/val2.txt")"
sed 's/"seed": 9/"seed": 3/' "$tmp/val.json" > "$tmp/val3.json"
out=$(sweep "$tmp/val3.json" --out "$tmp/slurm" --validate 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q "validation seed 3 is also the eval set's" && ok "a validation set that is the reported test set: refused, exit 2" || bad "validation seed = eval seed: $out"

finish
