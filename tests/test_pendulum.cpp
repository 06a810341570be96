// Tests for pendulum.h: the Pendulum-v1 dynamics, the renderer, and the dataset generator.
#include "pendulum.h"
#include "safetensors.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

using namespace ekvae;

namespace {

const double kPi = 3.14159265358979311600;

// FNV-1a, 64 bit: a tiny fixed hash for golden byte checks
uint64_t fnv1a64(const std::vector<uint8_t> & bytes) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint8_t b : bytes) {
        h ^= b;
        h *= 0x100000001b3ULL;
    }
    return h;
}

// smallest difference between two angles, in [0, pi]
double angle_diff(double a, double b) { return std::fabs(wrap_angle(a - b)); }

} // namespace

TEST_CASE("wrap_angle maps onto (-pi, pi]") {
    CHECK(wrap_angle(0.0) == 0.0);
    CHECK(wrap_angle(1.0) == 1.0);
    CHECK(wrap_angle(kPi) == kPi);   // pi stays
    CHECK(wrap_angle(-kPi) == kPi);  // -pi is excluded: becomes pi
    CHECK(wrap_angle(7.0) == doctest::Approx(7.0 - 2 * kPi).epsilon(1e-15));
    CHECK(wrap_angle(-7.0) == doctest::Approx(-7.0 + 2 * kPi).epsilon(1e-15));
    CHECK(wrap_angle(3 * kPi) == doctest::Approx(kPi).epsilon(1e-15));
    for (double x = -50.0; x < 50.0; x += 0.37) {
        double w = wrap_angle(x);
        CHECK(w > -kPi);
        CHECK(w <= kPi);
        CHECK(std::fabs(std::sin(w) - std::sin(x)) < 1e-12);
    }
}

TEST_CASE("portable_sin_cos agrees with the C library to about 1 ulp") {
    double worst = 0.0;
    for (int k = -20000; k <= 20000; k++) {
        double x = k * 2.0e-4; // covers [-4, 4], all quadrants
        double s, c;
        portable_sin_cos(x, s, c);
        worst = std::fmax(worst, std::fabs(s - std::sin(x)));
        worst = std::fmax(worst, std::fabs(c - std::cos(x)));
    }
    double s, c;
    portable_sin_cos(100.0, s, c); // large arguments are wrapped first
    CHECK(std::fabs(s - std::sin(100.0)) < 1e-13);
    CHECK(std::fabs(c - std::cos(100.0)) < 1e-13);
    portable_sin_cos(0.0, s, c);
    CHECK(s == 0.0);
    CHECK(c == 1.0);
    INFO("worst |difference| = " << worst);
    CHECK(worst <= 4.5e-16); // 2 ulp at magnitude 1
}

// Hand-computed steps with the defaults g = 10, m = 1, l = 1, dt = 0.05, so
// 3 g / (2 l) = 15 and 3 / (m l^2) = 3.
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

TEST_CASE("validate_dataset_config refuses unusable sizes") {
    std::string err;
    DatasetConfig c;
    CHECK(validate_dataset_config(c, err)); // defaults are fine

    c = DatasetConfig(); c.sequences = 0;
    CHECK_FALSE(validate_dataset_config(c, err));
    CHECK(err.find("--sequences") != std::string::npos);
    c = DatasetConfig(); c.sequences = -5;
    CHECK_FALSE(validate_dataset_config(c, err));
    CHECK(err.find("-5") != std::string::npos);
    c = DatasetConfig(); c.steps = 0;
    CHECK_FALSE(validate_dataset_config(c, err));
    CHECK(err.find("--steps") != std::string::npos);
    c = DatasetConfig(); c.image_size = 0;
    CHECK_FALSE(validate_dataset_config(c, err));
    CHECK(err.find("--image-size") != std::string::npos);
    c = DatasetConfig(); c.image_size = kMaxImageSize + 1;
    CHECK_FALSE(validate_dataset_config(c, err));
    CHECK(err.find("--image-size") != std::string::npos);
    PendulumWorld w;
    CHECK_FALSE(w.set_param("dt", 0.0, err));
    CHECK(err.find("dt") != std::string::npos);
    CHECK_FALSE(w.set_param("mass", 1.0, err)); // not one of its parameters

    // over 4 GiB: 100M sequences, and the largest sizes (no overflow in the size arithmetic)
    c = DatasetConfig(); c.sequences = 100000000;
    CHECK_FALSE(validate_dataset_config(c, err));
    CHECK(err.find("4 GiB") != std::string::npos);
    c = DatasetConfig(); c.sequences = 2147483647; c.steps = 2147483647; c.image_size = kMaxImageSize;
    CHECK_FALSE(validate_dataset_config(c, err));
    CHECK(err.find("4 GiB") != std::string::npos);

    // the limit: N T (W^2 + 3) 4 <= 4 GiB with T = 1, W = 4 (the smallest) -> N <= 2^32 / 76
    c = DatasetConfig(); c.sequences = (int)((4ull << 30) / 76); c.steps = 1; c.image_size = kMinImageSize;
    CHECK(validate_dataset_config(c, err));
    c.sequences += 1;
    CHECK_FALSE(validate_dataset_config(c, err));
}

TEST_CASE("generate_dataset: same seed same bytes, different seed different bytes") {
    DatasetConfig c;
    c.sequences = 4; c.steps = 10; c.image_size = 12; c.seed = 42;
    std::vector<uint8_t> a = dataset_to_safetensors(generate_dataset(c));
    std::vector<uint8_t> b = dataset_to_safetensors(generate_dataset(c));
    CHECK(a == b);
    c.seed = 43;
    std::vector<uint8_t> d = dataset_to_safetensors(generate_dataset(c));
    CHECK(a.size() == d.size());
    CHECK(a != d);
}

TEST_CASE("generate_dataset: golden hash of a small dataset") {
    // Guards the byte format (header text, tensor order, float layout) and the RNG and
    // draw order across machines and compilers. If this changes on purpose, bump the
    // dataset "version" and update the hash. (Updated without a version bump when the
    // writer began adding the metadata checksum: the tensors and their layout are unchanged,
    // and version-1 readers ignore the extra key.)
    DatasetConfig c;
    c.sequences = 3; c.steps = 5; c.image_size = 8; c.seed = 7;
    std::vector<uint8_t> bytes = dataset_to_safetensors(generate_dataset(c));
    uint64_t h = fnv1a64(bytes);
    char hex[32];
    std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    INFO("FNV-1a 64 = 0x" << hex << ", " << bytes.size() << " bytes");
    // (Updated when the writer began recording the world's name and state/action names in the
    // metadata; the tensor bytes are unchanged: their hash below is the same as before.)
    CHECK(bytes.size() == 4532);
    CHECK(h == 0xaa88837dce3e1065ULL);
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), 8);
    const std::vector<uint8_t> data(bytes.begin() + 8 + (long)header, bytes.end());
    CHECK(fnv1a64(data) == 0x30a44b3a7771cff3ULL);
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

TEST_CASE("dataset round trip through safetensors bytes") {
    DatasetConfig c;
    c.sequences = 3; c.steps = 7; c.image_size = 10; c.seed = 12345678901234567ULL;
    auto w = std::make_shared<PendulumWorld>();
    std::string err;
    REQUIRE(w->set_param("g", 9.81, err));
    c.world = w;
    Dataset d = generate_dataset(c);
    std::vector<uint8_t> bytes = dataset_to_safetensors(d);

    Dataset r;
    REQUIRE_MESSAGE(dataset_from_safetensors(bytes.data(), bytes.size(), r, err), err);
    CHECK(r.N == 3);
    CHECK(r.T == 7);
    CHECK(r.W == 10);
    CHECK(r.images == d.images);
    CHECK(r.actions == d.actions);
    CHECK(r.states == d.states);
    CHECK(r.config.seed == 12345678901234567ULL);
    REQUIRE(r.world().name == "pendulum");
    const PendulumWorld & rw = dynamic_cast<const PendulumWorld &>(r.world());
    CHECK(rw.p.g == 9.81);
    CHECK(rw.p.dt == 0.05);
    CHECK(dataset_to_safetensors(r) == bytes); // and back to the same bytes
}

TEST_CASE("dataset_from_safetensors refuses files that are not valid datasets") {
    DatasetConfig c;
    c.sequences = 2; c.steps = 3; c.image_size = 4;
    Dataset d = generate_dataset(c);
    SafeTensors base;
    std::string err;
    {
        std::vector<uint8_t> bytes = dataset_to_safetensors(d);
        REQUIRE(safetensors_parse(bytes.data(), bytes.size(), base, err));
    }
    auto check_refused = [&](const SafeTensors & st, const char * expect) {
        std::vector<uint8_t> bytes = safetensors_serialize(st);
        Dataset r;
        std::string e;
        CHECK_FALSE(dataset_from_safetensors(bytes.data(), bytes.size(), r, e));
        INFO("error: " << e << "; expected to mention: " << expect);
        CHECK(e.find(expect) != std::string::npos);
    };
    SUBCASE("missing tensor") {
        SafeTensors st = base;
        st.tensors.erase("states");
        check_refused(st, "missing tensor 'states'");
    }
    SUBCASE("wrong actions shape") {
        SafeTensors st = base;
        std::vector<float> a(2 * 4);
        st.tensors["actions"] = Tensor::from_f32(a.data(), {2, 4, 1});
        check_refused(st, "tensor 'actions': expected F32 [2, 3, 1]");
    }
    SUBCASE("wrong images dtype") {
        SafeTensors st = base;
        std::vector<double> x(2 * 3 * 4 * 4, 0.0);
        st.tensors["images"] = Tensor::from_f64(x.data(), {2, 3, 4, 4});
        check_refused(st, "tensor 'images'");
    }
    SUBCASE("image value out of range") {
        SafeTensors st = base;
        float bad = 1.5f;
        std::memcpy(st.tensors["images"].data.data() + 8, &bad, 4);
        check_refused(st, "outside [0, 1]");
    }
    SUBCASE("NaN image value") {
        SafeTensors st = base;
        float bad = std::nanf("");
        std::memcpy(st.tensors["images"].data.data(), &bad, 4);
        check_refused(st, "outside [0, 1]");
    }
    SUBCASE("other format") {
        SafeTensors st = base;
        st.metadata["format"] = "something-else";
        check_refused(st, "not an ekvae dataset");
    }
    SUBCASE("metadata disagrees with shapes") {
        SafeTensors st = base;
        st.metadata["steps"] = "4";
        check_refused(st, "disagrees");
    }
    SUBCASE("malformed file") {
        std::vector<uint8_t> junk = {1, 2, 3};
        Dataset r;
        std::string e;
        CHECK_FALSE(dataset_from_safetensors(junk.data(), junk.size(), r, e));
        CHECK(e.find("truncated") != std::string::npos);
    }
    SUBCASE("no metadata is fine (files written by other tools)") {
        SafeTensors st = base;
        st.metadata.clear();
        std::vector<uint8_t> bytes = safetensors_serialize(st);
        Dataset r;
        std::string e;
        CHECK(dataset_from_safetensors(bytes.data(), bytes.size(), r, e));
        CHECK(r.config.sequences == 2);
    }
}
