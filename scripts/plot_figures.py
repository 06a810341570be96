#!/usr/bin/python3
"""Draws the figures of "Latent Matters" from the data ekvae_eval --figures DIR writes.

    /usr/bin/python3 scripts/plot_figures.py DIR

Reads DIR/figures.json (+ the .npy arrays it names, + the training logs it lists) and writes
    latent.png          smoothed latent means, coloured by true angle and by true angular velocity
    predictions.png     true frames / reconstructions / open-loop forecasts after 16 filtered frames
    forecast_error.png  angle error and pixel MSE against horizon, every model and the baseline
    training.png        D (with D0), R, lambda and ELBO against step from each log; r2 probes
Every figure has a fixed size in pixels (100 dpi), so a README shows them all alike.

Needs Debian's python3-numpy and python3-matplotlib (scripts/setup.sh installs them).
"""
import json
import os
import struct
import sys

try:
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FuncFormatter, NullFormatter
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        "error: %s. The figures need NumPy and matplotlib for %s: "
        "apt-get install python3-numpy python3-matplotlib (or run scripts/setup.sh)\n" % (e, sys.executable)
    )
    sys.exit(3)

DPI = 100
PI_TICKS = ([-np.pi, -np.pi / 2, 0, np.pi / 2, np.pi], ["$-\\pi$", "$-\\pi/2$", "0", "$\\pi/2$", "$\\pi$"])

plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "figure.titlesize": 12,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


# ---- names ------------------------------------------------------------------------------------

def labels_for(paths, suffixes, generic):
    """Legend names: the file stem without suffixes; the folder name instead when the stem is
    generic (model.safetensors, train.jsonl) or repeats (runs/c1/model -> c1)."""
    stems = []
    for p in paths:
        s = os.path.basename(p)
        for suf in suffixes:
            if s.endswith(suf):
                s = s[: -len(suf)]
        stems.append(s)
    out = []
    for p, s in zip(paths, stems):
        parent = os.path.basename(os.path.dirname(os.path.abspath(p)))
        if s in generic:
            s = parent
        elif stems.count(s) > 1:
            s = parent + "/" + s
        out.append(s)
    return out


def short_labels(labels):
    """Labels without the prefix they all share (pendulum-constrained, pendulum-elbo -> constrained, elbo)."""
    if len(labels) < 2:
        return labels
    prefix = os.path.commonprefix(labels)
    cut = max(prefix.rfind(c) for c in "-_/.") + 1
    short = [l[cut:] for l in labels]
    return short if all(short) and len(set(short)) == len(short) else labels


def model_labels(paths):
    return labels_for(paths, [".safetensors"], {"model", "checkpoint"})


def log_labels(paths):
    return labels_for(paths, [".jsonl", ".train"], {"train", "log"})


# ---- training logs ----------------------------------------------------------------------------

def safetensors_config(path):
    """The "config" JSON in a model file's __metadata__, or None."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        return json.loads(header["__metadata__"]["config"])
    except (OSError, ValueError, KeyError, struct.error):
        return None


def log_config(log_path, models):
    """The run's config: RUN/config.json beside the log, else X.safetensors beside X.train.jsonl,
    else the config of a --model with the same label."""
    d = os.path.dirname(log_path)
    cfg_path = os.path.join(d, "config.json")
    if os.path.isfile(cfg_path):
        try:
            with open(cfg_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    base = os.path.basename(log_path)
    for suf in (".train.jsonl", ".jsonl"):
        if base.endswith(suf):
            cfg = safetensors_config(os.path.join(d, base[: -len(suf)] + ".safetensors"))
            if cfg:
                return cfg
            break
    label = log_labels([log_path])[0]
    for m, ml in zip(models, model_labels([m["path"] for m in models])):
        if ml == label:
            return m["config"]
    return None


def read_log(path):
    if not os.path.isfile(path):
        sys.stderr.write("error: training log %s not found (relative paths in figures.json are relative to the "
                         "directory ekvae_eval ran in)\n" % path)
        sys.exit(1)
    steps, probes = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if "probe" in j:
                probes.append(j)
            elif "D" in j and j.get("ok", True):
                steps.append(j)
    cols = {}
    for k in ("step", "D", "R", "elbo", "lambda", "D_ma"):
        cols[k] = np.array([s.get(k, np.nan) for s in steps], dtype=float)
    pr = {"step": np.array([p["step"] for p in probes], dtype=float)}
    # the pendulum's keys (r2_cos, ...) or, for a world with several joints, the first joint's
    # (the arm's r2_cos1, ...)
    for k in ("r2_cos", "r2_sin", "r2_omega", "r2knn_omega"):
        pr[k] = np.array([p["probe"].get(k, p["probe"].get(k + "1", np.nan)) for p in probes], dtype=float)
    return cols, pr


def smooth(y, n):
    """Centred moving average over about n points (edges use what is there)."""
    if n <= 1 or len(y) < 3:
        return y
    n = min(n, len(y))
    k = np.ones(n)
    num = np.convolve(np.nan_to_num(y), k, mode="same")
    den = np.convolve(np.isfinite(y).astype(float), k, mode="same")
    return num / np.maximum(den, 1)


def robust_limits(curves, skip=0.02, pad=0.08):
    """y limits that show the curves after their first `skip` fraction of steps."""
    vals = [c[int(len(c) * skip):] for c in curves if len(c)]
    vals = np.concatenate(vals) if vals else np.array([0.0, 1.0])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    lo, hi = np.min(vals), np.max(vals)
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


def plot_training(logs, models, out):
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = log_labels(logs)
    data = [read_log(p) for p in logs]
    cfgs = [log_config(p, models) for p in logs]
    several_joints = any((c or {}).get("world", "pendulum") != "pendulum" for c in cfgs)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), dpi=DPI, constrained_layout=True)
    axD, axR, axL, axE, axP, axLeg = axes.ravel()
    handles = []
    curves = {"D": [], "R": [], "elbo": []}
    for i, ((cols, pr), cfg, label) in enumerate(zip(data, cfgs, labels)):
        c = colors[i % len(colors)]
        x = cols["step"]
        n = max(1, len(x) // 150)
        objective = (cfg or {}).get("objective", "?")
        name = "%s (%s)" % (label, objective) if cfg else label
        for ax, key in ((axD, "D"), (axR, "R"), (axE, "elbo")):
            y = cols[key]
            ys = smooth(y, n)
            ax.plot(x, y, color=c, alpha=0.18, lw=0.6)
            h, = ax.plot(x, ys, color=c, lw=1.6, label=name)
            curves[key].append(ys)
        handles.append(h)
        if cfg and objective == "constrained" and "D0" in cfg:
            axD.axhline(cfg["D0"], color=c, ls="--", lw=1.2)
            axD.annotate("$D_0$ = %g" % cfg["D0"], xy=(1.0, cfg["D0"]), xycoords=("axes fraction", "data"),
                         xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom", color=c, fontsize=9)
        if objective != "elbo" and np.isfinite(cols["lambda"]).any():
            axL.plot(x, cols["lambda"], color=c, lw=1.6)
        if len(pr["step"]):
            for key, marker, ls in (("r2_cos", "o", "-"), ("r2_sin", "s", "-"), ("r2_omega", "^", "-"),
                                    ("r2knn_omega", "v", ":")):
                axP.plot(pr["step"], pr[key], color=c, marker=marker, ms=4, ls=ls, lw=1)
    for ax, key, title, ylabel in ((axD, "D", "Distortion D", "nats / frame"), (axR, "R", "Rate R", "nats / step"),
                                   (axE, "elbo", "ELBO = $-(D + R)$", "nats / step")):
        lim = robust_limits(curves[key])
        if key == "D":
            d0s = [c["D0"] for c in cfgs if c and c.get("objective") == "constrained" and "D0" in c]
            if lim and d0s:
                lo, hi = lim
                lim = (min(lo, min(d0s) - 0.05 * (hi - lo)), max(hi, max(d0s) + 0.05 * (hi - lo)))
        if lim:
            ax.set_ylim(*lim)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    axL.set_yscale("log")
    axL.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
    ylo, yhi = axL.get_ylim()
    if yhi / max(ylo, 1e-12) > 10:  # label only the decades
        axL.yaxis.set_minor_formatter(NullFormatter())
    else:
        axL.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: "%g" % v))
    axL.set_title("Lagrange multiplier $\\lambda$")
    axL.set_ylabel("$\\lambda$ (log scale)")
    if not axL.lines:
        axL.text(0.5, 0.5, "no constrained run", ha="center", va="center", transform=axL.transAxes, color="0.4")
    axP.set_title("Linear $r^2$ probes of the latent state" + (" (joint 1)" if several_joints else ""))
    axP.set_ylabel("$r^2$ on held-out data")
    if axP.lines:
        lo = min(np.nanmin(l.get_ydata()) for l in axP.lines)
        axP.set_ylim(max(-0.05, lo - max(0.01, 0.15 * (1 - lo))), 1.0 + max(0.002, 0.05 * (1 - lo)))
    else:
        axP.text(0.5, 0.5, "no probe lines in the log", ha="center", va="center", transform=axP.transAxes, color="0.4")
    for ax in (axD, axR, axL, axE, axP):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%gk" % (v / 1000) if abs(v) >= 1000 else "%g" % v))
    axLeg.axis("off")
    extra = [
        plt.Line2D([], [], color="0.3", lw=1.6, label="moving average"),
        plt.Line2D([], [], color="0.3", lw=0.6, alpha=0.4, label="every step"),
        plt.Line2D([], [], color="0.3", ls="--", lw=1.2, label="$D_0$ (constraint $D \\leq D_0$)"),
    ]
    probe = [
        plt.Line2D([], [], color="0.3", marker="o", ms=4, label="probe: $\\cos\\theta$"),
        plt.Line2D([], [], color="0.3", marker="s", ms=4, label="probe: $\\sin\\theta$"),
        plt.Line2D([], [], color="0.3", marker="^", ms=4, label="probe: $\\omega$"),
        plt.Line2D([], [], color="0.3", marker="v", ms=4, ls=":", label="probe: $\\omega$, 10-NN"),
    ]
    axLeg.legend(handles=handles + extra + probe, loc="center", frameon=False, title="runs")
    fig.suptitle("Training: distortion, rate, $\\lambda$ and ELBO per step")
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


# ---- latent space ------------------------------------------------------------------------------

def r2_fit(Z, Y):
    """r^2 of least squares with intercept from Z [N, p] onto each column of Y [N, q]."""
    A = np.hstack([Z, np.ones((len(Z), 1))])
    W, *_ = np.linalg.lstsq(A, Y, rcond=None)
    res = Y - A @ W
    return 1 - (res ** 2).sum(0) / np.maximum(((Y - Y.mean(0)) ** 2).sum(0), 1e-12)


def latent_views(z, theta, omega):
    """Views of the latent means read off linear fits (with intercept) of sin theta, cos theta and
    omega onto z. u1 (the sin theta direction) and u2 (the cos theta direction, orthogonalised)
    span the plane of z that best explains the angle: theta = 0 is up and theta = pi/2 right, as
    in the images. u3 is the omega direction (unit length, not orthogonalised: the height that
    best explains omega). Returns dict: top [N, 2] (coordinates in u1, u2), phase [N] (atan2 of
    the fitted sin and cos: the position around the ring), height [N] (None when n_z = 2), r2s."""
    A = np.hstack([z, np.ones((len(z), 1))])
    Y = np.stack([np.sin(theta), np.cos(theta), omega], 1)
    W, *_ = np.linalg.lstsq(A, Y, rcond=None)
    fit = A @ W
    dirs = W[:-1]  # [n_z, 3]: directions predicting sin, cos, omega
    u1 = dirs[:, 0] / max(np.linalg.norm(dirs[:, 0]), 1e-12)
    u2 = dirs[:, 1] - (dirs[:, 1] @ u1) * u1
    u2 /= max(np.linalg.norm(u2), 1e-12)
    zc = z - z.mean(0)
    top = np.stack([zc @ u1, zc @ u2], 1)
    height = None
    if z.shape[1] > 2:
        height = zc @ (dirs[:, 2] / max(np.linalg.norm(dirs[:, 2]), 1e-12))
    return {
        "top": top,
        "phase": np.arctan2(fit[:, 0], fit[:, 1]),
        "height": height,
        "r2_angle": r2_fit(top, Y[:, :2]).mean(),
        "r2_omega_height": r2_fit(height[:, None], omega[:, None])[0] if height is not None else float("nan"),
        "r2_omega": r2_fit(z, omega[:, None])[0],
    }


def angle_velocity_pairs(fig_data):
    """(angle column, velocity column, suffix) per angle of the world: the k-th angle with the
    k-th non-angle component (pendulum: theta, omega; arm: theta1, omega1 and theta2, omega2)."""
    names = fig_data.get("state_names", ["theta", "omega"])
    flags = fig_data.get("angles", [True, False])
    ang = [i for i, f in enumerate(flags) if f]
    vel = [i for i, f in enumerate(flags) if not f]
    return [(a, v, names[a][len("theta"):] if names[a].startswith("theta") else names[a]) for a, v in zip(ang, vel)]


def plot_latent(fig_data, base, labels, out):
    states = np.load(os.path.join(base, fig_data["states"]))
    pairs = angle_velocity_pairs(fig_data)
    nm, npair = len(fig_data["models"]), len(pairs)
    fig, axes = plt.subplots(nm, 2 * npair, figsize=(10 * npair, 4.2 * nm), dpi=DPI, constrained_layout=True,
                             squeeze=False)
    order = np.random.default_rng(0).permutation(len(states))  # no colour drawn on top of the others everywhere
    for row, (m, label) in enumerate(zip(fig_data["models"], labels)):
        z = np.load(os.path.join(base, m["z"]))
        for k, (ia, iv, sub) in enumerate(pairs):
            theta, omega = states[:, ia], states[:, iv]
            th, om = "\\theta_{%s}" % sub if sub else "\\theta", "\\omega_{%s}" % sub if sub else "\\omega"
            wmax = np.percentile(np.abs(omega), 99)
            v = latent_views(z, theta, omega)
            a0, a1 = axes[row][2 * k], axes[row][2 * k + 1]
            top = v["top"][order]
            s0 = a0.scatter(top[:, 0], top[:, 1], c=theta[order], cmap="hsv", vmin=-np.pi, vmax=np.pi, s=3, lw=0,
                            rasterized=True)
            a0.set_aspect("equal", adjustable="datalim")
            a0.set_xlabel("$z$ along the $\\sin%s$ fit ($u_1$)" % th)
            a0.set_ylabel("$z$ along the $\\cos%s$ fit ($u_2$)" % th)
            a0.set_title("%s: angle $%s$ lies on a ring ($r^2_{\\cos,\\sin}$ = %.3f)" % (label, th, v["r2_angle"]))
            wnorm = Normalize(-wmax, wmax)
            if v["height"] is not None:
                s1 = a1.scatter(v["phase"][order], v["height"][order], c=omega[order], cmap="RdBu_r", norm=wnorm, s=3,
                                lw=0, rasterized=True)
                a1.set_xlim(-np.pi, np.pi)
                a1.set_xticks(PI_TICKS[0])
                a1.set_xticklabels(PI_TICKS[1])
                a1.set_xlabel("position around the ring (latent phase)")
                a1.set_ylabel("$z$ along the $%s$ fit ($u_3$)" % om)
                a1.set_title("%s: velocity $%s$ is the height ($r^2$ = %.3f)" % (label, om, v["r2_omega_height"]))
            else:
                s1 = a1.scatter(top[:, 0], top[:, 1], c=omega[order], cmap="RdBu_r", norm=wnorm, s=3, lw=0,
                                rasterized=True)
                a1.set_aspect("equal", adjustable="datalim")
                a1.set_xlabel(a0.get_xlabel())
                a1.set_ylabel(a0.get_ylabel())
                a1.set_title("%s: coloured by velocity ($r^2_{%s}$ = %.3f)" % (label, om, v["r2_omega"]))
            cb0 = fig.colorbar(s0, ax=a0, pad=0.02)
            cb0.set_ticks(PI_TICKS[0])
            cb0.set_ticklabels(PI_TICKS[1])
            cb0.set_label("true angle $%s$ (0 = upright)" % th)
            cb1 = fig.colorbar(s1, ax=a1, pad=0.02, extend="both")
            cb1.set_label("true angular velocity $%s$ (rad/s)" % om)
            for a in (a0, a1):
                a.grid(alpha=0.25)
    fig.suptitle("Inferred state space: smoothed means of z on %d test frames" % len(states))
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


# ---- prediction strips -------------------------------------------------------------------------

def plot_predictions(fig_data, base, labels, out, stride=2):
    """Every `stride`-th frame (so a frame is big enough to see in a README)."""
    true = np.load(os.path.join(base, fig_data["true"]))  # [S, F, W, W]
    recons = [np.load(os.path.join(base, m["recon"])) for m in fig_data["models"]]
    fores = [np.load(os.path.join(base, m["forecast"])) for m in fig_data["models"]]
    S, F, W, _ = true.shape
    tf = fig_data["filter_steps"]
    frames = list(range(stride - 1, F, stride))  # 0-based frame indices shown
    gap, block_gap = 1, 8
    short = short_labels(labels)
    rows, names = [], []  # (sequence, images [F, W, W]) in display order
    for s in range(S):
        rows.append((s, true[s]))
        names.append("true")
        for label, r, f in zip(short, recons, fores):
            prefix = label + ": " if len(labels) > 1 else ""
            rows.append((s, r[s]))
            names.append(prefix + "reconstruction")
            rows.append((s, f[s]))
            names.append(prefix + "forecast")
    height = len(rows) * (W + gap) - gap + (S - 1) * (block_gap - gap)
    width = len(frames) * (W + gap) - gap
    mosaic = np.full((height, width), np.nan)  # NaN: white space between frames
    y, centres, seq_mid = 0, [], {}
    for k, (s, imgs) in enumerate(rows):
        if k > 0 and rows[k - 1][0] != s:
            y += block_gap - gap
        for c, t in enumerate(frames):
            mosaic[y:y + W, c * (W + gap):c * (W + gap) + W] = imgs[t]
        centres.append(y + W / 2 - 0.5)
        seq_mid.setdefault(s, []).append(y + W / 2)
        y += W + gap
    cmap = plt.get_cmap("gray").copy()  # white pendulum on black tiles
    cmap.set_bad("white")
    fig_w = 10
    image_w = fig_w - 0.8 - 0.075 * max(len(n) for n in names)  # inches left beside the row labels
    fig_h = round(1.3 + image_w * height / width, 1)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=DPI, constrained_layout=True)
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    ax.set_yticks(centres)
    ax.set_yticklabels(names)
    ticks = [c for c, t in enumerate(frames) if (t + 1) % 8 == 0 or c == 0]
    ax.set_xticks([c * (W + gap) + W / 2 - 0.5 for c in ticks])
    ax.set_xticklabels([str(frames[c] + 1) for c in ticks])
    ax.set_xlabel("frame (every %s)" % ("frame" if stride == 1 else "%s frame" % {2: "second", 3: "third"}.get(stride, "%dth" % stride)))
    nf = sum(1 for t in frames if t < tf)
    xb = nf * (W + gap) - gap / 2 - 0.5
    ax.axvline(xb, color="tab:red", lw=2)
    ax.text(xb / 2, -2, "filtering frames 1-%d" % tf, ha="center", va="bottom", color="tab:red")
    ax.text((xb + width) / 2, -2, "open-loop forecast of frames %d-%d (true actions)" % (tf + 1, F), ha="center",
            va="bottom", color="tab:red")
    for s in range(S):
        ax.text(width + 3, np.mean(seq_mid[s]), "sequence %d" % (s + 1), ha="left", va="center", rotation=90,
                fontsize=9, color="0.35")
    for sp in ax.spines.values():
        sp.set_visible(False)
    ax.tick_params(length=0)
    ax.set_title("Predictions on test sequences\nreconstruction: decoded $H\\,\\mathbb{E}[z_t \\mid x_{1:%d}]$;  "
                 "forecast: decoded filtered means, then open loop" % F, pad=18)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


# ---- forecast error ----------------------------------------------------------------------------

def plot_forecast_error(fig_data, labels, out):
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4), dpi=DPI, constrained_layout=True)
    for m, label in zip(fig_data["models"], labels):
        e = m["metrics"]
        h = np.arange(1, len(e["forecast_angle_err_curve"]) + 1)
        a0.plot(h, e["forecast_angle_err_curve"], lw=1.8, label=label)
        a1.plot(h, e["forecast_mse_curve"], lw=1.8, label=label)
    e = fig_data["models"][0]["metrics"]
    h = np.arange(1, len(e["baseline_angle_err_curve"]) + 1)
    a0.plot(h, e["baseline_angle_err_curve"], color="0.45", ls="--", lw=1.5, label="repeat last frame")
    a1.plot(h, e["baseline_mse_curve"], color="0.45", ls="--", lw=1.5, label="repeat last frame")
    a0.set_title("Angle error of the forecast image")
    a0.set_ylabel("mean |$\\Delta\\theta$| (rad, log scale)")
    a1.set_title("Pixel error of the forecast image")
    a1.set_ylabel("per-pixel MSE (log scale)")
    for a in (a0, a1):
        a.set_xlabel("forecast horizon (steps after 16 filtered frames)")
        a.set_xlim(1, h[-1])
        a.set_yscale("log")  # the models sit far below the baseline: a log scale shows both
        a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
        a.grid(alpha=0.3)
        a.grid(alpha=0.1, which="minor")
        a.legend(loc="lower right")
    fig.suptitle("Open-loop forecast error on %d test sequences" % e["sequences"])
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    base = sys.argv[1]
    with open(os.path.join(base, "figures.json")) as f:
        fig_data = json.load(f)
    labels = model_labels([m["path"] for m in fig_data["models"]])
    written = []
    for name, draw in (
        ("latent.png", lambda p: plot_latent(fig_data, base, labels, p)),
        ("predictions.png", lambda p: plot_predictions(fig_data, base, labels, p)),
        ("forecast_error.png", lambda p: plot_forecast_error(fig_data, labels, p)),
        ("training.png", lambda p: plot_training(fig_data["logs"], fig_data["models"], p) if fig_data["logs"] else None),
    ):
        path = os.path.join(base, name)
        if name == "training.png" and not fig_data["logs"]:
            continue
        draw(path + ".tmp.png")
        os.replace(path + ".tmp.png", path)
        written.append(path)
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
