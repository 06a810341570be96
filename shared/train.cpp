// train.cpp: batches, the learning-rate schedule, the held-out objective, and the Trainer
// (data-parallel steps on a thread pool, restarts, checkpoints); see train.h.
#include "train.h"

#include "safetensors.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

namespace ekvae {

void sample_batch(const Dataset & d, int B, int window, Rng & rng, Mat<float> & X, Mat<float> & U) {
    const int D = d.W * d.W;
    X.resize(D, (Eigen::Index)window * B);
    U.resize(d.U, (Eigen::Index)window * B);
    for (int b = 0; b < B; b++) {
        const int n = (int)rng.below((uint64_t)d.N);
        const int t0 = (int)rng.below((uint64_t)(d.T - window + 1));
        for (int k = 0; k < window; k++) {
            std::memcpy(X.col((Eigen::Index)k * B + b).data(), d.image(n, t0 + k), sizeof(float) * D);
            for (int j = 0; j < d.U; j++) U(j, (Eigen::Index)k * B + b) = d.action(n, t0 + k, j);
        }
    }
}

void sequences_batch(const Dataset & d, int first, int B, int t0, int T_, Mat<float> & X, Mat<float> & U) {
    const int D = d.W * d.W;
    X.resize(D, (Eigen::Index)T_ * B);
    U.resize(d.U, (Eigen::Index)T_ * B);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < T_; k++) {
            std::memcpy(X.col((Eigen::Index)k * B + b).data(), d.image(first + b, t0 + k), sizeof(float) * D);
            for (int j = 0; j < d.U; j++) U(j, (Eigen::Index)k * B + b) = d.action(first + b, t0 + k, j);
        }
}


double lr_at(const EkvaeConfig & cfg, int64_t step) {
    if (cfg.lr_decay_end <= 0 || step <= cfg.lr_decay_start) return cfg.lr;
    if (step >= cfg.lr_decay_end) return cfg.lr * cfg.lr_final;
    const double x = (double)(step - cfg.lr_decay_start) / (double)(cfg.lr_decay_end - cfg.lr_decay_start);
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + std::cos(3.14159265358979323846 * x)));
}


HeldOut heldout_objective(Ekvae<float> & m, const Dataset & d, int max_sequences, uint64_t noise_seed) {
    Tape<float> t;
    Rng rng(noise_seed);
    Mat<float> X, U;
    const int N = std::min(d.N, max_sequences), chunk = 50;
    double Dsum = 0, Rsum = 0;
    for (int c0 = 0; c0 < N; c0 += chunk) {
        const int B = std::min(chunk, N - c0);
        sequences_batch(d, c0, B, 0, d.T, X, U);
        t.reset();
        EkvaeTerms r = ekvae_objective(t, m, X, U, B, d.T, rng, LossWeights::elbo());
        Dsum += t.scalar(r.D) * B;
        Rsum += t.scalar(r.R) * B;
    }
    HeldOut h;
    h.D = Dsum / N;
    h.R = Rsum / N;
    h.score = m.cfg.objective == "elbo" ? h.R + h.D : h.R + std::max(0.0, h.D - m.cfg.D0);
    if (!std::isfinite(h.score)) h.score = INFINITY;
    return h;
}

// Worker threads kept from one training step to the next (creating and joining a thread
// costs ~50 us here, 1% of a 2-thread step). run(f) calls f(0) on the caller's thread and
// f(1..n) on the workers, and returns when all have finished.
struct TrainerPool {
    std::vector<std::thread> threads;
    std::mutex mu;
    std::condition_variable wake, done;
    const std::function<void(int)> * job = nullptr;
    uint64_t generation = 0;
    int pending = 0;
    bool quit = false;

    explicit TrainerPool(int n) {
        for (int k = 1; k <= n; k++) threads.emplace_back([this, k] { loop(k); });
    }
    ~TrainerPool() {
        {
            std::lock_guard<std::mutex> l(mu);
            quit = true;
        }
        wake.notify_all();
        for (auto & t : threads) t.join();
    }
    void loop(int k) {
        uint64_t seen = 0;
        for (;;) {
            const std::function<void(int)> * f;
            {
                std::unique_lock<std::mutex> l(mu);
                wake.wait(l, [&] { return quit || generation != seen; });
                if (quit) return;
                seen = generation;
                f = job;
            }
            (*f)(k);
            std::lock_guard<std::mutex> l(mu);
            if (--pending == 0) done.notify_one();
        }
    }
    void run(const std::function<void(int)> & f) {
        {
            std::lock_guard<std::mutex> l(mu);
            job = &f;
            pending = (int)threads.size();
            generation++;
        }
        wake.notify_all();
        f(0);
        std::unique_lock<std::mutex> l(mu);
        done.wait(l, [&] { return pending == 0; });
    }
};

struct Trainer::Impl {
    const Dataset * validation = nullptr; // held-out data for choosing among starts
    std::vector<uint8_t> best_state;      // checkpoint bytes of the best finished start
    // per-thread replicas for a data-parallel batch
    std::vector<std::unique_ptr<Ekvae<float>>> replicas;
    std::vector<std::unique_ptr<Tape<float>>> tapes;
    std::vector<Mat<float>> Xs, Us; // each thread's share of the batch (the tapes read them in place)
    std::vector<Mat<float>> backup; // the parameters before an update (restored if it is non-finite)
    std::unique_ptr<TrainerPool> pool; // worker threads kept from step to step
};

Trainer::Trainer() : impl_(std::make_unique<Impl>()) {}
Trainer::~Trainer() = default;

const std::vector<std::string> Trainer::kRunKeys = {"train_minutes", "train_steps", "threads", "checkpoint_minutes",
                                                    "log_every", "eval_every", "data"};

// The initialisation seed of start_ k of a run with seed s (start_ 0 is the run's own seed).
static uint64_t start_seed(int s, int k) { return (uint64_t)s ^ ((uint64_t)k << 40); }

void Trainer::init(const EkvaeConfig & c, const Dataset * val) {
    cfg_ = c;
    impl_->validation = val;
    step = 0;
    rejected = 0;
    start_ = 0;
    best_start_ = -1;
    start_scores_.clear();
    impl_->best_state.clear();
    begin_start(0);
}

void Trainer::begin_start(int k) {
    const uint64_t s = start_seed(cfg_.seed, k);
    ekvae_init(model, cfg_, s);
    opt = Adam<float>{};
    opt.cfg.lr = cfg_.lr;
    opt.cfg.clip_norm = cfg_.clip_norm;
    lam.init(cfg_);
    rng.reseed(s ^ 0xD1B54A32D192ED03ULL);
    impl_->replicas.clear();
    impl_->tapes.clear();
}

void Trainer::end_start(StepStats & st) {
    const HeldOut h = impl_->validation ? heldout_objective(model, *impl_->validation) : HeldOut{0, 0, INFINITY};
    st.start_done = true;
    st.start_score = h.score;
    st.start_D = h.D;
    st.start_R = h.R;
    start_scores_.push_back(h.score);
    if (best_start_ < 0 || h.score < start_scores_[best_start_]) {
        best_start_ = start_;
        impl_->best_state = checkpoint_impl(false);
    }
    start_++;
    if (start_ < cfg_.restarts) {
        begin_start(start_);
        return;
    }
    // the last start_ ended: continue the best one (its weights, optimiser, lambda and RNG)
    const int64_t s = step, rj = rejected;
    std::string err;
    std::vector<uint8_t> bytes = std::move(impl_->best_state);
    impl_->best_state.clear();
    restore_impl(bytes.data(), bytes.size(), err, true);
    step = s;
    rejected = rj;
    st.chosen = best_start_;
}

StepStats Trainer::train_step(const Mat<float> & X, const Mat<float> & U) {
    StepStats st;
    const int B = cfg_.batch, T_ = (int)(X.cols() / B), D = (int)X.rows();
    const int nt = std::max(1, std::min(cfg_.threads, B));
    while ((int)impl_->tapes.size() < nt) impl_->tapes.push_back(std::make_unique<Tape<float>>());
    while ((int)impl_->replicas.size() < nt - 1) {
        impl_->replicas.push_back(std::make_unique<Ekvae<float>>());
        ekvae_init(*impl_->replicas.back(), cfg_, 0);
    }
    // sequences [b0[k], b0[k+1]) go to thread k; each thread gets its own noise stream
    std::vector<int> b0(nt + 1);
    for (int k = 0; k <= nt; k++) b0[k] = (int)((int64_t)B * k / nt);
    std::vector<uint64_t> seeds(nt);
    for (int k = 0; k < nt; k++) seeds[k] = rng.next_u64();
    std::vector<EkvaeTerms> terms(nt);
    impl_->Xs.resize(nt);
    impl_->Us.resize(nt);
    const LossWeights lw = lam.weights(cfg_);
    if (thread_setup) thread_setup();
    const std::function<void(int)> work = [&](int k) {
        if (thread_setup) thread_setup();
        Ekvae<float> & mk = k == 0 ? model : *impl_->replicas[k - 1];
        if (k > 0) ekvae_copy_params(model, mk);
        const int Bk = b0[k + 1] - b0[k];
        if (nt > 1) { // this thread's sequences, time-major like the batch
            impl_->Xs[k].resize(D, (Eigen::Index)T_ * Bk);
            impl_->Us[k].resize(U.rows(), (Eigen::Index)T_ * Bk);
            for (int tt = 0; tt < T_; tt++) {
                impl_->Xs[k].middleCols((Eigen::Index)tt * Bk, Bk) = X.middleCols((Eigen::Index)tt * B + b0[k], Bk);
                impl_->Us[k].middleCols((Eigen::Index)tt * Bk, Bk) = U.middleCols((Eigen::Index)tt * B + b0[k], Bk);
            }
        }
        Tape<float> & t = *impl_->tapes[k];
        t.reset();
        Rng r(seeds[k]);
        mk.ps.zero_grad();
        terms[k] = ekvae_objective(t, mk, nt > 1 ? impl_->Xs[k] : X, nt > 1 ? impl_->Us[k] : U, Bk, T_, r, lw, (double)Bk / B);
        if (t.error().empty() && std::isfinite(t.scalar(terms[k].loss))) t.backward(terms[k].loss);
    };
    if (nt == 1) work(0);
    else {
        if (!impl_->pool || (int)impl_->pool->threads.size() != nt - 1) impl_->pool = std::make_unique<TrainerPool>(nt - 1);
        impl_->pool->run(work);
    }
    for (int k = 0; k < nt; k++) {
        Tape<float> & t = *impl_->tapes[k];
        const double w = (double)(b0[k + 1] - b0[k]) / B;
        if (!t.error().empty() && st.error.empty()) st.error = t.error();
        st.loss += t.scalar(terms[k].loss);
        st.D += w * t.scalar(terms[k].D);
        st.R += w * t.scalar(terms[k].R);
        const double inv = 1.0 / ((double)(b0[k + 1] - b0[k]) * T_);
        st.log_px += w * inv * t.scalar(terms[k].log_px);
        st.log_qa += w * inv * t.scalar(terms[k].log_qa);
        st.log_post += w * inv * t.scalar(terms[k].log_post);
        st.log_paz += w * inv * t.scalar(terms[k].log_paz);
        st.log_pz += w * inv * t.scalar(terms[k].log_pz);
        if (k > 0)
            for (size_t i = 0; i < model.ps.list.size(); i++) model.ps.list[i]->grad += impl_->replicas[k - 1]->ps.list[i]->grad;
    }
    st.elbo = -(st.D + st.R);
    const bool elbo = cfg_.objective == "elbo";
    st.lambda = elbo ? 1.0 : lam.lambda; // the ELBO is the Lagrangian at lambda = 1
    st.start = start_;           // (end_start below may move on to the next start_)
    if (!st.error.empty() || !std::isfinite(st.loss)) {
        if (st.error.empty()) st.error = "non-finite loss";
        st.ok = false;
    } else {
        // keep a copy: an update that produced non-finite weights is undone
        impl_->backup.resize(model.ps.list.size());
        for (size_t i = 0; i < impl_->backup.size(); i++) impl_->backup[i] = model.ps.list[i]->value;
        opt.cfg.lr = lr_at(cfg_, step + 1);
        st.lr = opt.cfg.lr;
        st.grad_norm = opt.update(model.ps);
        if (!std::isfinite(st.grad_norm)) {
            st.ok = false;
            st.error = "non-finite gradient";
        } else if (!params_finite(model.ps)) {
            for (size_t i = 0; i < impl_->backup.size(); i++) model.ps.list[i]->value = impl_->backup[i];
            st.ok = false;
            st.error = "the update produced non-finite weights";
        }
    }
    if (!st.ok) rejected++;
    else if (!elbo) lam.update(cfg_, st.D, step + 1);
    st.D_ma = lam.D_ma;
    step++;
    if (choosing() && step == (int64_t)(start_ + 1) * cfg_.restart_steps) end_start(st);
    else if (cfg_.restarts > 1 && !choosing()) st.start = best_start_;
    return st;
}

std::vector<uint8_t> Trainer::checkpoint() const { return checkpoint_impl(true); }

bool Trainer::restore(const uint8_t * data, size_t size, std::string & err) { return restore_impl(data, size, err, false); }

// with_starts: the restart bookkeeping too (the best finished start_'s state nested as bytes).
std::vector<uint8_t> Trainer::checkpoint_impl(bool with_starts) const {
    SafeTensors st;
    ekvae_to_safetensors(model, st);
    adam_to_safetensors(opt, model.ps, st);
    const double l[4] = {lam.lambda, lam.D_ma, lam.started ? 1.0 : 0.0, lam.warm ? 1.0 : 0.0};
    st.tensors["train.lambda"] = Tensor::from_f64(l, {4});
    st.tensors["train.rng"] = Tensor::from_u64(rng.s, {4});
    const int64_t s[2] = {step, rejected};
    st.tensors["train.step"] = Tensor::from_i64(s, {2});
    if (with_starts && cfg_.restarts > 1) {
        const int64_t r[2] = {start_, best_start_};
        st.tensors["train.restart"] = Tensor::from_i64(r, {2});
        if (!start_scores_.empty()) st.tensors["train.start_scores"] = Tensor::from_f64(start_scores_.data(), {(int64_t)start_scores_.size()});
        if (!impl_->best_state.empty()) {
            Tensor b;
            b.dtype = "U8";
            b.shape = {(int64_t)impl_->best_state.size()};
            b.data = impl_->best_state;
            st.tensors["train.best_start_state"] = b;
        }
    }
    st.metadata["kind"] = "checkpoint";
    return safetensors_serialize(st);
}

bool Trainer::restore_impl(const uint8_t * data, size_t size, std::string & err, bool nested) {
    SafeTensors st;
    if (!safetensors_parse(data, size, st, err)) return false;
    Ekvae<float> m;
    if (!ekvae_from_safetensors(st, m, err)) return false;
    Adam<float> o;
    if (!adam_from_safetensors(st, m.ps, o, err)) return false;
    const Tensor * lt = st.find("train.lambda"); // 3 values in files written before the warm-up existed
    const Tensor * l = st.require("train.lambda", "F64", {lt && lt->shape == std::vector<int64_t>{3} ? 3 : 4}, err);
    const Tensor * r = l ? st.require("train.rng", "U64", {4}, err) : nullptr;
    const Tensor * s = r ? st.require("train.step", "I64", {2}, err) : nullptr;
    if (!s) return false;
    double lv[4] = {0, 0, 0, 1};
    int64_t sv[2];
    std::memcpy(lv, l->data.data(), l->data.size());
    std::memcpy(sv, s->data.data(), sizeof sv);
    // A real run keeps lambda in [lambda_min, lambda_max], Adam's second moments >= 0, a
    // nonzero RNG state and step counts far below int64 overflow (which `step + train_steps`
    // and Adam's step++ would reach from a hostile file).
    const int64_t kMaxStep = int64_t(1) << 53;
    const EkvaeConfig & mc = m.cfg;
    if (!std::isfinite(lv[0]) || !std::isfinite(lv[1]) || lv[0] < mc.lambda_min || lv[0] > mc.lambda_max ||
        (lv[2] != 0 && lv[2] != 1) || (lv[3] != 0 && lv[3] != 1) || sv[0] < 0 || sv[1] < 0 || sv[0] > kMaxStep || sv[1] > sv[0] || o.step > kMaxStep) {
        err = "checkpoint training state is corrupt (lambda or step out of range)";
        return false;
    }
    for (size_t i = 0; i < o.v.size(); i++)
        if ((o.v[i].array() < 0.0f).any()) {
            err = "tensor 'adam.v." + m.ps.list[i]->name + "' holds negative second moments";
            return false;
        }
    uint64_t rs[4];
    std::memcpy(rs, r->data.data(), sizeof rs);
    if ((rs[0] | rs[1] | rs[2] | rs[3]) == 0) {
        err = "tensor 'train.rng': an all-zero generator state";
        return false;
    }
    // the restart bookkeeping (a run with restarts > 1 interrupted while choosing)
    int64_t rs2[2] = {m.cfg.restarts, -1};
    std::vector<double> scores;
    std::vector<uint8_t> best;
    if (!nested && m.cfg.restarts > 1) {
        const Tensor * rt = st.require("train.restart", "I64", {2}, err);
        if (!rt) return false;
        std::memcpy(rs2, rt->data.data(), sizeof rs2);
        const int64_t nsc = std::min<int64_t>(rs2[0], m.cfg.restarts);
        if (rs2[0] < 0 || rs2[0] > m.cfg.restarts || rs2[1] < -1 || rs2[1] >= nsc || (rs2[0] > 0 && rs2[1] < 0)) {
            err = "checkpoint restart state is corrupt (start_ " + std::to_string(rs2[0]) + ", best " + std::to_string(rs2[1]) + ")";
            return false;
        }
        if (nsc > 0) {
            const Tensor * sc = st.require("train.start_scores", "F64", {nsc}, err);
            if (!sc) return false;
            scores.resize((size_t)nsc);
            std::memcpy(scores.data(), sc->data.data(), sc->data.size());
        }
        if (rs2[0] > 0 && rs2[0] < m.cfg.restarts) {
            const Tensor * b = st.find("train.best_start_state");
            if (!b || b->dtype != "U8" || b->shape.size() != 1) {
                err = "checkpoint of a run choosing among starts lacks 'train.best_start_state'";
                return false;
            }
            Trainer probe;
            if (!probe.restore_impl(b->data.data(), b->data.size(), err, true)) {
                err = "train.best_start_state: " + err;
                return false;
            }
            best = b->data;
        }
    }
    if (!nested) {
        const Dataset * val = impl_->validation;
        init(m.cfg, val);
        start_ = (int)rs2[0];
        best_start_ = (int)rs2[1];
        start_scores_ = scores;
        impl_->best_state = best;
    } else {
        cfg_ = m.cfg;
        ekvae_init(model, cfg_, 0);
        impl_->replicas.clear();
        impl_->tapes.clear();
    }
    ekvae_copy_params(m, model);
    o.cfg = opt.cfg;
    opt = std::move(o);
    lam.lambda = lv[0];
    lam.D_ma = lv[1];
    lam.started = lv[2] != 0;
    lam.warm = lv[3] != 0;
    std::memcpy(rng.s, r->data.data(), sizeof rng.s);
    step = sv[0];
    rejected = sv[1];
    return true;
}


bool Trainer::resume(const uint8_t * data, size_t size, const std::vector<std::pair<std::string, std::string>> & overrides,
                     const Dataset * validation, std::string & err, std::string * refused) {
    impl_->validation = validation;
    if (!restore(data, size, err)) return false;
    EkvaeConfig c = cfg_;
    for (const auto & [k, v] : overrides) {
        EkvaeConfig same = c;
        if (!config_set(same, k, v, err)) return false;
        if (config_to_json(same) == config_to_json(c)) continue; // the value it already has
        if (std::find(kRunKeys.begin(), kRunKeys.end(), k) == kRunKeys.end()) {
            if (refused) *refused = k;
            err = "'" + k + "' cannot change when resuming (the run keeps its checkpoint's config)";
            return false;
        }
        c = same;
    }
    cfg_ = c;
    impl_->replicas.clear();
    return true;
}

} // namespace ekvae
