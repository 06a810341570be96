#!/usr/bin/env python3
"""Markdown table of the objective comparison: runs/<objective>-s<seed>/eval.json (ekvae_eval --json).

    python3 scripts/results_table.py [RUNS_DIR]        (default runs/)
Prints one row per run and a mean +- std row per objective.
"""
import json
import math
import pathlib
import re
import sys

runs = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
cols = [
    ("r2_knn cos", lambda e: e["r2_knn"]["cos"]),
    ("r2_knn sin", lambda e: e["r2_knn"]["sin"]),
    ("r2 cos", lambda e: e["r2"]["cos"]),
    ("r2 sin", lambda e: e["r2"]["sin"]),
    ("r2 omega", lambda e: e["r2"]["omega"]),
    ("angle err @10", lambda e: e["forecast_angle_err"]["10"]),
    ("angle err @32", lambda e: e["forecast_angle_err"]["32"]),
    ("MSE @10", lambda e: e["forecast_mse"]["10"]),
    ("ELBO", lambda e: e["elbo"]),
    ("D", lambda e: e["distortion"]),
    ("R", lambda e: e["rate"]),
]
rows = {}
for f in sorted(runs.glob("*-s*/eval.json")):
    m = re.match(r"(.+)-s(\d+)$", f.parent.name)
    if not m:
        continue
    e = json.loads(f.read_text())
    rows.setdefault(m.group(1), []).append((int(m.group(2)), [fn(e) for _, fn in cols]))
if not rows:
    sys.exit(f"no {runs}/<objective>-s<seed>/eval.json files: run scripts/train_models.sh first")

print("| objective | seed | " + " | ".join(c for c, _ in cols) + " |")
print("|---|---|" + "---|" * len(cols))
for obj in sorted(rows):
    for seed, vals in sorted(rows[obj]):
        print(f"| {obj} | {seed} | " + " | ".join(f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}" for v in vals) + " |")
for obj in sorted(rows):
    vals = list(zip(*[v for _, v in rows[obj]]))
    cells = []
    for v in vals:
        mu = sum(v) / len(v)
        sd = math.sqrt(sum((x - mu) ** 2 for x in v) / max(len(v) - 1, 1))
        cells.append(f"{mu:.3f} ± {sd:.3f}")
    print(f"| **{obj} mean ± std** | {len(vals[0])} seeds | " + " | ".join(cells) + " |")
