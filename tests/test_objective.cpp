// Tests for objective.h: the objective's value against an independent dense computation, the
// ELBO identity, the whole objective's gradient against central differences, lambda's rules.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

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

TEST_CASE("lambda_warmup skip: the authors' rule from the first step, loss D + R / lambda, lambda rising while D > D0") {
    EkvaeConfig c;
    c.lambda_rule = "authors";
    c.lambda_warmup = "skip";
    c.D0 = 10;
    std::string err;
    CHECK(config_validate(c, err));
    LambdaState l;
    l.init(c);
    CHECK(l.warm);
    LossWeights w = l.weights(c);
    CHECK(w.rate == 1.0); // lambda_init 1: the ELBO
    CHECK(w.distortion == 1.0);
    for (int i = 1; i <= 200; i++) l.update(c, 40.0, i); // far above D0: two updates, each x1.05
    CHECK(l.lambda == doctest::Approx(1.05 * 1.05));
    w = l.weights(c);
    CHECK(w.rate == doctest::Approx(1 / (1.05 * 1.05)));
    CHECK(w.distortion == 1.0);
    c.lambda_rule = "ekvae"; // under the ekvae rule skip is the same as none: no warm-up
    l.init(c);
    CHECK(l.warm);
    c.lambda_warmup = "later";
    CHECK(!config_validate(c, err));
    CHECK(err.find("'skip'") != std::string::npos);
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
