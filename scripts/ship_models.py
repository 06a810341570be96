#!/usr/bin/python3
"""Copies the shipped pair out of a finished seed study into models/.

  scripts/ship_models.py STUDY_DIR [--constrained-seed 0]

STUDY_DIR is what `scripts/sweep.py bench/sweeps/pendulum-10seeds.json --out STUDY_DIR` wrote.
- models/pendulum-constrained.*: the constrained run of --constrained-seed (fixed before the
  study ran: the shipped seed of every round so far, 0);
- models/pendulum-elbo.*: the ELBO run with the median linear r2 of omega over its seeds
  (the lower median for an even count): a typical ELBO run, not a picked failure or success.
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

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("--constrained-seed", type=int, default=0)
    a = ap.parse_args()
    with open(os.path.join(a.study, "results.json")) as f:
        res = json.load(f)
    runs = [r for r in res["runs"] if not r.get("missing")]
    by_obj = {o: [r for r in runs if r["objective"] == o] for o in ("constrained", "elbo")}
    if not all(by_obj.values()):
        sys.exit("ship_models: the study needs evaluated runs of both objectives")
    study = {}
    for o, rs in by_obj.items():
        study[o] = {"seeds": len(rs), "bar_met": sum(1 for r in rs if r["bar"]),
                    "median_r2_omega": median([r["r2_omega"] for r in rs]),
                    "median_angle_err_10": median([r["angle_err_10"] for r in rs]),
                    "median_angle_err_32": median([r["angle_err_32"] for r in rs])}
    pick = {"constrained": next(r for r in by_obj["constrained"] if r["seed"] == a.constrained_seed)}
    el = sorted(by_obj["elbo"], key=lambda r: r["r2_omega"])
    pick["elbo"] = el[(len(el) - 1) // 2]
    ev = os.environ.get("EKVAE_BIN", os.path.join(TOP, "build", "native")) + "/ekvae_eval"
    models = os.path.join(TOP, "models")
    for o, r in pick.items():
        st = study[o]
        why = f"seed {r['seed']}, fixed before training" if o == "constrained" else \
              f"seed {r['seed']}: the median linear r2 of omega of its {st['seeds']} seeds"
        record = (f"{o}: {st['bar_met']} of {st['seeds']} seeds met the quality bar (this model: {why}; "
                  f"median angle error at 32 steps {st['median_angle_err_32']:.2f} rad)")
        study[o]["shipped_seed"] = r["seed"]
        study[o]["record"] = record
        d = r["dir"]
        out = os.path.join(models, f"pendulum-{o}")
        subprocess.run([ev, "--model", os.path.join(d, "model.safetensors"), "--set-record", record,
                        "--write", out + ".safetensors"], check=True)
        shutil.copy(os.path.join(d, "config.json"), out + ".config.json")
        shutil.copy(os.path.join(d, "train.jsonl"), out + ".train.jsonl")
        shutil.copy(os.path.join(d, "eval.json"), out + ".eval.json")
        print(f"{out}.safetensors <- {d}: {record}")
    study["source"] = os.path.relpath(os.path.join(a.study, "results.json"), TOP)
    with open(os.path.join(models, "study.json"), "w") as f:
        json.dump(study, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
