// Tests for kalman.h: the extended Kalman filter and RTS smoother against the dense
// joint-Gaussian posterior, and backward sampling against the smoothed joint.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

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
