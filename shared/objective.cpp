// objective.cpp: the objective's terms on one batch, and lambda's update rules (see objective.h).
#include "objective.h"

#include <algorithm>
#include <cmath>

namespace ekvae {

template <class T>
EkvaeTerms ekvae_objective(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, const Mat<T> & U, int B, int T_, Rng & rng,
                           const LossWeights & w, double scale) {
    const EkvaeConfig & c = m.cfg;
    const int na = c.n_a, nz = c.n_z, N = B * T_;
    EkvaeTerms r;
    Var x = t.constant_ref(X); // the batch is read in place (X and U outlive this step's tape)
    Var u = t.constant_ref(U);
    // q(a | x): reparameterised sample a = mu + sigma * eps
    Var h = m.enc.forward(t, x);                                  // [2 n_a, N]
    Var mu = t.slice_rows(h, 0, na), lv = t.slice_rows(h, na, na);
    Mat<T> ea(na, N), ez(nz, N);
    for (Eigen::Index i = 0; i < ea.size(); i++) ea.data()[i] = T(rng.normal());
    for (Eigen::Index i = 0; i < ez.size(); i++) ez.data()[i] = T(rng.normal());
    Var a = t.add(mu, t.mul(t.exp(t.scale(lv, T(0.5))), t.constant(ea)));
    r.log_qa = t.sum(t.gauss_diag_logpdf(a, mu, lv));
    // p(x | a)
    r.log_px = t.sum(t.bernoulli_logits(m.dec.forward(t, a), x));
    // p(z | a, u): filter, smoother gains, joint backward sample
    KalmanResult<T> kr;
    kalman_filter(t, m, a, u, B, T_, kr);
    Var log_post;
    Var z = backward_sample(t, m, kr, ez, log_post);              // [n_z, N]
    r.log_post = t.sum(log_post);
    r.a = a;
    r.z = z;
    // p(a | z)
    Var H = t.param_batch(*m.H, na, nz);
    r.log_paz = t.sum(t.gauss_diag_logpdf(a, t.bmm(H, z), t.log(obs_variances(t, m))));
    // p(z | u): the prior on z_1, then the transition at the sampled states
    Var lp1 = t.sum(t.gauss_diag_logpdf(t.slice_cols(z, 0, B), t.param(*m.mu1), t.log(prior_variances(t, m))));
    if (T_ > 1) {
        const int N1 = (T_ - 1) * B;
        Var zprev = t.slice_cols(z, 0, N1), znext = t.slice_cols(z, B, N1);
        Var I = t.constant_batch(identity_col<T>(nz), nz, nz);
        Var F, Bu, q;
        transition(t, m, transition_heads(t, m), zprev, t.slice_cols(u, 0, N1), I, F, Bu, q);
        Var mean = t.add(t.bmm(F, zprev), Bu);
        r.log_pz = t.add(lp1, t.sum(t.gauss_diag_logpdf(znext, mean, t.log(q))));
    } else {
        r.log_pz = lp1;
    }
    const T inv = T(1.0 / N);
    r.D = t.scale(r.log_px, -inv);
    r.R = t.scale(t.sub(t.add(r.log_qa, r.log_post), t.add(r.log_paz, r.log_pz)), inv);
    Var loss;
    if (w.rate == 1 && w.distortion == 1 && w.offset == 0) loss = t.add(r.R, r.D);
    else {
        loss = t.add(w.rate == 1 ? r.R : t.scale(r.R, T(w.rate)), t.scale(r.D, T(w.distortion)));
        if (w.offset != 0) loss = t.add_scalar(loss, T(w.offset));
    }
    r.loss = t.scale(loss, T(scale));
    return r;
}


// ---- lambda ---------------------------------------------------------------------------------------

void LambdaState::init(const EkvaeConfig & cfg) {
    lambda = cfg.lambda_init;
    D_ma = 0;
    started = false;
    warm = (cfg.lambda_rule == "ekvae" && cfg.lambda_warmup == "none") || cfg.lambda_warmup == "skip";
}

void LambdaState::update(const EkvaeConfig & cfg, double D, int64_t step) {
    if (!std::isfinite(D)) return;
    const bool authors = cfg.lambda_rule == "authors";
    const double ma = authors ? 0.99 : cfg.lambda_ma;
    if (!started) {
        D_ma = D;
        started = true;
    } else {
        D_ma = ma * D_ma + (1 - ma) * D;
    }
    if (!warm) { // warm-up: lambda held until the moving average first meets the bound
        if (D_ma < cfg.D0) warm = true;
        return;
    }
    if (authors) {
        if (step % 100 != 0) return;
        const double f = D_ma < cfg.D0 ? -std::tanh(100.0 * (1.0 / lambda - 1.0)) : 1.0;
        const double factor = std::clamp(std::exp(cfg.lambda_rate * f * (D_ma - cfg.D0)), 0.9, 1.05);
        lambda = std::clamp(lambda * factor, cfg.lambda_min, cfg.lambda_max);
        return;
    }
    const double s = std::clamp(cfg.lambda_rate * (D_ma - cfg.D0), -cfg.lambda_max_step, cfg.lambda_max_step);
    lambda = std::clamp(lambda * std::exp(s), cfg.lambda_min, cfg.lambda_max);
}

LossWeights LambdaState::weights(const EkvaeConfig & cfg) const {
    if (cfg.objective == "elbo") return LossWeights::elbo();
    const bool rate_off = !warm && (cfg.lambda_rule == "authors" || cfg.lambda_warmup == "rate_off");
    if (rate_off) return {0, 1, 0};
    if (cfg.lambda_rule == "authors") return {1 / lambda, 1, -cfg.D0};
    LossWeights w = LossWeights::lagrangian(lambda, cfg.D0);
    if (cfg.lambda_scale == "normalized") {
        const double s = 1 / (1 + lambda);
        w = {w.rate * s, w.distortion * s, w.offset * s};
    }
    return w;
}

#define EKVAE_OBJECTIVE_INSTANTIATE(T) \
    template EkvaeTerms ekvae_objective(Tape<T> &, Ekvae<T> &, const Mat<T> &, const Mat<T> &, int, int, Rng &, const LossWeights &, double);

EKVAE_OBJECTIVE_INSTANTIATE(float)
EKVAE_OBJECTIVE_INSTANTIATE(double)

} // namespace ekvae
