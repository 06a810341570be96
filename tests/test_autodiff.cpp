// Tests for autodiff.h: every op's gradient against central finite differences in double
// precision, forward values, batched ops against a per-sample loop of plain Eigen, buffer reuse.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

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
