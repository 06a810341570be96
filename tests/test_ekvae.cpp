// Tests for ekvae.h: the Kalman filter and smoother against a dense joint-Gaussian computation,
// the backward sampler against the smoothed posterior (marginals and the joint), the whole
// objective's gradient against central differences, lambda's update, exact resumption,
// the model file, and the evaluation metrics on hand-made cases.
#include "ekvae.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>

using namespace ekvae;
using Md = Eigen::MatrixXd;
using Vd = Eigen::VectorXd;

namespace {

// A linear-Gaussian EKVAE: K = 1 makes alpha = 1, so F = I + A_1, B = B_1, Q fixed.
struct LinearSystem {
    int nz = 3, na = 2, T = 6;
    Md F, Bv, Q, H, R, P1;
    Vd mu1;
};

double softplus(double x) { return std::log1p(std::exp(x)); }

void make_linear_model(Ekvae<double> & m, LinearSystem & s) {
    EkvaeConfig c;
    c.n_z = s.nz; c.n_a = s.na; c.K = 1; c.image_size = 4; c.enc_hidden = {4}; c.dec_hidden = {4}; c.alpha_hidden = {4};
    c.jitter = 0;
    ekvae_init(m, c, 3);
    Rng rng(11);
    for (Eigen::Index i = 0; i < m.A->value.size(); i++) m.A->value(i) = 0.2 * rng.normal();
    for (Eigen::Index i = 0; i < m.Bm->value.size(); i++) m.Bm->value(i) = rng.normal();
    for (Eigen::Index i = 0; i < m.H->value.size(); i++) m.H->value(i) = rng.normal();
    for (Eigen::Index i = 0; i < m.q_raw->value.size(); i++) m.q_raw->value(i) = -1.0 + 0.3 * rng.normal();
    for (Eigen::Index i = 0; i < m.r_raw->value.size(); i++) m.r_raw->value(i) = -0.5 + 0.3 * rng.normal();
    for (Eigen::Index i = 0; i < m.mu1->value.size(); i++) m.mu1->value(i) = rng.normal();
    for (Eigen::Index i = 0; i < m.p1_raw->value.size(); i++) m.p1_raw->value(i) = 0.5 * rng.normal();
    const int nz = s.nz, na = s.na;
    s.F = Md::Identity(nz, nz) + Eigen::Map<Md>(m.A->value.data(), nz, nz);
    s.Bv = Eigen::Map<Md>(m.Bm->value.data(), nz, 1);
    s.Q = Md::Zero(nz, nz);
    s.P1 = Md::Zero(nz, nz);
    for (int i = 0; i < nz; i++) {
        s.Q(i, i) = softplus(m.q_raw->value(i, 0)) + c.q_min;
        s.P1(i, i) = softplus(m.p1_raw->value(i, 0));
    }
    s.H = Eigen::Map<Md>(m.H->value.data(), na, nz);
    s.R = Md::Zero(na, na);
    for (int i = 0; i < na; i++) s.R(i, i) = softplus(m.r_raw->value(i, 0)) + c.r_min;
    s.mu1 = m.mu1->value.col(0);
}

// Dense joint Gaussian of z_{1:T} given u: mean mu [T nz], covariance S [T nz, T nz].
void dense_prior(const LinearSystem & s, const Vd & u, Vd & mu, Md & S) {
    const int nz = s.nz, T = s.T;
    mu.resize(T * nz);
    S = Md::Zero(T * nz, T * nz);
    mu.segment(0, nz) = s.mu1;
    S.block(0, 0, nz, nz) = s.P1;
    for (int t = 1; t < T; t++) {
        mu.segment(t * nz, nz) = s.F * mu.segment((t - 1) * nz, nz) + s.Bv * u(t - 1);
        // Cov(z_t, z_j) = F Cov(z_{t-1}, z_j) for j < t; Var(z_t) = F Var(z_{t-1}) F^T + Q
        for (int j = 0; j < t; j++) {
            S.block(t * nz, j * nz, nz, nz) = s.F * S.block((t - 1) * nz, j * nz, nz, nz);
            S.block(j * nz, t * nz, nz, nz) = S.block(t * nz, j * nz, nz, nz).transpose();
        }
        S.block(t * nz, t * nz, nz, nz) = s.F * S.block((t - 1) * nz, (t - 1) * nz, nz, nz) * s.F.transpose() + s.Q;
    }
}

// Condition the dense prior on observations a_{1:k}: posterior mean and covariance of z_{1:T}.
void dense_posterior(const LinearSystem & s, const Vd & mu, const Md & S, const Vd & a, int k, Vd & pm, Md & PS) {
    const int nz = s.nz, na = s.na, T = s.T;
    Md Hb = Md::Zero(k * na, T * nz), Rb = Md::Zero(k * na, k * na);
    for (int t = 0; t < k; t++) {
        Hb.block(t * na, t * nz, na, nz) = s.H;
        Rb.block(t * na, t * na, na, na) = s.R;
    }
    const Md G = S * Hb.transpose() * (Hb * S * Hb.transpose() + Rb).inverse();
    pm = mu + G * (a.head(k * na) - Hb * mu);
    PS = S - G * Hb * S;
}

double dense_logpdf(const Vd & x, const Vd & m, const Md & S) {
    const Vd r = x - m;
    return -0.5 * (x.size() * std::log(2 * M_PI) + std::log(S.determinant()) + r.dot(S.inverse() * r));
}

} // namespace

TEST_CASE("Kalman filter and RTS smoother match the dense joint-Gaussian posterior") {
    Ekvae<double> m;
    LinearSystem s;
    make_linear_model(m, s);
    const int nz = s.nz, na = s.na, T = s.T;
    Rng rng(21);
    Vd u(T), a(T * na);
    for (int t = 0; t < T; t++) u(t) = rng.uniform(-2, 2);
    for (int i = 0; i < T * na; i++) a(i) = rng.normal();
    Tape<double> t;
    Var av = t.constant(Eigen::Map<Md>(a.data(), na, T));
    Var uv = t.constant(u.transpose());
    KalmanResult<double> kr;
    kalman_filter(t, m, av, uv, 1, T, kr);
    rts_smoother(t, m, kr, true);
    REQUIRE(t.error().empty());
    Vd mu;
    Md S;
    dense_prior(s, u, mu, S);
    Vd pm;
    Md PS;
    dense_posterior(s, mu, S, a, T, pm, PS);
    double max_err = 0;
    for (int k = 0; k < T; k++) {
        // filtered: conditioned on a_{1:k+1}
        Vd fm;
        Md FS;
        dense_posterior(s, mu, S, a, k + 1, fm, FS);
        max_err = std::max(max_err, (t.value(kr.m[k]) - fm.segment(k * nz, nz)).cwiseAbs().maxCoeff());
        max_err = std::max(max_err, (t.value(kr.P[k]).reshaped(nz, nz) - FS.block(k * nz, k * nz, nz, nz)).cwiseAbs().maxCoeff());
        // smoothed: conditioned on everything
        max_err = std::max(max_err, (t.value(kr.ms[k]) - pm.segment(k * nz, nz)).cwiseAbs().maxCoeff());
        max_err = std::max(max_err, (t.value(kr.Ps[k]).reshaped(nz, nz) - PS.block(k * nz, k * nz, nz, nz)).cwiseAbs().maxCoeff());
    }
    INFO("max abs difference to the dense computation: " << max_err);
    CHECK(max_err < 1e-6);

    // The joint posterior density of a backward sample: log p(a|z) + log p(z|u) - log p(z|a,u)
    // must equal the marginal likelihood log p(a|u) for ANY z (exact for a linear system).
    Md eps(nz, T);
    for (Eigen::Index i = 0; i < eps.size(); i++) eps(i) = rng.normal();
    Var log_post;
    Var z = backward_sample(t, m, kr, eps, log_post);
    Vd zv = Eigen::Map<const Vd>(t.value(z).data(), nz * T);
    double log_paz = 0;
    for (int k = 0; k < T; k++) log_paz += dense_logpdf(a.segment(k * na, na), s.H * zv.segment(k * nz, nz), s.R);
    Md Hb = Md::Zero(T * na, T * nz), Rb = Md::Zero(T * na, T * na);
    for (int k = 0; k < T; k++) {
        Hb.block(k * na, k * nz, na, nz) = s.H;
        Rb.block(k * na, k * na, na, na) = s.R;
    }
    const double log_pa = dense_logpdf(a, Hb * mu, Hb * S * Hb.transpose() + Rb);
    const double identity = log_paz + dense_logpdf(zv, mu, S) - t.scalar(log_post);
    CHECK(std::abs(identity - log_pa) < 1e-8);
    // and log p(z|a,u) itself against the dense posterior density
    CHECK(std::abs(t.scalar(log_post) - dense_logpdf(zv, pm, PS)) < 1e-8);
}

namespace {
// Plain-Eigen evaluation of an MLP (ReLU between layers, none after the last).
Md mlp_dense(const MLP<double> & net, const Md & x) {
    Md h = x;
    for (size_t i = 0; i < net.layers.size(); i++) {
        h = (net.layers[i].W->value * h).colwise() + net.layers[i].b->value.col(0);
        if (i + 1 < net.layers.size()) h = h.cwiseMax(0.0);
    }
    return h;
}
double gauss_diag(const Vd & x, const Vd & m, const Vd & var) {
    double s = 0;
    for (Eigen::Index i = 0; i < x.size(); i++) s += -0.5 * (std::log(2 * M_PI * var(i)) + (x(i) - m(i)) * (x(i) - m(i)) / var(i));
    return s;
}
// The transition at (z, u), computed independently of the core: F = I + A alpha,
// b = B alpha u, q = softplus(q_raw alpha) + q_min, alpha = softmax(MLP([z; u])).
void transition_dense(const Ekvae<double> & m, const Vd & z, double u, Md & F, Vd & b, Vd & q) {
    const int nz = m.cfg.n_z, K = m.cfg.K;
    Md in(nz + 1, 1);
    in << z, u;
    Vd l = mlp_dense(m.alpha, in).col(0);
    Vd al = (l.array() - l.maxCoeff()).exp();
    al /= al.sum();
    F = Md::Identity(nz, nz) + Eigen::Map<const Md>(Vd(m.A->value * al).data(), nz, nz);
    b = m.Bm->value * al * u;
    q = (m.q_raw->value * al).unaryExpr([](double x) { return softplus(x); }).array() + m.cfg.q_min;
    (void)K;
}
} // namespace

TEST_CASE("the objective's value against an independent dense computation (K = 3: the transition depends on z)") {
    for (double jitter : {0.0, 1e-5}) {
        EkvaeConfig c;
        c.image_size = 3; c.n_a = 2; c.n_z = 2; c.K = 3; c.enc_hidden = {5}; c.dec_hidden = {5}; c.alpha_hidden = {4};
        c.jitter = jitter; c.init_scale_A = 0.3;
        const int T = 5, D = 9, na = 2, nz = 2;
        Ekvae<double> m;
        ekvae_init(m, c, 8);
        // make alpha depend strongly on z, so evaluating it at the filtered mean or at the sample differs
        for (auto & l : m.alpha.layers) l.W->value *= 3.0;
        Rng rng(41);
        Md X(D, T), U(1, T);
        for (Eigen::Index i = 0; i < X.size(); i++) X(i) = rng.uniform();
        for (Eigen::Index i = 0; i < U.size(); i++) U(i) = rng.uniform(-2, 2);
        Tape<double> t;
        Rng noise(9);
        const EkvaeTerms r = ekvae_objective(t, m, X, U, 1, T, noise, LossWeights::lagrangian(2.0, c.D0));
        REQUIRE(t.error().empty());
        const Md a = t.value(r.a), z = t.value(r.z);
        // the noise the objective drew: a's first, then z's
        Rng again(9);
        Md ea(na, T);
        for (Eigen::Index i = 0; i < ea.size(); i++) ea(i) = again.normal();
        // q(a | x) and p(x | a)
        const Md h = mlp_dense(m.enc, X);
        const Md mu = h.topRows(na), lv = h.bottomRows(na);
        const Md a_dense = mu.array() + (0.5 * lv.array()).exp() * ea.array();
        CHECK((a - a_dense).cwiseAbs().maxCoeff() < 1e-12);
        double log_qa = 0, log_px = 0;
        for (int k = 0; k < T; k++) log_qa += gauss_diag(a.col(k), mu.col(k), lv.col(k).array().exp());
        const Md lg = mlp_dense(m.dec, a);
        for (Eigen::Index i = 0; i < lg.size(); i++) log_px += X(i) * lg(i) - std::log1p(std::exp(lg(i)));
        // p(a | z) and p(z | u) at the sample, the transition evaluated at the SAMPLED z_{t-1}
        const Md H = Eigen::Map<const Md>(m.H->value.data(), na, nz);
        const Vd Rv = m.r_raw->value.col(0).unaryExpr([](double x) { return softplus(x); }).array() + c.r_min;
        const Vd P1 = m.p1_raw->value.col(0).unaryExpr([](double x) { return softplus(x); });
        double log_paz = 0, log_pz = gauss_diag(z.col(0), m.mu1->value.col(0), P1);
        for (int k = 0; k < T; k++) log_paz += gauss_diag(a.col(k), H * z.col(k), Rv);
        for (int k = 1; k < T; k++) {
            Md F;
            Vd b, q;
            transition_dense(m, z.col(k - 1), U(0, k - 1), F, b, q);
            log_pz += gauss_diag(z.col(k), F * z.col(k - 1) + b, q);
        }
        // p(z | a, u): the extended Kalman smoother's posterior = the dense joint posterior of the
        // linear-Gaussian system whose transition into t is evaluated at the filtered mean of t-1
        std::vector<Md> Fs(T);
        std::vector<Vd> bs(T), qs(T);
        Vd mu_z(T * nz), pm;
        Md S = Md::Zero(T * nz, T * nz), PS;
        Md Hb = Md::Zero(T * na, T * nz), Rb = Md::Zero(T * na, T * na);
        for (int k = 0; k < T; k++) {
            Hb.block(k * na, k * nz, na, nz) = H;
            Rb.block(k * na, k * na, na, na) = Rv.asDiagonal();
        }
        const Vd av = Eigen::Map<const Vd>(a.data(), T * na);
        for (int k = 0; k < T; k++) {
            if (k == 0) {
                mu_z.segment(0, nz) = m.mu1->value.col(0);
                S.block(0, 0, nz, nz) = P1.asDiagonal();
            } else {
                // the filtered mean of z_{k-1} given a_{1:k}, from the dense prior so far
                const Md Hk = Hb.topLeftCorner(k * na, k * nz), Rk = Rb.topLeftCorner(k * na, k * na);
                const Md Sk = S.topLeftCorner(k * nz, k * nz);
                const Vd mk = mu_z.head(k * nz) + Sk * Hk.transpose() * (Hk * Sk * Hk.transpose() + Rk).ldlt().solve(av.head(k * na) - Hk * mu_z.head(k * nz));
                Md F;
                Vd b, q;
                transition_dense(m, mk.segment((k - 1) * nz, nz), U(0, k - 1), F, b, q);
                mu_z.segment(k * nz, nz) = F * mu_z.segment((k - 1) * nz, nz) + b;
                for (int j = 0; j < k; j++) {
                    S.block(k * nz, j * nz, nz, nz) = F * S.block((k - 1) * nz, j * nz, nz, nz);
                    S.block(j * nz, k * nz, nz, nz) = S.block(k * nz, j * nz, nz, nz).transpose();
                }
                S.block(k * nz, k * nz, nz, nz) = F * S.block((k - 1) * nz, (k - 1) * nz, nz, nz) * F.transpose() + Md(q.asDiagonal());
            }
        }
        const Md G = S * Hb.transpose() * (Hb * S * Hb.transpose() + Rb).inverse();
        pm = mu_z + G * (av - Hb * mu_z);
        PS = S - G * Hb * S;
        const Vd zv = Eigen::Map<const Vd>(z.data(), T * nz);
        const double log_post = dense_logpdf(zv, pm, PS);
        INFO("jitter " << jitter);
        CHECK(t.scalar(r.log_qa) == doctest::Approx(log_qa).epsilon(1e-10));
        CHECK(t.scalar(r.log_px) == doctest::Approx(log_px).epsilon(1e-10));
        CHECK(t.scalar(r.log_paz) == doctest::Approx(log_paz).epsilon(1e-10));
        CHECK(t.scalar(r.log_pz) == doctest::Approx(log_pz).epsilon(1e-10));
        // jitter (added to covariances before each factorisation) moves log p(z|a,u) by O(jitter / P)
        CHECK(std::abs(t.scalar(r.log_post) - log_post) < (jitter == 0 ? 1e-8 : 2e-3));
        // the terms combine as documented: D = -log p(x|a) / N, R = (log q + log post - log p(a|z) - log p(z|u)) / N,
        // loss = R + lambda (D - D0)
        CHECK(t.scalar(r.D) == doctest::Approx(-log_px / T).epsilon(1e-10));
        CHECK(t.scalar(r.R) == doctest::Approx((t.scalar(r.log_qa) + t.scalar(r.log_post) - log_paz - log_pz) / T).epsilon(1e-10));
        CHECK(t.scalar(r.loss) == doctest::Approx(t.scalar(r.R) + 2.0 * (t.scalar(r.D) - c.D0)).epsilon(1e-10));
    }
}

TEST_CASE("the ELBO identity through the objective's own terms: log p(a|z) + log p(z|u) - log p(z|a,u) = log p(a|u)") {
    // exact for a linear-Gaussian transition (K = 1), for whatever a and z the objective sampled
    Ekvae<double> m;
    LinearSystem s;
    make_linear_model(m, s);
    const int T = s.T, D = 16;
    Rng rng(51);
    Md X(D, T), U(1, T);
    for (Eigen::Index i = 0; i < X.size(); i++) X(i) = rng.uniform();
    for (Eigen::Index i = 0; i < U.size(); i++) U(i) = rng.uniform(-2, 2);
    for (int trial = 0; trial < 3; trial++) {
        Tape<double> t;
        Rng noise(60 + trial);
        const EkvaeTerms r = ekvae_objective(t, m, X, U, 1, T, noise, LossWeights::elbo());
        const Md a = t.value(r.a);
        Vd mu;
        Md S;
        dense_prior(s, U.row(0).transpose(), mu, S);
        Md Hb = Md::Zero(T * s.na, T * s.nz), Rb = Md::Zero(T * s.na, T * s.na);
        for (int k = 0; k < T; k++) {
            Hb.block(k * s.na, k * s.nz, s.na, s.nz) = s.H;
            Rb.block(k * s.na, k * s.na, s.na, s.na) = s.R;
        }
        const double log_pa = dense_logpdf(Eigen::Map<const Vd>(a.data(), a.size()), Hb * mu, Hb * S * Hb.transpose() + Rb);
        const double lhs = t.scalar(r.log_paz) + t.scalar(r.log_pz) - t.scalar(r.log_post);
        CHECK(lhs == doctest::Approx(log_pa).epsilon(1e-9));
    }
}

TEST_CASE("backward sampling draws from the joint smoothed posterior") {
    Ekvae<double> m;
    LinearSystem s;
    make_linear_model(m, s);
    const int nz = s.nz, na = s.na, T = s.T, N = 20000;
    Rng rng(22);
    Vd u(T), a(T * na);
    for (int t = 0; t < T; t++) u(t) = rng.uniform(-2, 2);
    for (int i = 0; i < T * na; i++) a(i) = rng.normal();
    // N copies of one sequence: each column is an independent sample of z_{1:T}
    Md A(na, T * N), U(1, T * N), eps(nz, T * N);
    for (int k = 0; k < T; k++)
        for (int b = 0; b < N; b++) {
            A.col(k * N + b) = a.segment(k * na, na);
            U(0, k * N + b) = u(k);
        }
    for (Eigen::Index i = 0; i < eps.size(); i++) eps(i) = rng.normal();
    Tape<double> t;
    KalmanResult<double> kr;
    kalman_filter(t, m, t.constant(A), t.constant(U), N, T, kr);
    Var log_post;
    Var z = backward_sample(t, m, kr, eps, log_post);
    Md Z(N, T * nz); // one row per sample: (z_1, ..., z_T)
    for (int k = 0; k < T; k++) Z.middleCols(k * nz, nz) = t.value(z).middleCols(k * N, N).transpose();
    Vd mu, pm;
    Md S, PS;
    dense_prior(s, u, mu, S);
    dense_posterior(s, mu, S, a, T, pm, PS);
    const Vd emp_mean = Z.colwise().mean();
    const Md C = Z.rowwise() - emp_mean.transpose();
    const Md emp_cov = C.transpose() * C / (N - 1);
    // tolerance from the sampling error: 5 standard errors
    double worst_mean = 0, worst_cov = 0;
    for (int i = 0; i < T * nz; i++) {
        worst_mean = std::max(worst_mean, std::abs(emp_mean(i) - pm(i)) / std::sqrt(PS(i, i) / N));
        for (int j = 0; j < T * nz; j++) {
            const double se = std::sqrt((PS(i, i) * PS(j, j) + PS(i, j) * PS(i, j)) / N);
            worst_cov = std::max(worst_cov, std::abs(emp_cov(i, j) - PS(i, j)) / se);
        }
    }
    INFO("largest deviations in standard errors: mean " << worst_mean << ", covariance (incl. across time) " << worst_cov);
    CHECK(worst_mean < 5);
    CHECK(worst_cov < 5);
}

TEST_CASE("the whole EKVAE objective: gradients match central differences (double, tiny model)") {
    EkvaeConfig c;
    c.image_size = 3; c.n_a = 2; c.n_z = 2; c.K = 3; c.enc_hidden = {5}; c.dec_hidden = {5}; c.alpha_hidden = {4};
    c.jitter = 0; c.init_scale_A = 0.3;
    const int B = 2, T = 4, D = 9;
    Ekvae<double> m;
    ekvae_init(m, c, 5);
    Rng rng(31);
    Md X(D, B * T), U(1, B * T);
    for (Eigen::Index i = 0; i < X.size(); i++) X(i) = rng.uniform();
    for (Eigen::Index i = 0; i < U.size(); i++) U(i) = rng.uniform(-2, 2);
    for (double lambda : {-1.0, 3.0}) {
        Tape<double> t;
        auto loss = [&](bool backward) {
            t.reset();
            Rng noise(7); // the same reparameterisation noise for every evaluation
            EkvaeTerms r = ekvae_objective(t, m, X, U, B, T, noise, lambda < 0 ? LossWeights::elbo() : LossWeights::lagrangian(lambda, c.D0), 1.0);
            if (backward) {
                m.ps.zero_grad();
                t.backward(r.loss);
            }
            return t.scalar(r.loss);
        };
        loss(true);
        REQUIRE(t.error().empty());
        std::vector<Md> g;
        for (auto & p : m.ps.list) g.push_back(p->grad);
        const double h = 1e-6;
        int bad = 0, checked = 0;
        double max_err = 0;
        for (size_t k = 0; k < m.ps.list.size(); k++) {
            Md & x = m.ps.list[k]->value;
            for (Eigen::Index i = 0; i < x.size(); i++) {
                const double x0 = x(i);
                x(i) = x0 + h;
                const double fp = loss(false);
                x(i) = x0 - h;
                const double fm = loss(false);
                x(i) = x0;
                const double num = (fp - fm) / (2 * h), ana = g[k](i);
                const double err = std::abs(num - ana);
                max_err = std::max(max_err, err);
                checked++;
                if (err > 1e-5 + 1e-4 * std::max(std::abs(num), std::abs(ana))) {
                    if (bad < 5) std::printf("objective grad %s[%ld]: analytic %.9g numeric %.9g\n", m.ps.list[k]->name.c_str(), (long)i, ana, num);
                    bad++;
                }
            }
        }
        INFO("lambda " << lambda << ": " << bad << " of " << checked << " gradient entries differ; max abs error " << max_err);
        CHECK(bad == 0);
    }
}

TEST_CASE("lambda rises while D > D0, falls once D < D0, and stays within its bounds") {
    EkvaeConfig c;
    c.lambda_rule = "ekvae";
    c.D0 = 10;
    c.lambda_init = 1;
    c.lambda_max = 50;
    c.lambda_min = 0.1;
    LambdaState l;
    l.init(c);
    double prev = l.lambda;
    for (int i = 0; i < 200; i++) {
        l.update(c, 30.0);
        CHECK(l.lambda >= prev);
        CHECK(l.lambda <= prev * std::exp(c.lambda_max_step) + 1e-12);
        prev = l.lambda;
    }
    CHECK(l.lambda == doctest::Approx(50));
    int falling = 0;
    for (int i = 0; i < 400; i++) {
        l.update(c, 8.0);
        if (l.lambda < prev) falling++;
        CHECK(l.lambda <= prev);
        prev = l.lambda;
    }
    CHECK(falling > 100);
    CHECK(l.lambda == doctest::Approx(0.1));
    l.update(c, std::nan(""));
    CHECK(l.lambda == doctest::Approx(0.1));
}

TEST_CASE("lambda warm-up: held at lambda_init (hold) or with the rate left out (rate_off) until Dbar meets D0") {
    EkvaeConfig c;
    c.lambda_rule = "ekvae";
    c.D0 = 10;
    for (const char * mode : {"hold", "rate_off"}) {
        c.lambda_warmup = mode;
        LambdaState l;
        l.init(c);
        CHECK(!l.warm);
        for (int i = 0; i < 300; i++) {
            l.update(c, std::max(5.0, 40.0 - 0.2 * i), i + 1); // D falls from 40 to 5
            if (l.warm) break;
            CHECK(l.lambda == c.lambda_init);
            const LossWeights w = l.weights(c);
            CHECK(w.rate == (std::string(mode) == "rate_off" ? 0.0 : 1.0));
            CHECK(w.distortion == (std::string(mode) == "rate_off" ? 1.0 : c.lambda_init));
        }
        CHECK(l.warm);
        CHECK(l.D_ma < c.D0);
        l.update(c, 5.0, 400); // from here the ekvae rule: lambda falls while D < D0
        CHECK(l.lambda < c.lambda_init);
        CHECK(l.weights(c).rate == 1.0);
    }
}

TEST_CASE("lambda_scale normalized divides the Lagrangian by 1 + lambda") {
    EkvaeConfig c;
    c.lambda_rule = "ekvae";
    c.lambda_scale = "normalized";
    LambdaState l;
    l.init(c);
    l.lambda = 3;
    const LossWeights w = l.weights(c);
    CHECK(w.rate == doctest::Approx(0.25));
    CHECK(w.distortion == doctest::Approx(0.75));
    CHECK(w.offset == doctest::Approx(-0.75 * c.D0));
}

TEST_CASE("lambda_rule authors: rate out until Dbar meets D0, then D + R / lambda, lambda moved every 100 steps") {
    EkvaeConfig c;
    c.lambda_rule = "authors";
    c.D0 = 10;
    c.lambda_rate = 0.5;
    LambdaState l;
    l.init(c);
    CHECK(l.weights(c).rate == 0.0);
    int64_t step = 0;
    while (!l.warm && step < 10000) l.update(c, 9.0, ++step);
    REQUIRE(l.warm);
    CHECK(l.lambda == 1.0);
    // violated: lambda rises by at most 5% per 100 steps, and only on multiples of 100
    double prev = l.lambda;
    for (int i = 0; i < 1000; i++) {
        l.update(c, 30.0, ++step);
        if (step % 100 != 0) CHECK(l.lambda == prev);
        else CHECK(l.lambda <= prev * 1.05 + 1e-12);
        prev = l.lambda;
    }
    CHECK(l.lambda > 1.2);
    CHECK(l.weights(c).rate == doctest::Approx(1.0 / l.lambda));
    // satisfied: lambda is driven back toward 1 (where the clipped factors 0.9 and 1.05 make
    // it circle within about 10%) and never far below it
    for (int i = 0; i < 20000; i++) l.update(c, 5.0, ++step);
    for (int i = 0; i < 2000; i++) {
        l.update(c, 5.0, ++step);
        CHECK(l.lambda > 0.85);
        CHECK(l.lambda < 1.1);
    }
}

TEST_CASE("lr_at: constant, then a cosine down to lr * lr_final, then constant") {
    EkvaeConfig c;
    c.lr = 1e-3;
    c.lr_decay_start = 100;
    c.lr_decay_end = 200;
    c.lr_final = 0.1;
    CHECK(lr_at(c, 1) == c.lr);
    CHECK(lr_at(c, 100) == c.lr);
    CHECK(lr_at(c, 150) == doctest::Approx(c.lr * 0.55));
    CHECK(lr_at(c, 200) == doctest::Approx(c.lr * 0.1));
    CHECK(lr_at(c, 5000) == doctest::Approx(c.lr * 0.1));
    for (int s = 100; s < 200; s++) CHECK(lr_at(c, s + 1) <= lr_at(c, s));
    c.lr_decay_end = 0;
    CHECK(lr_at(c, 150) == c.lr);
}

namespace {
EkvaeConfig tiny_train_config() {
    EkvaeConfig c;
    c.image_size = 8; c.enc_hidden = {32}; c.dec_hidden = {32}; c.alpha_hidden = {16}; c.K = 4;
    c.batch = 4; c.window = 6; c.sequence_steps = 12; c.threads = 2; c.seed = 3;
    c.restarts = 1; c.lr_decay_end = 0; // a plain run (the schedule has its own tests)
    return c;
}
Dataset tiny_data(int N = 8, int T = 12, int W = 8, uint64_t seed = 5) {
    DatasetConfig dc;
    dc.sequences = N; dc.steps = T; dc.image_size = W; dc.seed = seed;
    return generate_dataset(dc);
}
} // namespace

TEST_CASE("training resumed from a checkpoint equals uninterrupted training") {
    const EkvaeConfig c = tiny_train_config();
    const Dataset d = tiny_data();
    Mat<float> X, U;
    Trainer a;
    a.init(c);
    for (int i = 0; i < 6; i++) {
        sample_batch(d, c.batch, c.window, a.rng, X, U);
        REQUIRE(a.train_step(X, U).ok);
    }
    Trainer b;
    b.init(c);
    for (int i = 0; i < 3; i++) {
        sample_batch(d, c.batch, c.window, b.rng, X, U);
        b.train_step(X, U);
    }
    std::vector<uint8_t> ck = b.checkpoint();
    Trainer r;
    std::string err;
    REQUIRE(r.restore(ck.data(), ck.size(), err));
    for (int i = 0; i < 3; i++) {
        sample_batch(d, c.batch, c.window, r.rng, X, U);
        r.train_step(X, U);
    }
    CHECK(r.step == a.step);
    CHECK(r.lam.lambda == a.lam.lambda);
    for (size_t i = 0; i < a.model.ps.list.size(); i++) CHECK(r.model.ps.list[i]->value == a.model.ps.list[i]->value);
    CHECK(r.opt.step == a.opt.step);
    // deterministic for a seed: a second uninterrupted run gives the same weights
    Trainer a2;
    a2.init(c);
    for (int i = 0; i < 6; i++) {
        sample_batch(d, c.batch, c.window, a2.rng, X, U);
        a2.train_step(X, U);
    }
    for (size_t i = 0; i < a.model.ps.list.size(); i++) CHECK(a2.model.ps.list[i]->value == a.model.ps.list[i]->value);
}

TEST_CASE("restarts: the start with the best held-out objective is continued; resuming mid-choice changes nothing") {
    EkvaeConfig c = tiny_train_config();
    c.restarts = 3;
    c.restart_steps = 4;
    const Dataset d = tiny_data();
    const Dataset val = tiny_data(6, 12, 8, 99);
    Mat<float> X, U;
    Trainer a;
    a.init(c, &val);
    std::vector<double> scores;
    int chosen = -1;
    for (int i = 0; i < 16; i++) {
        CHECK(a.choosing() == (i < 12));
        sample_batch(d, c.batch, c.window, a.rng, X, U);
        const StepStats st = a.train_step(X, U);
        REQUIRE(st.ok);
        if (i < 12) CHECK(st.start == i / 4);
        else CHECK(st.start == chosen); // after the choice: the start being continued
        CHECK(st.start_done == (i == 3 || i == 7 || i == 11));
        if (st.start_done) {
            // the score is the held-out objective of the start as it ended (before the next began)
            scores.push_back(st.start_score);
            CHECK(std::isfinite(st.start_score));
            CHECK(st.start_score == doctest::Approx(st.start_R + std::max(0.0, st.start_D - c.D0)));
        }
        if (st.chosen >= 0) chosen = st.chosen;
    }
    REQUIRE(scores.size() == 3);
    CHECK(chosen == (int)(std::min_element(scores.begin(), scores.end()) - scores.begin()));
    CHECK(a.step == 16);
    CHECK(!a.choosing());
    // the continued start is that start's state: its held-out score right after the choice
    // (step 12, before any further step) is the one it was chosen with
    Trainer b;
    b.init(c, &val);
    for (int i = 0; i < 12; i++) {
        sample_batch(d, c.batch, c.window, b.rng, X, U);
        b.train_step(X, U);
    }
    CHECK(heldout_objective(b.model, val).score == doctest::Approx(scores[chosen]));
    // a checkpoint mid-choice (step 6: start 1 running, start 0 kept) resumes exactly
    Trainer e;
    e.init(c, &val);
    for (int i = 0; i < 6; i++) {
        sample_batch(d, c.batch, c.window, e.rng, X, U);
        e.train_step(X, U);
    }
    const std::vector<uint8_t> ck = e.checkpoint();
    Trainer r;
    std::string err;
    REQUIRE_MESSAGE(r.resume(ck.data(), ck.size(), {}, &val, err), err);
    CHECK(r.choosing());
    for (int i = 0; i < 10; i++) {
        sample_batch(d, c.batch, c.window, r.rng, X, U);
        r.train_step(X, U);
    }
    CHECK(r.step == a.step);
    for (size_t i = 0; i < a.model.ps.list.size(); i++) CHECK(r.model.ps.list[i]->value == a.model.ps.list[i]->value);
    CHECK(r.opt.step == a.opt.step);
    CHECK(r.lam.lambda == a.lam.lambda);
}

TEST_CASE("the ELBO objective: good steps are accepted and lambda stays out of it") {
    EkvaeConfig c = tiny_train_config();
    c.objective = "elbo";
    const Dataset d = tiny_data();
    Trainer tr;
    tr.init(c);
    Mat<float> X, U;
    for (int i = 0; i < 3; i++) {
        sample_batch(d, c.batch, c.window, tr.rng, X, U);
        StepStats st = tr.train_step(X, U);
        CHECK(st.ok);
        CHECK(st.lambda == 1.0);
        CHECK(st.loss == doctest::Approx(st.D + st.R).epsilon(1e-4));
    }
    CHECK(tr.rejected == 0);
    CHECK(tr.lam.lambda == c.lambda_init);
}

TEST_CASE("a non-finite step is rejected and leaves the weights untouched") {
    EkvaeConfig c = tiny_train_config();
    const Dataset d = tiny_data();
    Trainer tr;
    tr.init(c);
    Mat<float> X, U;
    sample_batch(d, c.batch, c.window, tr.rng, X, U);
    X(0, 0) = std::numeric_limits<float>::quiet_NaN(); // a poisoned batch
    std::vector<Mat<float>> before;
    for (auto & p : tr.model.ps.list) before.push_back(p->value);
    StepStats st = tr.train_step(X, U);
    CHECK(!st.ok);
    CHECK(!st.error.empty());
    CHECK(tr.rejected == 1);
    for (size_t i = 0; i < before.size(); i++) CHECK(tr.model.ps.list[i]->value == before[i]);
    CHECK(params_finite(tr.model.ps));
}

TEST_CASE("model files round-trip; bad model files are refused with a reason") {
    EkvaeConfig c = tiny_train_config();
    Ekvae<float> m;
    ekvae_init(m, c, 9);
    m.readout_W.setConstant(0.5f);
    m.has_readout = true;
    SafeTensors st;
    ekvae_to_safetensors(m, st);
    std::vector<uint8_t> bytes = safetensors_serialize(st);
    Ekvae<float> back;
    std::string err;
    REQUIRE(ekvae_load(bytes.data(), bytes.size(), back, err));
    CHECK(back.cfg.image_size == 8);
    CHECK(back.has_readout);
    for (size_t i = 0; i < m.ps.list.size(); i++) CHECK(back.ps.list[i]->value == m.ps.list[i]->value);

    auto refused = [&](SafeTensors s, const char * needle) {
        std::vector<uint8_t> b = safetensors_serialize(s);
        Ekvae<float> x;
        std::string e;
        const bool ok = ekvae_load(b.data(), b.size(), x, e);
        INFO("error: " << e);
        CHECK(!ok);
        CHECK(e.find(needle) != std::string::npos);
    };
    { SafeTensors s = st; s.tensors.erase("H"); refused(s, "'H'"); }
    { SafeTensors s = st; float z[2] = {0, 0}; s.tensors["H"] = Tensor::from_f32(z, {2, 1}); refused(s, "'H'"); }
    { SafeTensors s = st; s.metadata["version"] = "99"; refused(s, "version"); }
    { SafeTensors s = st; s.metadata.erase("format"); refused(s, "not an ekvae model"); }
    { SafeTensors s = st; s.metadata["config"] = "{\"n_z\": \"three\"}"; refused(s, "n_z"); }
    { SafeTensors s = st; s.metadata["config"] = "{\"flux\": 1}"; refused(s, "flux"); }
    { SafeTensors s = st; float nanv = NAN; std::memcpy(s.tensors["mu1"].data.data(), &nanv, 4); refused(s, "NaN"); }
}

TEST_CASE("config: JSON round trip, overrides and validation") {
    EkvaeConfig c;
    std::string err;
    EkvaeConfig d;
    REQUIRE(config_from_json(config_to_json(c), d, err));
    CHECK(config_to_json(d) == config_to_json(c));
    CHECK(config_set(d, "lr", "0.002", err));
    CHECK(d.lr == 0.002);
    CHECK(config_set(d, "enc_hidden", "[64,32]", err));
    CHECK(d.enc_hidden == std::vector<int>{64, 32});
    CHECK(!config_set(d, "batch", "0", err));
    CHECK(err.find("batch") != std::string::npos);
    CHECK(!config_set(d, "nonsense", "1", err));
    CHECK(!config_set(d, "lr", "fast", err));
    d.objective = "magic";
    CHECK(!config_validate(d, err));
    CHECK(err.find("objective") != std::string::npos);
}

TEST_CASE("evaluation metrics on hand-made cases") {
    // r2 of an exact linear relation is 1; of an unrelated target about 0 or below
    Rng rng(41);
    Md Z(400, 3);
    for (Eigen::Index i = 0; i < Z.size(); i++) Z(i) = rng.normal();
    Vd y = 2 * Z.col(0) - Z.col(2) + Vd::Constant(400, 0.5);
    CHECK(r2_linear(Z.topRows(200), y.head(200), Z.bottomRows(200), y.tail(200)) == doctest::Approx(1.0));
    Vd noise(400);
    for (int i = 0; i < 400; i++) noise(i) = rng.normal();
    CHECK(r2_linear(Z.topRows(200), noise.head(200), Z.bottomRows(200), noise.tail(200)) < 0.1);
    // k-NN finds a nonlinear function of z that a line cannot
    Vd yn = Z.col(0).array().square();
    CHECK(r2_knn(Z.topRows(200), yn.head(200), Z.bottomRows(200), yn.tail(200), 10) > 0.5);
    CHECK(r2_linear(Z.topRows(200), yn.head(200), Z.bottomRows(200), yn.tail(200)) < 0.2);

    // A pendulum at rest upright: repeating the last frame is a perfect forecast, so the
    // baseline's MSE is 0 and its angle error is the renderer's centroid error only.
    Dataset d;
    d.N = 4; d.T = 48; d.W = 8;
    d.images.resize((size_t)d.N * d.T * 64);
    d.actions.assign((size_t)d.N * d.T, 0.0f);
    d.states.assign((size_t)d.N * d.T * 2, 0.0f);
    for (int n = 0; n < d.N; n++)
        for (int k = 0; k < d.T; k++) render_pendulum(0.0, 8, d.images.data() + ((size_t)n * d.T + k) * 64);
    EkvaeConfig c = tiny_train_config();
    Ekvae<float> m;
    ekvae_init(m, c, 1);
    EvalMetrics e;
    evaluate(m, d, e, true, 0);
    REQUIRE(e.baseline_mse.size() == 5);
    for (double v : e.baseline_mse) CHECK(v == 0.0);
    for (double v : e.baseline_angle_err) CHECK(v < 1e-6);
    CHECK(std::isfinite(e.elbo));
    CHECK(e.distortion > 0);
    CHECK(m.has_readout);
}

TEST_CASE("readout: angle, velocity and their standard deviations by linearisation") {
    EkvaeConfig c = tiny_train_config();
    Ekvae<double> m;
    ekvae_init(m, c, 1);
    m.readout_W << 0.8, -0.3, 0.1, 0.2, 0.9, -0.4, 0.5, 0.1, 1.5;
    m.readout_b << 0.1, -0.2, 0.3;
    m.has_readout = true;
    Md z(3, 2);
    z << 0.3, 1.0, -0.7, 0.2, 0.5, -1.0;
    Md A(3, 3);
    A << 0.5, 0.1, 0.0, 0.1, 0.3, 0.05, 0.0, 0.05, 0.2;
    Md P(9, 2);
    P.col(0) = A.reshaped(9, 1);
    P.col(1) = (2.0 * A).reshaped(9, 1);
    for (int col = 0; col < 2; col++) {
        const Readout r = readout(m, z, P, col);
        const Vd o = m.readout_W * z.col(col) + m.readout_b;
        CHECK(r.value[0] == doctest::Approx(std::atan2(o(1), o(0))));
        CHECK(r.value[1] == doctest::Approx(o(2)));
        // gradient of theta in z by central differences
        Vd g(3);
        for (int i = 0; i < 3; i++) {
            Md zp = z, zm = z;
            zp(i, col) += 1e-6;
            zm(i, col) -= 1e-6;
            g(i) = (readout(m, zp, P, col).value[0] - readout(m, zm, P, col).value[0]) / 2e-6;
        }
        const Md Pc = P.col(col).reshaped(3, 3);
        CHECK(r.sigma[0] == doctest::Approx(std::sqrt(g.dot(Pc * g))).epsilon(1e-6));
        const Vd w = m.readout_W.row(2).transpose();
        CHECK(r.sigma[1] == doctest::Approx(std::sqrt(w.dot(Pc * w))));
    }
}
