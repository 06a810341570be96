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
