// app_train.cpp: the Train panel. A run of the core's Trainer happens in the front end's Web
// Worker (web/ekvae-train-worker.js, wasm/train_worker.cpp); this file draws its settings,
// progress, live curves of D, R, lambda and the ELBO, the latent space of the model being
// trained on held-out frames, and at the end the quality bar's numbers, Download and
// "compare with the shipped model". The reports arrive as the worker's JSON messages.
#include "app.h"
#include "app_ui.h"

#include <imgui.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

using json = nlohmann::json;

namespace {

const char * kObjectives[2] = {"constrained", "elbo"};

std::string fmt_seconds(double s) {
    if (!std::isfinite(s) || s < 0) return "-";
    char b[32];
    if (s < 60) std::snprintf(b, sizeof b, "%.0f s", s);
    else std::snprintf(b, sizeof b, "%d min %02d s", (int)(s / 60), (int)std::fmod(s, 60));
    return b;
}

// One live curve in [p0, p0 + size]: every step's value (decimated to the width), its range
// from the last 90 % of the points (the first steps' rate is in the thousands), the last value
// in the label, and an optional reference line (D0).
void draw_curve(const char * label, const std::vector<float> & v, ImVec2 p0, ImVec2 size, ImU32 col, double ref = NAN) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ImVec2 p1(p0.x + size.x, p0.y + size.y);
    dl->AddRectFilled(p0, p1, kPanelBg);
    dl->AddRect(p0, p1, kGrid);
    char text[64];
    if (v.empty()) std::snprintf(text, sizeof text, "%s", label);
    else std::snprintf(text, sizeof text, "%s %.4g", label, v.back());
    text_at(dl, ImVec2(p0.x + 3, p0.y + 1), kDim, text);
    if (v.size() < 2) return;
    const size_t n = v.size(), from = n / 10;
    float lo = 1e30f, hi = -1e30f;
    for (size_t i = from; i < n; i++) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
    if (std::isfinite(ref)) lo = std::min(lo, (float)ref), hi = std::max(hi, (float)ref);
    if (!(hi > lo)) hi = lo + 1;
    const float pad = 0.08f * (hi - lo);
    lo -= pad;
    hi += pad;
    const float top = p0.y + ImGui::GetTextLineHeight() + 2, h = p1.y - 2 - top;
    auto y_of = [&](float x) { return top + h * (1.f - (std::clamp(x, lo, hi) - lo) / (hi - lo)); };
    dl->PushClipRect(p0, p1, true);
    if (std::isfinite(ref)) dl->AddLine(ImVec2(p0.x, y_of((float)ref)), ImVec2(p1.x, y_of((float)ref)), kTruth, 1.f);
    const int px = std::max(2, (int)size.x - 4);
    ImVec2 prev;
    for (int k = 0; k < px; k++) {
        const size_t i = std::min(n - 1, (size_t)((double)k / (px - 1) * (n - 1)));
        const ImVec2 q(p0.x + 2 + k, y_of(v[i]));
        if (k) dl->AddLine(prev, q, col, 1.5f);
        prev = q;
    }
    dl->PopClipRect();
}

// The latent plot of the model in training: held-out smoothed means on their two principal
// axes, coloured by the true angle (a good model draws a colour ring).
void draw_train_latent(const TrainView & t, ImVec2 p0, ImVec2 size) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ImVec2 p1(p0.x + size.x, p0.y + size.y);
    dl->AddRectFilled(p0, p1, kPanelBg);
    dl->AddRect(p0, p1, kGrid);
    char text[80];
    if (t.latent_step < 0) std::snprintf(text, sizeof text, "latent space (held-out frames)");
    else std::snprintf(text, sizeof text, "latent space at step %ld", t.latent_step);
    if (ImGui::CalcTextSize(text).x > size.x - 6) { // a narrow tile: the short form
        if (t.latent_step < 0) std::snprintf(text, sizeof text, "latent space");
        else std::snprintf(text, sizeof text, "latent, step %ld", t.latent_step);
    }
    text_at(dl, ImVec2(p0.x + 3, p0.y + 1), kDim, text);
    const size_t n = std::min(t.lx.size(), t.ly.size());
    if (!n) return;
    float x0 = 1e30f, x1 = -1e30f, y0 = 1e30f, y1 = -1e30f;
    for (size_t i = 0; i < n; i++) {
        x0 = std::min(x0, t.lx[i]); x1 = std::max(x1, t.lx[i]);
        y0 = std::min(y0, t.ly[i]); y1 = std::max(y1, t.ly[i]);
    }
    const float top = p0.y + ImGui::GetTextLineHeight() + 4;
    const float span = std::max({x1 - x0, y1 - y0, 1e-6f}) * 1.08f;
    const float sc = std::min(size.x - 8, p1.y - 4 - top) / span;
    const ImVec2 mid(0.5f * (p0.x + p1.x), 0.5f * (top + p1.y - 4));
    const float cx = 0.5f * (x0 + x1), cy = 0.5f * (y0 + y1);
    dl->PushClipRect(p0, p1, true);
    for (size_t i = 0; i < n; i++)
        dl->AddCircleFilled(ImVec2(mid.x + (t.lx[i] - cx) * sc, mid.y - (t.ly[i] - cy) * sc), 2.f,
                            with_alpha(angle_colour(i < t.lstate0.size() ? t.lstate0[i] : 0.f), 200), 6);
    dl->PopClipRect();
}

// Asks the front end for a run of the panel's settings; the view resets on its "started" report.
void start_run(App & app) {
    const TrainView & t = app.train;
    const std::vector<std::string> worlds = ekvae::world_names();
    const std::string world = worlds[std::clamp(t.world, 0, (int)worlds.size() - 1)];
    const json cfg = {{"preset", ekvae::browser_preset(world)}, {"objective", kObjectives[t.objective & 1]},
                      {"seed", t.seed}, {"steps", t.steps}};
    app.train_start(cfg.dump());
}

// A run began (from the panel or from ekvae.train()): config {preset, objective, seed, steps}.
void run_started(TrainView & t, const json & cfg) {
    const std::string preset = cfg.value("preset", std::string("browser"));
    TrainView fresh;
    fresh.open = t.open;
    fresh.world = t.world;
    fresh.objective = t.objective;
    fresh.seed = t.seed;
    fresh.steps = t.steps;
    t = fresh;
    t.run_world = ekvae::preset_world(preset);
    t.run_objective = cfg.value("objective", std::string("constrained"));
    t.run_seed = cfg.value("seed", 0);
    t.total = cfg.value("steps", 6000);
    t.running = t.started = true;
    // the panel's settings follow a run started from the page's API
    const std::vector<std::string> worlds = ekvae::world_names();
    for (int i = 0; i < (int)worlds.size(); i++)
        if (worlds[i] == t.run_world) t.world = i;
    t.objective = t.run_objective == "elbo" ? 1 : 0;
    t.seed = t.run_seed;
    t.steps = (int)t.total;
}

void draw_settings(App & app) {
    TrainView & t = app.train;
    const std::vector<std::string> worlds = ekvae::world_names();
    ImGui::BeginDisabled(t.running);
    if (worlds.size() > 1) {
        ImGui::SetNextItemWidth(-1);
        if (ImGui::BeginCombo("##train_world", ("world: " + worlds[std::clamp(t.world, 0, (int)worlds.size() - 1)]).c_str())) {
            for (int i = 0; i < (int)worlds.size(); i++)
                if (ImGui::Selectable(worlds[i].c_str(), i == t.world)) t.world = i;
            ImGui::EndCombo();
        }
        tip("The system to learn. Its simulator generates the training data inside the worker.");
    }
    ImGui::RadioButton("constrained", &t.objective, 0);
    tip("Minimise the rate R subject to the distortion D <= D0: lambda rises while D is above D0 (the paper's method).");
    ImGui::SameLine();
    ImGui::RadioButton("ELBO", &t.objective, 1);
    tip("Maximise the evidence lower bound -(D + R): the plain objective.");
    ImGui::SetNextItemWidth(-60);
    if (ImGui::InputInt("seed", &t.seed)) t.seed = std::clamp(t.seed, 0, 1000000);
    tip("The run's seed: the initialisations of its starts and its batches.");
    ImGui::SetNextItemWidth(-60);
    if (ImGui::InputInt("steps", &t.steps, 500, 2000)) t.steps = std::clamp(t.steps, 4500, 100000);
    tip("Training steps. The browser preset: 6000 (4 starts of 1000 steps, the best by its held-out objective continued; "
        "the learning rate falls over the last 1500).");
    ImGui::EndDisabled();
    if (!t.running) {
        if (ImGui::Button("Start")) start_run(app);
        record_item(app, "train:start");
        tip("Train a new model in a background worker of this page (about a minute on a laptop).");
        if (t.stopped && t.step < t.total) {
            ImGui::SameLine();
            if (ImGui::Button("Resume") && app.train_resume) app.train_resume();
            record_item(app, "train:resume");
        }
    } else {
        if (ImGui::Button("Stop") && app.train_stop) app.train_stop();
        record_item(app, "train:stop");
        tip("Stop after the current step; the model so far is kept (Resume continues the run).");
    }
}

void draw_status(App & app) {
    TrainView & t = app.train;
    if (!t.started) {
        ImGui::PushStyleColor(ImGuiCol_Text, ImGui::ColorConvertU32ToFloat4(kDim));
        ImGui::TextWrapped("Press Start to train a model here, in this tab, and watch its latent space form: the angle "
                           "becomes a ring, the velocity orders itself across it (or, with the ELBO on some seeds, not).");
        ImGui::PopStyleColor();
        return;
    }
    char over[64];
    std::snprintf(over, sizeof over, "step %ld / %ld", t.step, t.total);
    ImGui::ProgressBar(t.total > 0 ? (float)t.step / (float)t.total : 0.f, ImVec2(-1, 0), over);
    if (t.running) // wrapped: a phone's panel is narrower than the line
        ImGui::TextWrapped("%.0f steps/s on %d thread%s, %s left", t.steps_per_s, t.threads, t.threads == 1 ? "" : "s",
                           fmt_seconds(t.eta_s).c_str());
    else ImGui::Text("%s after %s", t.finished && !t.stopped ? "done" : "stopped", fmt_seconds(t.seconds).c_str());
    if (t.choosing) ImGui::TextDisabled("choosing among starts: %d of %d", t.start + 1, t.starts);
    if (ImGui::Checkbox("live filter uses this model", &t.follow) && t.follow) t.snapshot_step = -1;
    tip("The world's filter and forecast run the model being trained (a new snapshot every few seconds). "
        "Choosing another model turns this off.");
    if (!t.error.empty()) ImGui::TextColored(ImVec4(1.f, 0.45f, 0.35f, 1.f), "%s", t.error.c_str());
    if (!t.evaluated) return;
    ImGui::Separator();
    if (t.bar.empty()) ImGui::TextWrapped("Quality bar: none for %s (shared/eval.cpp, quality_bar)", t.run_world.c_str());
    else ImGui::Text("Quality bar (fresh test set): %s", t.bar_met ? "met" : "missed");
    for (const TrainView::Check & c : t.bar)
        ImGui::TextColored(c.met ? ImVec4(0.55f, 0.85f, 0.55f, 1.f) : ImVec4(1.f, 0.55f, 0.4f, 1.f), "%s %-13s %.3f %s %.2g",
                           c.met ? "ok  " : "miss", c.name.c_str(), c.value, c.at_least ? ">=" : "<=", c.limit);
    if (app.train_download && ImGui::Button("Download")) app.train_download();
    record_item(app, "train:download");
    tip("Save the model file (.safetensors): ekvae_eval and the native viewer load it.");
    ImGui::SameLine();
    const std::string shipped = t.run_world + "-" + t.run_objective + ".safetensors";
    const bool have = std::find(app.shipped.begin(), app.shipped.end(), shipped) != app.shipped.end();
    ImGui::BeginDisabled(!have || !app.request_model || t.run_world != app.world->name);
    if (ImGui::Button("Compare with shipped")) {
        app.opt.compare = true;
        app.request_model(shipped, 1);
    }
    ImGui::EndDisabled();
    record_item(app, "train:compare");
    tip(("Run " + shipped + " beside the model you trained, on the same world and frames.").c_str());
}

} // namespace

void draw_train_panel(App & app) {
    if (!app.train_start) {
        ImGui::TextWrapped("Training runs in the browser page (a Web Worker); this viewer has no worker. "
                           "Natively: ekvae_train --preset browser.");
        return;
    }
    TrainView & t = app.train;
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const bool wide = avail.x > 480;
    const float left_w = wide ? std::min(270.f, avail.x * 0.45f) : avail.x;
    ImGui::BeginChild("train_left", ImVec2(left_w, wide ? 0.f : 0.f), false, wide ? 0 : ImGuiWindowFlags_AlwaysUseWindowPadding);
    draw_settings(app);
    draw_status(app);
    float plots_h = 0;
    if (!wide) { // stacked: the plots under the settings
        const float w = ImGui::GetContentRegionAvail().x;
        plots_h = w * 0.9f;
    }
    auto plots = [&](ImVec2 p0, ImVec2 size) {
        const float gap = 4.f, cw = std::floor(size.x * 0.5f - gap * 0.5f), lw = size.x - cw - gap;
        const float ch = (size.y - 3 * gap) / 4;
        const bool constrained = t.run_objective != "elbo";
        draw_curve("D", t.D, p0, ImVec2(cw, ch), kStreamCol[0], constrained ? t.D0 : NAN);
        draw_curve("R", t.R, ImVec2(p0.x, p0.y + ch + gap), ImVec2(cw, ch), kStreamCol[1]);
        draw_curve("lambda", t.lambda, ImVec2(p0.x, p0.y + 2 * (ch + gap)), ImVec2(cw, ch), kTorqueCol);
        draw_curve("ELBO", t.elbo, ImVec2(p0.x, p0.y + 3 * (ch + gap)), ImVec2(cw, ch), kTruth);
        draw_train_latent(t, ImVec2(p0.x + cw + gap, p0.y), ImVec2(lw, std::min(size.y, lw + 30)));
        record(app, "train:plots", p0, ImVec2(p0.x + size.x, p0.y + size.y));
    };
    if (!wide && t.started) {
        const ImVec2 p0 = ImGui::GetCursorScreenPos();
        plots(p0, ImVec2(ImGui::GetContentRegionAvail().x, plots_h));
        ImGui::Dummy(ImVec2(1, plots_h));
    }
    ImGui::EndChild();
    if (wide) {
        ImGui::SameLine();
        const ImVec2 p0 = ImGui::GetCursorScreenPos();
        const ImVec2 a = ImGui::GetContentRegionAvail();
        plots(p0, a);
        ImGui::Dummy(a);
    }
}

void app_train_report(App & app, const std::string & type, const std::string & text) {
    TrainView & t = app.train;
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return;
    if (type == "started") {
        run_started(t, j);
    } else if (type == "resumed") {
        t.running = true;
        t.stopped = t.finished = t.evaluated = false;
        t.bar.clear();
        t.error.clear();
    } else if (type == "progress") {
        t.step = j.value("step", 0L);
        t.total = j.value("steps", t.total);
        t.seconds = j.value("seconds", 0.0);
        t.steps_per_s = j.value("steps_per_s", 0.0);
        t.eta_s = j.contains("eta_s") && j["eta_s"].is_number() ? j["eta_s"].get<double>() : NAN;
        t.choosing = j.value("choosing", false);
        t.start = j.value("start", 0);
        t.starts = j.value("starts", 0);
        t.threads = j.value("threads", 1);
        t.heap_mb = j.value("heap_bytes", 0.0) / 1e6;
        t.D0 = j.value("D0", t.D0);
        if (j.contains("series")) {
            const json & s = j["series"];
            auto add = [&](const char * key, std::vector<float> & v) {
                if (s.contains(key))
                    for (const json & x : s[key]) v.push_back(x.get<float>());
            };
            add("step", t.curve_step);
            add("D", t.D);
            add("R", t.R);
            add("lambda", t.lambda);
            add("elbo", t.elbo);
        }
    } else if (type == "latent") {
        t.lx = j.value("x", std::vector<float>{});
        t.ly = j.value("y", std::vector<float>{});
        t.lstate0.clear();
        if (j.contains("state"))
            for (const json & row : j["state"]) t.lstate0.push_back(row.empty() ? 0.f : row[0].get<float>());
        t.latent_step = j.value("step", -1L);
    } else if (type == "finished") {
        t.running = false;
        t.finished = true;
        t.stopped = j.value("stopped", false);
        t.step = j.value("step", t.step);
        t.total = j.value("steps", t.total);
        t.seconds = j.value("seconds", t.seconds);
        t.bar.clear();
        t.evaluated = j.contains("metrics") && j["metrics"].contains("bar"); // tw_metrics answers {} without a run
        if (t.evaluated)
            for (const json & c : j["metrics"]["bar"])
                t.bar.push_back({c.value("name", std::string()), c.value("value", 0.0), c.value("limit", 0.0), c.value("at_least", true),
                                 c.value("met", false)});
        t.bar_met = j.contains("metrics") && j["metrics"].value("bar_met", false);
        if (j.value("diverged", false)) t.error = "training diverged (20 non-finite steps in a row); the last good weights are kept";
    } else if (type == "error") {
        t.running = false;
        t.error = j.value("message", std::string("training failed"));
    }
}

void app_train_snapshot_loaded(App & app, long step) { app.train.snapshot_step = step; }
