"""The report of a sweep (scripts/sweep.py, which imports this file): each world's quality bar,
the runs' files read into DIR/results.json, DIR/results.md and DIR/figures/ (results()), and
--record's copy of what a study's results rest on (record()). Also the run folders' layout
(run_dir) and the small file helpers both halves use. Needs only Debian's python3 (matplotlib
for the figures, when installed)."""
import json
import os
import shutil
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The quality bar of each world, on ekvae_eval's fresh test set: (metric, ">=" or "<=", value).
# The arm's angle errors are bounded relative to the repeat-last-frame baseline of the same
# test set (issue 15): a third of it at 10 steps, half at 32.
BARS = {
    "pendulum": {"checks": [("r2_knn_cos", ">=", 0.95), ("r2_knn_sin", ">=", 0.95), ("r2_omega", ">=", 0.90),
                            ("angle_err_10", "<=", 0.3), ("angle_err_32", "<=", 0.6)],
                 "text": "k-NN r² cos, sin ≥ 0.95; linear r² ω ≥ 0.90; forecast angle error ≤ 0.3 rad at 10 steps "
                         "and ≤ 0.6 at 32"},
    "arm": {"checks": [("r2_omega1", ">=", 0.8), ("r2_omega2", ">=", 0.8),
                       ("angle_ratio_10", "<=", 1 / 3), ("angle_ratio_32", "<=", 1 / 2)],
            "text": "linear r² of ω1 and of ω2 ≥ 0.8; forecast angle error (mean of both joints) at most 1/3 of "
                    "repeat-last-frame's at 10 steps and 1/2 at 32"},
}
# The columns of a world's tables: its bar's metrics (each forecast ratio after its error in radians),
# then the objective's values and the time; its figure's panels: the bar's metrics but k-NN r².
def table_keys(world):
    keys = []
    for k, _, _ in BARS[world]["checks"]:
        if k.startswith("angle_ratio_"):
            keys.append("angle_err_" + k[len("angle_ratio_"):])
        keys.append(k)
    return keys + ["elbo", "distortion", "rate", "minutes"]


def figure_keys(world):
    return [k for k, _, _ in BARS[world]["checks"] if not k.startswith("r2_knn_")]


LABELS = {"r2_knn_cos": "k-NN r² cos", "r2_knn_sin": "k-NN r² sin", "r2_omega": "r² ω", "r2_omega1": "r² ω1",
          "r2_omega2": "r² ω2", "angle_err_10": "angle err @10", "angle_err_32": "angle err @32",
          "angle_ratio_10": "/ baseline @10", "angle_ratio_32": "/ baseline @32", "elbo": "ELBO", "distortion": "D",
          "rate": "R", "minutes": "minutes/run"}


def label(k):
    return LABELS.get(k, k.replace("r2_knn_", "k-NN r² ").replace("r2_", "r² "))


def die(msg, code=2):
    print(f"sweep: error: {msg}", file=sys.stderr)
    sys.exit(code)


def run_dir(out, run):
    """DIR/runs/SETTING/OBJECTIVE-sSEED: where a run trains (and where a record keeps its files)."""
    return os.path.join(out, "runs", run["setting"], f"{run['objective']}-s{run['seed']}")


def repo_path(p):
    """p relative to the repository when it lies inside it (results.json stays valid in a clone), else absolute."""
    a = os.path.abspath(p)
    return os.path.relpath(a, TOP) if a.startswith(TOP + os.sep) else a


def set_of(e):
    """A fresh set as ekvae_eval draws it: the spec's {"seed", "sequences"} with their defaults."""
    return {"seed": e.get("seed", 3), "sequences": e.get("sequences", 200)}


def validated(d, vset):
    """d has validation.json of the validation set vset (a spec's "validation"; None: no set asked)."""
    if vset is None:
        return True
    try:
        with open(os.path.join(d, "validation.json")) as f:
            return json.load(f).get("set") == set_of(vset)
    except (OSError, ValueError, AttributeError):
        return False


def write_json(path, obj):
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ---- the results of a sweep ------------------------------------------------------------

def record(runs, out, rec, every=1000):
    """Copies the evaluated runs' small files into rec (the layout of out) and thins their logs."""
    n = 0
    for run in runs:
        d, r = run_dir(out, run), run_dir(rec, run)
        if not os.path.exists(os.path.join(d, "eval.json")) and not os.path.exists(os.path.join(d, "recorded.json")):
            continue
        os.makedirs(r, exist_ok=True)
        for name in ("eval.json", "validation.json", "recorded.json", "config.json", "sweep_run.json"):
            if os.path.exists(os.path.join(d, name)):
                shutil.copy(os.path.join(d, name), os.path.join(r, name + ".part"))
                os.replace(os.path.join(r, name + ".part"), os.path.join(r, name))
        log = os.path.join(d, "train.jsonl")
        if os.path.exists(log):
            lines = []  # (text without its newline, is a training step's line, step)
            with open(log) as f:
                for line in f:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    lines.append((line.rstrip("\n"), "D" in e, e.get("step", 0)))  # the others: probes, restarts
            steps = [i for i, (_, is_step, _) in enumerate(lines) if is_step]
            ends = {steps[0], steps[-1]} if steps else set()
            with open(os.path.join(r, "train.jsonl.part"), "w") as g:
                for i, (text, is_step, step) in enumerate(lines):
                    if not is_step or i in ends or step % every == 0:
                        g.write(text + "\n")
            os.replace(os.path.join(r, "train.jsonl.part"), os.path.join(r, "train.jsonl"))
        n += 1
    print(f"sweep: recorded {n} evaluated run(s) of {len(runs)} into {rec}")


def metrics_of(e):
    fa, ba = e["forecast_angle_err"], e["baseline_angle_err"]
    m = {"angle_err_10": fa["10"], "angle_err_32": fa["32"], "angle_ratio_10": fa["10"] / ba["10"],
         "angle_ratio_32": fa["32"] / ba["32"], "elbo": e["elbo"], "distortion": e["distortion"], "rate": e["rate"]}
    for k, v in e["r2"].items():
        m["r2_" + k] = v
    for k, v in e["r2_knn"].items():
        m["r2_knn_" + k] = v
    return m


def meets_bar(m, world):
    return all(m[k] >= v if op == ">=" else m[k] <= v for k, op, v in BARS[world]["checks"])


def mean_std(xs):
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0


def world_of(preset):
    """The world a preset trains on: the page's presets ("browser" for the pendulum, "WORLD-browser"
    for the others; config_preset) are a world's preset on a shorter schedule, judged by its bar."""
    if preset == "browser":
        return "pendulum"
    return preset[: -len("-browser")] if preset.endswith("-browser") and len(preset) > len("-browser") else preset


def results(runs, out, spec_path, world, validation=None):
    if world not in BARS:
        die(f"no quality bar for world '{world}' (known: {', '.join(BARS)})")
    metrics, bar = table_keys(world), BARS[world]
    rows = []
    for run in runs:
        d = run_dir(out, run)
        row = {"name": run["name"], "setting": run["setting"], "objective": run["objective"], "seed": run["seed"],
               "dir": repo_path(d)}
        try:
            if not os.path.exists(os.path.join(d, "eval.json")) and os.path.exists(os.path.join(d, "recorded.json")):
                # a run whose folder was lost: the values written down when it was evaluated
                with open(os.path.join(d, "recorded.json")) as f:
                    rec = json.load(f)
                lacking = [k for k, _, _ in BARS[world]["checks"] if k not in rec["metrics"]]
                if lacking:
                    die(f"{d}/recorded.json lacks the quality bar's {', '.join(lacking)}: add them, or remove the file")
                row.update({k: v for k, v in rec["metrics"].items() if k not in row})
                row["recorded"] = rec["source"]
            else:
                with open(os.path.join(d, "eval.json")) as f:
                    row.update(metrics_of(json.load(f)))
            row["bar"] = meets_bar(row, world)
        except (OSError, ValueError, KeyError):
            row["missing"] = True
        try:
            with open(os.path.join(d, "sweep_run.json")) as f:
                row["minutes"] = json.load(f).get("seconds", 0) / 60
        except (OSError, ValueError):
            pass
        if validation and validated(d, validation):
            with open(os.path.join(d, "validation.json")) as f:
                row["validation_elbo"] = json.load(f)["elbo"]
        rows.append(row)
    groups = {}
    for r in rows:
        groups.setdefault((r["setting"], r["objective"]), []).append(r)
    settings = []
    for (setting, obj), rs in groups.items():
        ok = [r for r in rs if not r.get("missing")]
        g = {"setting": setting, "objective": obj, "runs": len(rs), "evaluated": len(ok), "bar_met": sum(1 for r in ok if r["bar"])}
        for k in metrics:
            g[k] = mean_std([r[k] for r in ok if k in r])
        key = figure_keys(world)[0]
        med = sorted(ok, key=lambda r: r[key])
        g[f"median_{key}_run"] = med[(len(med) - 1) // 2]["name"] if med else None
        # the choice without true states: the best held-out ELBO on the validation set
        cands = [r for r in ok if "validation_elbo" in r and "recorded" not in r]
        if cands:
            best = max(cands, key=lambda r: r["validation_elbo"])
            g["chosen"] = {"run": best["name"], "validation_elbo": best["validation_elbo"], "bar": best["bar"],
                           "among": len(cands)}
        settings.append(g)
    res = {"spec": repo_path(spec_path), "world": world, "bar": bar["checks"], "settings": settings, "runs": rows}
    write_json(os.path.join(out, "results.json"), res)

    def ms(v, p=3):
        return "n/a" if v[0] is None else f"{v[0]:.{p}f} ± {v[1]:.{p}f}"
    md = [f"# Sweep results: {os.path.relpath(spec_path, TOP) if spec_path.startswith(TOP) else spec_path}", "",
          f"Quality bar ({world}): {bar['text']} (ekvae_eval's fresh test set). Mean ± std over seeds.", "",
          "| setting | objective | bar met | " + " | ".join(label(k) for k in metrics) + " |",
          "|---|---|---|" + "---|" * len(metrics)]
    for g in settings:
        missing = "" if g["evaluated"] == g["runs"] else " (%d missing)" % (g["runs"] - g["evaluated"])
        md.append(f"| {g['setting']} | {g['objective']} | {g['bar_met']} of {g['evaluated']}{missing} | "
                  + " | ".join(ms(g[k], 2 if k == 'minutes' else 3) for k in metrics) + " |")
    for g in settings:
        if "chosen" in g:
            c = g["chosen"]
            md.append(f"\nChosen without true states, {g['setting']}/{g['objective']}: {c['run']}, the best held-out ELBO "
                      f"per step on the validation set ({c['validation_elbo']:.3f}; ekvae_eval on the spec's \"validation\" "
                      f"set, among the {c['among']} run(s) evaluated there): bar {'met' if c['bar'] else 'not met'}")
    md += ["", "| run | bar | " + " | ".join(label(k) for k in metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for r in rows:
        if r.get("missing"):
            md.append(f"| {r['name']} | missing | " + " | ".join("" for _ in metrics) + " |")
            continue
        md.append(f"| {r['name']}{' (recorded)' if 'recorded' in r else ''} | {'yes' if r['bar'] else 'no'} | " +
                  " | ".join((f"{r[k]:.2f}" if k == "minutes" else f"{r[k]:.3f}") if k in r else "" for k in metrics) + " |")
    md += [f"\n{r['name']} (recorded): {r['recorded']}" for r in rows if "recorded" in r and not r.get("missing")]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    figure(settings, rows, out, world)
    print(f"sweep: wrote {out}/results.md, {out}/results.json")
    return res


def figure(settings, rows, out, world):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("sweep: matplotlib not installed: no figure (apt-get install python3-matplotlib)")
        return
    keys = figure_keys(world)
    bound = {k: v for k, _, v in BARS[world]["checks"]}
    labels = [f"{g['setting']}\n{g['objective']}" for g in settings]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), constrained_layout=True)
    for ax, k in zip(axes, keys):
        for i, g in enumerate(settings):
            ys = [r[k] for r in rows if r["setting"] == g["setting"] and r["objective"] == g["objective"] and k in r]
            xs = [i + 0.08 * ((j % 5) - 2) for j in range(len(ys))]
            ax.scatter(xs, ys, s=18, alpha=0.8)
            if ys:
                ax.hlines(sorted(ys)[(len(ys) - 1) // 2], i - 0.25, i + 0.25, color="k", lw=1)
        if k in bound:
            ax.axhline(bound[k], color="tab:red", ls="--", lw=1)
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(labels, fontsize=7)
        ops = {k: f"{op.replace('>=', '≥').replace('<=', '≤')} {v:.3g}" for k, op, v in BARS[world]["checks"]}
        ax.set_title(f"{label(k)} (bar {ops[k]})" if k in ops else label(k), fontsize=9)
    os.makedirs(os.path.join(out, "figures"), exist_ok=True)
    fig.savefig(os.path.join(out, "figures", "metrics.png"), dpi=110)
    plt.close(fig)
    probes_figure(rows, out, world, plt)


def probes_figure(rows, out, world, plt):
    """figures/probes.png: the bar's r² metrics as each run's training probes saw them (on held-out
    sequences of the training data, every eval_every steps; a diagnostic: it reads the true
    states, so nothing chooses by it), one line per run, coloured by setting and objective; runs
    still training are drawn as far as they got."""
    keys = [k for k in figure_keys(world) if k.startswith("r2_")]
    curves = {}
    for r in rows:
        try:
            with open(os.path.join(TOP, r["dir"], "train.jsonl")) as f:  # dir: relative to TOP or absolute
                pts = [json.loads(line) for line in f if line.startswith('{"probe"')]
        except (OSError, ValueError):
            continue
        pts = [(e["step"], e["probe"]) for e in pts if "step" in e]
        if pts:
            curves[r["name"]] = (r, pts)
    if not keys or not curves:
        return
    groups = sorted({(r["setting"], r["objective"]) for r, _ in curves.values()})
    colour = {g: plt.get_cmap("tab10")(i % 10) for i, g in enumerate(groups)}
    bound = {k: v for k, _, v in BARS[world]["checks"]}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), constrained_layout=True, squeeze=False)
    for ax, k in zip(axes[0], keys):
        for name, (r, pts) in sorted(curves.items()):
            xs = [st / 1000 for st, p in pts if k in p]
            ax.plot(xs, [p[k] for st, p in pts if k in p], color=colour[(r["setting"], r["objective"])], lw=1, alpha=0.8)
        if k in bound:
            ax.axhline(bound[k], color="tab:red", ls="--", lw=1)
        ax.set_ylim(max(-0.1, ax.get_ylim()[0]), 1.0)
        ax.set_xlabel("thousand steps", fontsize=8)
        ax.set_title(f"{label(k)}, training probe", fontsize=9)
    for g in groups:
        axes[0][0].plot([], [], color=colour[g], label=f"{g[1]}" if len(groups) <= 2 or g[0] == "default" else f"{g[0]} {g[1]}")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.savefig(os.path.join(out, "figures", "probes.png"), dpi=110)
    plt.close(fig)
