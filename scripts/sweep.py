#!/usr/bin/python3
"""Seed and hyperparameter sweeps of ekvae_train, on this machine or on a Slurm cluster.

  scripts/sweep.py SPEC.json --out DIR [--executor local|slurm] [--jobs N] [--no-wait] [--status]

SPEC is a grid; its runs are the product of its lists:

  {"preset": "pendulum", "objectives": ["constrained", "elbo"], "seeds": [0, 1],
   "steps": 50,                                  # optional (default: the preset's train_steps)
   "overrides": {"D0": [9.5, 10]},               # optional: any config key, a list of values
   "variants": {"hold": {"lambda_warmup": "hold"}},  # optional: named sets of config keys (ablation rows)
   "flags": {"threads": 2},                      # optional: config keys with one value for every run
   "eval": {"seed": 3, "sequences": 200},        # optional: ekvae_eval's fresh test set
   "validation": {"seed": 7, "sequences": 200},  # optional: a second fresh set, for choosing a run
   "slurm": {"partition": "cpu", "time": "00:30:00", "cpus_per_task": 2,
             "extra": ["#SBATCH --mem=4G"]}}     # optional

Each run trains into DIR/runs/SETTING/OBJECTIVE-sSEED/ (SETTING names the override values,
"default" without overrides) and then writes eval.json there (ekvae_eval --json on the fresh
test set). A run with eval.json is skipped; a run with a checkpoint resumes from it; a failed
run is reported with the tail of its log and the others go on. Then DIR/results.json,
DIR/results.md (one row per setting: mean +- std over seeds, runs meeting the quality bar;
one row per run), DIR/figures/metrics.png (one dot per seed) and, when the runs' logs hold
training probes, DIR/figures/probes.png (the bar's r² over training, one line per run). The quality bar is the
world's (the preset's): BARS in scripts/sweep_report.py, which writes the results.

  --executor local   N runs at once (--jobs, default: cores / threads per run)
  --executor slurm   one sbatch job array, one task per run (--cpus-per-task = threads), each
                     task's output in DIR/slurm/task-ID.out/.err; waits unless --no-wait
  --status           the state of DIR's Slurm array (squeue/sacct) and of every run
  --validate         (with "validation" in SPEC) evaluate every trained run that lacks it on the
                     validation set (DIR/.../validation.json), then write DIR/results.*: each
                     setting's results name the run with the best held-out ELBO there, the
                     choice a user without true states can make, and whether it meets the bar.
                     A sweep with "validation" writes validation.json after eval.json itself (also
                     for runs done before; a changed set is evaluated again).
  --summary          only write DIR/results.* from the runs evaluated so far (nothing is run)
                     (a run folder that lost its files may hold recorded.json instead of
                     eval.json: {"metrics": {...}, "source": "where the values were written
                     down"}; its row is marked "(recorded)" and names the source)
  --task ID          run only run number ID (what each Slurm array task does)
  --only A,B,...     (local) run only these runs, in this order: OBJECTIVE-sSEED (in every
                     setting) or SETTING/OBJECTIVE-sSEED, e.g. --only elbo-s1,constrained-s4;
                     the summary still lists the whole grid
  --record REC       copy what a study's results rest on into REC, small enough to commit: per
                     evaluated run its eval.json (validation.json), config.json, sweep_run.json and train.jsonl
                     thinned to its non-step lines (probes, restarts), its first and last step
                     and every 1000th;
                     then REC/results.*. `--summary --out REC` rewrites the same table from it.
                     Models and checkpoints stay in DIR.

Needs only Debian's python3 (matplotlib for the figure, when installed).
"""
import argparse
import itertools
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import threading
import time

from sweep_report import TOP, die, record, results, run_dir, set_of, validated, world_of, write_json


def save_every():
    """How often a training run's "seconds" are saved in its sweep_run.json while it trains:
    EKVAE_SWEEP_SAVE_SECONDS (default 5; the tests set 1)."""
    v = os.environ.get("EKVAE_SWEEP_SAVE_SECONDS", "5")
    try:
        x = float(v)
    except ValueError:
        x = 0
    if not x > 0:
        die(f"EKVAE_SWEEP_SAVE_SECONDS={v!r}: a number of seconds > 0 is expected (unset it for the default, 5)")
    return x


def binaries():
    b = os.environ.get("EKVAE_BIN", os.path.join(TOP, "build", "native"))
    train, ev = os.path.join(b, "ekvae_train"), os.path.join(b, "ekvae_eval")
    for p in (train, ev):
        if not os.access(p, os.X_OK):
            die(f"{p} not found: build first (cmake -B build && cmake --build build -j2) or set EKVAE_BIN")
    return train, ev


def load_spec(path):
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        die(f"{path}: {e}")
    if not isinstance(spec, dict):
        die(f"{path}: a spec is a JSON object")
    known = {"preset", "objectives", "seeds", "steps", "overrides", "variants", "flags", "eval", "validation", "slurm", "comment"}
    for k in spec:
        if k not in known:
            die(f"{path}: unknown key '{k}' (known: {', '.join(sorted(known))})")
    for k in ("objectives", "seeds"):
        if not isinstance(spec.get(k), list) or not spec[k]:
            die(f"{path}: '{k}' must be a non-empty list")
    if not all(isinstance(s, int) and s >= 0 for s in spec["seeds"]):
        die(f"{path}: seeds must be non-negative integers")
    ov = spec.get("overrides", {})
    if not isinstance(ov, dict) or not all(isinstance(v, list) and v for v in ov.values()):
        die(f"{path}: 'overrides' maps config keys to non-empty lists of values")
    for where, keys in [("flags", spec.get("flags") or {}), ("overrides", ov)] + \
                       [(f"variants.{n}", v) for n, v in (spec.get("variants") or {}).items()]:
        if isinstance(keys, dict) and "train_minutes" in keys:
            die(f"{path}: {where} sets train_minutes, but a sweep's runs are step-limited (a run must not depend "
                f"on the machine's speed, and a resumed run trains to its planned steps): use \"steps\" instead")
    if "validation" in spec:
        v = spec["validation"]
        whole = lambda x, lo: type(x) is int and x >= lo  # (not bool)
        if not isinstance(v, dict) or not whole(v.get("seed"), 0) or not whole(v.get("sequences", 200), 2):
            die(f"{path}: 'validation' is {{\"seed\": S, \"sequences\": N}}: whole numbers, S >= 0, N >= 2")
        # the choice must not see the reported test set, nor data the runs trained or stopped on:
        # the defaults (train_seed 1, test_seed 2) and any data seed a run sets (flags, overrides, variants)
        groups = [g for g in [spec.get("flags") or {}] + list((spec.get("variants") or {}).values()) if isinstance(g, dict)]
        used = {"the eval set's": [(spec.get("eval") or {}).get("seed", 3)]}
        for key, default in (("train_seed", 1), ("test_seed", 2)):
            names = (key, key.replace("_", "-"))
            used[key] = [default] + [g[k] for g in groups for k in names if k in g] + [x for k in names for x in ov.get(k, [])]
        for what, seeds in used.items():
            if v["seed"] in seeds:
                die(f"{path}: the validation seed {v['seed']} is also {what}: choose another (e.g. 7)")
    return spec


def value_text(v):
    return json.dumps(v, separators=(",", ":")) if not isinstance(v, str) else v


def expand(spec):
    """The runs of a spec, in a fixed order: variants x override settings x objectives x seeds."""
    ov = spec.get("overrides", {})
    keys = sorted(ov)
    settings = []
    for vname, vflags in (spec.get("variants") or {"": {}}).items():
        for combo in itertools.product(*[ov[k] for k in keys]):
            name = ",".join([vname] * bool(vname) + [f"{k}={value_text(v)}" for k, v in zip(keys, combo)]) or "default"
            settings.append((name, list(vflags.items()) + list(zip(keys, combo))))
    runs = []
    for setting, kv in settings:
        for obj in spec["objectives"]:
            for seed in spec["seeds"]:
                flags = ["--preset", spec.get("preset", "pendulum"), "--objective", obj, "--seed", str(seed)]
                for k, v in list(spec.get("flags", {}).items()) + kv:
                    flags += ["--" + k.replace("_", "-"), value_text(v)]
                if "steps" in spec:
                    flags += ["--steps", str(spec["steps"])]
                runs.append({"index": len(runs), "setting": setting, "objective": obj, "seed": seed,
                             "name": f"{setting}/{obj}-s{seed}", "flags": flags})
    return runs


def select(runs, only):
    """The runs --only names, in its order: each name is OBJECTIVE-sSEED (every setting's) or a full
    SETTING/OBJECTIVE-sSEED."""
    picked = []
    for name in [x.strip() for x in only.split(",") if x.strip()]:
        hit = [r for r in runs if name in (r["name"], r["name"].split("/", 1)[1])]
        if not hit:
            die(f"--only: the spec has no run '{name}' (its runs: {', '.join(r['name'] for r in runs)})")
        picked += [r for r in hit if r not in picked]
    return picked


def checkpoint_step(path):
    """(step, planned total steps) of a run's checkpoint; (None, None) without a readable one,
    (step, None) when its config cannot be read (ekvae_train --resume then says what is wrong)."""
    try:
        with open(path, "rb") as f:
            b = f.read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        s, _ = h["train.step"]["data_offsets"]
        step = struct.unpack("<q", b[8 + n + s:8 + n + s + 8])[0]
    except (OSError, KeyError, ValueError, TypeError, struct.error):
        return None, None
    try:
        return step, int(json.loads(h["__metadata__"]["config"])["train_steps"])
    except (KeyError, ValueError, TypeError):
        return step, None


def is_done(d):
    """A run is done when its model and its eval.json are there."""
    return os.path.exists(os.path.join(d, "eval.json")) and os.path.exists(os.path.join(d, "model.safetensors"))


def complete(d, spec):
    """Nothing left to do for d: trained, evaluated and, when the spec asks, validated."""
    return is_done(d) and validated(d, spec.get("validation"))


def cpu_description():
    """'MODEL, N CPUs, ISA' of this machine (from /proc/cpuinfo: N counts its logical CPUs, not those
    a job was given), e.g. 'AMD EPYC, 2 CPUs, avx2 fma'."""
    model, flags, n = "?", set(), 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "processor":
                    n += 1
                elif k == "model name":
                    model = v.strip()
                elif k == "flags":
                    flags = set(v.split())
    except OSError:
        pass
    isa = [x for x in ("avx2", "fma", "avx512f", "avx512_bf16") if x in flags]
    return f"{model}, {n} CPUs, {' '.join(isa) or 'no AVX2'}"


def run_one(run, out, spec, train, ev):
    """Trains (or resumes) and evaluates one run. Returns (ok, message)."""
    d = run_dir(out, run)
    os.makedirs(d, exist_ok=True)
    every = save_every()
    log = os.path.join(d, "sweep.log")
    meta_path = os.path.join(d, "sweep_run.json")
    if is_done(d):
        if validated(d, spec.get("validation")):
            return True, "done before (skipped)"
        with open(log, "a") as lf:  # trained before the spec had its validation set
            ok, msg = evaluate(ev, d, spec["validation"], "validation.json", lf)
        return (True, "evaluated on the validation set") if ok else (False, msg)
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    meta.update({"name": run["name"], "flags": run["flags"]})
    meta.pop("target_steps", None)  # written until 2026-12-07: the default preset's steps, not the run's
    # a checkpoint's config holds the run's planned total (the preset's, the spec's "steps" or a
    # train_steps flag: sweeps are step-limited), and ekvae_train --resume alone trains to it;
    # until 2026-12-07 the sweep resumed to the default preset's train_steps, and an arm run
    # (120,000 planned) to 30,000
    have, planned = checkpoint_step(os.path.join(d, "checkpoint.safetensors"))
    model = os.path.join(d, "model.safetensors")
    with open(log, "a") as lf:
        lf.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} host {os.uname().nodename} "
                 f"SLURM_JOB_ID={os.environ.get('SLURM_JOB_ID', '')} SLURM_ARRAY_TASK_ID={os.environ.get('SLURM_ARRAY_TASK_ID', '')}\n")
        lf.flush()
        if have is None:
            cmd = [train] + run["flags"] + ["--out", d]
            if os.path.exists(os.path.join(d, "train.jsonl")):
                cmd.append("--force")  # killed before its first checkpoint: start over
        elif planned is None or have < planned:
            cmd = [train, "--resume", "--out", d]
        elif os.path.exists(model):
            cmd = None  # trained (ekvae_train writes the model before its last checkpoint): evaluate
        else:
            return False, (f"{d} has a checkpoint at its planned step {have} but no model.safetensors: "
                           f"write it with `{train} --resume --steps 1 --out {d}` or delete the folder to retrain")
        if cmd:
            lf.write("$ " + " ".join(cmd) + "\n")
            lf.flush()
            # the build is -march=native: the same seed trains to other numbers on a CPU with other
            # vector instructions (AVX-512 or not), so a run records each CPU it trained on
            cpus, cpu = meta.setdefault("cpus", []), cpu_description()
            if cpu not in cpus:
                cpus.append(cpu)
                write_json(meta_path, meta)  # now: a task killed mid-run still names this CPU
            # the run's seconds (its wall time in ekvae_train, summed over resumes; a run started
            # over counts from 0) are saved every few seconds while it trains, so that a task killed
            # mid-run (a session's end, scancel, a node lost) keeps the time it trained: until
            # 2026-12-08 they were saved at the end only, and an arm run resumed after 163 minutes
            # recorded the last 19
            seconds0 = 0 if "--force" in cmd else meta.get("seconds", 0)
            t0 = time.monotonic()

            def save():
                meta["seconds"] = seconds0 + time.monotonic() - t0
                try:
                    write_json(meta_path, meta)
                except OSError as e:  # a full disk, a network file system's hiccup: training goes on
                    lf.write(f"sweep: could not save the run's time in {meta_path}: {e}\n")
                    lf.flush()
            proc = subprocess.Popen(cmd, stdout=lf, stderr=lf)
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=every)
                        break
                    except subprocess.TimeoutExpired:
                        save()
            except BaseException:  # e.g. Ctrl-C on a --task: stop the trainer (it saves its run on SIGTERM)
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                save()
                raise
            save()
            if rc != 0:
                lf.flush()
                return False, f"ekvae_train exited {rc}; last lines of {log}:\n" + tail(log)
        if os.path.exists(os.path.join(d, "validation.json")):
            os.remove(os.path.join(d, "validation.json"))  # of an older model
        ok, msg = evaluate(ev, d, spec.get("eval", {}), "eval.json", lf)
        if ok and "validation" in spec:
            ok, msg = evaluate(ev, d, spec["validation"], "validation.json", lf)
        if not ok:
            return False, msg
        write_json(meta_path, meta)
    return True, "trained and evaluated"


def evaluate(ev, d, e, name, lf):
    """ekvae_eval --json of d's model on the fresh set e ({"seed", "sequences"}) into d/name."""
    s = set_of(e)
    ecmd = [ev, "--model", os.path.join(d, "model.safetensors"), "--json",
            "--seed", str(s["seed"]), "--sequences", str(s["sequences"])]
    lf.write("$ " + " ".join(ecmd) + "\n")
    lf.flush()
    r = subprocess.run(ecmd, capture_output=True, text=True)
    lf.write(r.stderr)
    if r.returncode != 0:
        return False, f"ekvae_eval exited {r.returncode}: {r.stderr.strip()}"
    res = json.loads(r.stdout)
    if name == "validation.json":
        res["set"] = s  # which set: a changed spec re-evaluates
    write_json(os.path.join(d, name), res)
    return True, ""


def validate(runs, out, spec):
    """validation.json for every trained and evaluated run that lacks it (--validate): run_one's
    path for a run done before its spec had the set, without training anything."""
    train, ev = binaries()
    n = 0
    for run in runs:
        d = run_dir(out, run)
        if not is_done(d) or validated(d, spec["validation"]):
            continue
        ok, msg = run_one(run, out, spec, train, ev)
        if not ok:
            die(f"{run['name']}: {msg}")
        n += 1
    print(f"sweep: {n} run(s) evaluated on the validation set (seed {spec['validation'].get('seed', 3)})")


def tail(path, n=8):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def threads_of(spec):
    return int(spec.get("flags", {}).get("threads", 2))


def fmt_eta(s):
    return "?" if s is None else f"{int(s // 60)}:{int(s % 60):02d}"


def run_local(runs, out, spec, jobs):
    train, ev = binaries()
    pending = list(runs)
    lock = threading.Lock()
    state = {"done": 0, "failed": [], "running": 0, "t0": time.time()}

    def progress():
        el = time.time() - state["t0"]
        n_done = state["done"] + len(state["failed"])
        left = len(runs) - n_done - state["running"]
        eta = el / n_done * (len(runs) - n_done) if n_done else None
        print(f"sweep: {n_done}/{len(runs)} done ({len(state['failed'])} failed), {state['running']} running, "
              f"{left} left, elapsed {fmt_eta(el)}, ETA {fmt_eta(eta)}", flush=True)

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                run = pending.pop(0)
                state["running"] += 1
            ok, msg = run_one(run, out, spec, train, ev)
            with lock:
                state["running"] -= 1
                if ok:
                    state["done"] += 1
                else:
                    state["failed"].append((run["name"], msg))
                    print(f"sweep: FAILED {run['name']}: {msg}", flush=True)
                print(f"sweep: {run['name']}: {msg}", flush=True)
                progress()

    ts = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return state["failed"]


def slurm_script(runs, out, spec, spec_path):
    s = spec.get("slurm", {})
    sd = os.path.join(out, "slurm")
    os.makedirs(sd, exist_ok=True)
    cpus = int(s.get("cpus_per_task", threads_of(spec)))
    lines = ["#!/bin/bash", f"#SBATCH --job-name=ekvae-sweep", f"#SBATCH --array=0-{len(runs) - 1}",
             f"#SBATCH --cpus-per-task={cpus}", f"#SBATCH --output={sd}/task-%a.out", f"#SBATCH --error={sd}/task-%a.err"]
    if s.get("partition"):
        lines.append(f"#SBATCH --partition={s['partition']}")
    if s.get("time"):
        lines.append(f"#SBATCH --time={s['time']}")
    lines += list(s.get("extra", []))
    env = "".join(f"{k}={shlex.quote(os.environ[k])} " for k in ("EKVAE_BIN", "EKVAE_SWEEP_SAVE_SECONDS") if os.environ.get(k))
    lines += ["set -eu", f"cd {TOP}",
              f"{env}/usr/bin/python3 {os.path.abspath(__file__)} {os.path.abspath(spec_path)} --out {os.path.abspath(out)} "
              f"--task \"$SLURM_ARRAY_TASK_ID\""]
    path = os.path.join(sd, "array.sh")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def slurm_states(job):
    """task id -> state from squeue (pending/running) and sacct (finished)."""
    st = {}
    r = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State"], capture_output=True, text=True) \
        if shutil.which("sacct") else subprocess.CompletedProcess([], 1, "", "")
    for line in r.stdout.split():
        jid, _, state = line.partition("|")
        if "_" in jid and "[" not in jid:
            st[jid.split("_")[1]] = state
    r = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i|%T"], capture_output=True, text=True)
    for line in r.stdout.split():
        jid, _, state = line.partition("|")
        if "_" in jid:
            st[jid.split("_")[1]] = state
    return st


def run_slurm(runs, out, spec, spec_path, wait):
    if not shutil.which("sbatch"):
        die("sbatch not found: is Slurm installed? (scripts/slurm_local.sh start brings up a one-machine Slurm)")
    binaries()
    todo = [r for r in runs if not complete(run_dir(out, r), spec)]
    if not todo:
        print("sweep: every run is done")
        return []
    script = slurm_script(runs, out, spec, spec_path)
    r = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"sbatch failed: {r.stderr.strip()}", 1)
    job = r.stdout.strip().split(";")[0]
    with open(os.path.join(out, "slurm", "job_id"), "w") as f:
        f.write(job + "\n")
    print(f"sweep: submitted job array {job} ({len(runs)} tasks, {len(runs) - len(todo)} already done) from {script}", flush=True)
    if not wait:
        print(f"sweep: not waiting; see scripts/sweep.py {spec_path} --out {out} --status")
        return []
    # squeue lists the array's tasks until they end (sacct needs an accounting database, which a
    # small installation may not have): wait until none is left, then read the runs' own files
    t0 = time.time()
    last = ""
    while True:
        st = slurm_states(job)
        live = {k: v for k, v in st.items() if v in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED")}
        done = sum(1 for r in runs if os.path.exists(os.path.join(run_dir(out, r), "eval.json")))
        summary = f"{sum(1 for v in live.values() if v == 'RUNNING')} running, {sum(1 for v in live.values() if v == 'PENDING')} pending, {done}/{len(runs)} runs done"
        if summary != last:
            print(f"sweep: array {job}: {summary} (elapsed {fmt_eta(time.time() - t0)})", flush=True)
            last = summary
        if not live and time.time() - t0 > 2:
            break
        time.sleep(1)
    failed = []
    for run in runs:
        d = run_dir(out, run)
        if not os.path.exists(os.path.join(d, "eval.json")):
            failed.append((run["name"], f"task {run['index']} ({st.get(str(run['index']), '?')}); last lines of its log:\n" +
                           tail(os.path.join(d, "sweep.log")) + tail(os.path.join(out, "slurm", f"task-{run['index']}.err"))))
            print(f"sweep: FAILED {run['name']}: {failed[-1][1]}")
    return failed


def status(runs, out):
    jf = os.path.join(out, "slurm", "job_id")
    if os.path.exists(jf):
        job = open(jf).read().strip()
        st = slurm_states(job)
        print(f"Slurm array {job}: " + (", ".join(f"{k}: {v}" for k, v in sorted(st.items(), key=lambda x: int(x[0]))) or "no records"))
    for run in runs:
        d = run_dir(out, run)
        ck, planned = checkpoint_step(os.path.join(d, "checkpoint.safetensors"))
        if is_done(d):
            s = "done"
        elif ck is not None:
            s = f"checkpoint at step {ck} of {planned}"
        elif os.path.exists(os.path.join(d, "eval.json")):  # (the table reads it before recorded.json)
            s = "evaluated, no model file here (a record's copy)"
        elif os.path.exists(os.path.join(d, "recorded.json")):
            # its files are gone; the table uses the values written down (a sweep trains it again)
            s = "recorded only (recorded.json; a sweep of this run trains it again)"
        else:
            s = "not started"
        print(f"  {run['index']:3d} {run['name']}: {s}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("SPEC is"):])
    ap.add_argument("spec")
    ap.add_argument("--out", required=True)
    ap.add_argument("--executor", choices=["local", "slurm"], default="local")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--no-wait", action="store_true")
    ap.add_argument("--status", action="store_true")
    ap.add_argument("--validate", action="store_true", help="evaluate the trained runs on the spec's validation set, then write results")
    ap.add_argument("--summary", action="store_true", help="only write results.md/json from the runs evaluated so far")
    ap.add_argument("--task", type=int)
    ap.add_argument("--only", metavar="A,B,...", help="(local) run only these runs, in this order")
    ap.add_argument("--record", metavar="REC", help="copy the evaluated runs' small files (eval, config, thinned log) into REC and write REC/results.*")
    a = ap.parse_args()
    save_every()  # a bad EKVAE_SWEEP_SAVE_SECONDS stops here, before any run
    spec = load_spec(a.spec)
    runs = expand(spec)
    if a.only and a.executor != "local":
        die("--only is for --executor local (a Slurm array runs the whole grid; --task ID runs one run)")
    todo = select(runs, a.only) if a.only else runs
    os.makedirs(a.out, exist_ok=True)
    world = world_of(spec.get("preset", "pendulum"))
    report = lambda folder: results(runs, folder, a.spec, world, spec.get("validation"))  # DIR/results.*
    if a.status:
        status(runs, a.out)
        return 0
    if a.record:
        if os.path.abspath(a.record) == os.path.abspath(a.out):
            die("--record REC must be another folder than --out")
        record(runs, a.out, a.record)
        report(a.record)
        return 0
    if a.summary:
        report(a.out)
        return 0
    if a.validate:
        if "validation" not in spec:
            die(f"--validate: {a.spec} has no \"validation\" set; add e.g. \"validation\": {{\"seed\": 7, \"sequences\": 200}}")
        validate(todo, a.out, spec)
        report(a.out)
        return 0
    if a.task is not None:
        if not 0 <= a.task < len(runs):
            die(f"--task {a.task}: the spec has runs 0..{len(runs) - 1}")
        train, ev = binaries()
        ok, msg = run_one(runs[a.task], a.out, spec, train, ev)
        print(f"sweep: task {a.task} {runs[a.task]['name']}: {msg}")
        return 0 if ok else 1
    if a.executor == "local":
        jobs = a.jobs or max(1, (os.cpu_count() or 1) // threads_of(spec))
        print(f"sweep: {len(todo)} runs, {jobs} at a time, into {a.out}", flush=True)
        failed = run_local(todo, a.out, spec, jobs)
    else:
        failed = run_slurm(runs, a.out, spec, a.spec, not a.no_wait)
        if a.no_wait:
            return 0
    report(a.out)
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: " + ", ".join(n for n, _ in failed))
        return 1
    return 0


if __name__ == "__main__":
    try:
        rc = main()
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into e.g. head, which has quit: no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 1
    sys.exit(rc)
