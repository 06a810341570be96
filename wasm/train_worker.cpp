// train_worker.cpp: ekvae's Trainer for a Web Worker (ekvae_train.js + .wasm). The worker's
// script (web/ekvae-train-worker.js) calls these in turn: tw_start once, then tw_run in chunks
// of ~100 ms (so the worker can read a Stop between chunks), tw_latent about once a second,
// tw_model every few seconds (a model file for the page's live filter) and at the end, then
// tw_metrics. The run is the native ekvae_train's: the same config keys and presets, the same
// generated data and steps, the same model file (ekvae_eval reads what tw_model writes).
// No browser code here: the worker's script owns messages and timing.
#include "ekvae.h"

#include <emscripten/emscripten.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

using namespace ekvae;
using json = nlohmann::json;

namespace {

struct Run {
    Trainer tr;
    Dataset train, heldout;
    int64_t target = 0;          // the step to stop at
    Mat<float> X, U;
    double seconds = 0;          // time spent in steps
    std::vector<uint8_t> bytes;  // the last model file
    std::string text;            // the last JSON answer
    std::string error;
};
std::unique_ptr<Run> g_run;
std::string g_error;

double finite_or(double v, double d) { return std::isfinite(v) ? v : d; }

const char * answer(const json & j) {
    g_run->text = j.dump();
    return g_run->text.c_str();
}

} // namespace

extern "C" {

// The last error (tw_start refused its config, a step diverged).
EMSCRIPTEN_KEEPALIVE const char * tw_error() { return g_error.c_str(); }

// Starts a run: config is a JSON object {"preset": NAME, KEY: VALUE, ...} with any config keys
// (as ekvae_train's flags; "steps" = train_steps). Generates the data and initialises the
// Trainer. Returns 0, or 1 with tw_error() naming the problem.
EMSCRIPTEN_KEEPALIVE int tw_start(const char * config_json) {
    g_error.clear();
    json j = json::parse(config_json, nullptr, false);
    if (!j.is_object()) {
        g_error = "the training config is not a JSON object";
        return 1;
    }
    EkvaeConfig cfg;
    const std::string preset = j.value("preset", std::string("browser"));
    if (!config_preset(preset, cfg)) {
        g_error = "unknown preset '" + preset + "'";
        return 1;
    }
    for (auto & [k, v] : j.items()) {
        if (k == "preset") continue;
        const std::string key = k == "steps" ? "train_steps" : k;
        if (!config_set(cfg, key, v.is_string() ? v.get<std::string>() : v.dump(), g_error)) return 1;
    }
    cfg.train_minutes = 0;
    if (cfg.train_steps <= 0) {
        g_error = "steps must be at least 1";
        return 1;
    }
    if (!config_validate(cfg, g_error)) return 1;
    auto run = std::make_unique<Run>();
    if (!generate_run_data(cfg, &run->train, &run->heldout, g_error)) return 1;
    run->tr.init(cfg, &run->heldout);
    run->target = cfg.train_steps;
    g_run = std::move(run);
    return 0;
}

// Resume: a stopped run continues to its target; a finished one gets `more` steps beyond it.
EMSCRIPTEN_KEEPALIVE void tw_extend(int more) {
    if (g_run && g_run->tr.step >= g_run->target && more > 0) g_run->target = g_run->tr.step + more;
}

// Trains until budget_ms have passed or the run reaches its target. Returns JSON:
// {step, steps, done, seconds, choosing, start, starts, rejected, error,
//  series: {step: [...], D, R, lambda, elbo}} (series: every step of this chunk).
EMSCRIPTEN_KEEPALIVE const char * tw_run(double budget_ms) {
    if (!g_run) return "{\"error\":\"no run: tw_start first\"}";
    Run & r = *g_run;
    Trainer & tr = r.tr;
    json s = {{"step", json::array()}, {"D", json::array()}, {"R", json::array()}, {"lambda", json::array()}, {"elbo", json::array()}};
    using clk = std::chrono::steady_clock;
    const auto t0 = clk::now();
    int bad = 0;
    while (tr.step < r.target && std::chrono::duration<double, std::milli>(clk::now() - t0).count() < budget_ms) {
        sample_batch(r.train, tr.cfg().batch, tr.cfg().window, tr.rng, r.X, r.U);
        const StepStats st = tr.train_step(r.X, r.U);
        if (!st.ok) {
            r.error = st.error;
            if (++bad >= 20) break;
            continue;
        }
        bad = 0;
        s["step"].push_back(tr.step);
        s["D"].push_back(finite_or(st.D, 0));
        s["R"].push_back(finite_or(st.R, 0));
        s["lambda"].push_back(finite_or(st.lambda, 0));
        s["elbo"].push_back(finite_or(st.elbo, 0));
    }
    r.seconds += std::chrono::duration<double>(clk::now() - t0).count();
    const bool diverged = bad >= 20;
    if (diverged) r.target = tr.step; // 20 non-finite steps in a row: stop, keep the last good weights
    return answer({{"step", tr.step}, {"steps", r.target}, {"done", tr.step >= r.target}, {"seconds", r.seconds},
                   {"choosing", tr.choosing()}, {"start", tr.start()}, {"starts", tr.cfg().restarts},
                   {"rejected", tr.rejected}, {"diverged", diverged}, {"D0", tr.cfg().D0}, {"error", r.error}, {"series", s}});
}

// The model being trained, as a model file (the read-out fitted on `readout_sequences` of the
// training data: 200 for the final file, fewer for the live snapshots). Returns its size;
// tw_buffer() points at the bytes until the next call.
EMSCRIPTEN_KEEPALIVE int tw_model(int readout_sequences) {
    if (!g_run) return 0;
    g_run->bytes = model_file_bytes(g_run->tr.model, g_run->train, std::max(10, readout_sequences));
    return (int)g_run->bytes.size();
}
EMSCRIPTEN_KEEPALIVE const uint8_t * tw_buffer() { return g_run ? g_run->bytes.data() : nullptr; }

// The latent space on held-out frames: the smoothed means of the first `sequences` held-out
// sequences on their two principal axes and the true states. JSON {x: [...], y: [...],
// state: [[S values] per point], state_names}.
EMSCRIPTEN_KEEPALIVE const char * tw_latent(int sequences) {
    if (!g_run) return "{}";
    Eigen::MatrixXd P, S;
    latent_plane(g_run->tr.model, g_run->heldout, std::max(1, sequences), P, S);
    json x = json::array(), y = json::array(), st = json::array();
    for (Eigen::Index i = 0; i < P.rows(); i++) {
        x.push_back(finite_or(P(i, 0), 0));
        y.push_back(finite_or(P(i, 1), 0));
        json row = json::array();
        for (Eigen::Index k = 0; k < S.cols(); k++) row.push_back(S(i, k));
        st.push_back(row);
    }
    return answer({{"x", x}, {"y", y}, {"state", st}, {"state_names", g_run->heldout.world().state_names}});
}

// The quality bar's numbers on a fresh test set (what ekvae_eval uses by default: seed 3, 200
// sequences of 64 steps), computed on the model as tw_model last wrote it. JSON {metrics:
// (metrics.json), bar: [{name, value, limit, at_least, met}], bar_met}.
EMSCRIPTEN_KEEPALIVE const char * tw_metrics(int sequences, int seed) {
    if (!g_run) return "{}";
    const EkvaeConfig & c = g_run->tr.cfg();
    DatasetConfig dc;
    dc.sequences = std::max(2, sequences);
    dc.steps = 64;
    dc.image_size = c.image_size;
    dc.seed = (uint64_t)seed;
    dc.world = make_world(c.world);
    const Dataset d = generate_dataset(dc);
    EvalMetrics e;
    evaluate(g_run->tr.model, d, e, false, (uint64_t)seed);
    json bar = json::array();
    const std::vector<BarCheck> checks = quality_bar(e, c.world); // none for a world without a bar
    for (const BarCheck & b : checks)
        bar.push_back({{"name", b.name}, {"value", finite_or(b.value, -1e9)}, {"limit", b.limit}, {"at_least", b.at_least}, {"met", b.met}});
    return answer({{"metrics", json::parse(metrics_to_json(e, -1))}, {"bar", bar}, {"bar_met", bar_met(checks)}, {"sequences", dc.sequences}, {"seed", seed}});
}

// Heap size in bytes (the worker reports it: the page's memory target).
EMSCRIPTEN_KEEPALIVE double tw_heap_bytes() { return (double)__builtin_wasm_memory_size(0) * 65536.0; }

} // extern "C"
