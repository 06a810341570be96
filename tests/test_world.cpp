// Tests for world.h: angle wrapping and the portable sine, the World contract and its
// parameter table, dataset limits, the generator's bytes (golden hash), and the dataset file
// format.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

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

TEST_CASE("every world keeps the World contract: names per dimension, a parameter table with dt and its range keys") {
    for (const std::string & name : world_names()) {
        CAPTURE(name);
        std::unique_ptr<World> w = make_world(name);
        REQUIRE(w);
        CHECK(w->name == name);
        CHECK((int)w->state_names.size() == w->S);
        CHECK((int)w->angle.size() == w->S);
        CHECK((int)w->state_range_keys.size() == w->S);
        CHECK((int)w->action_names.size() == w->U);
        CHECK(w->targets() == w->S + w->angles());
        // rest is where the world settles without torque: it stays there, and a state nudged
        // off it stays near it (upright is a fixed point too, but falls); demo_start is a state
        REQUIRE((int)w->rest.size() == w->S);
        REQUIRE((int)w->demo_start.size() == w->S);
        for (double nudge : {0.0, 0.05}) {
            CAPTURE(nudge);
            std::vector<double> s = w->rest, u(w->U, 0.0);
            for (int i = 0; i < w->S; i++) s[i] += w->angle[i] ? nudge : 0.0;
            double off = 0.0; // the largest distance from rest over 10 s
            for (int t = 0; t * w->time_step() < 10.0; t++) {
                w->step(s.data(), u.data(), s.data());
                for (int i = 0; i < w->S; i++)
                    off = std::max(off, std::abs(w->angle[i] ? wrap_angle(s[i] - w->rest[i]) : s[i] - w->rest[i]));
            }
            CHECK(off <= (nudge == 0.0 ? 1e-9 : 0.5));
        }
        for (int i = 0; i < w->S; i++) CHECK(std::abs(w->demo_start[i]) <= w->state_max(i));
        std::vector<std::string> keys;
        for (const auto & kv : w->params()) keys.push_back(kv.first);
        auto has = [&](const std::string & k) { return std::find(keys.begin(), keys.end(), k) != keys.end(); };
        CHECK(has("dt"));
        CHECK(w->time_step() == w->param("dt"));
        CHECK(has(w->action_range_key));
        CHECK(w->action_max(0) == w->param(w->action_range_key));
        for (int i = 0; i < w->S; i++) {
            CHECK(w->angle[i] == w->state_range_keys[i].empty());
            if (w->angle[i]) {
                CHECK(w->state_max(i) == doctest::Approx(3.14159265358979));
            } else {
                CHECK(has(w->state_range_keys[i]));
                CHECK(w->state_max(i) == w->param(w->state_range_keys[i]));
            }
        }
        // each parameter is its own: setting it (to its value + 1, within every range) changes
        // that key of params() and no other
        std::string err;
        const std::vector<std::pair<std::string, double>> before = w->params();
        for (size_t k = 0; k < before.size(); k++) {
            CAPTURE(before[k].first);
            REQUIRE_MESSAGE(w->set_param(before[k].first, before[k].second + 1, err), err);
            const std::vector<std::pair<std::string, double>> after = w->params();
            REQUIRE(after.size() == before.size());
            for (size_t i = 0; i < after.size(); i++)
                CHECK(after[i].second == before[i].second + (i <= k ? 1 : 0));
        }
        // a clone has parameters of its own: setting them leaves the original as it was
        std::unique_ptr<World> c = w->clone();
        const std::vector<std::pair<std::string, double>> original = w->params();
        REQUIRE(c->set_param("dt", 0.125, err));
        CHECK(c->time_step() == 0.125);
        CHECK(w->params() == original);
        w.reset();
        CHECK(c->time_step() == 0.125); // read after the original is gone
        CHECK_THROWS_AS(c->param("no such key"), std::invalid_argument);
    }
}

TEST_CASE("World::set_param refuses an unknown key and a value outside its range, naming both") {
    PendulumWorld pw;
    std::string err;
    CHECK_FALSE(pw.set_param("mass", 1.0, err));
    CHECK(err == "the pendulum has no parameter 'mass' (it has g, m, l, dt, max_speed, max_torque)");
    CHECK_FALSE(pw.set_param("l", -0.5, err));
    CHECK(err == "the pendulum's parameter l must be finite and > 0 (got -0.5)");
    CHECK_FALSE(pw.set_param("max_torque", -1, err));
    CHECK(err.find("max_torque must be finite and >= 0") != std::string::npos);
    CHECK_FALSE(pw.set_param("g", std::nan(""), err));
    CHECK(err.find("g must be a finite number") != std::string::npos);
    CHECK(pw.set_param("g", -9.81, err)); // a finite g of either sign (gravity pulling up)
    CHECK(pw.p.g == -9.81);
    CHECK(pw.set_param("max_torque", 0.0, err));
    CHECK(pw.action_max(0) == 0.0);
    ArmWorld aw;
    for (double bad : {0.0, 2.5, 1001.0, -3.0}) {
        CAPTURE(bad);
        CHECK_FALSE(aw.set_param("substeps", bad, err));
        CHECK(err.find("substeps must be a whole number from 1 to 1000") != std::string::npos);
    }
    CHECK(aw.set_param("substeps", 1000, err));
    CHECK(aw.p.substeps == 1000);
    CHECK_FALSE(aw.set_param("damping", -1, err));
    CHECK(err == "the arm's parameter damping must be finite and >= 0 (got -1)");
    CHECK_FALSE(aw.set_param("l1", 0, err));
    CHECK(err == "the arm's parameter l1 must be finite and > 0 (got 0)");
    CHECK_FALSE(aw.set_param("max_speed", INFINITY, err));
    CHECK(err.find("max_speed must be finite and > 0") != std::string::npos);
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
