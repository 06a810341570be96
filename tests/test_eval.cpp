// Tests for eval.h: the r^2 probes and forecast metrics on hand-made cases.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

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

TEST_CASE("the quality bar, a run's generated data, the model file and the latent plane") {
    // the bar: each check against its limit, a NaN fails
    EvalMetrics e;
    e.targets = {"cos", "sin", "omega"};
    e.r2 = {0.99, 0.99, 0.95};
    e.r2_knn = {0.96, 0.94, 0.99};
    e.horizons = {1, 5, 10, 20, 32};
    e.forecast_angle_err = {0.01, 0.05, 0.2, 0.4, NAN};
    e.baseline_angle_err = {0.1, 0.3, 0.6, 1.0, 1.2};
    const std::vector<BarCheck> bar = quality_bar(e, "pendulum");
    REQUIRE(bar.size() == 5);
    CHECK(bar[0].name == "r2_knn_cos");
    CHECK(bar[0].met);
    CHECK_FALSE(bar[1].met); // k-NN sin 0.94 < 0.95
    CHECK(bar[2].met);
    CHECK(bar[3].met);       // 0.2 <= 0.3 at 10 steps
    CHECK_FALSE(bar[4].met); // NaN at 32
    CHECK(quality_bar(e, "no such world").empty());
    CHECK_FALSE(bar_met(bar));                      // one check missed
    CHECK_FALSE(bar_met(quality_bar(e, "no such world"))); // no bar is not a bar met
    std::vector<BarCheck> all = bar;
    for (BarCheck & b : all) b.met = true;
    CHECK(bar_met(all));

    // generate_run_data: the config's sizes and seeds; the held-out set is long enough to forecast
    EkvaeConfig c = tiny_train_config();
    c.train_sequences = 6;
    c.test_sequences = 4;
    Dataset train, held;
    std::string err;
    REQUIRE(generate_run_data(c, &train, &held, err));
    CHECK(train.N == 6);
    CHECK(train.T == c.sequence_steps);
    CHECK(held.N == 4);
    CHECK(held.T == kForecastSequenceSteps);
    CHECK(train.W == 8);
    CHECK(train.images == tiny_data(6, c.sequence_steps, 8, (uint64_t)c.train_seed).images);
    c.image_size = 0;
    CHECK_FALSE(generate_run_data(c, &train, nullptr, err));
    CHECK_FALSE(err.empty());

    // model_file_bytes: a file the loader reads back, with its read-out fitted
    c = tiny_train_config();
    Ekvae<float> m;
    ekvae_init(m, c, 1);
    const std::vector<uint8_t> bytes = model_file_bytes(m, train, 6);
    Ekvae<float> back;
    REQUIRE(ekvae_load(bytes.data(), bytes.size(), back, err));
    CHECK(back.has_readout);
    CHECK(back.readout_W.isApprox(m.readout_W));

    // latent_plane: one point per held-out frame, centred, on axes of decreasing spread
    Eigen::MatrixXd P, S;
    latent_plane(m, held, 3, P, S);
    REQUIRE(P.rows() == 3 * held.T);
    REQUIRE(P.cols() == 2);
    CHECK(S.rows() == P.rows());
    CHECK(S.cols() == held.S);
    CHECK(std::abs(P.col(0).mean()) < 1e-9);
    CHECK(P.col(0).squaredNorm() >= P.col(1).squaredNorm());
    CHECK(S(held.T + 2, 0) == doctest::Approx(held.state(1, 2, 0)));
}
