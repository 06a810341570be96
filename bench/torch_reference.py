#!/usr/bin/python3
"""The EKVAE in PyTorch, written as a researcher would: the benchmark's reference.

Same model, sizes, batch, window and objective as ekvae's default 'pendulum' preset
(shared/ekvae.h): encoder 256-128-128-4, decoder 2-128-128-256, alpha-net 4-64-64-16 (ReLU),
a in R^2, z in R^3, K = 16 base matrices, batch 32 x window 32, the constrained Lagrangian
R + lambda (D - D0) with lambda a constant in the gradient, Adam (lr 1e-3) with gradient-norm
clipping at 100. Batched over the sequences with a loop over time only: the extended Kalman
filter (Joseph form), the smoother gains and the joint backward sample (RTS gains, the joint
conditional p(z_t | z_t+1, a_1:t)) with torch.linalg.cholesky / solve_triangular and batched
matmuls. Used only by the benchmark (scripts/bench.sh), never by the product.

  torch_reference.py check DIR               recompute bench_ekvae check's objective and gradients
  torch_reference.py train --data F --model M [--threads N] [--steps S] [--warmup W]
  torch_reference.py kalman --model M [--threads N] [--reps R]

Prints one JSON object. Run with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import json
import math
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as Fn

LOG2PI = math.log(2 * math.pi)

# ---- files ---------------------------------------------------------------------------------


def load_safetensors(path):
    """name -> numpy array, and the metadata dict."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U64": np.uint64}
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        out[name] = np.frombuffer(raw[base + b:base + e], dtype=dtypes[h["dtype"]]).reshape(h["shape"])
    return out, meta


# ---- the model -----------------------------------------------------------------------------


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class EKVAE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D, na, nz, nu, K = cfg["image_size"] ** 2, cfg["n_a"], cfg["n_z"], cfg["n_u"], cfg["K"]
        self.na, self.nz, self.nu, self.K = na, nz, nu, K
        self.enc = mlp([D] + cfg["enc_hidden"] + [2 * na])
        self.dec = mlp([na] + cfg["dec_hidden"] + [D])
        self.alpha = mlp([nz + nu] + cfg["alpha_hidden"] + [K])
        self.H = nn.Parameter(torch.zeros(na * nz, 1))    # column-major n_a x n_z
        self.r_raw = nn.Parameter(torch.zeros(na, 1))
        self.A = nn.Parameter(torch.zeros(nz * nz, K))    # each column a column-major n_z x n_z
        self.Bm = nn.Parameter(torch.zeros(nz * nu, K))
        self.q_raw = nn.Parameter(torch.zeros(nz, K))
        self.mu1 = nn.Parameter(torch.zeros(nz, 1))
        self.p1_raw = nn.Parameter(torch.zeros(nz, 1))

    def load_ekvae(self, tensors):
        """Parameters from an ekvae model file (names as in shared/ekvae.cpp)."""
        with torch.no_grad():
            for prefix, seq in (("enc", self.enc), ("dec", self.dec), ("alpha", self.alpha)):
                lin = [m for m in seq if isinstance(m, nn.Linear)]
                for i, l in enumerate(lin):
                    l.weight.copy_(torch.from_numpy(tensors[f"{prefix}.{i}.W"].copy()))
                    l.bias.copy_(torch.from_numpy(tensors[f"{prefix}.{i}.b"].reshape(-1).copy()))
            for name, p in (("H", self.H), ("r_raw", self.r_raw), ("A", self.A), ("B", self.Bm),
                            ("q_raw", self.q_raw), ("mu1", self.mu1), ("p1_raw", self.p1_raw)):
                p.copy_(torch.from_numpy(tensors[name].copy()))

    def named_ekvae_grads(self):
        g = {}
        for prefix, seq in (("enc", self.enc), ("dec", self.dec), ("alpha", self.alpha)):
            lin = [m for m in seq if isinstance(m, nn.Linear)]
            for i, l in enumerate(lin):
                g[f"{prefix}.{i}.W"] = l.weight.grad
                g[f"{prefix}.{i}.b"] = l.bias.grad.reshape(-1, 1)
        for name, p in (("H", self.H), ("r_raw", self.r_raw), ("A", self.A), ("B", self.Bm),
                        ("q_raw", self.q_raw), ("mu1", self.mu1), ("p1_raw", self.p1_raw)):
            g[name] = p.grad
        return g

    # small pieces
    def Hmat(self):  # [n_a, n_z]
        return self.H.view(self.nz, self.na).t()

    def obs_var(self):  # [n_a]
        return Fn.softplus(self.r_raw.view(-1)) + self.cfg["r_min"]

    def prior_var(self):  # [n_z]
        return Fn.softplus(self.p1_raw.view(-1))

    def transition(self, z, u):
        """z [N, n_z], u [N, n_u] -> F [N, n_z, n_z], Bu [N, n_z], q [N, n_z]."""
        N, nz, nu = z.shape[0], self.nz, self.nu
        alpha = torch.softmax(self.alpha(torch.cat([z, u], -1)), -1)           # [N, K]
        F = (alpha @ self.A.t()).view(N, nz, nz).transpose(1, 2) + torch.eye(nz, dtype=z.dtype)
        Bk = (alpha @ self.Bm.t()).view(N, nu, nz).transpose(1, 2)             # [N, n_z, n_u]
        Bu = (Bk @ u.unsqueeze(-1)).squeeze(-1)
        q = Fn.softplus(alpha @ self.q_raw.t()) + self.cfg["q_min"]
        return F, Bu, q


def gauss_diag_logpdf(x, mu, logvar):
    return -0.5 * (LOG2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def gauss_chol_logpdf(x, mu, L):
    v = torch.linalg.solve_triangular(L, (x - mu).unsqueeze(-1), upper=False).squeeze(-1)
    return -0.5 * (x.shape[-1] * LOG2PI + (v ** 2).sum(-1)) - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)


def kalman_filter(m, a, u):
    """a [T, B, n_a], u [T, B, n_u] -> filtered/predicted moments and transitions per step."""
    T, B = a.shape[0], a.shape[1]
    nz = m.nz
    H = m.Hmat()
    R = torch.diag(m.obs_var())
    I = torch.eye(nz, dtype=a.dtype)
    ms, Ps, mps, Pps, Fs, Qs = [], [], [], [], [None], [None]
    for t in range(T):
        if t == 0:
            mp = m.mu1.view(1, nz).expand(B, nz)
            Pp = torch.diag(m.prior_var()).expand(B, nz, nz)
        else:
            F, Bu, q = m.transition(ms[-1], u[t - 1])
            Fs.append(F)
            Qs.append(q)
            mp = (F @ ms[-1].unsqueeze(-1)).squeeze(-1) + Bu                  # F m + B u
            FPF = F @ Ps[-1] @ F.transpose(1, 2)
            Pp = 0.5 * (FPF + FPF.transpose(1, 2)) + torch.diag_embed(q)       # F P F^T + Q
        HP = H @ Pp                                                            # [B, n_a, n_z]
        S = HP @ H.t() + R                                                     # innovation covariance
        L = torch.linalg.cholesky(S)
        Kt = torch.linalg.solve_triangular(L.transpose(1, 2), torch.linalg.solve_triangular(L, HP, upper=False), upper=True)
        K = Kt.transpose(1, 2)                                                 # gain [B, n_z, n_a]
        e = a[t] - mp @ H.t()                                                  # innovation
        mt = mp + (K @ e.unsqueeze(-1)).squeeze(-1)
        IKH = I - K @ H
        Pt = IKH @ Pp @ IKH.transpose(1, 2) + K @ R @ K.transpose(1, 2)        # Joseph form
        ms.append(mt)
        Ps.append(Pt)
        mps.append(mp)
        Pps.append(Pp)
    return ms, Ps, mps, Pps, Fs, Qs


def backward_sample(m, kf, eps):
    """Joint sample z_1:T ~ p(z | a, u) by backward sampling; eps [T, B, n_z]. Returns z, log p(z|a,u) [B]."""
    ms, Ps, mps, Pps, Fs, Qs = kf
    T = len(ms)
    nz = m.nz
    I = torch.eye(nz, dtype=eps.dtype)
    Ij = m.cfg["jitter"] * I
    z = [None] * T
    L = torch.linalg.cholesky(Ps[-1] + Ij)
    z[-1] = ms[-1] + (L @ eps[-1].unsqueeze(-1)).squeeze(-1)
    log_post = gauss_chol_logpdf(z[-1], ms[-1], L)
    for t in range(T - 2, -1, -1):
        F = Fs[t + 1]
        Lp = torch.linalg.cholesky(Pps[t + 1] + Ij)
        FP = F @ Ps[t]
        Jt = torch.linalg.solve_triangular(Lp.transpose(1, 2), torch.linalg.solve_triangular(Lp, FP, upper=False), upper=True)
        J = Jt.transpose(1, 2)                                                 # RTS gain P F^T Pp^-1
        c = ms[t] + (J @ (z[t + 1] - mps[t + 1]).unsqueeze(-1)).squeeze(-1)
        IJF = I - J @ F
        Sc = IJF @ Ps[t] @ IJF.transpose(1, 2) + J @ torch.diag_embed(Qs[t + 1]) @ J.transpose(1, 2) + Ij
        Lc = torch.linalg.cholesky(Sc)
        z[t] = c + (Lc @ eps[t].unsqueeze(-1)).squeeze(-1)
        log_post = log_post + gauss_chol_logpdf(z[t], c, Lc)
    return torch.stack(z), log_post


def kalman_terms(m, a, u, ez):
    """log p(z|a,u), log p(a|z), log p(z|u) summed over the batch, at a joint sample."""
    T, B = a.shape[0], a.shape[1]
    kf = kalman_filter(m, a, u)
    z, log_post = backward_sample(m, kf, ez)                                  # z [T, B, n_z]
    log_paz = gauss_diag_logpdf(a, z @ m.Hmat().t(), torch.log(m.obs_var())).sum()
    lp1 = gauss_diag_logpdf(z[0], m.mu1.view(-1), torch.log(m.prior_var())).sum()
    zprev = z[:-1].reshape(-1, m.nz)
    F, Bu, q = m.transition(zprev, u[:-1].reshape(-1, m.nu))
    mean = (F @ zprev.unsqueeze(-1)).squeeze(-1) + Bu
    log_pz = lp1 + gauss_diag_logpdf(z[1:].reshape(-1, m.nz), mean, torch.log(q)).sum()
    return log_post.sum(), log_paz, log_pz


def objective(m, x, u, ea, ez, lam):
    """x [T, B, D], u [T, B, n_u]; ea [T, B, n_a], ez [T, B, n_z] standard normals.
    lam < 0: the ELBO loss R + D; else R + lam (D - D0), lam a constant."""
    T, B = x.shape[0], x.shape[1]
    N = T * B
    h = m.enc(x)
    mu, lv = h[..., :m.na], h[..., m.na:]
    a = mu + torch.exp(0.5 * lv) * ea
    log_qa = gauss_diag_logpdf(a, mu, lv).sum()
    logits = m.dec(a)
    log_px = (x * logits - Fn.softplus(logits)).sum()                          # Bernoulli
    log_post, log_paz, log_pz = kalman_terms(m, a, u, ez)
    D = -log_px / N
    R = (log_qa + log_post - log_paz - log_pz) / N
    loss = R + D if lam < 0 else R + lam * (D - m.cfg["D0"])
    return loss, dict(D=D, R=R, log_px=log_px, log_qa=log_qa, log_post=log_post, log_paz=log_paz, log_pz=log_pz)


# ---- ekvae's Rng (xoshiro256** + Box-Muller), to draw the same noise in the check ----------

M64 = (1 << 64) - 1


class Rng:
    def __init__(self, seed):
        x = seed & M64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    def next_u64(self):
        s = self.s
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def uniform(self):
        return (self.next_u64() >> 11) * 2.0 ** -53

    def normal(self):
        u1, u2 = self.uniform(), self.uniform()
        u1 = max(u1, 1e-300)
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)


# ---- modes ---------------------------------------------------------------------------------


def default_cfg():
    return dict(image_size=16, n_a=2, n_z=3, n_u=1, K=16, enc_hidden=[128, 128], dec_hidden=[128, 128],
                alpha_hidden=[64, 64], q_min=1e-4, r_min=1e-4, jitter=1e-5, D0=10.0, batch=32, window=32,
                lr=1e-3, clip_norm=100.0, lambda_init=1.0, lambda_min=0.01, lambda_max=100.0, lambda_rate=0.05,
                lambda_max_step=0.05, lambda_ma=0.95)


def load_model(path, dtype=torch.float32):
    tensors, meta = load_safetensors(path)
    cfg = default_cfg()
    cfg.update(json.loads(meta["config"]))
    m = EKVAE(cfg)
    m.load_ekvae(tensors)
    return m.to(dtype)


def set_threads(n):
    torch.set_num_threads(n)
    info = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    try:
        from threadpoolctl import threadpool_info
        for lib in threadpool_info():
            if lib.get("internal_api") == "openblas":
                info.update(blas=lib["filepath"], blas_arch=lib.get("architecture"), blas_threads=lib["num_threads"])
    except ImportError:
        pass
    return info


def mode_check(args):
    """Same inputs and noise as bench_ekvae check: compare loss, terms and every gradient."""
    out = {"mode": "check"}
    batch, bmeta = load_safetensors(f"{args.dir}/batch.safetensors")
    exp, emeta = load_safetensors(f"{args.dir}/expected.safetensors")
    B, T = int(bmeta["B"]), int(bmeta["T"])
    lam = float(bmeta["lambda"])
    rng = Rng(int(bmeta["noise_seed"]))
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        m = load_model(f"{args.dir}/model.safetensors", dtype)
        na, nz, N = m.na, m.nz, B * T
        rng = Rng(int(bmeta["noise_seed"]))
        ea = np.array([rng.normal() for _ in range(na * N)]).reshape(T, B, na)  # column-major [n_a, N]
        ez = np.array([rng.normal() for _ in range(nz * N)]).reshape(T, B, nz)
        x = torch.from_numpy(batch["X"].reshape(T, B, -1).copy()).to(dtype)
        u = torch.from_numpy(batch["U"].reshape(T, B, -1).copy()).to(dtype)
        loss, terms = objective(m, x, u, torch.from_numpy(ea).to(dtype), torch.from_numpy(ez).to(dtype), lam)
        loss.backward()
        names = emeta["values"].split(",")
        mine = [loss.item()] + [terms[k].item() for k in names[1:]]
        rel = {k: abs(a - b) / max(abs(b), 1e-6) for k, a, b in zip(names, mine, exp["values"])}
        grads = m.named_ekvae_grads()
        grel = {}
        for name, g in grads.items():
            ref = exp["grad." + name].astype(np.float64)
            d = np.abs(g.detach().double().numpy() - ref).max()
            grel[name] = float(d / max(np.abs(ref).max(), 1e-8))
        out[tag] = {"values": dict(zip(names, mine)), "expected": dict(zip(names, exp["values"].tolist())),
                    "max_rel_value": max(rel.values()), "max_rel_grad": max(grel.values()),
                    "worst_grad": max(grel, key=grel.get)}
    out["ok"] = out["f64"]["max_rel_value"] < 1e-4 and out["f64"]["max_rel_grad"] < 1e-2
    print(json.dumps(out))
    return 0 if out["ok"] else 1


def mode_train(args):
    info = set_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    m = load_model(args.model)
    cfg = m.cfg
    data, dmeta = load_safetensors(args.data)
    images = torch.from_numpy(data["images"].reshape(data["images"].shape[0], data["images"].shape[1], -1).copy())
    actions = torch.from_numpy(data["actions"].copy())
    Nseq, Tseq = images.shape[0], images.shape[1]
    B, T = cfg["batch"], cfg["window"]
    opt = torch.optim.Adam(m.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8)
    lam, D_ma, started = cfg["lambda_init"], 0.0, False
    gen = np.random.default_rng(0)
    steps_t = torch.arange(T)
    times = []
    for i in range(args.warmup + args.steps):
        n = torch.from_numpy(gen.integers(0, Nseq, B))
        t0 = torch.from_numpy(gen.integers(0, Tseq - T + 1, B))
        idx_t = (t0[None, :] + steps_t[:, None])                               # [T, B]
        x = images[n[None, :], idx_t]                                          # [T, B, D]
        u = actions[n[None, :], idx_t]                                         # [T, B, 1]
        start = time.perf_counter()
        ea = torch.randn(T, B, m.na)
        ez = torch.randn(T, B, m.nz)
        loss, terms = objective(m, x, u, ea, ez, lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), cfg["clip_norm"])
        opt.step()
        D = terms["D"].item()                                                  # lambda update (a constant in the gradient)
        D_ma = D if not started else cfg["lambda_ma"] * D_ma + (1 - cfg["lambda_ma"]) * D
        started = True
        step = min(max(cfg["lambda_rate"] * (D_ma - cfg["D0"]), -cfg["lambda_max_step"]), cfg["lambda_max_step"])
        lam = min(max(lam * math.exp(step), cfg["lambda_min"]), cfg["lambda_max"])
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1000)
    med = float(np.median(times))
    out = {"mode": "train", "impl": "torch", "threads": args.threads, "steps": args.steps, "step_ms": med,
           "step_ms_mean": float(np.mean(times)), "steps_per_s": 1000 / med, "loss": loss.item(),
           "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out.update(info)
    print(json.dumps(out))
    return 0


def mode_kalman(args):
    """The Kalman part alone (as bench_ekvae kalman): filter, backward sample, log p(a|z), log p(z|u)."""
    info = set_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    m = load_model(args.model)
    B, T = m.cfg["batch"], m.cfg["window"]
    a0 = torch.randn(T, B, m.na)
    u = torch.rand(T, B, 1) * 4 - 2
    times = []
    for r in range(args.warmup + args.reps):
        ez = torch.randn(T, B, m.nz)
        start = time.perf_counter()
        a = a0.clone().requires_grad_(True)
        m.zero_grad(set_to_none=True)
        log_post, log_paz, log_pz = kalman_terms(m, a, u, ez)
        loss = (log_post - log_paz - log_pz) / (B * T)
        loss.backward()
        if r >= args.warmup:
            times.append((time.perf_counter() - start) * 1000)
    med = float(np.median(times))
    out = {"mode": "kalman", "impl": "torch", "threads": args.threads, "batch_ms": med, "per_sequence_us": 1000 * med / B}
    out.update(info)
    print(json.dumps(out))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("check")
    c.add_argument("dir")
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--model", required=True)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    k = sub.add_parser("kalman")
    k.add_argument("--model", required=True)
    k.add_argument("--threads", type=int, default=1)
    k.add_argument("--reps", type=int, default=20)
    k.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    return {"check": mode_check, "train": mode_train, "kalman": mode_kalman}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
