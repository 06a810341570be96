// Tests for pendulum.h: the Pendulum-v1 dynamics, the renderer, and the statistics of its
// datasets.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

TEST_CASE("pendulum_step matches hand-computed Pendulum-v1 steps") {
    PendulumParams p;

    SUBCASE("plain step") {
        // theta = 0.5, omega = 1, u = 1
        // sin(0.5) = 0.479425538604203
        // omega' = 1 + (15 * 0.479425538604203 + 3 * 1) * 0.05 = 1 + 10.191383079063044 * 0.05
        //        = 1.5095691539531524
        // theta' = 0.5 + 1.5095691539531524 * 0.05 = 0.5754784576976576
        PendulumState s{0.5, 1.0};
        PendulumState n = pendulum_step(p, s, 1.0);
        CHECK(n.omega == doctest::Approx(1.5095691539531524).epsilon(1e-14));
        CHECK(n.theta == doctest::Approx(0.5754784576976576).epsilon(1e-14));
    }
    SUBCASE("torque clip at +-2") {
        // theta = 0, omega = 0, u = 10 -> u = 2: omega' = (15 * 0 + 3 * 2) * 0.05 = 0.3,
        // theta' = 0.3 * 0.05 = 0.015
        PendulumState n = pendulum_step(p, PendulumState{0.0, 0.0}, 10.0);
        CHECK(n.omega == doctest::Approx(0.3).epsilon(1e-14));
        CHECK(n.theta == doctest::Approx(0.015).epsilon(1e-14));
        PendulumState m = pendulum_step(p, PendulumState{0.0, 0.0}, -10.0); // u = -2
        CHECK(m.omega == doctest::Approx(-0.3).epsilon(1e-14));
        CHECK(m.theta == doctest::Approx(-0.015).epsilon(1e-14));
    }
    SUBCASE("velocity clip at +-8") {
        // theta = 1, omega = 7.9, u = 5 -> 2:
        // omega = 7.9 + (15 * 0.8414709848078965 + 3 * 2) * 0.05 = 7.9 + 18.622 * 0.05 = 8.831
        // -> clipped to 8; theta' = 1 + 8 * 0.05 = 1.4
        PendulumState n = pendulum_step(p, PendulumState{1.0, 7.9}, 5.0);
        CHECK(n.omega == 8.0);
        CHECK(n.theta == doctest::Approx(1.4).epsilon(1e-14));
        // mirror image: omega -> -8, theta' = -1.4
        PendulumState m = pendulum_step(p, PendulumState{-1.0, -7.9}, -5.0);
        CHECK(m.omega == -8.0);
        CHECK(m.theta == doctest::Approx(-1.4).epsilon(1e-14));
    }
    SUBCASE("angle wraps across +-pi") {
        // theta = 3.1, omega = 8, u = 0: omega = 8 + 15 * sin(3.1) * 0.05 = 8.0312 -> 8
        // theta' = 3.1 + 8 * 0.05 = 3.5 -> 3.5 - 2 pi = -2.7831853071795862
        PendulumState n = pendulum_step(p, PendulumState{3.1, 8.0}, 0.0);
        CHECK(n.omega == 8.0);
        CHECK(n.theta == doctest::Approx(-2.7831853071795862).epsilon(1e-14));
        // theta = -3.1, omega = -8: theta' = -3.5 -> 2.7831853071795862
        PendulumState m = pendulum_step(p, PendulumState{-3.1, -8.0}, 0.0);
        CHECK(m.omega == -8.0);
        CHECK(m.theta == doctest::Approx(2.7831853071795862).epsilon(1e-14));
    }
    SUBCASE("parameters are used") {
        // g = 9.81, l = 2, m = 0.5, dt = 0.1, theta = 0.5, omega = 0, u = 1:
        // 3 g / (2 l) = 7.3575, 3 / (m l^2) = 1.5
        // omega' = (7.3575 * 0.479425538604203 + 1.5) * 0.1 = (3.527373400280424 + 1.5) * 0.1
        //        = 0.5027373400280424
        // theta' = 0.5 + 0.5027373400280424 * 0.1 = 0.5502737340028042
        PendulumParams q;
        q.g = 9.81; q.l = 2.0; q.m = 0.5; q.dt = 0.1;
        PendulumState n = pendulum_step(q, PendulumState{0.5, 0.0}, 1.0);
        CHECK(n.omega == doctest::Approx(0.5027373400280424).epsilon(1e-13));
        CHECK(n.theta == doctest::Approx(0.5502737340028042).epsilon(1e-13));
    }
}

TEST_CASE("renderer: specific pixels for theta = 0 (rod straight up)") {
    // W = 16: c = (8, 8), tip = (8, 1.6), radius 0.75. Column 7 has sub-sample x offsets
    // 7.125 .. 7.875, at 0.875, 0.625, 0.375, 0.125 from the rod x = 8: 3 of 4 within 0.75.
    std::vector<float> img(16 * 16);
    render_pendulum(0.0, 16, img.data());
    auto px = [&](int i, int j) { return img[i * 16 + j]; };
    CHECK(px(5, 7) == 0.75f);   // beside the rod, mid-length: 12 of 16
    CHECK(px(5, 8) == 0.75f);   // symmetric
    CHECK(px(5, 6) == 0.0f);    // x >= 1.125 from the rod
    CHECK(px(5, 9) == 0.0f);
    // tip cap at (8, 1.6): only the sub-sample (7.875, 0.875) of pixel (0, 7) is within 0.75
    // (distance sqrt(0.125^2 + 0.725^2) = 0.7357)
    CHECK(px(0, 7) == 1.0f / 16);
    CHECK(px(1, 7) == 11.0f / 16);
    // below the centre the rod ends: pixel (8, 7) holds 8 of 16 sub-samples of the round cap
    CHECK(px(8, 7) == 0.5f);
    CHECK(px(12, 7) == 0.0f);
    // far corners are dark
    CHECK(px(0, 0) == 0.0f);
    CHECK(px(15, 15) == 0.0f);
    CHECK(px(15, 0) == 0.0f);
    CHECK(px(0, 15) == 0.0f);

    // W = 32: radius 1.5, so the pixels either side of the rod are fully lit
    std::vector<float> big(32 * 32);
    render_pendulum(0.0, 32, big.data());
    CHECK(big[10 * 32 + 15] == 1.0f);
    CHECK(big[10 * 32 + 16] == 1.0f);
    CHECK(big[31 * 32 + 31] == 0.0f);
}

TEST_CASE("renderer: values in [0, 1] and the centroid angle follows theta") {
    for (int W : {16, 32}) {
        std::vector<float> img((size_t)W * W);
        double worst = 0.0;
        for (int k = 0; k < 360; k++) {
            double theta = wrap_angle(k * kPi / 180.0 + 0.01);
            render_pendulum(theta, W, img.data());
            for (float v : img) {
                REQUIRE(v >= 0.0f);
                REQUIRE(v <= 1.0f);
            }
            worst = std::fmax(worst, angle_diff(image_angle(img.data(), W), theta));
        }
        INFO("W = " << W << ", worst centroid angle error = " << worst << " rad");
        CHECK(worst < 0.1);
    }
    std::vector<float> zero(16 * 16, 0.0f);
    CHECK(image_angle(zero.data(), 16) == 0.0);
}

TEST_CASE("PendulumWorld: each key of the parameter table sets the member it names, in the files' order") {
    PendulumWorld w;
    const std::vector<std::pair<std::string, double PendulumParams::*>> members = {
        {"g", &PendulumParams::g}, {"m", &PendulumParams::m}, {"l", &PendulumParams::l}, {"dt", &PendulumParams::dt},
        {"max_speed", &PendulumParams::max_speed}, {"max_torque", &PendulumParams::max_torque}};
    REQUIRE(w.params().size() == members.size());
    std::string err;
    for (size_t i = 0; i < members.size(); i++) {
        CAPTURE(members[i].first);
        CHECK(w.params()[i].first == members[i].first);
        const double v = w.p.*members[i].second + 7;
        REQUIRE(w.set_param(members[i].first, v, err));
        CHECK(w.p.*members[i].second == v);
    }
    CHECK(w.time_step() == w.p.dt);
    CHECK(w.action_max(0) == w.p.max_torque);
    CHECK(w.state_max(1) == w.p.max_speed);
}

TEST_CASE("generate_dataset: statistics and consistency") {
    DatasetConfig c;
    c.sequences = 40; c.steps = 64; c.image_size = 16; c.seed = 3;
    Dataset d = generate_dataset(c);
    REQUIRE(d.images.size() == 40u * 64 * 16 * 16);
    REQUIRE(d.actions.size() == 40u * 64);
    REQUIRE(d.states.size() == 40u * 64 * 2);

    double action_sum = 0.0, worst_angle = 0.0, worst_step = 0.0;
    for (int n = 0; n < d.N; n++) {
        CHECK(std::fabs(d.state(n, 0, 1)) <= 1.0f); // omega_0 ~ U(-1, 1)
        for (int t = 0; t < d.T; t++) {
            float u = d.action(n, t, 0);
            CHECK(u >= -2.0f);
            CHECK(u <= 2.0f);
            action_sum += u;
            CHECK(std::fabs(d.state(n, t, 1)) <= 8.0f);
            CHECK(d.state(n, t, 0) >= -(float)kPi);
            CHECK(d.state(n, t, 0) <= (float)kPi);
            worst_angle = std::fmax(worst_angle, angle_diff(image_angle(d.image(n, t), d.W), d.state(n, t, 0)));
            // u_t is applied between frame t and t + 1 (float storage limits the precision)
            if (t + 1 < d.T) {
                PendulumState s{d.state(n, t, 0), d.state(n, t, 1)};
                PendulumState next = pendulum_step(PendulumParams{}, s, u);
                worst_step = std::fmax(worst_step, angle_diff(next.theta, d.state(n, t + 1, 0)));
                worst_step = std::fmax(worst_step, std::fabs(next.omega - d.state(n, t + 1, 1)));
            }
        }
    }
    for (float v : d.images) {
        REQUIRE(v >= 0.0f);
        REQUIRE(v <= 1.0f);
    }
    CHECK(std::fabs(action_sum / (d.N * d.T)) < 0.15); // mean of U(-2, 2) over 2560 draws
    CHECK(worst_angle < 0.1);
    CHECK(worst_step < 1e-5);
}
