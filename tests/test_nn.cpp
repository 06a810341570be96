// Tests for nn.h: MLP layer gradients, Adam and SGD, parameters and optimiser state through
// safetensors, and an MLP autoencoder on rendered pendulum frames.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

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
