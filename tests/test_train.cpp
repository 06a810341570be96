// Tests for train.h: the learning-rate schedule, exact resumption, restarts chosen by the
// held-out objective, accepted and rejected steps.
#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;

TEST_CASE("lr_at: constant, then a cosine down to lr * lr_final, then constant") {
    EkvaeConfig c;
    c.lr = 1e-3;
    c.lr_decay_start = 100;
    c.lr_decay_end = 200;
    c.lr_final = 0.1;
    CHECK(lr_at(c, 1) == c.lr);
    CHECK(lr_at(c, 100) == c.lr);
    CHECK(lr_at(c, 150) == doctest::Approx(c.lr * 0.55));
    CHECK(lr_at(c, 200) == doctest::Approx(c.lr * 0.1));
    CHECK(lr_at(c, 5000) == doctest::Approx(c.lr * 0.1));
    for (int s = 100; s < 200; s++) CHECK(lr_at(c, s + 1) <= lr_at(c, s));
    c.lr_decay_end = 0;
    CHECK(lr_at(c, 150) == c.lr);
}


TEST_CASE("training resumed from a checkpoint equals uninterrupted training") {
    const EkvaeConfig c = tiny_train_config();
    const Dataset d = tiny_data();
    Mat<float> X, U;
    Trainer a;
    a.init(c);
    for (int i = 0; i < 6; i++) {
        sample_batch(d, c.batch, c.window, a.rng, X, U);
        REQUIRE(a.train_step(X, U).ok);
    }
    Trainer b;
    b.init(c);
    for (int i = 0; i < 3; i++) {
        sample_batch(d, c.batch, c.window, b.rng, X, U);
        b.train_step(X, U);
    }
    std::vector<uint8_t> ck = b.checkpoint();
    Trainer r;
    std::string err;
    REQUIRE(r.restore(ck.data(), ck.size(), err));
    for (int i = 0; i < 3; i++) {
        sample_batch(d, c.batch, c.window, r.rng, X, U);
        r.train_step(X, U);
    }
    CHECK(r.step == a.step);
    CHECK(r.lam.lambda == a.lam.lambda);
    for (size_t i = 0; i < a.model.ps.list.size(); i++) CHECK(r.model.ps.list[i]->value == a.model.ps.list[i]->value);
    CHECK(r.opt.step == a.opt.step);
    // deterministic for a seed: a second uninterrupted run gives the same weights
    Trainer a2;
    a2.init(c);
    for (int i = 0; i < 6; i++) {
        sample_batch(d, c.batch, c.window, a2.rng, X, U);
        a2.train_step(X, U);
    }
    for (size_t i = 0; i < a.model.ps.list.size(); i++) CHECK(a2.model.ps.list[i]->value == a.model.ps.list[i]->value);
}

TEST_CASE("restarts: the start with the best held-out objective is continued; resuming mid-choice changes nothing") {
    EkvaeConfig c = tiny_train_config();
    c.restarts = 3;
    c.restart_steps = 4;
    const Dataset d = tiny_data();
    const Dataset val = tiny_data(6, 12, 8, 99);
    Mat<float> X, U;
    Trainer a;
    a.init(c, &val);
    std::vector<double> scores;
    int chosen = -1;
    for (int i = 0; i < 16; i++) {
        CHECK(a.choosing() == (i < 12));
        sample_batch(d, c.batch, c.window, a.rng, X, U);
        const StepStats st = a.train_step(X, U);
        REQUIRE(st.ok);
        if (i < 12) CHECK(st.start == i / 4);
        else CHECK(st.start == chosen); // after the choice: the start being continued
        CHECK(st.start_done == (i == 3 || i == 7 || i == 11));
        if (st.start_done) {
            // the score is the held-out objective of the start as it ended (before the next began)
            scores.push_back(st.start_score);
            CHECK(std::isfinite(st.start_score));
            CHECK(st.start_score == doctest::Approx(st.start_R + std::max(0.0, st.start_D - c.D0)));
        }
        if (st.chosen >= 0) chosen = st.chosen;
    }
    REQUIRE(scores.size() == 3);
    CHECK(chosen == (int)(std::min_element(scores.begin(), scores.end()) - scores.begin()));
    CHECK(a.step == 16);
    CHECK(!a.choosing());
    // the continued start is that start's state: its held-out score right after the choice
    // (step 12, before any further step) is the one it was chosen with
    Trainer b;
    b.init(c, &val);
    for (int i = 0; i < 12; i++) {
        sample_batch(d, c.batch, c.window, b.rng, X, U);
        b.train_step(X, U);
    }
    CHECK(heldout_objective(b.model, val).score == doctest::Approx(scores[chosen]));
    // a checkpoint mid-choice (step 6: start 1 running, start 0 kept) resumes exactly
    Trainer e;
    e.init(c, &val);
    for (int i = 0; i < 6; i++) {
        sample_batch(d, c.batch, c.window, e.rng, X, U);
        e.train_step(X, U);
    }
    const std::vector<uint8_t> ck = e.checkpoint();
    Trainer r;
    std::string err;
    REQUIRE_MESSAGE(r.resume(ck.data(), ck.size(), {}, &val, err), err);
    CHECK(r.choosing());
    for (int i = 0; i < 10; i++) {
        sample_batch(d, c.batch, c.window, r.rng, X, U);
        r.train_step(X, U);
    }
    CHECK(r.step == a.step);
    for (size_t i = 0; i < a.model.ps.list.size(); i++) CHECK(r.model.ps.list[i]->value == a.model.ps.list[i]->value);
    CHECK(r.opt.step == a.opt.step);
    CHECK(r.lam.lambda == a.lam.lambda);
    // resumed mid-choice for "10 more steps" as ekvae_train --resume --steps 10 does it: the
    // run's planned total (6 + 10) stays in the model and the checkpoint through the starts
    // begun after the resume (until 2026-12-07 they recorded the 10)
    Trainer p;
    REQUIRE_MESSAGE(p.resume(ck.data(), ck.size(), {{"train_steps", "10"}}, &val, err), err);
    p.set_planned_steps((int)p.step + 10);
    for (int i = 0; i < 10; i++) {
        sample_batch(d, c.batch, c.window, p.rng, X, U);
        p.train_step(X, U);
    }
    CHECK(!p.choosing());
    CHECK(p.model.cfg.train_steps == 16);
    const std::vector<uint8_t> ck2 = p.checkpoint();
    Trainer q;
    REQUIRE_MESSAGE(q.restore(ck2.data(), ck2.size(), err), err);
    CHECK(q.cfg().train_steps == 16);
}

TEST_CASE("the ELBO objective: good steps are accepted and lambda stays out of it") {
    EkvaeConfig c = tiny_train_config();
    c.objective = "elbo";
    const Dataset d = tiny_data();
    Trainer tr;
    tr.init(c);
    Mat<float> X, U;
    for (int i = 0; i < 3; i++) {
        sample_batch(d, c.batch, c.window, tr.rng, X, U);
        StepStats st = tr.train_step(X, U);
        CHECK(st.ok);
        CHECK(st.lambda == 1.0);
        CHECK(st.loss == doctest::Approx(st.D + st.R).epsilon(1e-4));
    }
    CHECK(tr.rejected == 0);
    CHECK(tr.lam.lambda == c.lambda_init);
}

TEST_CASE("a non-finite step is rejected and leaves the weights untouched") {
    EkvaeConfig c = tiny_train_config();
    const Dataset d = tiny_data();
    Trainer tr;
    tr.init(c);
    Mat<float> X, U;
    sample_batch(d, c.batch, c.window, tr.rng, X, U);
    X(0, 0) = std::numeric_limits<float>::quiet_NaN(); // a poisoned batch
    std::vector<Mat<float>> before;
    for (auto & p : tr.model.ps.list) before.push_back(p->value);
    StepStats st = tr.train_step(X, U);
    CHECK(!st.ok);
    CHECK(!st.error.empty());
    CHECK(tr.rejected == 1);
    for (size_t i = 0; i < before.size(); i++) CHECK(tr.model.ps.list[i]->value == before[i]);
    CHECK(params_finite(tr.model.ps));
}
