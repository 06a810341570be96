// Tests for autodiff.h and nn.h: every op's gradient against central finite differences in
// double precision, batched ops against a per-sample loop of plain Eigen, Adam/SGD state and
// (de)serialisation, and an MLP autoencoder on rendered pendulum frames.
#include "autodiff.h"
#include "kalman_ops.h"
#include "nn.h"
#include "pendulum.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <functional>

using namespace ekvae;
using Md = Mat<double>;
using Fn = std::function<Var(Tape<double> &, const std::vector<Var> &)>;

static Md randn(int r, int c, Rng & rng, double scale = 1.0) {
    Md m(r, c);
    for (Eigen::Index i = 0; i < m.size(); i++) m.data()[i] = scale * rng.normal();
    return m;
}

// Symmetric positive-definite batch [n*n, B]: M M^T + n I per column.
static Md spd_batch(int n, int B, Rng & rng) {
    Md out(n * n, B);
    for (int j = 0; j < B; j++) {
        Md m = randn(n, n, rng);
        Md a = m * m.transpose() + n * Md::Identity(n, n);
        out.col(j) = Eigen::Map<Eigen::VectorXd>(a.data(), n * n);
    }
    return out;
}

// Lower-triangular factors with a positive diagonal [n*n, B].
static Md lower_batch(int n, int B, Rng & rng) {
    Md out = Md::Zero(n * n, B);
    for (int j = 0; j < B; j++)
        for (int c = 0; c < n; c++)
            for (int r = c; r < n; r++) out(c * n + r, j) = r == c ? 1.0 + std::abs(rng.normal()) : 0.5 * rng.normal();
    return out;
}

// Compares the tape's gradient of loss = sum(f(inputs) .* W) (W random, fixed) with central
// differences. Inputs are Params so their grads are accumulated. The tolerance is robust near
// zero: |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
static void grad_check(const char * name, std::vector<Md> inputs, const Fn & f, double atol = 1e-6, double rtol = 1e-5,
                       double h = 1e-6) {
    Params<double> ps;
    for (size_t i = 0; i < inputs.size(); i++) ps.add("x" + std::to_string(i), (int)inputs[i].rows(), (int)inputs[i].cols()).value = inputs[i];
    Tape<double> t;
    Md W;
    auto eval = [&](bool do_backward) {
        t.reset();
        std::vector<Var> vs;
        for (auto & p : ps.list) vs.push_back(t.param(*p));
        Var out = f(t, vs);
        if (W.size() == 0) {
            Rng rng(99);
            W = randn((int)t.value(out).rows(), (int)t.value(out).cols(), rng);
        }
        Var loss = t.sum(t.mul(out, t.constant(W)));
        if (do_backward) {
            ps.zero_grad();
            t.backward(loss);
        }
        return t.scalar(loss);
    };
    eval(true);
    REQUIRE(t.error().empty());
    std::vector<Md> analytic;
    for (auto & p : ps.list) analytic.push_back(p->grad);
    double max_err = 0;
    int bad = 0;
    for (size_t k = 0; k < ps.list.size(); k++) {
        Md & x = ps.list[k]->value;
        for (Eigen::Index i = 0; i < x.size(); i++) {
            const double x0 = x.data()[i];
            x.data()[i] = x0 + h;
            const double fp = eval(false);
            x.data()[i] = x0 - h;
            const double fm = eval(false);
            x.data()[i] = x0;
            const double num = (fp - fm) / (2 * h);
            const double ana = analytic[k].data()[i];
            const double err = std::abs(ana - num);
            max_err = std::max(max_err, err);
            if (err > atol + rtol * std::max(std::abs(ana), std::abs(num))) {
                if (bad < 5) std::printf("%s: input %zu entry %ld: analytic %.10g numeric %.10g\n", name, k, (long)i, ana, num);
                bad++;
            }
        }
    }
    INFO(std::string(name) << ": " << bad << " mismatches, max abs error " << max_err);
    CHECK(bad == 0);
}

TEST_CASE("dense ops: gradients match central differences") {
    Rng rng(1);
    Md A = randn(3, 4, rng), B = randn(4, 5, rng), Bt = randn(5, 4, rng), At = randn(4, 3, rng);
    Md Xl = randn(4, 6, rng), Wl = randn(3, 4, rng), bl = randn(3, 1, rng);
    for (Activation act : {Activation::Relu, Activation::Tanh, Activation::None})
        grad_check("linear", {Xl, Wl, bl}, [act](Tape<double> & t, const std::vector<Var> & v) { return t.linear(v[0], v[1], v[2], act); });
    grad_check("matmul", {A, B}, [](Tape<double> & t, const std::vector<Var> & v) { return t.matmul(v[0], v[1]); });
    grad_check("matmul^T.", {At, B}, [](Tape<double> & t, const std::vector<Var> & v) { return t.matmul(v[0], v[1], true, false); });
    grad_check("matmul.^T", {A, Bt}, [](Tape<double> & t, const std::vector<Var> & v) { return t.matmul(v[0], v[1], false, true); });
    grad_check("matmul^T^T", {At, Bt}, [](Tape<double> & t, const std::vector<Var> & v) { return t.matmul(v[0], v[1], true, true); });

    Md X = randn(3, 6, rng), Y = randn(3, 6, rng), col = randn(3, 1, rng), row = randn(1, 6, rng), sc = randn(1, 1, rng);
    for (const Md & other : {Y, col, row, sc}) {
        grad_check("add", {X, other}, [](Tape<double> & t, const std::vector<Var> & v) { return t.add(v[0], v[1]); });
        grad_check("add (broadcast first)", {other, X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.add(v[0], v[1]); });
        grad_check("sub", {X, other}, [](Tape<double> & t, const std::vector<Var> & v) { return t.sub(v[0], v[1]); });
        grad_check("sub (broadcast first)", {other, X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.sub(v[0], v[1]); });
        grad_check("mul", {X, other}, [](Tape<double> & t, const std::vector<Var> & v) { return t.mul(v[0], v[1]); });
        grad_check("mul (broadcast first)", {other, X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.mul(v[0], v[1]); });
    }
    grad_check("scale", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.scale(v[0], -1.7); });
    grad_check("add_scalar", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.add_scalar(v[0], 0.3); });

    // ReLU: keep inputs away from the kink at 0
    Md Xr = X;
    for (Eigen::Index i = 0; i < Xr.size(); i++)
        if (std::abs(Xr.data()[i]) < 0.05) Xr.data()[i] = 0.5;
    grad_check("relu", {Xr}, [](Tape<double> & t, const std::vector<Var> & v) { return t.relu(v[0]); });
    grad_check("tanh", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.tanh(v[0]); });
    grad_check("sigmoid", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.sigmoid(v[0]); });
    grad_check("softplus", {X * 5.0}, [](Tape<double> & t, const std::vector<Var> & v) { return t.softplus(v[0]); });
    grad_check("exp", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.exp(v[0]); });
    Md Xp = (X.array().abs() + 0.2).matrix();
    grad_check("log", {Xp}, [](Tape<double> & t, const std::vector<Var> & v) { return t.log(v[0]); });
    grad_check("square", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.square(v[0]); });
    grad_check("softmax_rows", {X * 2.0}, [](Tape<double> & t, const std::vector<Var> & v) { return t.softmax_rows(v[0]); });
    grad_check("sum", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.sum(v[0]); });
    grad_check("sum_rows", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.sum_rows(v[0]); });
    grad_check("sum_cols", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.sum_cols(v[0]); });
    grad_check("mean", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.mean(v[0]); });
    grad_check("slice", {X}, [](Tape<double> & t, const std::vector<Var> & v) { return t.slice(v[0], 1, 2, 2, 3); });
    grad_check("concat_rows", {X, row, Y}, [](Tape<double> & t, const std::vector<Var> & v) { return t.concat_rows({v[0], v[1], v[2], v[0]}); });
    grad_check("concat_cols", {X, col, Y}, [](Tape<double> & t, const std::vector<Var> & v) { return t.concat_cols({v[0], v[1], v[2]}); });
}

TEST_CASE("dense ops: forward values") {
    Tape<double> t;
    Md a(2, 3);
    a << 1, -2, 3, 0.5, 0, -1;
    Var x = t.constant(a);
    CHECK(t.value(t.relu(x))(0, 1) == 0.0);
    CHECK(t.value(t.sum(x))(0, 0) == doctest::Approx(1.5));
    Md sm = t.value(t.softmax_rows(x));
    CHECK(sm.colwise().sum().isApprox(Eigen::RowVectorXd::Ones(3)));
    CHECK(t.value(t.softplus(t.constant(Md::Constant(1, 1, 800.0))))(0, 0) == doctest::Approx(800.0)); // no overflow
    CHECK(t.value(t.softplus(t.constant(Md::Constant(1, 1, -800.0))))(0, 0) >= 0.0);
}

TEST_CASE("batched small-matrix ops: gradients match central differences") {
    Rng rng(2);
    const int B = 4;
    Md A = randn(3 * 2, B, rng), Bm = randn(2 * 4, B, rng), A1 = randn(3 * 2, 1, rng);
    Md At = randn(2 * 3, B, rng), Bt = randn(4 * 2, B, rng);
    grad_check("bmm", {A, Bm}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bmm(t.as_batch(v[0], 3, 2), t.as_batch(v[1], 2, 4)); });
    grad_check("bmm^T.", {At, Bm}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bmm(t.as_batch(v[0], 2, 3), t.as_batch(v[1], 2, 4), true, false); });
    grad_check("bmm.^T", {A, Bt}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bmm(t.as_batch(v[0], 3, 2), t.as_batch(v[1], 4, 2), false, true); });
    grad_check("bmm^T^T", {At, Bt}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bmm(t.as_batch(v[0], 2, 3), t.as_batch(v[1], 4, 2), true, true); });
    grad_check("bmm (broadcast first)", {A1, Bm}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bmm(t.as_batch(v[0], 3, 2), t.as_batch(v[1], 2, 4)); });
    grad_check("bmm (param_batch)", {A1, Bm}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bmm(t.as_batch(v[1], 2, 4), t.as_batch(v[0], 3, 2), true, true); });
    grad_check("btranspose", {A}, [](Tape<double> & t, const std::vector<Var> & v) { return t.btranspose(t.as_batch(v[0], 3, 2)); });
    grad_check("bdiag", {randn(3, B, rng)}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bdiag(v[0]); });
    grad_check("bsymmetrize", {randn(9, B, rng)}, [](Tape<double> & t, const std::vector<Var> & v) { return t.bsymmetrize(t.as_batch(v[0], 3, 3)); });

    // Cholesky: the input is built symmetric (S = M M^T + 3 I) so that the symmetric gradient is the true one.
    grad_check("bcholesky", {randn(9, B, rng)}, [](Tape<double> & t, const std::vector<Var> & v) {
        Var M = t.as_batch(v[0], 3, 3);
        Var S = t.add(t.bmm(M, M, false, true), t.constant_batch(Md::Identity(3, 3).reshaped(9, 1) * 3.0, 3, 3));
        return t.bcholesky(S);
    });
    grad_check("bcholesky 5x5", {randn(25, 2, rng)}, [](Tape<double> & t, const std::vector<Var> & v) {
        Var M = t.as_batch(v[0], 5, 5);
        Var S = t.add(t.bmm(M, M, false, true), t.constant_batch(Md::Identity(5, 5).reshaped(25, 1), 5, 5));
        return t.bcholesky(S);
    });
    Md L = lower_batch(3, B, rng), X = randn(3 * 2, B, rng);
    auto tril = [](Tape<double> & t, Var L) { // keep the gradient on the lower triangle only
        Md mask = Md::Zero(9, 1);
        for (int c = 0; c < 3; c++) for (int r = c; r < 3; r++) mask(c * 3 + r, 0) = 1;
        return t.as_batch(t.mul(L, t.constant(mask)), 3, 3);
    };
    grad_check("btrisolve", {L, X}, [&](Tape<double> & t, const std::vector<Var> & v) { return t.btrisolve(tril(t, v[0]), t.as_batch(v[1], 3, 2)); });
    grad_check("btrisolve^T", {L, X}, [&](Tape<double> & t, const std::vector<Var> & v) { return t.btrisolve(tril(t, v[0]), t.as_batch(v[1], 3, 2), true); });
    grad_check("bchol_logdet", {L}, [&](Tape<double> & t, const std::vector<Var> & v) { return t.bchol_logdet(tril(t, v[0])); });
}

TEST_CASE("fused log-densities: gradients match central differences") {
    Rng rng(3);
    const int B = 5;
    Md logits = randn(7, B, rng, 3.0);
    Md x(7, B);
    for (Eigen::Index i = 0; i < x.size(); i++) x.data()[i] = rng.uniform();
    grad_check("bernoulli_logits", {logits}, [&](Tape<double> & t, const std::vector<Var> & v) { return t.bernoulli_logits(v[0], t.constant(x)); });
    Md z = randn(3, B, rng), mu = randn(3, B, rng), lv = randn(3, B, rng, 0.5), mu1 = randn(3, 1, rng), lv1 = randn(3, 1, rng);
    grad_check("gauss_diag_logpdf", {z, mu, lv}, [](Tape<double> & t, const std::vector<Var> & v) { return t.gauss_diag_logpdf(v[0], v[1], v[2]); });
    grad_check("gauss_diag_logpdf (broadcast)", {z, mu1, lv1}, [](Tape<double> & t, const std::vector<Var> & v) { return t.gauss_diag_logpdf(v[0], v[1], v[2]); });
    Md L = lower_batch(3, B, rng), L1 = lower_batch(3, 1, rng);
    auto tril = [](Tape<double> & t, Var L) {
        Md mask = Md::Zero(9, 1);
        for (int c = 0; c < 3; c++) for (int r = c; r < 3; r++) mask(c * 3 + r, 0) = 1;
        return t.as_batch(t.mul(L, t.constant(mask)), 3, 3);
    };
    grad_check("gauss_chol_logpdf", {z, mu, L}, [&](Tape<double> & t, const std::vector<Var> & v) { return t.gauss_chol_logpdf(v[0], v[1], tril(t, v[2])); });
    grad_check("gauss_chol_logpdf (broadcast)", {z, mu1, L1}, [&](Tape<double> & t, const std::vector<Var> & v) { return t.gauss_chol_logpdf(v[0], v[1], tril(t, v[2])); });
}

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

TEST_CASE("batched ops agree with a per-sample loop of plain Eigen") {
    Rng rng(4);
    const int B = 6, n = 4;
    Tape<double> t;
    Md A = randn(n * 3, B, rng), Bm = randn(3 * 2, B, rng), S = spd_batch(n, B, rng), X = randn(n * 2, B, rng);
    Var a = t.constant_batch(A, n, 3), b = t.constant_batch(Bm, 3, 2), s = t.constant_batch(S, n, n), x = t.constant_batch(X, n, 2);
    Var ab = t.bmm(a, b), L = t.bcholesky(s), y = t.btrisolve(L, x), yt = t.btrisolve(L, x, true), ld = t.bchol_logdet(L);
    Md z = randn(n, B, rng), mu = randn(n, B, rng);
    Var lp = t.gauss_chol_logpdf(t.constant(z), t.constant(mu), L);
    REQUIRE(t.error().empty());
    for (int j = 0; j < B; j++) {
        Md Aj = A.col(j).reshaped(n, 3), Bj = Bm.col(j).reshaped(3, 2), Sj = S.col(j).reshaped(n, n), Xj = X.col(j).reshaped(n, 2);
        CHECK((t.value(ab).col(j).reshaped(n, 2) - Aj * Bj).norm() < 1e-12);
        Eigen::LLT<Md> llt(Sj);
        Md Lj = llt.matrixL();
        CHECK((t.value(L).col(j).reshaped(n, n) - Lj).norm() < 1e-12);
        CHECK((t.value(y).col(j).reshaped(n, 2) - Lj.inverse() * Xj).norm() < 1e-10);
        CHECK((t.value(yt).col(j).reshaped(n, 2) - Lj.transpose().inverse() * Xj).norm() < 1e-10);
        CHECK(std::abs(t.value(ld)(0, j) - std::log(Sj.determinant())) < 1e-10);
        Eigen::VectorXd r = z.col(j) - mu.col(j);
        const double dense = -0.5 * (n * std::log(2 * M_PI) + std::log(Sj.determinant()) + r.dot(Sj.inverse() * r));
        CHECK(std::abs(t.value(lp)(0, j) - dense) < 1e-10);
    }
}

TEST_CASE("bcholesky reports a matrix that is not positive definite") {
    Tape<float> t;
    Mat<float> S(4, 2);
    S << 1, 0, 0, 1, /* col 2: */ 1, 2, 2, 1; // second is indefinite
    S.resize(4, 2);
    S.col(0) << 1, 0, 0, 1;
    S.col(1) << 1, 2, 2, 1;
    Var L = t.bcholesky(t.constant_batch(S, 2, 2));
    CHECK(t.error().find("not positive definite") != std::string::npos);
    CHECK(std::isnan(t.value(L)(0, 1)));
    CHECK(t.value(L).col(0).allFinite());
}

TEST_CASE("a second step with the same shapes reuses the tape's buffers") {
    Params<float> ps;
    Rng rng(5);
    MLP<float> mlp = make_mlp(ps, "mlp", {8, 16, 4}, Activation::Relu, rng);
    Tape<float> t;
    Mat<float> x = Mat<float>::Random(8, 32);
    std::vector<const float *> first;
    for (int step = 0; step < 2; step++) {
        t.reset();
        Var y = mlp.forward(t, t.constant(x));
        Var loss = t.mean(t.square(y));
        ps.zero_grad();
        t.backward(loss);
        std::vector<const float *> ptrs;
        for (int i = 0; i < t.size(); i++) ptrs.push_back(t.value(Var{i}).data());
        if (step == 0) first = ptrs;
        else CHECK(ptrs == first);
    }
}

TEST_CASE("MLP layer gradients, Adam and SGD") {
    Rng rng(6);
    Params<double> ps;
    MLP<double> mlp = make_mlp(ps, "enc", {5, 7, 3}, Activation::Tanh, rng);
    CHECK(ps.list.size() == 4);
    CHECK(ps.find("enc.1.W")->value.rows() == 3);
    CHECK(ps.numel() == 5 * 7 + 7 + 7 * 3 + 3);
    Md x = randn(5, 4, rng);
    std::vector<Md> init;
    for (auto & p : ps.list) init.push_back(p->value);
    grad_check("mlp", init, [&](Tape<double> & t, const std::vector<Var> & v) {
        Var h = t.tanh(t.add(t.matmul(v[0], t.constant(x)), v[1]));
        return t.add(t.matmul(v[2], h), v[3]);
    });

    // Adam's first step moves each parameter by lr against the sign of its gradient.
    Adam<double> opt;
    opt.cfg.lr = 0.01;
    Tape<double> t;
    Var loss = t.sum(t.square(mlp.forward(t, t.constant(x))));
    ps.zero_grad();
    t.backward(loss);
    Md g = ps.list[0]->grad, w0 = ps.list[0]->value;
    opt.update(ps);
    for (Eigen::Index i = 0; i < g.size(); i++)
        if (std::abs(g.data()[i]) > 1e-6) CHECK(w0.data()[i] - ps.list[0]->value.data()[i] == doctest::Approx(0.01 * (g.data()[i] > 0 ? 1 : -1)).epsilon(1e-4));

    // Clipping: a huge gradient is scaled to the clip norm (SGD shows it directly).
    for (auto & p : ps.list) p->grad.setConstant(1e3);
    Md before = ps.list[0]->value;
    const double norm = sgd_update(ps, 1.0, 1.0);
    CHECK(norm > 1.0);
    CHECK((before - ps.list[0]->value).norm() <= 1.0 + 1e-12); // the whole step has norm 1

    // A non-finite gradient is rejected without touching parameters or moments.
    ps.list[1]->grad(0, 0) = std::numeric_limits<double>::quiet_NaN();
    Md keep = ps.list[0]->value;
    Md m_keep = opt.m[0];
    CHECK(!std::isfinite(opt.update(ps)));
    CHECK(ps.list[0]->value == keep);
    CHECK(opt.m[0] == m_keep);
    CHECK(opt.step == 1);
}

TEST_CASE("parameters and Adam state round-trip through safetensors; bad tensors are refused") {
    Rng rng(7);
    Params<float> ps;
    make_mlp(ps, "dec", {2, 4, 3}, Activation::Relu, rng);
    Adam<float> opt;
    for (auto & p : ps.list) p->grad.setConstant(0.5f);
    opt.update(ps);
    SafeTensors st;
    params_to_safetensors(ps, st);
    adam_to_safetensors(opt, ps, st);
    std::vector<uint8_t> bytes = safetensors_serialize(st);
    SafeTensors back;
    std::string err;
    REQUIRE(safetensors_parse(bytes.data(), bytes.size(), back, err));

    Params<float> ps2;
    Rng rng2(8);
    make_mlp(ps2, "dec", {2, 4, 3}, Activation::Relu, rng2);
    Adam<float> opt2;
    REQUIRE(params_from_safetensors(back, ps2, err));
    REQUIRE(adam_from_safetensors(back, ps2, opt2, err));
    for (size_t i = 0; i < ps.list.size(); i++) {
        CHECK(ps.list[i]->value == ps2.list[i]->value);
        CHECK(opt.m[i] == opt2.m[i]);
        CHECK(opt.v[i] == opt2.v[i]);
    }
    CHECK(opt2.step == 1);

    // wrong shape: refused, parameters untouched
    Params<float> ps3;
    Rng rng3(9);
    make_mlp(ps3, "dec", {2, 5, 3}, Activation::Relu, rng3);
    Mat<float> w = ps3.list[0]->value;
    CHECK(!params_from_safetensors(back, ps3, err));
    CHECK(err.find("dec.0.W") != std::string::npos);
    CHECK(ps3.list[0]->value == w);
    // missing tensor
    back.tensors.erase("dec.1.b");
    CHECK(!params_from_safetensors(back, ps2, err));
    CHECK(err.find("dec.1.b") != std::string::npos);
    // NaN values
    SafeTensors nan_st = st;
    float nanv = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(nan_st.tensors["dec.0.W"].data.data(), &nanv, 4);
    CHECK(!params_from_safetensors(nan_st, ps2, err));
    CHECK(err.find("NaN") != std::string::npos);
}

TEST_CASE("an MLP autoencoder learns rendered pendulum frames (reconstruction error falls 10x)") {
    const int W = 16, D = W * W, N = 300;
    Mat<float> X(D, N);
    Rng rng(10);
    for (int n = 0; n < N; n++) render_pendulum(rng.uniform(-M_PI, M_PI), W, X.col(n).data());
    // baseline: predicting the mean image
    Eigen::VectorXf mean_img = X.rowwise().mean();
    const double mse_mean = (X.colwise() - mean_img).squaredNorm() / X.size();

    Params<float> ps;
    MLP<float> enc = make_mlp(ps, "enc", {D, 128, 2}, Activation::Relu, rng);
    MLP<float> dec = make_mlp(ps, "dec", {2, 128, D}, Activation::Relu, rng);
    Adam<float> opt;
    opt.cfg.lr = 3e-3;
    Tape<float> t;
    auto mse = [&](bool train) {
        t.reset();
        Var x = t.constant(X);
        Var logits = dec.forward(t, enc.forward(t, x));
        Var loss = t.scale(t.sum(t.bernoulli_logits(logits, x)), -1.0f / N);
        if (train) {
            ps.zero_grad();
            t.backward(loss);
            opt.update(ps);
        }
        Mat<float> xhat = t.value(logits).unaryExpr([](float l) { return 1.0f / (1.0f + std::exp(-l)); });
        return (xhat - X).squaredNorm() / X.size();
    };
    const double mse0 = mse(false);
    for (int step = 0; step < 400; step++) mse(true);
    const double mse1 = mse(false);
    std::printf("autoencoder: MSE %.5f -> %.5f (mean-image baseline %.5f)\n", mse0, mse1, mse_mean);
    CHECK(mse1 < mse0 / 10);
    CHECK(mse1 < mse_mean / 4); // it has learned the angle, not just the average frame
}
