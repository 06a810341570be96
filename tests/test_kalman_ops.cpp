// Tests for kalman_ops.h: each fused Kalman step against the composition of primitive ops it
// replaces (values and gradients), against central differences, and its error reports.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

// ---- fused Kalman steps -------------------------------------------------------------------
// The reference for each fused op is the composition of primitive ops it replaced in the
// filter, smoother and backward sampler (n = 3 states, k = 2 observations, B samples).

static Var ref_predict(Tape<double> & t, Var F, Var Bu, Var q, Var m, Var P) {
    Var mp = t.add(t.bmm(F, m), Bu);
    Var Pp = t.add(t.bsymmetrize(t.bmm(t.bmm(F, P), F, false, true)), t.bdiag(q));
    return t.concat_rows({mp, Pp});
}

static Var ref_update(Tape<double> & t, Var H, Var R, Var mp, Var Pp, Var a) {
    const int n = t.brows(Pp);
    Var I = t.constant_batch(Md::Identity(n, n).reshaped(n * n, 1), n, n);
    Var HP = t.bmm(H, Pp);
    Var Ls = t.bcholesky(t.add(t.bmm(HP, H, false, true), R));
    Var K = t.btranspose(t.btrisolve(Ls, t.btrisolve(Ls, HP), true));
    Var mt = t.add(mp, t.bmm(K, t.sub(a, t.bmm(H, mp))));
    Var IKH = t.sub(I, t.bmm(K, H));
    Var Pt = t.add(t.bmm(t.bmm(IKH, Pp), IKH, false, true), t.bmm(t.bmm(K, R), K, false, true));
    // with a broadcast prior P does not depend on the sample: repeat it over the batch as the fused op does
    const Eigen::Index B = t.value(mt).cols();
    if (t.value(Pt).cols() != B) Pt = t.add(Pt, t.constant(Md::Zero(n * n, B)));
    return t.concat_rows({mt, Pt});
}

static Var ref_gain(Tape<double> & t, Var Ppn, Var Fn, Var P, double jitter) {
    const int n = t.brows(P);
    Var Lp = t.bcholesky(t.add(Ppn, t.constant_batch(jitter * Md::Identity(n, n).reshaped(n * n, 1), n, n)));
    return t.btranspose(t.btrisolve(Lp, t.btrisolve(Lp, t.bmm(Fn, P)), true));
}

static Var ref_sample(Tape<double> & t, Var m, Var P, Var J, Var Fn, Var qn, Var mpn, Var zn, Var eps, double jitter) {
    const int n = t.brows(P);
    Var I = t.constant_batch(Md::Identity(n, n).reshaped(n * n, 1), n, n);
    Var Ij = t.constant_batch(jitter * Md::Identity(n, n).reshaped(n * n, 1), n, n);
    Var c = t.add(m, t.bmm(J, t.sub(zn, mpn)));
    Var IJF = t.sub(I, t.bmm(J, Fn));
    Var Sc = t.add(t.add(t.bmm(t.bmm(IJF, P), IJF, false, true), t.bmm(t.bmm(J, t.bdiag(qn)), J, false, true)), Ij);
    Var Lc = t.bcholesky(Sc);
    Var z = t.add(c, t.bmm(Lc, eps));
    return t.concat_rows({z, t.gauss_chol_logpdf(z, c, Lc)});
}

// Builds the op's inputs from free parameters v so that every covariance is symmetric positive
// definite (P = M M^T + I) and every variance positive: finite differences of v then test the
// symmetric gradient the ops define.
static Var spd(Tape<double> & t, Var M, int n, double shift) {
    Var Mb = t.as_batch(M, n, n);
    return t.add(t.bmm(Mb, Mb, false, true), t.constant_batch(shift * Md::Identity(n, n).reshaped(n * n, 1), n, n));
}
static Var positive(Tape<double> & t, Var v) { return t.add_scalar(t.square(v), 0.3); }

using Build = std::function<Var(Tape<double> &, const std::vector<Var> &, bool fused)>;

// State size n and observation size k are read from the inputs' shapes.
static const Build build_predict = [](Tape<double> & t, const std::vector<Var> & v, bool fused) {
    const int n = (int)t.value(v[3]).rows();
    Var F = t.as_batch(v[0], n, n), P = spd(t, v[4], n, 0.5), q = positive(t, v[2]);
    return fused ? kalman_predict(t, F, v[1], q, v[3], P) : ref_predict(t, F, v[1], q, v[3], P);
};
static const Build build_update = [](Tape<double> & t, const std::vector<Var> & v, bool fused) {
    const int n = (int)t.value(v[2]).rows(), k = (int)t.value(v[4]).rows();
    Var H = t.as_batch(v[0], k, n), R = t.bdiag(positive(t, v[1])), Pp = spd(t, v[3], n, 0.5);
    return fused ? kalman_update(t, H, R, v[2], Pp, v[4]) : ref_update(t, H, R, v[2], Pp, v[4]);
};
static const Build build_gain = [](Tape<double> & t, const std::vector<Var> & v, bool fused) {
    const int n = (int)std::lround(std::sqrt((double)t.value(v[0]).rows()));
    Var Ppn = spd(t, v[0], n, 0.5), F = t.as_batch(v[1], n, n), P = spd(t, v[2], n, 0.2);
    return fused ? smoother_gain(t, Ppn, F, P, 1e-3) : ref_gain(t, Ppn, F, P, 1e-3);
};
static Md sample_eps;
static const Build build_sample = [](Tape<double> & t, const std::vector<Var> & v, bool fused) {
    const int n = (int)t.value(v[0]).rows();
    Var P = spd(t, v[1], n, 0.5), J = t.as_batch(t.scale(v[2], 0.3), n, n), F = t.as_batch(v[3], n, n), q = positive(t, v[4]);
    Var eps = t.constant(sample_eps);
    return fused ? backward_sample_step(t, v[0], P, J, F, q, v[5], v[6], eps, 1e-3) : ref_sample(t, v[0], P, J, F, q, v[5], v[6], eps, 1e-3);
};

// The fused op against its primitive composition: value and the gradient of sum(out .* W)
// with respect to every free input.
static void compare_fused(const char * name, const std::vector<Md> & inputs, const Build & build) {
    Md value[2];
    std::vector<Md> grads[2];
    for (int fused = 0; fused < 2; fused++) {
        Params<double> ps;
        for (size_t i = 0; i < inputs.size(); i++) ps.add("x" + std::to_string(i), (int)inputs[i].rows(), (int)inputs[i].cols()).value = inputs[i];
        Tape<double> t;
        std::vector<Var> vs;
        for (auto & p : ps.list) vs.push_back(t.param(*p));
        Var out = build(t, vs, fused == 1);
        REQUIRE(t.error().empty());
        Rng rng(7);
        Md W = randn((int)t.value(out).rows(), (int)t.value(out).cols(), rng);
        ps.zero_grad();
        t.backward(t.sum(t.mul(out, t.constant(W))));
        value[fused] = t.value(out);
        for (auto & p : ps.list) grads[fused].push_back(p->grad);
    }
    INFO(name);
    REQUIRE(value[0].rows() == value[1].rows());
    CHECK((value[0] - value[1]).cwiseAbs().maxCoeff() < 1e-12 * (1 + value[0].cwiseAbs().maxCoeff()));
    for (size_t i = 0; i < inputs.size(); i++) {
        INFO("input " << i);
        CHECK((grads[0][i] - grads[1][i]).cwiseAbs().maxCoeff() < 1e-11 * (1 + grads[0][i].cwiseAbs().maxCoeff()));
    }
}

static std::vector<Md> predict_inputs(Rng & rng, int B, int n) {
    return {randn(n * n, B, rng, 0.5), randn(n, B, rng), randn(n, B, rng), randn(n, B, rng), randn(n * n, B, rng)};
}
static std::vector<Md> update_inputs(Rng & rng, int B, int n, int k, bool broadcast_prior) {
    const int Bp = broadcast_prior ? 1 : B; // the first step's prior mean and covariance are [., 1]
    return {randn(k * n, 1, rng), randn(k, 1, rng), randn(n, Bp, rng), randn(n * n, Bp, rng), randn(k, B, rng)};
}
static std::vector<Md> gain_inputs(Rng & rng, int B, int n) { return {randn(n * n, B, rng), randn(n * n, B, rng, 0.5), randn(n * n, B, rng)}; }
static std::vector<Md> sample_inputs(Rng & rng, int B, int n) {
    return {randn(n, B, rng), randn(n * n, B, rng), randn(n * n, B, rng), randn(n * n, B, rng, 0.5), randn(n, B, rng), randn(n, B, rng), randn(n, B, rng)};
}

// n = 3, k = 2 run the compile-time-size kernels (the default model), the others the run-time-size ones.
TEST_CASE("fused Kalman steps equal the primitive ops they replace (values and gradients)") {
    Rng rng(11);
    const int B = 5;
    const int sizes[][2] = {{3, 2}, {4, 3}, {2, 1}, {3, 3}};
    for (auto & nk : sizes) {
        const int n = nk[0], k = nk[1];
        INFO("n = " << n << ", k = " << k);
        sample_eps = randn(n, B, rng);
        compare_fused("kalman_predict", predict_inputs(rng, B, n), build_predict);
        compare_fused("kalman_update", update_inputs(rng, B, n, k, false), build_update);
        compare_fused("kalman_update (broadcast prior)", update_inputs(rng, B, n, k, true), build_update);
        compare_fused("smoother_gain", gain_inputs(rng, B, n), build_gain);
        compare_fused("backward_sample_step", sample_inputs(rng, B, n), build_sample);
    }
}

TEST_CASE("fused Kalman steps: gradients match central differences") {
    Rng rng(12);
    const int B = 3;
    auto fused = [](const Build & b) { return [b](Tape<double> & t, const std::vector<Var> & v) { return b(t, v, true); }; };
    const int sizes[][2] = {{3, 2}, {4, 3}};
    for (auto & nk : sizes) {
        const int n = nk[0], k = nk[1];
        INFO("n = " << n << ", k = " << k);
        sample_eps = randn(n, B, rng);
        grad_check("kalman_predict", predict_inputs(rng, B, n), fused(build_predict));
        grad_check("kalman_update", update_inputs(rng, B, n, k, false), fused(build_update));
        grad_check("kalman_update (broadcast prior)", update_inputs(rng, B, n, k, true), fused(build_update));
        grad_check("smoother_gain", gain_inputs(rng, B, n), fused(build_gain));
        grad_check("backward_sample_step", sample_inputs(rng, B, n), fused(build_sample));
    }
}

TEST_CASE("fused Kalman steps report a covariance that is not positive definite") {
    Tape<float> t;
    Mat<float> H(2, 1), R(1, 1), mp(2, 1), Pp(4, 1), a(1, 2);
    H << 1, 0;
    R << -2; // S = H P H^T + R = 1 - 2 < 0
    mp << 0, 0;
    Pp << 1, 0, 0, 1;
    a << 0.5f, 0.5f;
    Var out = kalman_update(t, t.constant_batch(H, 1, 2), t.constant_batch(R, 1, 1), t.constant(mp), t.constant_batch(Pp, 2, 2), t.constant(a));
    CHECK(t.error().find("kalman_update: innovation covariance 0") != std::string::npos);
    CHECK(std::isnan(t.value(out)(0, 0)));
}
