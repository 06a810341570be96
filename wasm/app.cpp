// app.cpp: the ekvae demo's UI in plain Dear ImGui (see app.h).
//
// Panels: controls (left, hidden with ui=minimal), the true pendulum (large, draggable),
// "what the model sees" (the W x W observation, magnified with visible pixels), and the
// forecast and latent-space panels, which say "no model loaded" until the EKVAE model exists.
// Every place the model will plug in is marked "EKVAE hook".
#include "app.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <imgui.h>
#include <nlohmann/json.hpp>

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kStartPush = 1.0;       // initial omega (rad/s): a small push from hanging down
constexpr int kMaxStepsPerFrame = 16;    // after a long stall, drop time instead of catching up
constexpr double kDragGain = 4.0;        // drag torque = gain * (pointer angle - theta) - damping * omega
constexpr double kDragDamping = 1.0;

double clip(double v, double lo, double hi) { return std::min(std::max(v, lo), hi); }

// The torque of the next step: mouse drag, else arrow keys, else the slider; clipped.
double applied_torque(const App & app) {
    const double umax = app.world.max_torque;
    double u = app.torque_slider;
    if (app.dragging) {
        double err = ekvae::wrap_angle(app.drag_angle - app.state.theta);
        u = kDragGain * err - kDragDamping * app.state.omega;
    } else if (app.key_dir != 0) {
        u = app.key_dir * umax;
    }
    return clip(u, -umax, umax);
}

// Renders the current state and adds pixel noise: the frame the filter will consume.
void update_observation(App & app) {
    const int n = app.W * app.W;
    app.image.resize(n);
    app.obs.resize(n);
    ekvae::render_pendulum(app.state.theta, app.W, app.image.data());
    for (int i = 0; i < n; i++) {
        double v = app.image[i];
        if (app.noise > 0.f) v += app.noise * app.rng.normal();
        app.obs[i] = (float)clip(v, 0.0, 1.0);
    }
}

// One world step under the current torque u_t (applied between frame t and t+1).
void world_step(App & app) {
    const double u = applied_torque(app);
    app.state = ekvae::pendulum_step(app.world, app.state, u);
    app.torque = u;
    app.t += app.world.dt;
    app.steps++;
    update_observation(app);
    // EKVAE hook (filter): with a model loaded, advance the filter here by one frame:
    //   predict with u_t (z' = F z + B u, P' = F P F^T + Q), then, unless app.covered,
    //   update with the encoded observation app.obs (a = encoder(obs), K = P H^T S^-1, ...).
    // EKVAE hook (forecast): then roll the filtered state H = opt.horizon steps ahead under
    //   the torque assumption opt.torque_mode and decode the frames for the film strip.
}

// Screen-space point of the pendulum at angle theta: theta = 0 up, image y grows downward.
ImVec2 rod_point(ImVec2 c, float r, double theta) {
    return ImVec2(c.x + r * (float)std::sin(theta), c.y - r * (float)std::cos(theta));
}

void draw_pendulum_panel(App & app) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    ImVec2 size = ImGui::GetContentRegionAvail();
    size.x = std::max(size.x, 32.f);
    size.y = std::max(size.y, 32.f);
    // The whole canvas catches the mouse: dragging anywhere pulls the pendulum toward the pointer.
    ImGui::InvisibleButton("pendulum_canvas", size);
    const bool active = ImGui::IsItemActive();
    const ImVec2 c(p0.x + size.x * 0.5f, p0.y + size.y * 0.5f);
    const float R = 0.40f * std::min(size.x, size.y);

    app.dragging = active;
    if (active) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        app.drag_angle = std::atan2((double)(m.x - c.x), -(double)(m.y - c.y));
    }

    dl->AddRectFilled(p0, ImVec2(p0.x + size.x, p0.y + size.y), IM_COL32(24, 26, 32, 255));
    dl->AddCircle(c, R, IM_COL32(70, 74, 86, 255), 96, 1.5f);
    // Torque: an arc around the pivot, its length proportional to u (clockwise for u > 0).
    const double u = app.torque;
    if (std::fabs(u) > 1e-3) {
        const float ra = 0.28f * R;
        const float a0 = (float)(app.state.theta - kPi / 2);     // ImGui arcs: 0 = +x, clockwise on screen
        const float span = (float)(u / app.world.max_torque * kPi * 0.75);
        dl->PathArcTo(c, ra, std::min(a0, a0 + span), std::max(a0, a0 + span), 32);
        dl->PathStroke(IM_COL32(255, 160, 40, 255), 0, 4.f);
        const float ae = a0 + span;
        const ImVec2 tip(c.x + ra * std::cos(ae), c.y + ra * std::sin(ae));
        const float dir = span > 0 ? 1.f : -1.f; // tangent direction of travel
        const ImVec2 tan(-std::sin(ae) * dir, std::cos(ae) * dir);
        const ImVec2 nrm(std::cos(ae), std::sin(ae));
        const float h = 0.09f * R;
        dl->AddTriangleFilled(ImVec2(tip.x + tan.x * h, tip.y + tan.y * h),
                              ImVec2(tip.x + nrm.x * h * 0.6f, tip.y + nrm.y * h * 0.6f),
                              ImVec2(tip.x - nrm.x * h * 0.6f, tip.y - nrm.y * h * 0.6f),
                              IM_COL32(255, 160, 40, 255));
    }
    if (active) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        dl->AddLine(c, m, IM_COL32(120, 200, 255, 160), 1.5f);
        dl->AddCircleFilled(m, 5.f, IM_COL32(120, 200, 255, 200));
    }
    const ImVec2 tip = rod_point(c, R, app.state.theta);
    dl->AddLine(c, tip, IM_COL32(230, 230, 235, 255), std::max(3.f, 0.06f * R));
    dl->AddCircleFilled(tip, std::max(5.f, 0.09f * R), IM_COL32(235, 90, 80, 255), 48);
    dl->AddCircleFilled(c, std::max(3.f, 0.035f * R), IM_COL32(160, 160, 170, 255), 24);

    char buf[160];
    std::snprintf(buf, sizeof buf, "t = %6.2f s   theta = %+5.2f rad   omega = %+5.2f rad/s   u = %+4.2f",
                  app.t, app.state.theta, app.state.omega, app.torque);
    dl->AddText(ImVec2(p0.x + 8, p0.y + 6), IM_COL32(210, 210, 215, 255), buf);
    dl->AddText(ImVec2(p0.x + 8, p0.y + size.y - 22), IM_COL32(140, 140, 150, 255),
                app.paused ? "paused" : "drag the pendulum, or hold <- / ->");
}

void draw_observation_panel(App & app) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const int W = app.W;
    ImGui::Text("%d x %d pixels, noise sigma = %.2f", W, W, app.noise);
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float cell = std::floor(std::max(2.f, std::min(avail.x, avail.y) / (float)W));
    const float side = cell * W;
    ImGui::Dummy(ImVec2(side, side));
    // Pixel borders: a grey backdrop with each pixel drawn 1 px inset.
    dl->AddRectFilled(p0, ImVec2(p0.x + side, p0.y + side), IM_COL32(60, 60, 70, 255));
    const float gap = cell >= 6.f ? 1.f : 0.f;
    for (int i = 0; i < W; i++) {
        for (int j = 0; j < W; j++) {
            const float v = app.obs.empty() ? 0.f : app.obs[(size_t)i * W + j];
            const int g = (int)std::lround(255.0 * v * (app.covered ? 0.25 : 1.0));
            const ImVec2 a(p0.x + j * cell + gap, p0.y + i * cell + gap);
            const ImVec2 b(p0.x + (j + 1) * cell, p0.y + (i + 1) * cell);
            dl->AddRectFilled(a, b, IM_COL32(g, g, g, 255));
        }
    }
    if (app.covered) {
        const char * msg = "camera covered: the filter gets no frames";
        const ImVec2 ts = ImGui::CalcTextSize(msg);
        dl->AddText(ImVec2(p0.x + std::max(0.f, (side - ts.x) * 0.5f), p0.y + side * 0.5f - ts.y * 0.5f),
                    IM_COL32(255, 200, 80, 255), msg);
    }
}

void draw_forecast_panel(App & app) {
    // EKVAE hook (forecast panel): the next H decoded frames as a film strip, and the forecast
    // angle with a +-2 sigma band against the true future (the simulator rolled ahead under
    // opt.torque_mode). Until then, say so; never show made-up model outputs.
    ImGui::TextDisabled("No model loaded.");
    ImGui::TextWrapped("The forecast of the next H = %d frames (torque assumption: %s) appears here "
                       "once a trained model is loaded from models/.",
                       app.opt.horizon, app.opt.torque_mode == "zero" ? "zero torque" : "hold current torque");
    if (app.opt.compare) ImGui::TextWrapped("Compare mode requested: both shipped models side by side.");
    if (!app.opt.model.empty()) ImGui::TextWrapped("Requested model: %s", app.opt.model.c_str());
}

void draw_latent_panel(App &) {
    // EKVAE hook (latent panel): recent filtered means of z, coloured by the true angle and by
    // the true velocity.
    ImGui::TextDisabled("No model loaded.");
    ImGui::TextWrapped("Recent filtered latent means appear here once a model is loaded.");
}

void draw_controls(App & app) {
    ImGui::TextUnformatted("ekvae: the pendulum world");
    ImGui::Separator();
    if (ImGui::Button("Reset")) app_reset(app, kPi, kStartPush);
    ImGui::SameLine();
    if (ImGui::Button(app.paused ? "Resume" : "Pause")) app.paused = !app.paused;
    ImGui::SameLine();
    if (ImGui::Button("Step")) { app.paused = true; app_step(app, 1); }
    ImGui::SliderFloat("speed", &app.speed, 0.25f, 4.f, "%.2fx", ImGuiSliderFlags_Logarithmic);

    ImGui::Spacing();
    ImGui::TextUnformatted("Torque");
    float u = (float)app.torque_slider;
    if (ImGui::SliderFloat("u", &u, (float)-app.world.max_torque, (float)app.world.max_torque, "%+.2f"))
        app_set_torque(app, u);
    ImGui::SameLine();
    if (ImGui::SmallButton("0")) app_set_torque(app, 0.0);
    ImGui::TextDisabled("source: %s", app.dragging ? "mouse drag" : app.key_dir ? "arrow keys" : "slider");

    ImGui::Spacing();
    ImGui::TextUnformatted("Camera");
    ImGui::SliderFloat("noise", &app.noise, 0.f, 0.5f, "%.2f");
    ImGui::Checkbox("cover the camera", &app.covered);

    ImGui::Spacing();
    ImGui::TextUnformatted("Model");
    // EKVAE hook (model picker): shipped models from models/index.json, a file picker and
    // drag-and-drop; a bad file shows its error here and the previous model keeps running.
    ImGui::TextDisabled("no model loaded");

    ImGui::Separator();
    ImGui::Text("t      %8.2f s", app.t);
    ImGui::Text("theta  %+8.3f rad", app.state.theta);
    ImGui::Text("omega  %+8.3f rad/s", app.state.omega);
    ImGui::Text("u      %+8.3f", app.torque);
    ImGui::Text("%.0f FPS", app.fps);
    ImGui::TextDisabled("model time: - (no model)");
}

void panel(const char * title, ImVec2 pos, ImVec2 size, void (*body)(App &), App & app) {
    const ImGuiWindowFlags flags = ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize |
                                   ImGuiWindowFlags_NoCollapse | ImGuiWindowFlags_NoSavedSettings |
                                   ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoFocusOnAppearing;
    ImGui::SetNextWindowPos(pos, ImGuiCond_Always);
    ImGui::SetNextWindowSize(size, ImGuiCond_Always);
    if (ImGui::Begin(title, nullptr, flags)) body(app);
    ImGui::End();
}

} // namespace

bool parse_app_args(int argc, char ** argv, AppOptions & opt, std::vector<std::string> & rest, std::string & err) {
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto value = [&](const char * what) -> const char * {
            if (i + 1 >= argc) { err = a + ": missing " + what; return nullptr; }
            return argv[++i];
        };
        if (a == "--horizon") {
            const char * v = value("a number of frames (1..200)");
            if (!v) return false;
            char * end = nullptr;
            long h = std::strtol(v, &end, 10);
            if (*v == '\0' || *end != '\0' || h < 1 || h > 200) {
                err = std::string("--horizon: expected 1..200 frames, got '") + v + "'";
                return false;
            }
            opt.horizon = (int)h;
        } else if (a == "--torque") {
            const char * v = value("hold or zero");
            if (!v) return false;
            if (std::string(v) != "hold" && std::string(v) != "zero") {
                err = std::string("--torque: expected hold or zero, got '") + v + "'";
                return false;
            }
            opt.torque_mode = v;
        } else if (a == "--compare") {
            opt.compare = true;
            if (i + 1 < argc && (std::string(argv[i + 1]) == "0" || std::string(argv[i + 1]) == "1"))
                opt.compare = std::string(argv[++i]) == "1";
        } else if (a == "--model") {
            const char * v = value("a model file name");
            if (!v) return false;
            opt.model = v;
        } else if (a == "--ui") {
            const char * v = value("minimal or full");
            if (!v) return false;
            if (std::string(v) != "minimal" && std::string(v) != "full") {
                err = std::string("--ui: expected minimal or full, got '") + v + "'";
                return false;
            }
            opt.minimal_ui = std::string(v) == "minimal";
        } else {
            rest.push_back(a);
        }
    }
    return true;
}

void app_init(App & app, const AppOptions & opt) {
    // The panels are fixed tiles: a focused title bar would mean nothing, so look the same.
    ImGuiStyle & style = ImGui::GetStyle();
    style.Colors[ImGuiCol_TitleBgActive] = style.Colors[ImGuiCol_TitleBg];
    style.WindowRounding = 4.f;
    app.opt = opt;
    app.paused = false;
    app.speed = 1.f;
    app.torque_slider = 0.0;
    app_reset(app, kPi, kStartPush);
}

void app_reset(App & app, double theta, double omega) {
    app.state.theta = ekvae::wrap_angle(theta);
    app.state.omega = clip(omega, -app.world.max_speed, app.world.max_speed);
    app.t = 0.0;
    app.steps = 0;
    app.accumulator = 0.0;
    app.torque = 0.0;
    update_observation(app);
    // EKVAE hook (filter): reset the filter to its prior here.
}

void app_set_torque(App & app, double u) {
    app.torque_slider = clip(u, -app.world.max_torque, app.world.max_torque);
}

void app_step(App & app, int n) {
    for (int i = 0; i < n; i++) world_step(app);
}

void app_frame(App & app, float dt_seconds) {
    ImGuiIO & io = ImGui::GetIO();
    app.fps = io.Framerate;
    app.frames++;

    // Arrow keys: full torque while held (right = +max, clockwise on screen).
    app.key_dir = 0;
    if (!io.WantTextInput) {
        if (ImGui::IsKeyDown(ImGui::GetKeyIndex(ImGuiKey_RightArrow))) app.key_dir += 1;
        if (ImGui::IsKeyDown(ImGui::GetKeyIndex(ImGuiKey_LeftArrow))) app.key_dir -= 1;
    }

    // Real time -> world steps of world.dt, at the chosen speed.
    if (!app.paused) {
        app.accumulator += std::min((double)dt_seconds, 0.25) * app.speed;
        int n = 0;
        while (app.accumulator >= app.world.dt && n < kMaxStepsPerFrame) {
            world_step(app);
            app.accumulator -= app.world.dt;
            n++;
        }
        if (n == kMaxStepsPerFrame) app.accumulator = 0.0;
    }

    // Layout: controls on the left (unless ui=minimal), then a 2 x 2 grid of panels.
    const ImVec2 ds = io.DisplaySize;
    const float m = 6.f;
    float x0 = m;
    if (!app.opt.minimal_ui) {
        const float cw = std::min(300.f, std::max(200.f, ds.x * 0.3f));
        panel("Controls", ImVec2(m, m), ImVec2(cw, ds.y - 2 * m), draw_controls, app);
        x0 = cw + 2 * m;
    }
    const float aw = std::max(100.f, ds.x - x0 - m);
    const float ah = std::max(100.f, ds.y - 2 * m);
    const float w1 = std::floor(aw * 0.56f), w2 = aw - w1 - m;
    const float h1 = std::floor(ah * 0.62f), h2 = ah - h1 - m;
    panel("Pendulum", ImVec2(x0, m), ImVec2(w1, h1), draw_pendulum_panel, app);
    panel("What the model sees", ImVec2(x0 + w1 + m, m), ImVec2(w2, h1), draw_observation_panel, app);
    panel("Forecast", ImVec2(x0, m + h1 + m), ImVec2(w1, h2), draw_forecast_panel, app);
    panel("Latent space", ImVec2(x0 + w1 + m, m + h1 + m), ImVec2(w2, h2), draw_latent_panel, app);
}

std::string app_state_json(const App & app) {
    nlohmann::json j;
    j["t"] = app.t;
    j["theta"] = app.state.theta;
    j["omega"] = app.state.omega;
    j["torque"] = app.torque;
    j["torque_setting"] = app.torque_slider;
    j["covered"] = app.covered;
    j["paused"] = app.paused;
    j["speed"] = app.speed;
    j["noise"] = app.noise;
    j["steps"] = app.steps;
    j["frames"] = app.frames;
    j["fps"] = app.fps;
    j["horizon"] = app.opt.horizon;
    j["torque_mode"] = app.opt.torque_mode;
    j["compare"] = app.opt.compare;
    j["model"] = app.opt.model.empty() ? nlohmann::json() : nlohmann::json(app.opt.model);
    // EKVAE hook (state): estimate {theta, omega}, forecast {theta: [H], sigma: [H]} and
    // model_ms come from the filter; null until a model is loaded.
    j["model_loaded"] = false;
    j["estimate"] = nullptr;
    j["forecast"] = nullptr;
    j["model_ms"] = nullptr;
    return j.dump();
}
