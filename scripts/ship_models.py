#!/usr/bin/python3
"""Copies the shipped pair out of a seed study (finished or still running) into models/ (or --models-dir).

  scripts/ship_models.py STUDY_DIR [--constrained-seed 0]
  scripts/ship_models.py STUDY_DIR --world arm          (both of seed 0)
  scripts/ship_models.py ... --models-dir DIR           (into DIR instead of models/)

STUDY_DIR is what `scripts/sweep.py bench/sweeps/pendulum-10seeds.json --out STUDY_DIR` wrote
(bench/sweeps/arm-5seeds.json for the arm).
- models/WORLD-constrained.*: the constrained run of --constrained-seed (fixed before the
  study ran: the shipped seed of every round so far, 0);
- models/pendulum-elbo.*: the ELBO run with the median linear r2 of omega over its seeds
  (the lower median for an even count): a typical ELBO run, not a picked failure or success;
  models/arm-elbo.*: the ELBO run of seed 0 (fixed before its study ran).
The study's statistics go to models/study.json (pendulum) or models/WORLD.study.json. A study
still running can be shipped from: the records then count the seeds evaluated so far and say how
many are not evaluated yet (re-ship when they have finished).
  scripts/ship_models.py --rerun OUT_DIR

retrains the shipped pair of models/study.json (its shipped seeds, with the study's flags:
`ekvae_train --objective O --seed S --threads 2`) with the current build into OUT_DIR, evaluates
them as the study did (`ekvae_eval --json --seed 3 --sequences 200`) and ships them with the
study's records: for a build whose arithmetic changed (the study's statistics are kept; the
shipped files then reproduce their logs with this build).
Each model file gets the metadata key "record" (its objective's seed study, shown by the page
beside the model's name) through `ekvae_eval --set-record`; beside it go *.config.json,
*.train.jsonl and *.eval.json; models/study.json holds both objectives' medians (the page test
reads them).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

from sweep_report import write_json  # (through a .part file: a good study.json is never left half-written)

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def binary(name):
    return os.path.join(os.environ.get("EKVAE_BIN", os.path.join(TOP, "build", "native")), name)


def ship(d, o, record, world="pendulum", models=os.path.join(TOP, "models")):
    """Copies run directory d into MODELS/WORLD-O.* with the record in the model's metadata."""
    out = os.path.join(models, f"{world}-{o}")
    subprocess.run([binary("ekvae_eval"), "--model", os.path.join(d, "model.safetensors"), "--set-record", record,
                    "--write", out + ".safetensors"], check=True)
    shutil.copy(os.path.join(d, "config.json"), out + ".config.json")
    shutil.copy(os.path.join(d, "train.jsonl"), out + ".train.jsonl")
    shutil.copy(os.path.join(d, "eval.json"), out + ".eval.json")
    print(f"{out}.safetensors <- {d}: {record}")


def rerun(out_dir, models):
    path = os.path.join(models, "study.json")
    with open(path) as f:
        study = json.load(f)
    for o in ("constrained", "elbo"):
        seed = study[o]["shipped_seed"]
        d = os.path.join(out_dir, f"{o}-s{seed}")
        if not os.path.exists(os.path.join(d, "model.safetensors")):
            subprocess.run([binary("ekvae_train"), "--objective", o, "--seed", str(seed), "--threads", "2",
                            "--out", d, "--force"], check=True)
        r = subprocess.run([binary("ekvae_eval"), "--model", os.path.join(d, "model.safetensors"), "--json",
                            "--seed", "3", "--sequences", "200"], check=True, capture_output=True, text=True)
        with open(os.path.join(d, "eval.json"), "w") as f:
            f.write(r.stdout)
        ship(d, o, study[o]["record"], "pendulum", models)
    study["retrained"] = ("the shipped pair retrained with the study's command by scripts/ship_models.py --rerun "
                          "after the build's arithmetic changed (-ffp-contract=off); the statistics are the study's")
    write_json(path, study)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("study", nargs="?")
    ap.add_argument("--constrained-seed", type=int, default=0)
    ap.add_argument("--rerun")
    ap.add_argument("--world", default="pendulum")
    ap.add_argument("--models-dir", default=os.path.join(TOP, "models"))
    a = ap.parse_args()
    if a.rerun:
        return rerun(a.rerun, a.models_dir)
    if not a.study:
        sys.exit("ship_models: pass a STUDY_DIR or --rerun OUT_DIR")
    with open(os.path.join(a.study, "results.json")) as f:
        res = json.load(f)
    runs = [r for r in res["runs"] if not r.get("missing")]
    by_obj = {o: [r for r in runs if r["objective"] == o] for o in ("constrained", "elbo")}
    if not all(by_obj.values()):
        sys.exit("ship_models: the study needs evaluated runs of both objectives")
    study = {}
    # the linear r2 of each state component that is not an angle (the velocities: r2_omega for the
    # pendulum, r2_omega1 and r2_omega2 for the arm), from the runs' keys
    omegas = sorted(k for k in runs[0] if k.startswith("r2_") and not k.startswith(("r2_knn_", "r2_cos", "r2_sin")))
    for o, rs in by_obj.items():
        # runs without a usable eval.json: not run yet, still training, or failed
        todo = sum(1 for r in res["runs"] if r.get("missing") and r["objective"] == o)
        study[o] = {"seeds": len(rs), "bar_met": sum(1 for r in rs if r["bar"]), "not_evaluated": todo,
                    "median_angle_err_10": median([r["angle_err_10"] for r in rs]),
                    "median_angle_err_32": median([r["angle_err_32"] for r in rs])}
        for k in omegas:
            study[o]["median_" + k] = median([r[k] for r in rs])
    def seed_run(o, seed):
        r = next((r for r in by_obj[o] if r["seed"] == seed), None)
        if r is None:
            sys.exit(f"ship_models: {o} seed {seed} is not evaluated in {a.study} (its seeds so far: "
                     f"{', '.join(str(r['seed']) for r in by_obj[o])}): wait for it, or pass --constrained-seed")
        if not os.path.exists(os.path.join(TOP, r["dir"], "model.safetensors")):
            sys.exit(f"ship_models: {o} seed {seed} has no model file in {r['dir']} (a record's copy?)")
        return r
    pick = {"constrained": seed_run("constrained", a.constrained_seed)}
    if a.world == "pendulum":
        el = sorted(by_obj["elbo"], key=lambda r: r["r2_omega"])
        pick["elbo"] = el[(len(el) - 1) // 2]
    else:
        pick["elbo"] = seed_run("elbo", 0)
    models = a.models_dir
    os.makedirs(models, exist_ok=True)
    for o, r in pick.items():
        st = study[o]
        why = f"seed {r['seed']}, fixed before training" if o == "constrained" or a.world != "pendulum" else \
              f"seed {r['seed']}: the median linear r2 of omega of its {st['seeds']} seeds"
        so_far = f" so far, {st['not_evaluated']} not evaluated yet" if st["not_evaluated"] else ""
        record = (f"{o}: {st['bar_met']} of {st['seeds']} seeds met the quality bar{so_far} (this model: {why}; "
                  f"median angle error at 32 steps {st['median_angle_err_32']:.2f} rad)")
        study[o]["shipped_seed"] = r["seed"]
        study[o]["record"] = record
        ship(os.path.join(TOP, r["dir"]), o, record, a.world, models)  # dir: relative to the repository or absolute
    study["source"] = os.path.relpath(os.path.join(a.study, "results.json"), TOP)
    name = "study.json" if a.world == "pendulum" else f"{a.world}.study.json"
    write_json(os.path.join(models, name), study)


if __name__ == "__main__":
    main()
