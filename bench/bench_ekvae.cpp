// bench_ekvae: the training-side benchmarks of docs/performance.md (driven by scripts/bench.sh).
//
//   bench_ekvae train  [--threads N] [--steps S] [--warmup W]   training step of the default preset
//                                                                 vs the bare-products floor, alternating
//   bench_ekvae kalman [--reps R]                                 the Kalman part of the objective alone
//   bench_ekvae check  --out DIR                                  a model, a batch and the objective's
//                                                                 values and gradients for the PyTorch check
//   bench_ekvae profile [--threads N] [--steps S]                 a few steps, for callgrind
//
// Every mode prints one JSON object on stdout. Times are medians of per-iteration wall times.
//
// The floor: the matrix products a training step cannot avoid, i.e. the encoder
// (256-128-128-4) and decoder (2-128-128-256) layers for all B*T frames of the batch, forward
// (Y = W X) and backward (dW = G X^T, dX = W^T G; no dX for the encoder's input), as bare Eigen
// products into preallocated buffers. With N threads each thread does the products of its share
// of the frames, as Trainer::train_step splits the batch.
#include "ekvae.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace ekvae;
using Mf = Mat<float>;
using clk = std::chrono::steady_clock;

static double ms_since(clk::time_point t0) { return std::chrono::duration<double, std::milli>(clk::now() - t0).count(); }

static double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double mean(const std::vector<double> & v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0 : s / v.size();
}

[[noreturn]] static void usage(const char * msg) {
    std::fprintf(stderr, "error: %s\nusage: bench_ekvae train|kalman|check|profile [--threads N] [--steps S] [--warmup W] [--reps R] [--out DIR]\n", msg);
    std::exit(2);
}

// ---- the bare-products floor ----------------------------------------------------------------

// The products of one MLP over n frames, forward and backward, into preallocated buffers.
struct BareMlp {
    std::vector<const Mf *> W; // [n_out, n_in] per layer
    std::vector<Mf> H, G, dW;  // activations, output gradients, weight gradients
    bool input_grad = false;   // dX of the first layer (the decoder's input a needs it)
    Mf dX;

    void init(const MLP<float> & mlp, const Mf & X, bool need_input_grad) {
        const int L = (int)mlp.layers.size();
        W.clear();
        for (auto & l : mlp.layers) W.push_back(&l.W->value);
        H.assign(L + 1, Mf());
        G.assign(L + 1, Mf());
        dW.assign(L, Mf());
        H[0] = X;
        for (int l = 0; l < L; l++) {
            H[l + 1].resize(W[l]->rows(), X.cols());
            G[l + 1] = Mf::Random(W[l]->rows(), X.cols()); // stands for the incoming gradient
            dW[l].resize(W[l]->rows(), W[l]->cols());
        }
        input_grad = need_input_grad;
        dX.resize(X.rows(), X.cols());
    }
    void run() {
        const int L = (int)W.size();
        for (int l = 0; l < L; l++) H[l + 1].noalias() = *W[l] * H[l];
        for (int l = L - 1; l >= 0; l--) {
            dW[l].noalias() = G[l + 1] * H[l].transpose();
            if (l > 0) G[l].noalias() = W[l]->transpose() * G[l + 1];
            else if (input_grad) dX.noalias() = W[l]->transpose() * G[l + 1];
        }
    }
};

struct Floor {
    std::vector<BareMlp> enc, dec; // one per thread
    void init(const Ekvae<float> & m, int frames, int threads) {
        enc.assign(threads, BareMlp());
        dec.assign(threads, BareMlp());
        const int D = m.cfg.image_size * m.cfg.image_size;
        for (int k = 0; k < threads; k++) {
            const int n = (int)((int64_t)frames * (k + 1) / threads - (int64_t)frames * k / threads);
            Mf X = (Mf::Random(D, n).array() * 0.5f + 0.5f).matrix();
            Mf A = Mf::Random(m.cfg.n_a, n);
            enc[k].init(m.enc, X, false);
            dec[k].init(m.dec, A, true);
        }
    }
    void run() {
        const int nt = (int)enc.size();
        auto work = [&](int k) {
            enc[k].run();
            dec[k].run();
        };
        if (nt == 1) return work(0);
        std::vector<std::thread> th;
        for (int k = 1; k < nt; k++) th.emplace_back(work, k);
        work(0);
        for (auto & t : th) t.join();
    }
};

// ---- modes ---------------------------------------------------------------------------------

struct Opts {
    int threads = 1, steps = 60, warmup = 10, reps = 100;
    std::string out;
};

static Dataset default_train_data(const EkvaeConfig & cfg) {
    DatasetConfig dc;
    dc.sequences = cfg.train_sequences;
    dc.steps = cfg.sequence_steps;
    dc.image_size = cfg.image_size;
    dc.seed = (uint64_t)cfg.train_seed;
    return generate_dataset(dc);
}

static int mode_train(const Opts & o) {
    EkvaeConfig cfg;
    config_preset("pendulum", cfg);
    cfg.restarts = 1; // a plain run: the step is what is timed
    cfg.threads = o.threads;
    const Dataset data = default_train_data(cfg);
    Trainer tr;
    tr.init(cfg);
    Floor floor;
    floor.init(tr.model, cfg.batch * cfg.window, o.threads);
    Mf X, U;
    int rejected = 0;
    for (int i = 0; i < o.warmup; i++) {
        sample_batch(data, cfg.batch, cfg.window, tr.rng, X, U);
        tr.train_step(X, U);
        floor.run();
    }
    std::vector<double> t_step, t_floor;
    for (int i = 0; i < o.steps; i++) {
        sample_batch(data, cfg.batch, cfg.window, tr.rng, X, U);
        auto t0 = clk::now();
        const StepStats st = tr.train_step(X, U);
        t_step.push_back(ms_since(t0));
        if (!st.ok) rejected++;
        t0 = clk::now();
        floor.run();
        t_floor.push_back(ms_since(t0));
    }
    const double s = median(t_step), f = median(t_floor);
    std::printf("{\"mode\": \"train\", \"threads\": %d, \"steps\": %d, \"batch\": %d, \"window\": %d, \"step_ms\": %.4f, "
                "\"step_ms_mean\": %.4f, \"steps_per_s\": %.3f, \"floor_ms\": %.4f, \"floor_ratio\": %.3f, \"rejected\": %d}\n",
                o.threads, o.steps, cfg.batch, cfg.window, s, mean(t_step), 1000.0 / s, f, s / f, rejected);
    return 0;
}

// The Kalman part of ekvae_objective for one batch with a given a (a leaf that takes a gradient):
// the extended Kalman filter, the smoother gains and the joint backward sample with log p(z|a,u),
// then log p(a|z) and log p(z|u) at the sample; forward + backward, one thread.
static int mode_kalman(const Opts & o) {
    EkvaeConfig cfg;
    config_preset("pendulum", cfg);
    const int B = cfg.batch, T_ = cfg.window, N = B * T_, na = cfg.n_a, nz = cfg.n_z;
    Ekvae<float> m;
    ekvae_init(m, cfg, 0);
    Rng rng(5);
    Params<float> leaf;
    Param<float> & ap = leaf.add("a", na, N);
    for (Eigen::Index i = 0; i < ap.value.size(); i++) ap.value.data()[i] = (float)rng.normal();
    Mf U(1, N);
    for (Eigen::Index i = 0; i < U.size(); i++) U.data()[i] = (float)rng.uniform(-2, 2);
    Tape<float> t;
    std::vector<double> times;
    std::string err;
    for (int r = 0; r < o.warmup + o.reps; r++) {
        Mf ez(nz, N);
        for (Eigen::Index i = 0; i < ez.size(); i++) ez.data()[i] = (float)rng.normal();
        const auto t0 = clk::now();
        t.reset();
        m.ps.zero_grad();
        leaf.zero_grad();
        Var a = t.param(ap), u = t.constant(U);
        KalmanResult<float> kr;
        kalman_filter(t, m, a, u, B, T_, kr);
        Var log_post;
        Var z = backward_sample(t, m, kr, ez, log_post);
        Var H = t.param_batch(*m.H, na, nz);
        Var rv = t.add_scalar(t.softplus(t.param(*m.r_raw)), (float)cfg.r_min);
        Var log_paz = t.sum(t.gauss_diag_logpdf(a, t.bmm(H, z), t.log(rv)));
        // p(z | u) at the sample: the transition network on (z_{t-1}, u_{t-1}) for all t at once
        const int N1 = (T_ - 1) * B;
        Var zprev = t.slice_cols(z, 0, N1), znext = t.slice_cols(z, B, N1);
        Var alpha = t.softmax_rows(m.alpha.forward(t, t.concat_rows({zprev, t.slice_cols(u, 0, N1)})));
        Mf Icol = Mf::Zero(nz * nz, 1);
        for (int i = 0; i < nz; i++) Icol(i * nz + i, 0) = 1;
        Var F = t.as_batch(t.add(t.matmul(t.param(*m.A), alpha), t.constant(Icol)), nz, nz);
        Var Bu = t.bmm(t.as_batch(t.matmul(t.param(*m.Bm), alpha), nz, cfg.n_u), t.slice_cols(u, 0, N1));
        Var q = t.add_scalar(t.softplus(t.matmul(t.param(*m.q_raw), alpha)), (float)cfg.q_min);
        Var log_pz = t.sum(t.gauss_diag_logpdf(znext, t.add(t.bmm(F, zprev), Bu), t.log(q)));
        Var loss = t.scale(t.sub(t.sum(log_post), t.add(log_paz, log_pz)), 1.0f / N);
        t.backward(loss);
        const double ms = ms_since(t0);
        if (!t.error().empty()) err = t.error();
        if (r >= o.warmup) times.push_back(ms);
    }
    const double b = median(times);
    std::printf("{\"mode\": \"kalman\", \"batch\": %d, \"window\": %d, \"batch_ms\": %.4f, \"per_sequence_us\": %.3f, "
                "\"tape_nodes\": %d, \"reps\": %d, \"error\": \"%s\"}\n",
                B, T_, b, 1000.0 * b / B, t.size(), o.reps, err.c_str());
    return 0;
}

// Writes DIR/model.safetensors (a freshly initialised default model), DIR/batch.safetensors
// (X [N, D] and U [N, 1], rows time-major: row t*B + b) and DIR/expected.safetensors (loss, D, R,
// the five log terms, and every parameter's gradient) for one objective evaluation with the
// reparameterisation noise of Rng(noise_seed), so that bench/torch_reference.py --check can
// recompute the same numbers from the same inputs.
static int mode_check(const Opts & o) {
    if (o.out.empty()) usage("check needs --out DIR");
    EkvaeConfig cfg;
    config_preset("pendulum", cfg);
    cfg.train_sequences = 64;
    const Dataset data = default_train_data(cfg);
    Ekvae<float> m;
    ekvae_init(m, cfg, 7);
    // a little structure in the transition (the fresh A_k, B_k are nearly zero)
    Rng prng(11);
    for (Eigen::Index i = 0; i < m.A->value.size(); i++) m.A->value(i) = (float)(0.2 * prng.normal());
    for (Eigen::Index i = 0; i < m.Bm->value.size(); i++) m.Bm->value(i) = (float)(0.2 * prng.normal());
    Rng brng(3);
    Mf X, U;
    sample_batch(data, cfg.batch, cfg.window, brng, X, U);
    const uint64_t noise_seed = 12345;
    const double lambda = 2.5;
    Tape<float> t;
    Rng nrng(noise_seed);
    m.ps.zero_grad();
    EkvaeTerms r = ekvae_objective(t, m, X, U, cfg.batch, cfg.window, nrng, LossWeights::lagrangian(lambda, cfg.D0));
    t.backward(r.loss);
    if (!t.error().empty()) {
        std::fprintf(stderr, "error: %s\n", t.error().c_str());
        return 1;
    }
    SafeTensors model;
    ekvae_to_safetensors(m, model);
    SafeTensors batch;
    {
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> xr = X.transpose(), ur = U.transpose();
        batch.tensors["X"] = Tensor::from_f32(xr.data(), {xr.rows(), xr.cols()});
        batch.tensors["U"] = Tensor::from_f32(ur.data(), {ur.rows(), ur.cols()});
        batch.metadata["B"] = std::to_string(cfg.batch);
        batch.metadata["T"] = std::to_string(cfg.window);
        batch.metadata["noise_seed"] = std::to_string(noise_seed);
        batch.metadata["lambda"] = std::to_string(lambda);
    }
    SafeTensors exp;
    const double vals[8] = {t.scalar(r.loss), t.scalar(r.D), t.scalar(r.R), t.scalar(r.log_px), t.scalar(r.log_qa),
                            t.scalar(r.log_post), t.scalar(r.log_paz), t.scalar(r.log_pz)};
    exp.tensors["values"] = Tensor::from_f64(vals, {8});
    exp.metadata["values"] = "loss,D,R,log_px,log_qa,log_post,log_paz,log_pz";
    for (auto & p : m.ps.list) {
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> g = p->grad;
        exp.tensors["grad." + p->name] = Tensor::from_f32(g.data(), {g.rows(), g.cols()});
    }
    auto write = [&](const std::string & name, const SafeTensors & st) {
        const std::vector<uint8_t> bytes = safetensors_serialize(st);
        std::ofstream f(o.out + "/" + name, std::ios::binary);
        f.write((const char *)bytes.data(), (std::streamsize)bytes.size());
        if (!f) {
            std::fprintf(stderr, "error: cannot write %s/%s\n", o.out.c_str(), name.c_str());
            std::exit(1);
        }
    };
    write("model.safetensors", model);
    write("batch.safetensors", batch);
    write("expected.safetensors", exp);
    std::printf("{\"mode\": \"check\", \"loss\": %.7g, \"D\": %.7g, \"R\": %.7g}\n", vals[0], vals[1], vals[2]);
    return 0;
}

// A few training steps after a warm-up, for `valgrind --tool=callgrind
// --toggle-collect='ekvae::Trainer::train_step*'` (only the steps are counted).
static int mode_profile(const Opts & o) {
    EkvaeConfig cfg;
    config_preset("pendulum", cfg);
    cfg.restarts = 1; // a plain run: the step is what is timed
    cfg.threads = o.threads;
    cfg.train_sequences = 64;
    const Dataset data = default_train_data(cfg);
    Trainer tr;
    tr.init(cfg);
    Mf X, U;
    const auto t0 = clk::now();
    for (int i = 0; i < o.warmup + o.steps; i++) {
        sample_batch(data, cfg.batch, cfg.window, tr.rng, X, U);
        tr.train_step(X, U);
    }
    std::printf("{\"mode\": \"profile\", \"threads\": %d, \"steps\": %d, \"ms\": %.2f}\n", o.threads, o.warmup + o.steps, ms_since(t0));
    return 0;
}

int main(int argc, char ** argv) {
    if (argc < 2) usage("give a mode");
    const std::string mode = argv[1];
    Opts o;
    if (mode == "profile") o.steps = 3, o.warmup = 2;
    for (int i = 2; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) usage(("missing value for " + a).c_str());
            return argv[++i];
        };
        if (a == "--threads") o.threads = std::max(1, std::atoi(next()));
        else if (a == "--steps") o.steps = std::max(1, std::atoi(next()));
        else if (a == "--warmup") o.warmup = std::max(0, std::atoi(next()));
        else if (a == "--reps") o.reps = std::max(1, std::atoi(next()));
        else if (a == "--out") o.out = next();
        else usage(("unknown flag " + a).c_str());
    }
    if (mode == "train") return mode_train(o);
    if (mode == "kalman") return mode_kalman(o);
    if (mode == "check") return mode_check(o);
    if (mode == "profile") return mode_profile(o);
    usage(("unknown mode " + mode).c_str());
}
