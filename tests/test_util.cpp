// test_util.cpp: the shared test helpers of test_util.h, compiled once (as inline functions in
// the header they made every test file instantiate all their Eigen expressions).
#include "test_util.h"

namespace ekvae_test {

uint64_t fnv1a64(const std::vector<uint8_t> & bytes) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint8_t b : bytes) {
        h ^= b;
        h *= 0x100000001b3ULL;
    }
    return h;
}

Md randn(int r, int c, Rng & rng, double scale) {
    Md m(r, c);
    for (Eigen::Index i = 0; i < m.size(); i++) m.data()[i] = scale * rng.normal();
    return m;
}

Md spd_batch(int n, int B, Rng & rng) {
    Md out(n * n, B);
    for (int j = 0; j < B; j++) {
        Md m = randn(n, n, rng);
        Md a = m * m.transpose() + n * Md::Identity(n, n);
        out.col(j) = Eigen::Map<Eigen::VectorXd>(a.data(), n * n);
    }
    return out;
}

Md lower_batch(int n, int B, Rng & rng) {
    Md out = Md::Zero(n * n, B);
    for (int j = 0; j < B; j++)
        for (int c = 0; c < n; c++)
            for (int r = c; r < n; r++) out(c * n + r, j) = r == c ? 1.0 + std::abs(rng.normal()) : 0.5 * rng.normal();
    return out;
}

void grad_check(const char * name, std::vector<Md> inputs, const Fn & f, double atol, double rtol,
                       double h) {
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

EkvaeConfig tiny_train_config() {
    EkvaeConfig c;
    c.image_size = 8; c.enc_hidden = {32}; c.dec_hidden = {32}; c.alpha_hidden = {16}; c.K = 4;
    c.batch = 4; c.window = 6; c.sequence_steps = 12; c.threads = 2; c.seed = 3;
    c.restarts = 1; c.lr_decay_end = 0; // a plain run (the schedule has its own tests)
    return c;
}

Dataset tiny_data(int N, int T, int W, uint64_t seed) {
    DatasetConfig dc;
    dc.sequences = N; dc.steps = T; dc.image_size = W; dc.seed = seed;
    return generate_dataset(dc);
}

} // namespace ekvae_test
