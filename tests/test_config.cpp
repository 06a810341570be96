// Tests for config.h: JSON round trip, overrides, validation and presets.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

TEST_CASE("config: JSON round trip, overrides and validation") {
    EkvaeConfig c;
    std::string err;
    EkvaeConfig d;
    REQUIRE(config_from_json(config_to_json(c), d, err));
    CHECK(config_to_json(d) == config_to_json(c));
    CHECK(config_set(d, "lr", "0.002", err));
    CHECK(d.lr == 0.002);
    CHECK(config_set(d, "enc_hidden", "[64,32]", err));
    CHECK(d.enc_hidden == std::vector<int>{64, 32});
    CHECK(!config_set(d, "batch", "0", err));
    CHECK(err.find("batch") != std::string::npos);
    CHECK(!config_set(d, "nonsense", "1", err));
    CHECK(!config_set(d, "lr", "fast", err));
    d.objective = "magic";
    CHECK(!config_validate(d, err));
    CHECK(err.find("objective") != std::string::npos);
}

TEST_CASE("config: presets name a world, and n_u must match the world's actions") {
    EkvaeConfig c;
    std::string err;
    REQUIRE(config_preset("pendulum", c));
    CHECK(c.world == "pendulum");
    CHECK(c.n_u == 1);
    CHECK(config_validate(c, err));
    REQUIRE(config_preset("arm", c));
    CHECK(c.world == "arm");
    CHECK(c.n_u == 2);
    CHECK(c.n_a == 8);
    CHECK(c.n_z == 8);
    CHECK(c.image_size == 24);
    // the arm's schedule (docs/results.md, the arm): 200,000 steps in all on 4,000 sequences
    CHECK(c.train_sequences == 4000);
    CHECK(c.train_steps == 200000);
    CHECK(c.restarts * c.restart_steps == 4000);
    CHECK(c.lr_decay_start < c.lr_decay_end);
    CHECK(c.lr_decay_end == c.train_steps);
    CHECK(config_validate(c, err));
    // the page's presets: the worlds' models on the short schedule (one thread unless the page asks)
    for (const char * name : {"browser", "arm-browser"}) {
        EkvaeConfig b, w;
        REQUIRE(config_preset(name, b));
        REQUIRE(config_preset(std::string(name) == "browser" ? "pendulum" : "arm", w));
        CHECK(b.world == w.world);
        CHECK(b.n_z == w.n_z);
        CHECK(b.D0 == w.D0);
        CHECK(b.threads == 1);
        CHECK(b.train_sequences == 1000); // a browser tab's data, whatever the world's preset trains on
        CHECK(b.train_steps > b.restarts * b.restart_steps);
        CHECK(config_validate(b, err));
        CHECK(b.lambda_rule == "authors");
        CHECK(b.lambda_warmup == (std::string(name) == "browser" ? "skip" : "none"));
    }
    for (const std::string & w : world_names()) {
        EkvaeConfig p, b;
        CHECK_MESSAGE(config_preset(w, p), "every world has a preset of its name: " << w);
        // and a browser preset with nothing of its own to write: "WORLD-browser" ("browser" for the pendulum)
        CHECK_MESSAGE(config_preset(browser_preset(w), b), "the page's preset of " << w);
        CHECK(b.world == w);
        CHECK(b.train_steps == 6000);
        CHECK(preset_world(browser_preset(w)) == w); // the page's Train panel names a run's world by this
        CHECK(preset_world(w) == w);                  // a world's own preset
    }
    CHECK(browser_preset("pendulum") == "browser");
    CHECK(browser_preset("arm") == "arm-browser");
    CHECK(preset_world("browser") == "pendulum");
    CHECK(preset_world("-browser") == "-browser"); // no world before the suffix: not a browser preset
    // not a world's browser preset: refused, the config untouched
    for (const char * name : {"moon-browser", "-browser", "pendulum-browser", "browser-browser", "arm-browser-browser", "arm-brows"}) {
        EkvaeConfig p;
        p.seed = 12345;
        CHECK_MESSAGE(!config_preset(name, p), name);
        CHECK(p.seed == 12345);
        CHECK(p.world == "pendulum");
    }
    c.n_u = 1;
    CHECK_FALSE(config_validate(c, err));
    CHECK(err.find("n_u = 1") != std::string::npos);
    CHECK(err.find("--preset arm") != std::string::npos);
    c.world = "moon";
    CHECK_FALSE(config_validate(c, err));
    CHECK(err.find("pendulum, arm") != std::string::npos);
    CHECK_FALSE(config_preset("moon", c));
}
