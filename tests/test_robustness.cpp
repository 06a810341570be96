// Robustness of the core (ekvae.h, safetensors.h) under numerical trouble and hostile limits:
// the extended Kalman filter driven into near-singular covariances, and files whose sizes or
// configs ask for huge allocations. (Poisoned batches and absurd learning rates are covered by
// tests/test_ekvae.cpp "a non-finite step is rejected ..." and tests/cli_train_test.sh
// "diverging run"; hostile bytes by the fuzz corpus, tests/fuzz/.)
#include "ekvae.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace ekvae;

namespace {

// A small model whose noise floors sit at their minimum (1e-8) and whose learned variances are
// ~0 on top of them: Q and R are ~1e-8, so every covariance the filter forms is close to
// singular. P_1 is ~1.5e-8 too, or p1 when given (1e4: a vague prior, so P's eigenvalues span
// 12 orders of magnitude once one direction has been observed). near_duplicate_H: the two
// rows of H differ by 1e-6 (relative), so S = H P H^T + R is singular up to R.
template <class T> void make_stiff_model(Ekvae<T> & m, bool near_duplicate_H, double jitter, double p1 = 0) {
    EkvaeConfig c;
    c.image_size = 4; c.n_a = 2; c.n_z = 3; c.K = 2;
    c.enc_hidden = {4}; c.dec_hidden = {4}; c.alpha_hidden = {4};
    c.q_min = 1e-8; c.r_min = 1e-8; c.jitter = jitter;
    ekvae_init(m, c, 1);
    m.r_raw->value.setConstant(T(-30));  // softplus(-30) ~ 1e-13
    m.q_raw->value.setConstant(T(-30));
    m.p1_raw->value.setConstant(T(p1 > 0 ? p1 : -18)); // softplus: P_1 = p1, or ~1.5e-8
    m.A->value.setZero();                // F = I: nothing forgets, nothing explodes
    Rng rng(4);
    for (Eigen::Index i = 0; i < m.H->value.size(); i++) m.H->value(i) = T(rng.normal());
    if (near_duplicate_H)
        for (int j = 0; j < c.n_z; j++) m.H->value(j * 2 + 1) = m.H->value(j * 2 + 0) * T(1 + 1e-6); // column-major n_a x n_z
}

// Observations that jump around far more than the model's noise allows.
template <class T> void wild_observations(int na, int nu, int B, int T_, Mat<T> & a, Mat<T> & u) {
    Rng rng(8);
    a.resize(na, (Eigen::Index)B * T_);
    u.resize(nu, (Eigen::Index)B * T_);
    for (Eigen::Index i = 0; i < a.size(); i++) a(i) = T(10 * rng.normal());
    for (Eigen::Index i = 0; i < u.size(); i++) u(i) = T(rng.uniform(-2, 2));
}

// Largest |P - P^T| and the smallest eigenvalue relative to the largest, over a batch of
// n x n matrices stored column-wise.
void symmetry_and_psd(const Eigen::MatrixXd & P, int n, double & asym, double & min_rel_eig) {
    asym = 0;
    min_rel_eig = 1;
    for (Eigen::Index b = 0; b < P.cols(); b++) {
        Eigen::MatrixXd M = Eigen::Map<const Eigen::MatrixXd>(P.col(b).data(), n, n);
        asym = std::max(asym, (M - M.transpose()).cwiseAbs().maxCoeff());
        Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(0.5 * (M + M.transpose()));
        const double top = es.eigenvalues().cwiseAbs().maxCoeff();
        if (top > 0) min_rel_eig = std::min(min_rel_eig, es.eigenvalues().minCoeff() / top);
    }
}

// Filter + smoother + backward sample over a long batch; returns whether every output is finite.
template <class T> bool run_filter(Ekvae<T> & m, int B, int T_, Tape<T> & t, double & worst_asym, double & worst_eig) {
    Mat<T> a, u;
    wild_observations<T>(m.cfg.n_a, m.cfg.n_u, B, T_, a, u);
    KalmanResult<T> kr;
    kalman_filter(t, m, t.constant(a), t.constant(u), B, T_, kr);
    rts_smoother(t, m, kr, true);
    Mat<T> eps(m.cfg.n_z, (Eigen::Index)B * T_);
    Rng rng(2);
    for (Eigen::Index i = 0; i < eps.size(); i++) eps(i) = T(rng.normal());
    Var log_post;
    Var z = backward_sample(t, m, kr, eps, log_post);
    bool finite = t.value(z).allFinite() && t.value(log_post).allFinite();
    worst_asym = 0;
    worst_eig = 1;
    for (int k = 0; k < T_; k++) {
        finite = finite && t.value(kr.m[k]).allFinite() && t.value(kr.P[k]).allFinite() && t.value(kr.ms[k]).allFinite() &&
                 t.value(kr.Ps[k]).allFinite();
        if (!finite) break;
        double asym, eig;
        symmetry_and_psd(t.value(kr.P[k]).template cast<double>(), m.cfg.n_z, asym, eig);
        worst_asym = std::max(worst_asym, asym);
        worst_eig = std::min(worst_eig, eig);
    }
    return finite;
}

} // namespace

TEST_CASE("the filter stays finite, symmetric and PSD through 500 steps with noise floors of 1e-8") {
    // double: the Joseph-form update keeps every filtered covariance symmetric and PSD
    {
        Ekvae<double> m;
        make_stiff_model(m, false, 1e-5);
        Tape<double> t;
        double asym, eig;
        const bool finite = run_filter(m, 4, 500, t, asym, eig);
        INFO("error: '" << t.error() << "', max |P - P^T| = " << asym << ", min eigenvalue / max = " << eig);
        CHECK(t.error().empty());
        CHECK(finite);
        CHECK(asym < 1e-12);
        CHECK(eig > -1e-6);
    }
    // float, as training runs: the same
    {
        Ekvae<float> m;
        make_stiff_model(m, false, 1e-5);
        Tape<float> t;
        double asym, eig;
        const bool finite = run_filter(m, 4, 500, t, asym, eig);
        INFO("error: '" << t.error() << "', max |P - P^T| = " << asym << ", min eigenvalue / max = " << eig);
        CHECK(t.error().empty());
        CHECK(finite);
        CHECK(eig > -1e-3);
    }
}

TEST_CASE("near-duplicate rows of H (S singular up to R = 1e-8): finite, or a reported failure, never a crash") {
    int float_failures = 0;
    for (double jitter : {0.0, 1e-5})
        for (double p1 : {0.0, 1e4}) {
            CAPTURE(jitter);
            CAPTURE(p1);
            {   // double copes with all of them
                Ekvae<double> m;
                make_stiff_model(m, true, jitter, p1);
                Tape<double> t;
                double asym, eig;
                const bool finite = run_filter(m, 3, 300, t, asym, eig);
                INFO("error: '" << t.error() << "', max |P - P^T| = " << asym << ", min eigenvalue / max = " << eig);
                CHECK(finite);
                CHECK(t.error().empty());
                CHECK(eig > -1e-9);
            }
            {   // float cannot factor a covariance with a condition number of ~1e12 (p1 = 1e4):
                // the Cholesky failure is reported through Tape::error() and the values are NaN
                Ekvae<float> m;
                make_stiff_model(m, true, jitter, p1);
                Tape<float> t;
                double asym, eig;
                const bool finite = run_filter(m, 3, 300, t, asym, eig);
                INFO("error: '" << t.error() << "'");
                CHECK((finite || !t.error().empty()));
                if (!finite) {
                    float_failures++;
                    CHECK(t.error().find("not positive definite") != std::string::npos);
                }
            }
        }
    CHECK(float_failures > 0); // the test does reach the failure path
}

TEST_CASE("a training step on a near-singular model is either finite or rejected, never writes NaN") {
    int rejected = 0, accepted = 0;
    for (double p1 : {0.0, 1e4}) {
        Trainer tr;
        EkvaeConfig c;
        c.image_size = 4; c.n_a = 2; c.n_z = 3; c.K = 2;
        c.enc_hidden = {4}; c.dec_hidden = {4}; c.alpha_hidden = {4};
        c.q_min = 1e-8; c.r_min = 1e-8; c.jitter = 1e-5;
        c.batch = 4; c.window = 64; c.sequence_steps = 64; c.threads = 2;
        tr.init(c);
        make_stiff_model(tr.model, true, c.jitter, p1);
        DatasetConfig dc;
        dc.sequences = 8; dc.steps = 64; dc.image_size = 4;
        const Dataset d = generate_dataset(dc);
        Mat<float> X, U;
        for (int i = 0; i < 5; i++) {
            sample_batch(d, c.batch, c.window, tr.rng, X, U);
            std::vector<Mat<float>> before;
            for (auto & p : tr.model.ps.list) before.push_back(p->value);
            const StepStats st = tr.train_step(X, U);
            CHECK(params_finite(tr.model.ps));
            if (st.ok) {
                accepted++;
                CHECK(std::isfinite(st.loss));
            } else {
                rejected++;
                INFO("error: " << st.error);
                CHECK(st.error.find("not positive definite") != std::string::npos); // says why
                for (size_t k = 0; k < before.size(); k++) CHECK(tr.model.ps.list[k]->value == before[k]);
            }
        }
        CHECK(tr.rejected == (p1 > 0 ? rejected : 0));
    }
    INFO(accepted << " steps accepted, " << rejected << " rejected");
    CHECK(accepted >= 5); // the tiny-floor model trains
    CHECK(rejected >= 1); // the ill-conditioned one is refused, step by step
}

TEST_CASE("forecasting far ahead with an unstable transition overflows to Inf without crashing") {
    Ekvae<float> m;
    make_stiff_model(m, false, 1e-5);
    m.A->value.setConstant(0.5f); // F = I + A: spectral radius > 1, P grows without bound
    Tape<float> t;
    Mat<float> z = Mat<float>::Ones(3, 1), P = Mat<float>::Identity(3, 3).reshaped(9, 1), zs, Ps, img;
    forecast(t, m, z, P, Mat<float>(Mat<float>::Zero(1, 2000)), zs, Ps, &img);
    CHECK(zs.cols() == 2000);
    CHECK(img.cols() == 2000);
    CHECK(!zs.allFinite()); // it did blow up...
    CHECK(zs.col(0).allFinite()); // ...from a finite start
}

// ---- limits: refused before any large allocation ------------------------------------------------

namespace {
std::vector<uint8_t> raw_file(const std::string & header, size_t data_bytes = 0) {
    std::vector<uint8_t> f;
    const uint64_t n = header.size();
    for (int i = 0; i < 8; i++) f.push_back((uint8_t)(n >> (8 * i)));
    f.insert(f.end(), header.begin(), header.end());
    f.resize(f.size() + data_bytes, 0);
    return f;
}

std::string load_error(const std::vector<uint8_t> & f) {
    Ekvae<float> m;
    std::string err;
    CHECK_FALSE(ekvae_load(f.data(), f.size(), m, err));
    return err;
}

// A valid tiny model's tensors with the metadata "config" replaced.
std::vector<uint8_t> model_with_config(const std::string & config_json) {
    EkvaeConfig c;
    c.image_size = 4; c.enc_hidden = {2}; c.dec_hidden = {2}; c.alpha_hidden = {2}; c.K = 1;
    Ekvae<float> m;
    ekvae_init(m, c, 1);
    SafeTensors st;
    ekvae_to_safetensors(m, st);
    st.metadata["config"] = config_json;
    return safetensors_serialize(st);
}
} // namespace

TEST_CASE("a metadata string larger than the header limit is refused from the length field") {
    // 17 MiB of metadata: refused by the 8-byte length before the header is parsed
    std::string big(kMaxSafetensorsHeader + (1 << 20), 'x');
    std::vector<uint8_t> f = raw_file("{\"__metadata__\": {\"k\": \"" + big + "\"}}");
    SafeTensors st;
    std::string err;
    CHECK_FALSE(safetensors_parse(f.data(), f.size(), st, err));
    CHECK(err.find("exceeds the limit") != std::string::npos);
}

TEST_CASE("a model config JSON that is huge or deeply nested inside the metadata string is refused") {
    // 1 MiB of config (a real one is under 1 KB)
    std::string huge = "{\"data\": \"" + std::string(1 << 20, 'a') + "\"}";
    CHECK(load_error(model_with_config(huge)).find("limit") != std::string::npos);
    // nested 30000 deep inside the string, where the header's depth check cannot see it: the
    // parser (iterative in nlohmann 3.11) refuses it as a wrong type, without recursion
    std::string deep = "{\"enc_hidden\": " + std::string(30000, '[') + std::string(30000, ']') + "}";
    const std::string e = load_error(model_with_config(deep));
    CHECK(e.find("enc_hidden") != std::string::npos);
}

TEST_CASE("a model config asking for enormous layers is refused before the model is built") {
    // 16 layers of 4096 on 256 x 256 images would be ~1.1e9 parameters (8.5 GB with gradients);
    // the file holds tensors for a tiny model only, so the loader must refuse it on the
    // tensors' shapes before allocating anything of that size.
    const std::string cfg = "{\"image_size\": 256, \"enc_hidden\": [4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096],"
                            " \"dec_hidden\": [4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096]}";
    const std::string e = load_error(model_with_config(cfg));
    INFO(e);
    CHECK(e.find("enc.0.W") != std::string::npos);
    CHECK(e.find("expected F32 [4096, 65536]") != std::string::npos);
    // same through a checkpoint
    Trainer tr;
    std::string err;
    const std::vector<uint8_t> f = model_with_config(cfg);
    CHECK_FALSE(tr.restore(f.data(), f.size(), err));
    CHECK(err.find("enc.0.W") != std::string::npos);
}

TEST_CASE("a tensor claiming billions of elements is refused from its header entry") {
    // 2^31 x 2^31 F32 claimed (with a matching data_offsets span) by a 16-byte data section
    const std::string h = "{\"images\": {\"dtype\": \"F32\", \"shape\": [1, 1, 2147483648, 2147483648], \"data_offsets\": [0, 18446744073709551612]}}";
    std::vector<uint8_t> f = raw_file(h, 16);
    Dataset d;
    std::string err;
    CHECK_FALSE(dataset_from_safetensors(f.data(), f.size(), d, err));
    CHECK(!err.empty());
    // 4e9 elements that would fit int64, with offsets past the file
    const std::string h2 = "{\"images\": {\"dtype\": \"F32\", \"shape\": [1000, 1000, 64, 64], \"data_offsets\": [0, 16384000000]}}";
    f = raw_file(h2, 16);
    CHECK_FALSE(dataset_from_safetensors(f.data(), f.size(), d, err));
    CHECK(err.find("out of range") != std::string::npos);
}

TEST_CASE("a checkpoint with a corrupt training state is refused") {
    EkvaeConfig c;
    c.image_size = 4; c.enc_hidden = {2}; c.dec_hidden = {2}; c.alpha_hidden = {2}; c.K = 1;
    c.batch = 2; c.window = 2; c.sequence_steps = 4;
    Trainer tr;
    tr.init(c);
    DatasetConfig dc;
    dc.sequences = 2; dc.steps = 4; dc.image_size = 4;
    const Dataset d = generate_dataset(dc);
    Mat<float> X, U;
    sample_batch(d, c.batch, c.window, tr.rng, X, U);
    REQUIRE(tr.train_step(X, U).ok);
    const std::vector<uint8_t> ck = tr.checkpoint();
    SafeTensors st;
    std::string err;
    REQUIRE(safetensors_parse(ck.data(), ck.size(), st, err));
    auto refused = [&](SafeTensors s, const char * needle) {
        const std::vector<uint8_t> b = safetensors_serialize(s);
        Trainer r;
        std::string e;
        const bool ok = r.restore(b.data(), b.size(), e);
        INFO("error: " << e);
        CHECK_FALSE(ok);
        CHECK(e.find(needle) != std::string::npos);
    };
    { // a step count that `step + train_steps` would overflow
        SafeTensors s = st;
        const int64_t v[2] = {std::numeric_limits<int64_t>::max(), 0};
        s.tensors["train.step"] = Tensor::from_i64(v, {2});
        refused(s, "corrupt");
    }
    { // Adam's step counter at the int64 limit (step++ would overflow)
        SafeTensors s = st;
        const int64_t v = std::numeric_limits<int64_t>::max();
        s.tensors["adam.step"] = Tensor::from_i64(&v, {1});
        refused(s, "corrupt");
    }
    { // lambda outside [lambda_min, lambda_max]
        SafeTensors s = st;
        const double l[3] = {-1.0, 0.0, 1.0};
        s.tensors["train.lambda"] = Tensor::from_f64(l, {3});
        refused(s, "corrupt");
    }
    { // negative second moments would make Adam's sqrt(v) NaN on the next step
        SafeTensors s = st;
        Tensor & v = s.tensors["adam.v.H"];
        const float neg = -1.0f;
        std::memcpy(v.data.data(), &neg, 4);
        refused(s, "negative");
    }
    { // an all-zero generator state
        SafeTensors s = st;
        const uint64_t z[4] = {0, 0, 0, 0};
        s.tensors["train.rng"] = Tensor::from_u64(z, {4});
        refused(s, "train.rng");
    }
}

TEST_CASE("a 16 MiB header of tiny JSON values is refused before it is parsed") {
    // a shape of ~8 million zeros: nlohmann would build ~300 MB of values from it
    std::string zeros;
    zeros.reserve(kMaxSafetensorsHeader);
    for (size_t i = 0; i < kMaxSafetensorsHeader / 2 - 100; i++) zeros += i ? ",0" : "0";
    std::vector<uint8_t> f = raw_file("{\"a\": {\"dtype\": \"U8\", \"shape\": [" + zeros + "], \"data_offsets\": [0, 0]}}");
    SafeTensors st;
    std::string err;
    CHECK_FALSE(safetensors_parse(f.data(), f.size(), st, err));
    CHECK(err.find("JSON values") != std::string::npos);
    // a million metadata keys
    std::string keys;
    for (int i = 0; i < 1000000; i++) keys += (i ? ",\"" : "\"") + std::to_string(i) + "\":\"\"";
    f = raw_file("{\"__metadata__\": {" + keys + "}}");
    CHECK_FALSE(safetensors_parse(f.data(), f.size(), st, err));
    CHECK(err.find("JSON values") != std::string::npos);
    // one string of 15 MiB is fine (it is a single value)
    f = raw_file("{\"__metadata__\": {\"k\": \"" + std::string(15 << 20, 'x') + "\"}}");
    CHECK_MESSAGE(safetensors_parse(f.data(), f.size(), st, err), err);
}
