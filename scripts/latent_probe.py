#!/usr/bin/python3
"""Least-squares probes of a model's latent state against quantities of the true state.

  scripts/latent_probe.py FIGURES_DIR [MODEL_INDEX]

FIGURES_DIR is what `ekvae_eval --model M --figures FIGURES_DIR` wrote for an arm model: the
smoothed means z_MODEL_INDEX.npy [frames, n_z] and the true states states.npy [frames, 4]
(theta1, theta2, omega1, omega2). For each quantity it prints the r^2 of a linear fit (with
intercept) on z and of a fit on z and all its pairwise products ("quad"), both fitted on the
first half of the frames and scored on the second, as ekvae_eval's linear probe: a quantity a
model holds non-linearly scores low in the first column and higher in the second.
"""
import sys

import numpy as np


def r2(X, y, h):
    X1 = np.c_[X, np.ones(len(X))]
    w = np.linalg.lstsq(X1[:h], y[:h], rcond=None)[0]
    e = y[h:] - X1[h:] @ w
    return 1.0 - (e ** 2).sum() / ((y[h:] - y[h:].mean()) ** 2).sum()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    d, k = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "0")
    S = np.load(f"{d}/states.npy").astype(float)
    Z = np.load(f"{d}/z_{k}.npy").astype(float)
    if S.shape[1] != 4:
        sys.exit(f"{d}/states.npy has {S.shape[1]} state components: this probe is for the arm (4)")
    h = len(S) // 2
    n = Z.shape[1]
    quad = np.column_stack([Z] + [Z[:, i] * Z[:, j] for i in range(n) for j in range(i, n)])
    th1, th2, w1, w2 = S.T
    phi = th1 + th2  # link 2's absolute angle, what a frame shows
    rows = [("cos theta1", np.cos(th1)), ("sin theta1", np.sin(th1)), ("cos theta2", np.cos(th2)),
            ("sin theta2", np.sin(th2)), ("cos phi", np.cos(phi)), ("sin phi", np.sin(phi)),
            ("omega1", w1), ("omega2", w2), ("omega1 + omega2", w1 + w2)]
    print(f"{'quantity':16s} {'linear':>7s} {'quad':>7s}   ({len(S)} frames, n_z {n})")
    for name, y in rows:
        print(f"{name:16s} {r2(Z, y, h):7.3f} {r2(quad, y, h):7.3f}")


if __name__ == "__main__":
    main()
