// app_controls.cpp: the demo's controls (see app.h): the control panel (run buttons, speed,
// torque sliders, camera, models, forecast options, latent axes, timings), the compact
// layout's torque strip, and the help ("what you see / what to try"). Every control has a
// tooltip; app_panels.cpp places them.
#include "app_ui.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

static const char * kKeyNames[2] = {"<- / ->", "down / up"};
static const char * kPaperUrl = "https://openreview.net/forum?id=-WEryOMRpZU";

static const char * torque_source(const App & app) {
    if (app.dragging) return "mouse drag";
    for (int d : app.key_dir)
        if (d) return "keys";
    return "sliders";
}

// Reset, Pause / Resume, Step.
static void run_buttons(App & app) {
    if (ImGui::Button("Reset")) app_reset(app, app_start_state(app));
    tip("Back to the start state; every filter starts again from its prior.");
    ImGui::SameLine();
    if (ImGui::Button(app.paused ? "Resume" : "Pause")) app.paused = !app.paused;
    tip("Pause the simulation; while paused, drag the system to place it.");
    ImGui::SameLine();
    if (ImGui::Button("Step")) { app.paused = true; app_step(app, 1); }
    tip("One time step, then paused.");
}

// One slider per joint with a "0" button beside it; width < 0: ImGui's default item width.
static void torque_sliders(App & app, float width) {
    const ekvae::World & w = *app.world;
    for (int j = 0; j < w.U; j++) {
        ImGui::PushID(j);
        float u = (float)app.torque_slider[j];
        const std::string label = w.U > 1 ? "u" + std::to_string(j + 1) : std::string("u");
        const float zero_w = ImGui::CalcTextSize("0").x + 2 * ImGui::GetStyle().FramePadding.x;
        const float label_w = ImGui::CalcTextSize(label.c_str()).x + ImGui::GetStyle().ItemInnerSpacing.x;
        if (width > 0) ImGui::SetNextItemWidth(std::max(40.f, width - zero_w - label_w - ImGui::GetStyle().ItemSpacing.x));
        if (ImGui::SliderFloat(label.c_str(), &u, (float)-w.action_max(j), (float)w.action_max(j), "%+.2f")) app_set_torque(app, j, u);
        record_item(app, "torque" + std::to_string(j + 1));
        tip(w.U > 1 ? "The torque at this joint (N m); positive turns clockwise. Keys: <- / -> joint 1, down / up joint 2."
                    : "The torque at the pivot (N m); positive turns clockwise. Keys: <- / ->.");
        ImGui::SameLine();
        if (ImGui::Button("0")) app_set_torque(app, j, 0.0);
        tip("No torque.");
        ImGui::PopID();
    }
}

// The compact layout's strip under the world: the torque slider(s), and (unless minimal) the
// run buttons.
void draw_torque_strip(App & app) {
    torque_sliders(app, ImGui::GetContentRegionAvail().x);
    if (!app.opt.minimal_ui) run_buttons(app);
}

// A bullet with its text wrapped at the window's edge (ImGui's BulletText does not wrap).
static void bullet(const char * fmt, ...) IM_FMTARGS(1);
static void bullet(const char * fmt, ...) {
    char buf[512];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    ImGui::Bullet();
    ImGui::SameLine();
    ImGui::TextWrapped("%s", buf);
}

// "What you see / what to try": one line per panel, the keys, the paper.
void draw_help(App & app) {
    const ekvae::World & w = *app.world;
    ImGui::PushTextWrapPos(0.f);
    ImGui::TextUnformatted("What you see");
    bullet("%s: the real system, simulated live. The coloured fan is the model's estimate of each angle "
                      "(+-2 sigma); the yellow arc is the torque you apply.", w.U > 1 ? "The arm" : "The pendulum");
    bullet("What the model sees: a %d x %d camera frame each step. The model gets only these pixels and "
                      "the torque, never the angles.", app.W, app.W);
    bullet("Latent space: the model's state z, one dot per step. A good model lays the angle out "
                      "around a ring in colour order.");
    bullet("Forecast: the next H frames as the model imagines them (decoded from z), and each angle and "
                      "velocity against the truth; the band is +-2 sigma.");
    ImGui::Spacing();
    ImGui::TextUnformatted("What to try");
    bullet("Push it: %s, or drag %s. Pause, then drag to place it.", w.U > 1 ? "hold the arrow keys" : "hold <- / ->",
                      w.U > 1 ? "the hand" : "the bob");
    bullet("Cover the camera: the model keeps predicting without frames and grows unsure.");
    bullet("Compare the two objectives: the constrained model against the ELBO model on the same frames.");
    bullet("After Reset the bands are wide for a moment: the filter starts from its prior and "
                      "narrows as frames come in.");
    if (app.train_start)
        bullet("Train your own model here (Train a model / the Train tab): about a minute and a half in this tab; watch "
               "its latent space become a ring, then play with it.");
    ImGui::Spacing();
    ImGui::TextUnformatted("Keys (once the demo has the focus)");
    bullet(w.U > 1 ? "<- / -> turn joint 1, down / up joint 2." : "<- / -> push the pendulum.");
    bullet("Tab: into the controls (arrows move, Space presses, Esc back); Tab again leaves the demo.");
    ImGui::PopTextWrapPos();
    ImGui::Spacing();
    ImGui::TextDisabled("Klushyn et al., Latent Matters: Learning Deep State-Space Models (NeurIPS 2021)");
    if (app.open_url) {
        if (ImGui::Button("Read the paper")) app.open_url(kPaperUrl);
        tip(kPaperUrl);
        ImGui::SameLine();
    }
    if (ImGui::Button("Got it")) {
        app.help_open = false;
        if (app.help_seen) app.help_seen();
        if (app.compact) app.tab = 0;
    }
    record_item(app, "help");
}

// The last refused file: its first line (plain words) in red, the detail dimmer under it.
void show_model_error(const App & app) {
    if (app.model_error.empty()) return;
    const size_t nl = app.model_error.find('\n');
    ImGui::PushTextWrapPos(0.f);
    ImGui::TextColored(ImVec4(1.f, 0.5f, 0.45f, 1.f), "%s", app.model_error.substr(0, nl).c_str());
    if (nl != std::string::npos) ImGui::TextDisabled("%s", app.model_error.substr(nl + 1).c_str());
    ImGui::PopTextWrapPos();
}

static void draw_model_controls(App & app) {
    auto model_combo = [&](const char * id, int slot) {
        const std::string cur = app.streams[slot].name.empty() ? "(none)" : short_name(app, app.streams[slot].name);
        ImGui::PushStyleColor(ImGuiCol_Text, ImGui::ColorConvertU32ToFloat4(kStreamCol[slot]));
        const bool open = ImGui::BeginCombo(id, cur.c_str());
        ImGui::PopStyleColor();
        if (open) {
            for (const std::string & n : app_world_models(app))
                if (ImGui::Selectable(short_name(app, n).c_str(), n == app.streams[slot].name) && app.request_model &&
                    n != app.streams[slot].name)
                    app.request_model(n, slot);
            ImGui::EndCombo();
        }
        tip("A model shipped with the demo: '-constrained' was trained with the constrained objective\n"
            "(minimise R + lambda (D - D0)), '-elbo' with the plain ELBO.");
    };
    auto record_and_score = [&](int slot) {
        const ModelStream & st = app.streams[slot];
        if (!has_model(st)) return;
        ImGui::PushTextWrapPos(0.f);
        if (!st.record.empty()) ImGui::TextDisabled("%s", st.record.c_str());
        const StreamScore sc = stream_score(st);
        const ImVec4 col = ImGui::ColorConvertU32ToFloat4(kStreamCol[slot]);
        if (app.opt.compare && sc.n30 > 0)
            ImGui::TextColored(col, "last 10 s: angle err %.2f / %.2f rad @10/30, vel err %.2f", sc.angle10, sc.angle30, sc.velocity);
        else if (app.opt.compare && sc.n10 > 0)
            ImGui::TextColored(col, "last 10 s: angle err %.2f rad @10, vel err %.2f", sc.angle10, sc.velocity);
        ImGui::PopTextWrapPos();
    };
    ImGui::TextUnformatted("Model");
    model_combo("##model0", 0);
    record_and_score(0);
    bool cmp = app.opt.compare;
    if (ImGui::Checkbox("compare with", &cmp)) app_set_compare(app, cmp);
    tip("Run a second model on the same world and the same frames, side by side.");
    if (app.opt.compare) {
        model_combo("##model1", 1);
        record_and_score(1);
        ImGui::PushTextWrapPos(0.f);
        ImGui::TextDisabled("constrained: minimise R + lambda (D - D0); ELBO: minimise R + D. Watch the velocity estimate and "
                            "the long forecast: the scores above are each model's mean errors over the last 10 s.");
        ImGui::PopTextWrapPos();
    }
    if (app.open_file_picker) {
        if (ImGui::Button("Load your own file...")) app.open_file_picker();
        tip("A .safetensors file written by ekvae_train (RUN/model.safetensors).");
        ImGui::TextDisabled("or drop a .safetensors file here");
    }
    if (!app.loading.empty()) ImGui::TextDisabled("loading %s ...", app.loading.c_str());
    show_model_error(app);
    if (app.train_start && !app.compact) { // the compact layout has a Train tab
        ImGui::Separator();
        if (ImGui::Button(app.train.open ? "Close the Train panel" : "Train a model here...")) {
            if (app.train.open && app.train.running && app.train_stop) app.train_stop();
            app.train.open = !app.train.open;
        }
        record_item(app, "train:toggle");
        tip(app.train.open ? "Closing the panel stops a run in progress." : "Train a new model in this page, in about a minute, and watch it learn.");
    }
}

void draw_controls(App & app) {
    const ekvae::World & w = *app.world;
    const std::string title = std::string(w.title[0] == 'a' ? "An " : "A ") + w.title + " learned from pixels";
    ImGui::TextUnformatted(title.c_str());
    ImGui::Separator();
    const std::vector<std::string> worlds = ekvae::world_names();
    if (worlds.size() > 1) {
        const bool open = ImGui::BeginCombo("system", w.name.c_str());
        tip("The system simulated: the pendulum (one torque) or the two-link arm (two).");
        if (open) {
            std::string chosen;
            for (const std::string & n : worlds)
                if (ImGui::Selectable(n.c_str(), n == w.name) && n != w.name) chosen = n;
            ImGui::EndCombo();
            std::string err;
            if (!chosen.empty()) { app_set_world(app, chosen, err); return; } // the world changed under us
        }
    }
    if (!app.compact) {
        run_buttons(app);
        if (ImGui::Button(app.help_open ? "Close help" : "Help")) app.help_open = !app.help_open;
        tip("What you see and what to try, the keys, the paper.");
    }
    if (app.copy_link) {
        if (!app.compact) ImGui::SameLine();
        if (ImGui::Button("Copy link")) app.copy_link();
        tip("A link that opens the demo as it is now: system, model, horizon, compare, state.");
    }
    ImGui::SliderFloat("speed", &app.speed, 0.25f, 4.f, "%.2fx", ImGuiSliderFlags_Logarithmic);
    tip("Simulation speed relative to real time.");

    if (!app.compact) { // the compact layout keeps the torque sliders in view under the world
        ImGui::Spacing();
        ImGui::TextUnformatted(w.U > 1 ? "Torques" : "Torque");
        torque_sliders(app, -1.f);
        ImGui::TextDisabled("source: %s", torque_source(app));
        if (w.U > 1) {
            ImGui::PushTextWrapPos(0.f);
            ImGui::TextDisabled("keys: %s joint 1, %s joint 2", kKeyNames[0], kKeyNames[1]);
            ImGui::PopTextWrapPos();
        }
    }

    ImGui::Spacing();
    ImGui::TextUnformatted("Camera");
    ImGui::SliderFloat("noise", &app.noise, 0.f, 0.5f, "%.2f");
    tip("Gaussian pixel noise added to what the model sees.");
    bool cov = app.covered;
    if (ImGui::Checkbox("cover the camera", &cov)) app_cover(app, cov);
    tip("The model gets no frames: its filter only predicts, and its uncertainty grows.");

    ImGui::Spacing();
    draw_model_controls(app);

    ImGui::Spacing();
    ImGui::TextUnformatted("Forecast");
    int H = app.opt.horizon;
    if (ImGui::SliderInt("H frames", &H, 1, kMaxHorizon)) { app.opt.horizon = H; app.forecast_dirty = true; }
    tip("How many frames ahead the model forecasts, open-loop from its current belief.");
    int mode = app.opt.torque_mode == "zero" ? 1 : 0;
    const bool hold_clicked = ImGui::RadioButton("hold current torque", &mode, 0);
    tip("The forecast assumes the torque applied now is held.");
    const bool zero_clicked = ImGui::RadioButton("zero torque", &mode, 1);
    tip("The forecast assumes no torque from now on.");
    if (hold_clicked || zero_clicked) {
        app.opt.torque_mode = mode == 1 ? "zero" : "hold";
        app.forecast_dirty = true;
    }

    ImGui::Spacing();
    ImGui::TextUnformatted("Latent plot axes");
    if (ImGui::BeginCombo("##proj", projection_name(app, app.projection).c_str())) {
        for (int p = 0; p < projection_count(app); p++)
            if (ImGui::Selectable(projection_name(app, p).c_str(), p == app.projection)) app.projection = p;
        ImGui::EndCombo();
    }
    tip("The plane the latent plot shows: the model's own read-out of an angle, or two z coordinates.");

    ImGui::Separator();
    ImGui::Text("%.0f FPS", app.fps);
    if (has_model(app.streams[0])) {
        ImGui::Text("model time %.2f ms / frame", app.model_ms);
        for (int k = 0; k < n_streams(app); k++)
            ImGui::TextDisabled("  %s: filter %.2f, forecast %.2f ms", k == 0 ? "A" : "B", app.streams[k].filter_ms, app.streams[k].forecast_ms);
        ImGui::TextDisabled("(filter step + forecast + decoding)");
    }
}
