#!/usr/bin/python3
"""Runs every benchmark of docs/performance.md, prints a table and writes bench/results.json.
Called by scripts/bench.sh after the builds; standard library only (torch runs in its own
processes through bench/torch_reference.py).

  bench/run_bench.py --build build-bench --wasm-build build-wasm-bench [--rounds 5] [--quick]

Training steps of ekvae (bench_ekvae train) and of the PyTorch reference are measured in the
same run, alternating (ekvae then torch, for 1 and 2 threads, several rounds); each process
times only its steps (after a warm-up), and the report gives the median over rounds of each
process's median step time, and the median of the per-round ratios (robust to a machine whose
load changes between rounds).
"""
import argparse
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_json(cmd, env=None, timeout=1800):
    """Runs cmd, returns the last JSON line of its stdout."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run(cmd, cwd=TOP, env=e, capture_output=True, text=True, timeout=timeout)
    try:
        out = json.loads(p.stdout)  # a whole (pretty-printed) JSON document
    except ValueError:
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        out = json.loads(lines[-1])
    out["_rc"] = p.returncode
    return out


def machine_info():
    info = {"platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for key in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "L2 cache", "L3 cache",
                    "Hypervisor vendor"):
            m = re.search(rf"^{re.escape(key)}:\s*(.+)$", lscpu, re.M)
            if m:
                info[key] = m.group(1).strip()
        flags = re.search(r"^Flags:\s*(.+)$", lscpu, re.M)
        fl = flags.group(1).split() if flags else []
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in fl]
    except OSError:
        pass
    info["load_avg_start"] = os.getloadavg()
    info["other_training_running"] = busy()
    try:
        info["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        info["node"] = None
    return info


def busy():
    """Other ekvae_train processes on the machine (they share the 2 cores)."""
    p = subprocess.run(["pgrep", "-f", "ekvae_train"], capture_output=True, text=True)
    mine = str(os.getpid())
    return [l for l in p.stdout.split() if l != mine]


def pick_openblas_coretype(simd):
    """OpenBLAS 0.3.21 does not know every recent CPU model and may fall back to its generic
    'Prescott' kernels (SSE3, ~4x slower sgemm). Give torch the fastest kernel set this CPU runs:
    time a [128 x 256] x [256 x 1024] sgemm (the encoder's first layer on a batch) through numpy,
    which calls the same libblas.so.3, under each candidate."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return os.environ["OPENBLAS_CORETYPE"], {"kept_from_environment": os.environ["OPENBLAS_CORETYPE"]}
    cands = ["", "Haswell"]
    if "avx512f" in simd:
        cands.append("SkylakeX")
    if "avx512_bf16" in simd:
        cands.append("Cooperlake")
    probe = ("import numpy as np, time\n"
             "from threadpoolctl import threadpool_info\n"
             "a=np.random.rand(128,256).astype(np.float32); b=np.random.rand(256,1024).astype(np.float32)\n"
             "for _ in range(30): a@b\n"
             "ts=[]\n"
             "for _ in range(7):\n"
             "    t=time.perf_counter()\n"
             "    for _ in range(50): a@b\n"
             "    ts.append((time.perf_counter()-t)/50*1e3)\n"
             "ts.sort()\n"
             "arch=[i.get('architecture') for i in threadpool_info() if i.get('internal_api')=='openblas']\n"
             "print(ts[3], arch[0] if arch else None)\n")
    res = {}
    for c in cands:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        env.pop("OPENBLAS_CORETYPE", None)
        if c:
            env["OPENBLAS_CORETYPE"] = c
        out = subprocess.run([PY, "-c", probe], env=env, capture_output=True, text=True).stdout.split()
        if len(out) == 2:
            res[c or "auto"] = {"sgemm_ms": float(out[0]), "arch": out[1]}
    best = min(res, key=lambda k: res[k]["sgemm_ms"])
    return ("" if best == "auto" else best), res


def med(xs):
    return statistics.median(xs) if xs else None


BAR = "r2_knn cos, sin >= 0.95, r2 omega >= 0.90, angle error <= 0.3 rad at 10 steps and <= 0.6 rad at 32"


def parse_log(path, threshold=0.9):
    """A train.jsonl: steps, minutes, the probes, the first probe with r2_omega >= threshold and
    the first probe meeting the whole quality bar (when the probe carries k-NN and angle errors)."""
    last_time, last_step, hit, bar, probes, full_from = 0.0, 0, None, None, [], None
    offset, raw_prev = 0.0, 0.0  # time_s restarts at 0 when a run is resumed: keep a running total
    with open(path) as f:
        for line in f:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if "time_s" in j:
                if j["time_s"] < 0.5 * raw_prev and raw_prev > 5:  # a resumed run starts again near 0
                    offset += raw_prev
                raw_prev = j["time_s"]
            if "probe" in j:
                p = j["probe"]
                t = offset + j.get("time_s", raw_prev)
                if full_from is None and "angle_err_32" in p:
                    full_from = j["step"]
                probes.append((j["step"], round(p["r2_omega"], 3)))
                if hit is None and p["r2_omega"] >= threshold:
                    hit = {"step": j["step"], "minutes": round(t / 60, 3), "r2_omega": p["r2_omega"]}
                if bar is None and "angle_err_32" in p and (p["r2knn_cos"] >= 0.95 and p["r2knn_sin"] >= 0.95 and
                                                           p["r2_omega"] >= 0.9 and p["angle_err_10"] <= 0.3 and
                                                           p["angle_err_32"] <= 0.6):
                    bar = {"step": j["step"], "minutes": round(t / 60, 3)}
            elif "time_s" in j:
                last_time, last_step = offset + j["time_s"], j["step"]
    return {"bar_evaluable_from_step": full_from, "steps_logged": last_step, "minutes_logged": round(last_time / 60, 2),
            "mean_steps_per_s": round(last_step / max(last_time, 1e-9), 2), "first_r2_omega_ge_0.9": hit,
            "first_probe_meeting_bar": bar, "probes": probes}


def time_to_quality():
    """From the shipped runs' logs (runs/*/train.jsonl)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(TOP, "runs", "*", "train.jsonl"))):
        q = parse_log(path)
        if q["steps_logged"]:
            out[os.path.basename(os.path.dirname(path))] = q
    return out


def quality_run(bdir, work, steps=1000, every=100):
    """A fresh run of the default preset from one start (--restarts 1: 1000 steps cannot hold the
    default's 8 starts of 1500), 2 threads, probed every 100 steps, then ekvae_eval on its model:
    steps and minutes to r2.omega >= 0.9, and the full quality bar at the end of the run."""
    out_dir = os.path.join(work, "quality-run")
    cmd = [os.path.join(bdir, "native", "ekvae_train"), "--steps", str(steps), "--eval-every", str(every), "--threads", "2",
           "--restarts", "1", "--force", "--out", out_dir]
    t0 = time.time()
    subprocess.run(cmd, cwd=TOP, check=True, capture_output=True)
    wall = time.time() - t0
    q = parse_log(os.path.join(out_dir, "train.jsonl"))
    hit, probes, last_time = q["first_r2_omega_ge_0.9"], q["probes"], q["minutes_logged"] * 60
    ev = run_json([os.path.join(bdir, "native", "ekvae_eval"), "--model", os.path.join(out_dir, "model.safetensors"),
                   "--seed", "3", "--sequences", "200", "--json"])
    bar = (ev["r2_knn"]["cos"] >= 0.95 and ev["r2_knn"]["sin"] >= 0.95 and ev["r2"]["omega"] >= 0.9 and
           ev["forecast_angle_err"]["10"] <= 0.3 and ev["forecast_angle_err"]["32"] <= 0.6)
    res = {"command": " ".join(cmd).replace(TOP + "/", ""), "wall_s": round(wall, 1), "train_minutes": round(last_time / 60, 3),
           "first_r2_omega_ge_0.9": hit,
           "first_probe_meeting_bar": q["first_probe_meeting_bar"], "probes": probes, "eval_at_end": {
               "r2": ev["r2"], "r2_knn": ev["r2_knn"], "forecast_angle_err": ev["forecast_angle_err"]}, "bar_met_at_end": bar}
    log(f"time to quality (fresh run, 2 threads): r2.omega >= 0.9 at {hit}; full bar after {steps} steps "
        f"({last_time / 60:.2f} min): {'met' if bar else 'not met'}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--wasm-build", default="build-wasm-bench")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="few steps and rounds (a smoke run)")
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument("--model", default=None, help="model file for the per-frame benchmarks")
    ap.add_argument("--ttq-only", action="store_true", help="recompute the time-to-quality fields of an existing results file")
    args = ap.parse_args()
    if args.ttq_only:
        path = os.path.join(TOP, args.out)
        with open(path) as f:
            R = json.load(f)
        R["time_to_quality"] = time_to_quality()
        qr = R.get("time_to_quality_run")
        if qr:
            q = parse_log(os.path.join(TOP, args.build, "bench-work", "quality-run", "train.jsonl"))
            qr.update({"first_r2_omega_ge_0.9": q["first_r2_omega_ge_0.9"], "first_probe_meeting_bar": q["first_probe_meeting_bar"],
                       "probes": q["probes"], "train_minutes": q["minutes_logged"]})
        with open(path, "w") as f:
            json.dump(R, f, indent=2)
            f.write("\n")
        print_table(R)
        return 0
    rounds = 1 if args.quick else args.rounds
    c_steps, c_warm = (20, 5) if args.quick else (150, 20)
    t_steps, t_warm = (5, 2) if args.quick else (25, 5)
    bdir = os.path.join(TOP, args.build)
    bench_ekvae = os.path.join(bdir, "bench", "bench_ekvae")
    bench_frame = os.path.join(bdir, "bench", "bench_frame")
    wasm_js = os.path.join(TOP, args.wasm_build, "wasm", "bench_frame_wasm.js")
    model = args.model or next((p for p in ("models/pendulum-constrained.safetensors", "runs/c1/model.safetensors")
                                if os.path.exists(os.path.join(TOP, p))), None)
    work = os.path.join(bdir, "bench-work")
    os.makedirs(work, exist_ok=True)
    R = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), "rounds": rounds}
    if R["machine"]["other_training_running"]:
        log(f"note: {len(R['machine']['other_training_running'])} ekvae_train process(es) are running: "
            "absolute times are inflated; the ratios are measured in one run")

    # inputs: the default training data as a file (for torch), a fresh model and the check batch
    data = os.path.join(work, "train.safetensors")
    if not os.path.exists(data):
        subprocess.run([os.path.join(bdir, "native", "ekvae_data"), "--out", data, "--sequences", "1000", "--steps", "64",
                        "--seed", "1"], cwd=TOP, check=True, capture_output=True)
    run_json([bench_ekvae, "check", "--out", work])
    check = run_json([PY, "bench/torch_reference.py", "check", work])
    R["torch_check"] = {"ok": check["ok"], "f32": {k: check["f32"][k] for k in ("max_rel_value", "max_rel_grad")},
                        "f64": {k: check["f64"][k] for k in ("max_rel_value", "max_rel_grad")}}
    log(f"torch reference vs ekvae, same inputs and noise: loss/terms rel. diff {check['f64']['max_rel_value']:.1e}, "
        f"gradients {check['f64']['max_rel_grad']:.1e} (float64 torch) -> {'same model' if check['ok'] else 'MISMATCH'}")
    init_model = os.path.join(work, "model.safetensors")

    coretype, probe = pick_openblas_coretype(R["machine"].get("simd", []))
    R["openblas"] = {"OPENBLAS_CORETYPE": coretype or "(unset: OpenBLAS autodetects)", "probe_sgemm_128x256x1024": probe}
    log(f"OpenBLAS kernel set for torch: {coretype or 'autodetected'} ({probe})")

    def torch_env(n):
        e = {"OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        if coretype:
            e["OPENBLAS_CORETYPE"] = coretype
        if n > 1:
            # torch's OpenMP pool and OpenBLAS's pthread pool both spin while they wait: on 2 cores
            # (and more so when anything else runs) the default active waiting made torch's step
            # 1.5x-20x slower than at 1 thread; passive waiting is torch's best at 2 threads here.
            e["OMP_WAIT_POLICY"] = "PASSIVE"
        return e

    # ---- training steps, alternating -------------------------------------------------------
    train = {1: {"ekvae": [], "torch": [], "floor": [], "floor_ratio": [], "ratio": []},
             2: {"ekvae": [], "torch": [], "floor": [], "floor_ratio": [], "ratio": []}}
    torch_info = {}
    for r in range(rounds):
        for n in (1, 2):
            c = run_json([bench_ekvae, "train", "--threads", str(n), "--steps", str(c_steps), "--warmup", str(c_warm)])
            t = run_json([PY, "bench/torch_reference.py", "train", "--data", data, "--model", init_model, "--threads", str(n),
                          "--steps", str(t_steps), "--warmup", str(t_warm)], env=torch_env(n))
            d = train[n]
            d["ekvae"].append(c["step_ms"])
            d["floor"].append(c["floor_ms"])
            d["floor_ratio"].append(c["floor_ratio"])
            d["torch"].append(t["step_ms"])
            d["ratio"].append(t["step_ms"] / c["step_ms"])
            torch_info[n] = {k: t.get(k) for k in ("torch", "torch_threads", "blas", "blas_arch", "blas_threads", "max_rss_mb")}
            log(f"round {r + 1}/{rounds}, {n} thread(s): ekvae {c['step_ms']:.2f} ms/step (floor {c['floor_ms']:.2f} ms, "
                f"x{c['floor_ratio']:.2f}), torch {t['step_ms']:.1f} ms/step -> torch/ekvae {t['step_ms'] / c['step_ms']:.1f}x")
    R["train"] = {}
    for n in (1, 2):
        d = train[n]
        R["train"][str(n)] = {
            "ekvae_step_ms": med(d["ekvae"]), "ekvae_steps_per_s": 1000 / med(d["ekvae"]),
            "torch_step_ms": med(d["torch"]), "torch_steps_per_s": 1000 / med(d["torch"]),
            "torch_over_ekvae": med(d["ratio"]), "floor_ms": med(d["floor"]), "step_over_floor": med(d["floor_ratio"]),
            "per_round": d, "torch_env": torch_env(n), "torch_info": torch_info.get(n)}

    # ---- the Kalman part alone (1 thread), alternating --------------------------------------
    kc, kt = [], []
    for r in range(max(1, min(rounds, 3))):
        kc.append(run_json([bench_ekvae, "kalman", "--reps", "50" if args.quick else "200"])["per_sequence_us"])
        kt.append(run_json([PY, "bench/torch_reference.py", "kalman", "--model", init_model, "--threads", "1",
                            "--reps", "5" if args.quick else "30"], env=torch_env(1))["per_sequence_us"])
    R["kalman"] = {"ekvae_us_per_sequence": med(kc), "torch_us_per_sequence": med(kt), "torch_over_ekvae": med(kt) / med(kc),
                   "per_round": {"ekvae": kc, "torch": kt}, "window": 32, "batch": 32}
    log(f"Kalman part per sequence (32 steps): ekvae {med(kc):.1f} us, torch {med(kt):.1f} us")

    # ---- the app's per-frame work: native and wasm under node ------------------------------
    if model:
        fn, fw = [], []
        frames = "300" if args.quick else "1000"
        for r in range(3):
            fn.append(run_json([bench_frame, model, "--frames", frames])["median_ms"])
            if os.path.exists(wasm_js):
                fw.append(run_json(["node", wasm_js, model, "--frames", frames])["median_ms"])
        R["frame"] = {"model": model, "horizon": 30, "frames": int(frames), "native_median_ms": med(fn),
                      "wasm_median_ms": med(fw), "per_run": {"native": fn, "wasm": fw}}
        log(f"per frame (filter step + 30-step forecast + decoding): native {med(fn):.4f} ms, wasm {med(fw) if fw else float('nan'):.4f} ms")
    else:
        log("no model file (models/ or runs/c1/): per-frame benchmarks skipped")

    # ---- the training step in the page: the worker's wasm code (bench_ekvae_wasm, the same
    # core as ekvae_train.wasm) under node's V8, alternating with the native 1-thread step --------
    wasm_train = os.path.join(TOP, args.wasm_build, "wasm", "bench_ekvae_wasm.js")
    if os.path.exists(wasm_train):
        wn, ww = [], []
        for r in range(max(1, min(rounds, 3))):
            wn.append(run_json([bench_ekvae, "train", "--threads", "1", "--steps", str(c_steps), "--warmup", str(c_warm)])["step_ms"])
            ww.append(run_json(["node", wasm_train, "train", "--threads", "1", "--steps", str(max(10, c_steps // 3)),
                                "--warmup", str(c_warm)])["step_ms"])
        ratios = [w / n for w, n in zip(ww, wn)]
        R["train_wasm"] = {"native_step_ms": med(wn), "wasm_step_ms": med(ww), "wasm_over_native": med(ratios),
                           "per_round": {"native": wn, "wasm": ww, "ratio": ratios}}
        log(f"training step, 1 thread: native {med(wn):.2f} ms, wasm under node {med(ww):.2f} ms -> {med(ratios):.2f}x")
    else:
        log(f"{wasm_train} not built: the in-page training row is skipped")

    # ---- peak memory of a training run -------------------------------------------------------
    mem_out = os.path.join(work, "mem-run")
    cmd = ["/usr/bin/time", "-v", os.path.join(bdir, "native", "ekvae_train"), "--steps", "50" if args.quick else "300",
           "--threads", "2", "--restarts", "1", "--force", "--out", mem_out]
    p = subprocess.run(cmd, cwd=TOP, capture_output=True, text=True)
    if p.returncode != 0:  # a failed run's peak RSS is not a training run's
        raise SystemExit(f"run_bench: {' '.join(cmd[2:])} failed ({p.returncode}): {p.stderr.strip().splitlines()[0]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    R["memory"] = {"ekvae_train_max_rss_mb": int(m.group(1)) / 1024 if m else None,
                   "command": " ".join(cmd[2:]).replace(TOP + "/", ""),
                   "torch_train_max_rss_mb": (torch_info.get(2) or {}).get("max_rss_mb")}
    log(f"peak RSS: ekvae_train {R['memory']['ekvae_train_max_rss_mb']:.0f} MB, torch reference "
        f"{R['memory']['torch_train_max_rss_mb'] or float('nan'):.0f} MB")

    R["time_to_quality"] = time_to_quality()
    if not args.quick:
        R["time_to_quality_run"] = quality_run(bdir, work)
    R["machine"]["load_avg_end"] = os.getloadavg()
    R["machine"]["other_training_running_end"] = busy()
    R["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(os.path.join(TOP, args.out), "w") as f:
        json.dump(R, f, indent=2)
        f.write("\n")
    print_table(R)
    return 0


def print_table(R):
    t1, t2 = R["train"]["1"], R["train"]["2"]
    rows = [
        ("training step, 1 thread", f"{t1['ekvae_steps_per_s']:.1f} steps/s ({t1['ekvae_step_ms']:.2f} ms)",
         f"{t1['torch_steps_per_s']:.2f} steps/s ({t1['torch_step_ms']:.1f} ms)", f"{t1['torch_over_ekvae']:.1f}x faster"),
        ("training step, 2 threads", f"{t2['ekvae_steps_per_s']:.1f} steps/s ({t2['ekvae_step_ms']:.2f} ms)",
         f"{t2['torch_steps_per_s']:.2f} steps/s ({t2['torch_step_ms']:.1f} ms)", f"{t2['torch_over_ekvae']:.1f}x faster"),
        ("bare-products floor, 1 thread", f"{t1['floor_ms']:.2f} ms", "", f"step = {t1['step_over_floor']:.2f}x floor"),
        ("bare-products floor, 2 threads", f"{t2['floor_ms']:.2f} ms", "", f"step = {t2['step_over_floor']:.2f}x floor"),
        ("Kalman part per sequence (1 thr)", f"{R['kalman']['ekvae_us_per_sequence']:.1f} us",
         f"{R['kalman']['torch_us_per_sequence']:.0f} us", f"{R['kalman']['torch_over_ekvae']:.1f}x faster"),
    ]
    if "frame" in R:
        fw = R["frame"]["wasm_median_ms"]
        rows.append(("app frame, native (median)", f"{R['frame']['native_median_ms']:.3f} ms", "", "target <= 0.3 ms"))
        rows.append(("app frame, wasm/node (median)", f"{fw:.3f} ms" if fw else "not built", "", "target <= 1 ms"))
    if "train_wasm" in R:
        tw = R["train_wasm"]
        rows.append(("training step in the page (wasm/node, 1 thr)", f"{1000 / tw['wasm_step_ms']:.1f} steps/s ({tw['wasm_step_ms']:.2f} ms)", "",
                     f"{tw['wasm_over_native']:.2f}x the native 1-thread step (target <= 2x)"))
    mem = R["memory"]
    rows.append(("peak RSS, training run", f"{mem['ekvae_train_max_rss_mb']:.0f} MB",
                 f"{mem['torch_train_max_rss_mb']:.0f} MB" if mem["torch_train_max_rss_mb"] else "", ""))
    w = [max(len(r[i]) for r in rows + [("", "ekvae", "PyTorch reference", "")]) for i in range(4)]
    line = lambda r: "  ".join(r[i].ljust(w[i]) for i in range(4))
    print(line(("", "ekvae", "PyTorch reference", "")))
    print("  ".join("-" * x for x in w))
    for r in rows:
        print(line(r))
    busy_note = R["machine"]["other_training_running"] or R["machine"]["other_training_running_end"]
    print(f"\nmachine: {R['machine'].get('Model name')}, {R['machine'].get('CPU(s)')} cores; load average at start "
          f"{R['machine']['load_avg_start'][0]:.2f}{' (other training runs were running: absolute times inflated)' if busy_note else ''}")
    print(f"torch {t1['torch_info']['torch']}, BLAS {t1['torch_info']['blas_arch']} kernels "
          f"({os.path.basename(t1['torch_info']['blas'] or '')}); reference check: {'same objective and gradients' if R['torch_check']['ok'] else 'MISMATCH'}")
    q = R.get("time_to_quality_run")
    fmt = lambda h: f"step {h['step']} ({h['minutes']} min)" if h else "not reached"
    print(f"quality bar: {BAR}")
    if q:
        print(f"time to quality, fresh default run (2 threads, probes every 100 steps): r2.omega >= 0.9 at "
              f"{fmt(q['first_r2_omega_ge_0.9'])}, whole bar (probe) at {fmt(q.get('first_probe_meeting_bar'))}; "
              f"ekvae_eval after {q['probes'][-1][0] if q['probes'] else '?'} steps ({q['train_minutes']} min): "
              + ("bar met" if q["bar_met_at_end"] else "bar not met"))
    for name, q in R.get("time_to_quality", {}).items():
        since = q.get("bar_evaluable_from_step")
        print(f"  {name}: r2.omega >= 0.9 at {fmt(q['first_r2_omega_ge_0.9'])}, whole bar at "
              f"{fmt(q['first_probe_meeting_bar'])}{f' (probes carry the whole bar from step {since})' if since and since > 1000 else ''}"
              f" ({q['steps_logged']} steps in {q['minutes_logged']} min logged)")


if __name__ == "__main__":
    sys.exit(main())
