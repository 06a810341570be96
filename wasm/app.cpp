// app.cpp: the ekvae demo's UI and its model streams in plain Dear ImGui (see app.h).
//
// Layout (full): controls on the left (hidden with ui=minimal); on the right a top row with the
// true pendulum (with each model's estimate drawn over it), "what the model sees" and the
// latent space, and below it one forecast section per model (film strip + angle plot).
// Small windows (an iframe) get a compact layout: the pendulum and the forecast only.
//
// Timing: the filter consumes the observation of every world step (dt = 0.05 s); the forecast
// (H steps, decoded) is recomputed whenever the state, the torque or the options changed, so
// at most once per drawn frame. "Model time" is the time of that work in the last frame that
// ran the model.
#include "app.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <imgui.h>
#include <nlohmann/json.hpp>

using ekvae::Mat;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kStartPush = 1.0;       // initial omega (rad/s): a small push from hanging down
constexpr int kMaxStepsPerFrame = 16;    // after a long stall, drop time instead of catching up
constexpr double kDragGain = 4.0;        // drag torque = gain * (pointer angle - theta) - damping * omega
constexpr double kDragDamping = 1.0;
constexpr int kPastSteps = 60;           // estimate history in the angle plot (3 s)
constexpr int kLatentPoints = 300;       // filtered means in the latent plot (15 s)
constexpr int kMaxLatentDims = 8;
constexpr double kMaxModelParams = 64e6; // refuse configs beyond this before allocating

// Colours: the truth in white, each model stream in its own colour.
const ImU32 kTruth = IM_COL32(235, 235, 240, 255);
const ImU32 kStreamCol[2] = {IM_COL32(80, 170, 255, 255), IM_COL32(235, 110, 215, 255)};
const ImU32 kTorqueCol = IM_COL32(250, 200, 60, 255);
const ImU32 kPanelBg = IM_COL32(24, 26, 32, 255);
const ImU32 kGrid = IM_COL32(60, 64, 76, 255);
const ImU32 kDim = IM_COL32(150, 150, 160, 255);

double clip(double v, double lo, double hi) { return std::min(std::max(v, lo), hi); }

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

ImU32 with_alpha(ImU32 c, int a) { return (c & 0x00FFFFFFu) | ((ImU32)a << IM_COL32_A_SHIFT); }

// Angle colour: a cyclic hue, theta = 0 (up) red, going round the colour wheel.
ImU32 angle_colour(double theta) {
    float h = (float)((ekvae::wrap_angle(theta) + kPi) / (2 * kPi)), r, g, b;
    ImGui::ColorConvertHSVtoRGB(h, 0.75f, 1.f, r, g, b);
    return IM_COL32((int)(r * 255), (int)(g * 255), (int)(b * 255), 255);
}
// Velocity colour: diverging blue (negative) - grey - red (positive), saturating at +-6 rad/s.
ImU32 velocity_colour(double omega) {
    const float s = (float)clip(omega / 6.0, -1, 1);
    const float a = std::fabs(s);
    const float base = 0.62f;
    float r = base, g = base, b = base;
    if (s > 0) { r = base + (1.0f - base) * a; g = base * (1 - 0.75f * a); b = base * (1 - 0.85f * a); }
    else { b = base + (1.0f - base) * a; g = base * (1 - 0.45f * a); r = base * (1 - 0.85f * a); }
    return IM_COL32((int)(r * 255), (int)(g * 255), (int)(b * 255), 255);
}

bool has_model(const ModelStream & s) { return s.model != nullptr; }
int n_streams(const App & app) { return app.opt.compare && has_model(app.streams[1]) ? 2 : 1; }
std::string short_name(const std::string & file) {
    const std::string ext = ".safetensors";
    if (file.size() > ext.size() && file.compare(file.size() - ext.size(), ext.size(), ext) == 0)
        return file.substr(0, file.size() - ext.size());
    return file;
}

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
// The torque the forecast assumes for every future step.
double forecast_torque(const App & app) { return app.opt.torque_mode == "zero" ? 0.0 : applied_torque(app); }

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

// ---- model streams ---------------------------------------------------------------------------

void stream_clear_history(ModelStream & s) {
    s.started = false;
    s.past_theta.clear();
    s.past_sigma.clear();
    s.past_omega.clear();
    s.past_omega_sigma.clear();
    s.latent.clear();
    s.fc_theta.clear();
    s.fc_sigma.clear();
    s.fc_omega.clear();
    s.fc_omega_sigma.clear();
    s.pending.clear();
    s.err10.clear();
    s.err30.clear();
    s.err_omega.clear();
}

// ---- running forecast score -----------------------------------------------------------------------

constexpr int kScoreEvery = 5;     // steps between scored forecasts (0.25 s)
constexpr int kScoreWindow = 200;  // steps scored (10 s)

// After a world step: resolve the forecasts that reach this step, take the velocity error, and
// every kScoreEvery steps make a new 30-step forecast (means only, no decoding).
void stream_score_step(App & app, ModelStream & s, double u) {
    if (!has_model(s) || !s.started || !s.model->has_readout) return;
    auto push = [](std::deque<double> & d, double v, size_t cap) {
        d.push_back(v);
        while (d.size() > cap) d.pop_front();
    };
    push(s.err_omega, std::abs(s.est_omega - app.state.omega), kScoreWindow);
    while (!s.pending.empty() && s.pending.front().target <= app.steps) {
        const ModelStream::Pending p = s.pending.front();
        s.pending.pop_front();
        if (p.target == app.steps)
            push(p.h30 ? s.err30 : s.err10, std::abs(ekvae::wrap_angle(p.theta - app.state.theta)), kScoreWindow / kScoreEvery);
    }
    if (app.steps % kScoreEvery != 0) return;
    const Mat<float> U = Mat<float>::Constant(1, 30, (float)u);
    Mat<float> zs, Ps;
    ekvae::forecast(*s.tape, *s.model, s.z, s.P, U, zs, Ps, (Mat<float> *)nullptr);
    s.pending.push_back({app.steps + 10, false, ekvae::readout(*s.model, zs, Ps, 9).value[0]});
    s.pending.push_back({app.steps + 30, true, ekvae::readout(*s.model, zs, Ps, 29).value[0]});
    std::stable_sort(s.pending.begin(), s.pending.end(), [](const auto & a, const auto & b) { return a.target < b.target; });
}

} // namespace

StreamScore stream_score(const ModelStream & s) {
    auto mean = [](const std::deque<double> & d) {
        double t = 0;
        for (double v : d) t += v;
        return d.empty() ? NAN : t / (double)d.size();
    };
    return {mean(s.err10), mean(s.err30), mean(s.err_omega), (int)s.err10.size(), (int)s.err30.size()};
}

namespace {

// One filter step of stream s on the current observation (none while covered), predicting
// with u_prev (the torque applied since the previous frame). Returns the time taken (ms).
double stream_filter(App & app, ModelStream & s, double u_prev) {
    if (!has_model(s)) return 0;
    const double t0 = now_ms();
    Mat<float> x;
    if (!app.covered) x = Eigen::Map<const Mat<float>>(app.obs.data(), (Eigen::Index)app.obs.size(), 1);
    const Mat<float> u = Mat<float>::Constant(1, 1, (float)u_prev);
    ekvae::filter_step(*s.tape, *s.model, s.z, s.P, !s.started, u, app.covered ? nullptr : &x);
    s.started = true;
    ekvae::Readout r = ekvae::readout(*s.model, s.z, s.P);
    if (!s.z.allFinite() || !s.P.allFinite() || !std::isfinite(r.value[0]) || !std::isfinite(r.value[1])) {
        // Predicting open-loop for a long time (camera covered) can take the learned dynamics
        // where they expand without bound until float overflows: start again from the prior.
        ekvae::filter_step(*s.tape, *s.model, s.z, s.P, true, u, app.covered ? nullptr : &x);
        r = ekvae::readout(*s.model, s.z, s.P);
        s.restarts++;
    }
    s.est_theta = r.value[0];
    s.est_sigma = r.sigma[0];
    s.est_omega = r.value[1];
    s.est_omega_sigma = r.sigma[1];
    s.filter_ms = now_ms() - t0;
    s.past_theta.push_back(s.est_theta);
    s.past_sigma.push_back(s.est_sigma);
    s.past_omega.push_back(s.est_omega);
    s.past_omega_sigma.push_back(s.est_omega_sigma);
    while ((int)s.past_theta.size() > kPastSteps + 1) {
        s.past_theta.pop_front();
        s.past_sigma.pop_front();
        s.past_omega.pop_front();
        s.past_omega_sigma.pop_front();
    }
    LatentPoint p{};
    const int nz = std::min((int)s.z.rows(), kMaxLatentDims);
    for (int i = 0; i < nz; i++) p.z[i] = s.z(i, 0);
    p.theta = (float)app.state.theta;
    p.omega = (float)app.state.omega;
    s.latent.push_back(p);
    while ((int)s.latent.size() > kLatentPoints) s.latent.pop_front();
    return s.filter_ms;
}

// The open-loop forecast of stream s under constant torque u for H steps (decoded frames).
void stream_forecast(ModelStream & s, int H, double u) {
    const Mat<float> U = Mat<float>::Constant(1, H, (float)u);
    ekvae::forecast(*s.tape, *s.model, s.z, s.P, U, s.zs, s.Ps, &s.images);
    s.fc_theta.resize(H);
    s.fc_sigma.resize(H);
    s.fc_omega.resize(H);
    s.fc_omega_sigma.resize(H);
    for (int k = 0; k < H; k++) {
        const ekvae::Readout r = ekvae::readout(*s.model, s.zs, s.Ps, k);
        s.fc_theta[k] = r.value[0];
        s.fc_sigma[k] = r.sigma[0];
        s.fc_omega[k] = r.value[1];
        s.fc_omega_sigma[k] = r.sigma[1];
    }
}

// Model time accumulated since the last forecast (filter steps), closed by app_update_forecast.
double g_pending_ms = 0;

// One world step under the current torque u_t (applied between frame t and t+1), then one
// filter step per model on the new frame.
void world_step(App & app) {
    const double u = applied_torque(app);
    app.state = ekvae::pendulum_step(app.world, app.state, u);
    app.torque = u;
    app.t += app.world.dt;
    app.steps++;
    update_observation(app);
    for (ModelStream & s : app.streams) g_pending_ms += stream_filter(app, s, u);
    for (ModelStream & s : app.streams) stream_score_step(app, s, forecast_torque(app));
    app.forecast_dirty = true;
}

// Restarts stream s at the current frame (its prior, updated with the current observation).
void stream_restart(App & app, ModelStream & s) {
    stream_clear_history(s);
    g_pending_ms += stream_filter(app, s, 0.0);
    app.forecast_dirty = true;
}

// ---- drawing helpers ----------------------------------------------------------------------------

// Screen-space point of the pendulum at angle theta: theta = 0 up, image y grows downward.
ImVec2 rod_point(ImVec2 c, float r, double theta) {
    return ImVec2(c.x + r * (float)std::sin(theta), c.y - r * (float)std::cos(theta));
}

// A grey W x W image (values in [0, 1]) drawn into the square [p0, p0 + side]; pixels as rects
// (cheap enough up to a few thousand pixels per frame).
void draw_gray_image(ImDrawList * dl, const float * img, int W, ImVec2 p0, float side, float dim = 1.f) {
    const float cell = side / (float)W;
    for (int i = 0; i < W; i++) {
        for (int j = 0; j < W; j++) {
            const int g = (int)std::lround(255.0 * clip(img[(size_t)i * W + j], 0, 1) * dim);
            if (g < 3) continue; // the background is drawn once below
            dl->AddRectFilled(ImVec2(p0.x + j * cell, p0.y + i * cell), ImVec2(p0.x + (j + 1) * cell, p0.y + (i + 1) * cell),
                              IM_COL32(g, g, g, 255));
        }
    }
}

void text_at(ImDrawList * dl, ImVec2 p, ImU32 col, const char * s) { dl->AddText(p, col, s); }
void text_right(ImDrawList * dl, ImVec2 p, ImU32 col, const char * s) {
    dl->AddText(ImVec2(p.x - ImGui::CalcTextSize(s).x, p.y), col, s);
}

// Unwraps a sequence of angles so neighbours differ by less than pi.
std::vector<double> unwrap(const std::vector<double> & a) {
    std::vector<double> u(a.size());
    for (size_t i = 0; i < a.size(); i++)
        u[i] = i == 0 ? a[0] : u[i - 1] + ekvae::wrap_angle(a[i] - a[i - 1]);
    return u;
}

// ---- panels ------------------------------------------------------------------------------------------

void draw_pendulum_panel(App & app) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    ImVec2 size = ImGui::GetContentRegionAvail();
    size.x = std::max(size.x, 32.f);
    size.y = std::max(size.y, 32.f);
    // The whole canvas catches the mouse: dragging anywhere pulls the pendulum toward the pointer.
    ImGui::InvisibleButton("pendulum_canvas", size);
    const bool active = ImGui::IsItemActive();
    const float text_h = ImGui::GetTextLineHeight();
    const ImVec2 c(p0.x + size.x * 0.5f, p0.y + text_h + (size.y - 2.5f * text_h) * 0.5f);
    const float R = 0.40f * std::min(size.x, size.y - 2.5f * text_h);

    app.dragging = active;
    if (active) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        app.drag_angle = std::atan2((double)(m.x - c.x), -(double)(m.y - c.y));
    }

    dl->AddRectFilled(p0, ImVec2(p0.x + size.x, p0.y + size.y), kPanelBg);
    dl->AddCircle(c, R, IM_COL32(70, 74, 86, 255), 96, 1.5f);
    // Each model's estimate: a +-2 sigma fan around the estimated angle and a thin rod.
    for (int k = 0; k < n_streams(app); k++) {
        const ModelStream & s = app.streams[k];
        if (!has_model(s) || !s.started) continue;
        const double half = std::min(2 * s.est_sigma, kPi);
        const int n = 24;
        dl->PathLineTo(c);
        for (int i = 0; i <= n; i++) dl->PathLineTo(rod_point(c, R * 1.08f, s.est_theta - half + 2 * half * i / n));
        dl->PathFillConvex(with_alpha(kStreamCol[k], 45));
        dl->AddLine(c, rod_point(c, R * 1.08f, s.est_theta), kStreamCol[k], std::max(2.f, 0.025f * R));
    }
    // Torque: an arc around the pivot, its length proportional to u (clockwise for u > 0).
    const double u = app.torque;
    if (std::fabs(u) > 1e-3) {
        const float ra = 0.28f * R;
        const float a0 = (float)(app.state.theta - kPi / 2);     // ImGui arcs: 0 = +x, clockwise on screen
        const float span = (float)(u / app.world.max_torque * kPi * 0.75);
        dl->PathArcTo(c, ra, std::min(a0, a0 + span), std::max(a0, a0 + span), 32);
        dl->PathStroke(kTorqueCol, 0, 4.f);
        const float ae = a0 + span;
        const ImVec2 tip(c.x + ra * std::cos(ae), c.y + ra * std::sin(ae));
        const float dir = span > 0 ? 1.f : -1.f; // tangent direction of travel
        const ImVec2 tan(-std::sin(ae) * dir, std::cos(ae) * dir);
        const ImVec2 nrm(std::cos(ae), std::sin(ae));
        const float h = 0.09f * R;
        dl->AddTriangleFilled(ImVec2(tip.x + tan.x * h, tip.y + tan.y * h),
                              ImVec2(tip.x + nrm.x * h * 0.6f, tip.y + nrm.y * h * 0.6f),
                              ImVec2(tip.x - nrm.x * h * 0.6f, tip.y - nrm.y * h * 0.6f), kTorqueCol);
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

    char buf[200];
    std::snprintf(buf, sizeof buf, "t %6.2f s   theta %+5.2f   omega %+5.2f   u %+4.2f", app.t, app.state.theta,
                  app.state.omega, app.torque);
    text_at(dl, ImVec2(p0.x + 6, p0.y + 4), IM_COL32(210, 210, 215, 255), buf);
    // Legend (bottom): truth, the estimates, the torque arc.
    float x = p0.x + 6, y = p0.y + size.y - text_h - 4;
    auto legend = [&](ImU32 col, const char * label) {
        if (x + 18 + ImGui::CalcTextSize(label).x > p0.x + size.x) return;
        dl->AddRectFilled(ImVec2(x, y + 4), ImVec2(x + 14, y + text_h - 4), col);
        text_at(dl, ImVec2(x + 18, y), kDim, label);
        x += 18 + ImGui::CalcTextSize(label).x + 12;
    };
    legend(IM_COL32(230, 230, 235, 255), "true");
    for (int k = 0; k < n_streams(app); k++) {
        if (!has_model(app.streams[k])) continue;
        std::string label = n_streams(app) > 1 ? short_name(app.streams[k].name) : std::string("estimate");
        if (label.rfind("pendulum-", 0) == 0) label = label.substr(9);
        if (size.x > 420 && n_streams(app) == 1) label += " +-2 sigma";
        legend(kStreamCol[k], label.c_str());
    }
    legend(kTorqueCol, "torque");
    if (size.x > 520)
        text_right(dl, ImVec2(p0.x + size.x - 6, y), IM_COL32(120, 120, 130, 255),
                   app.paused ? "paused" : "drag it, or hold <- / ->");
}

void draw_observation_panel(App & app) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const int W = app.W;
    ImGui::TextDisabled("%d x %d pixels, noise %.2f", W, W, app.noise);
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
            const int g = (int)std::lround(255.0 * v * (app.covered ? 0.2 : 1.0));
            const ImVec2 a(p0.x + j * cell + gap, p0.y + i * cell + gap);
            const ImVec2 b(p0.x + (j + 1) * cell, p0.y + (i + 1) * cell);
            dl->AddRectFilled(a, b, IM_COL32(g, g, g, 255));
        }
    }
    if (app.covered) {
        const char * l1 = "camera covered:";
        const char * l2 = "the filter only predicts";
        const ImVec2 t1 = ImGui::CalcTextSize(l1), t2 = ImGui::CalcTextSize(l2);
        const float y = p0.y + side * 0.5f - t1.y;
        dl->AddRectFilled(ImVec2(p0.x, y - 4), ImVec2(p0.x + side, y + 2 * t1.y + 4), IM_COL32(20, 20, 24, 220));
        dl->AddText(ImVec2(p0.x + std::max(0.f, (side - t1.x) * 0.5f), y), IM_COL32(255, 200, 80, 255), l1);
        dl->AddText(ImVec2(p0.x + std::max(0.f, (side - t2.x) * 0.5f), y + t1.y), IM_COL32(255, 200, 80, 255), l2);
    }
}

// The 2-D coordinates of a latent point under the chosen projection.
ImVec2 project(const App & app, const ModelStream & s, const float * z) {
    const int nz = (int)s.model->cfg.n_z;
    if (app.projection == 0 && s.model->has_readout) {
        double c = s.model->readout_b(0, 0), sn = s.model->readout_b(1, 0);
        for (int i = 0; i < std::min(nz, kMaxLatentDims); i++) {
            c += s.model->readout_W(0, i) * z[i];
            sn += s.model->readout_W(1, i) * z[i];
        }
        // x = sin (right), y = cos (up): the latent circle drawn like the pendulum itself
        return ImVec2((float)sn, (float)c);
    }
    static const int pairs[4][2] = {{0, 1}, {0, 1}, {0, 2}, {1, 2}};
    const int a = std::min(pairs[app.projection][0], nz - 1), b = std::min(pairs[app.projection][1], nz - 1);
    return ImVec2(z[a], z[b]);
}

const char * kProjectionNames[4] = {"read-out (sin, cos)", "z0 / z1", "z0 / z2", "z1 / z2"};

// One scatter of stream s's recent filtered means, coloured by the true angle (by_angle) or
// velocity, in the rectangle [p0, p0 + size], with a colour bar legend underneath.
void draw_scatter(App & app, const ModelStream & s, ImVec2 p0, ImVec2 size, bool by_angle, ImU32 frame_col) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const float th = ImGui::GetTextLineHeight();
    const float bar_h = 6.f;
    const ImVec2 q0 = p0, q1(p0.x + size.x, p0.y + size.y - th - bar_h - 4);
    dl->AddRectFilled(q0, q1, kPanelBg);
    dl->AddRect(q0, q1, frame_col);
    // bounds: fixed for the read-out plane, else from the points (equal scales on both axes)
    float x0 = -1.4f, x1 = 1.4f, y0 = -1.4f, y1 = 1.4f;
    if (app.projection != 0 || !s.model->has_readout) {
        x0 = y0 = 1e30f; x1 = y1 = -1e30f;
        for (const LatentPoint & p : s.latent) {
            const ImVec2 v = project(app, s, p.z);
            x0 = std::min(x0, v.x); x1 = std::max(x1, v.x);
            y0 = std::min(y0, v.y); y1 = std::max(y1, v.y);
        }
        if (x0 > x1) { x0 = y0 = -1; x1 = y1 = 1; }
        const float span = std::max({x1 - x0, y1 - y0, 1e-3f}) * 0.55f;
        const float cx = 0.5f * (x0 + x1), cy = 0.5f * (y0 + y1);
        x0 = cx - span; x1 = cx + span; y0 = cy - span; y1 = cy + span;
    }
    const float w = q1.x - q0.x, h = q1.y - q0.y, sc = std::min(w / (x1 - x0), h / (y1 - y0));
    const ImVec2 mid(0.5f * (q0.x + q1.x), 0.5f * (q0.y + q1.y));
    const float cx = 0.5f * (x0 + x1), cy = 0.5f * (y0 + y1);
    auto to_screen = [&](ImVec2 v) { return ImVec2(mid.x + (v.x - cx) * sc, mid.y - (v.y - cy) * sc); };
    dl->PushClipRect(q0, q1, true);
    if (app.projection == 0 && s.model->has_readout) dl->AddCircle(to_screen(ImVec2(0, 0)), sc, kGrid, 64, 1.f);
    const size_t n = s.latent.size();
    for (size_t i = 0; i < n; i++) {
        const LatentPoint & p = s.latent[i];
        const ImU32 col = by_angle ? angle_colour(p.theta) : velocity_colour(p.omega);
        const float r = i + 1 == n ? 5.f : 2.5f;
        dl->AddCircleFilled(to_screen(project(app, s, p.z)), r, col, 8);
        if (i + 1 == n) dl->AddCircle(to_screen(project(app, s, p.z)), r + 1.5f, kTruth, 12, 1.5f);
    }
    dl->PopClipRect();
    // colour bar
    const float by = q1.y + 3;
    const int nb = 48;
    for (int i = 0; i < nb; i++) {
        const double f = (i + 0.5) / nb;
        const ImU32 col = by_angle ? angle_colour(-kPi + 2 * kPi * f) : velocity_colour(-6 + 12 * f);
        dl->AddRectFilled(ImVec2(q0.x + w * i / nb, by), ImVec2(q0.x + w * (i + 1) / nb + 0.5f, by + bar_h), col);
    }
    const float ty = by + bar_h;
    if (by_angle) {
        text_at(dl, ImVec2(q0.x, ty), kDim, "-pi");
        const char * mid_label = w > 150 ? "true angle (0 up)" : "angle";
        text_at(dl, ImVec2(q0.x + 0.5f * (w - ImGui::CalcTextSize(mid_label).x), ty), kDim, mid_label);
        text_right(dl, ImVec2(q1.x, ty), kDim, "pi");
    } else {
        text_at(dl, ImVec2(q0.x, ty), kDim, "-6");
        const char * mid_label = w > 150 ? "true velocity" : "velocity";
        text_at(dl, ImVec2(q0.x + 0.5f * (w - ImGui::CalcTextSize(mid_label).x), ty), kDim, mid_label);
        text_right(dl, ImVec2(q1.x, ty), kDim, "+6");
    }
}

void draw_latent_panel(App & app) {
    const int ns = n_streams(app);
    if (!has_model(app.streams[0])) {
        ImGui::TextDisabled(app.loading.empty() ? "No model loaded." : "Loading the model...");
        return;
    }
    ImGui::TextDisabled("filtered z, last %d s; axes: %s", kLatentPoints / 20, kProjectionNames[app.projection]);
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float gap = 8.f;
    const float th = ImGui::GetTextLineHeight();
    const float row_h = (avail.y - (ns - 1) * gap) / ns;
    for (int k = 0; k < ns; k++) {
        const ModelStream & s = app.streams[k];
        const float y = p0.y + k * (row_h + gap);
        float top = y;
        if (ns > 1) {
            ImGui::GetWindowDrawList()->AddText(ImVec2(p0.x, y), kStreamCol[k], short_name(s.name).c_str());
            top += th;
        }
        const float cw = (avail.x - gap) * 0.5f;
        const float ch = std::min(cw + th + 10, y + row_h - top);
        draw_scatter(app, s, ImVec2(p0.x, top), ImVec2(cw, ch), true, with_alpha(kStreamCol[k], 120));
        draw_scatter(app, s, ImVec2(p0.x + cw + gap, top), ImVec2(cw, ch), false, with_alpha(kStreamCol[k], 120));
        if (ns == 1 && y + row_h - (top + ch) > 3 * th) {
            ImGui::SetCursorScreenPos(ImVec2(p0.x, top + ch + 6));
            ImGui::PushStyleColor(ImGuiCol_Text, ImGui::ColorConvertU32ToFloat4(kDim));
            ImGui::TextWrapped("Each dot is the model's belief about z at one step (ringed: now). A good model lays the "
                               "angles out in colour order around a ring, with the velocity changing across it.");
            ImGui::PopStyleColor();
            return;
        }
    }
    ImGui::Dummy(avail);
}

// A row of H frames (images [D, H] column-major, or nullptr for the truth from app.true_images)
// scaled to fit width; shows every stride-th frame when they would be smaller than W pixels.
// Returns the height used.
float draw_film_strip(App & app, const Mat<float> * images, ImVec2 p0, float width, const char * label, ImU32 label_col,
                      float label_w) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const int W = app.W, D = W * W;
    const int H = images ? (int)images->cols() : (int)(app.true_images.size() / D);
    if (H <= 0) return 0;
    const float avail = width - label_w;
    int stride = 1;
    float cell = std::floor(avail / H) - 2.f;
    while ((cell < W * 0.99f || (H + stride - 1) / stride > 40) && stride < H) {
        stride++;
        cell = std::floor(avail / ((H + stride - 1) / stride)) - 2.f;
    }
    cell = std::min(cell, 3.f * W);
    const float th = ImGui::GetTextLineHeight();
    dl->AddText(ImVec2(p0.x, p0.y + 0.5f * (cell - th)), label_col, label);
    float x = p0.x + label_w;
    for (int k = stride - 1; k < H; k += stride) {
        const float * img = images ? images->col(k).data() : app.true_images.data() + (size_t)k * D;
        dl->AddRectFilled(ImVec2(x, p0.y), ImVec2(x + cell, p0.y + cell), IM_COL32(8, 8, 10, 255));
        draw_gray_image(dl, img, W, ImVec2(x, p0.y), cell);
        x += cell + 2.f;
    }
    return cell;
}

// The time plot of stream k: the past (filtered estimate vs truth) left of "now", the
// forecast (+-2 sigma) vs the true future right of it. The angle plot has hanging down (pi) in
// the middle of its y axis; angles are unwrapped and drawn at +-2 pi so full turns read well.
// The velocity plot (velocity = true) spans the world's +-8 rad/s.
void draw_time_plot(App & app, int k, ImVec2 p0, ImVec2 size, bool show_x_labels, bool velocity) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ModelStream & s = app.streams[k];
    const float th = ImGui::GetTextLineHeight();
    const float left = ImGui::CalcTextSize("down pi ").x + 4;
    const ImVec2 q0(p0.x + left, p0.y + 2), q1(p0.x + size.x - 4, p0.y + size.y - (show_x_labels ? th + 2 : 2));
    if (q1.y - q0.y < 20 || q1.x - q0.x < 40) return;
    dl->AddRectFilled(q0, q1, kPanelBg);
    const int H = (int)s.fc_theta.size();
    const double dt = app.world.dt;
    const double tmin = -kPastSteps * dt, tmax = std::max(H, 1) * dt;
    const double ylo = velocity ? -8.0 : 0.0, yhi = velocity ? 8.0 : 2 * kPi;
    auto X = [&](double tt) { return q0.x + (float)((tt - tmin) / (tmax - tmin)) * (q1.x - q0.x); };
    auto Y = [&](double a) { return q1.y - (float)((a - ylo) / (yhi - ylo)) * (q1.y - q0.y); };
    // grid and labels: theta = 0 (up), pi/2, pi (down), -pi/2, 0 (up); or -8 .. 8 rad/s
    const char * alab[5] = {"up 0", "pi/2", "down pi", "-pi/2", "up 0"};
    const char * vlab[5] = {"-8", "-4", "0", "+4", "+8"};
    for (int i = 0; i <= 4; i++) {
        const float y = Y(ylo + i * (yhi - ylo) / 4);
        dl->AddLine(ImVec2(q0.x, y), ImVec2(q1.x, y), i == 2 ? IM_COL32(80, 84, 98, 255) : kGrid);
        const float ty = std::min(std::max(y - 0.5f * th, q0.y - 2), q1.y - th + 2);
        text_right(dl, ImVec2(q0.x - 4, ty), kDim, velocity ? vlab[i] : alab[i]);
    }
    for (double tt = std::ceil(tmin); tt <= tmax + 1e-9; tt += 1.0) {
        const float x = X(tt);
        dl->AddLine(ImVec2(x, q0.y), ImVec2(x, q1.y), kGrid);
        if (show_x_labels) {
            char b[16];
            std::snprintf(b, sizeof b, "%+.0f s", tt);
            if (tt == 0) std::snprintf(b, sizeof b, "now");
            text_at(dl, ImVec2(x - 0.5f * ImGui::CalcTextSize(b).x, q1.y + 1), kDim, b);
        }
    }
    dl->PushClipRect(q0, q1, true);
    // a series (times, values) with an optional +-2 sigma band; angles unwrapped and drawn at
    // three offsets of 2 pi
    auto series = [&](const std::vector<double> & ts, const std::vector<double> & val, const std::vector<double> * sig,
                      ImU32 col, float thick) {
        if (ts.empty()) return;
        const std::vector<double> u = velocity ? val : unwrap(val);
        const double base = velocity ? 0.0 : std::fmod(std::fmod(u[0], 2 * kPi) + 2 * kPi, 2 * kPi) - u[0];
        // 2 sigma capped at half the angle axis: the copies at +-2 pi then tile it exactly
        // (a band that wide says the angle is unknown); velocity bands at the axis range
        const double cap = velocity ? 16.0 : kPi;
        for (int off = velocity ? 0 : -1; off <= (velocity ? 0 : 1); off++) {
            const double sh = base + off * 2 * kPi;
            if (sig) {
                const ImDrawListFlags flags = dl->Flags;
                dl->Flags &= ~ImDrawListFlags_AntiAliasedFill; // no seams between the band's quads
                for (size_t i = 0; i + 1 < ts.size(); i++) {
                    const double s0 = std::min(2 * (*sig)[i], cap), s1 = std::min(2 * (*sig)[i + 1], cap);
                    dl->AddQuadFilled(ImVec2(X(ts[i]), Y(u[i] + sh - s0)), ImVec2(X(ts[i + 1]), Y(u[i + 1] + sh - s1)),
                                      ImVec2(X(ts[i + 1]), Y(u[i + 1] + sh + s1)), ImVec2(X(ts[i]), Y(u[i] + sh + s0)),
                                      with_alpha(col, 55));
                }
                dl->Flags = flags;
            }
            for (size_t i = 0; i + 1 < ts.size(); i++)
                dl->AddLine(ImVec2(X(ts[i]), Y(u[i] + sh)), ImVec2(X(ts[i + 1]), Y(u[i + 1] + sh)), col, thick);
        }
    };
    const std::deque<double> & est = velocity ? s.past_omega : s.past_theta;
    const std::deque<double> & est_sig = velocity ? s.past_omega_sigma : s.past_sigma;
    const std::deque<double> & truth = velocity ? app.true_past_omega : app.true_past;
    // the past: truth and the filtered estimate (ending now)
    std::vector<double> tp, true_past, est_past, sig_past;
    const int np = std::min(est.size(), truth.size());
    for (int i = 0; i < np; i++) {
        tp.push_back(-(np - 1 - i) * dt);
        true_past.push_back(truth[truth.size() - np + i]);
        est_past.push_back(est[est.size() - np + i]);
        sig_past.push_back(est_sig[est_sig.size() - np + i]);
    }
    // the future: from now (the current estimate / state) H steps ahead
    std::vector<double> tf, true_fut, fc, fs;
    const std::vector<double> & fval = velocity ? s.fc_omega : s.fc_theta;
    const std::vector<double> & fsig = velocity ? s.fc_omega_sigma : s.fc_sigma;
    const std::vector<double> & tfut = velocity ? app.true_omega : app.true_theta;
    if (H > 0 && s.started) {
        tf.push_back(0);
        true_fut.push_back(velocity ? app.state.omega : app.state.theta);
        fc.push_back(velocity ? s.est_omega : s.est_theta);
        fs.push_back(velocity ? s.est_omega_sigma : s.est_sigma);
        for (int i = 0; i < H && i < (int)tfut.size() && i < (int)fval.size(); i++) {
            tf.push_back((i + 1) * dt);
            true_fut.push_back(tfut[i]);
            fc.push_back(fval[i]);
            fs.push_back(fsig[i]);
        }
    }
    series(tp, est_past, &sig_past, with_alpha(kStreamCol[k], 150), 1.5f);
    series(tf, fc, &fs, kStreamCol[k], 2.f);
    series(tp, true_past, nullptr, IM_COL32(200, 200, 205, 200), 1.5f);
    series(tf, true_fut, nullptr, kTruth, 2.f);
    dl->PopClipRect();
    dl->AddLine(ImVec2(X(0), q0.y), ImVec2(X(0), q1.y), IM_COL32(250, 250, 250, 120), 1.5f);
    dl->AddRect(q0, q1, kGrid);
    // legend (top-left inside the plot)
    float x = q0.x + 6, y = q0.y + 3;
    auto legend = [&](ImU32 col, const char * label, bool band) {
        if (band) dl->AddRectFilled(ImVec2(x, y + 2), ImVec2(x + 16, y + th - 2), with_alpha(col, 60));
        dl->AddLine(ImVec2(x, y + 0.5f * th), ImVec2(x + 16, y + 0.5f * th), col, 2.f);
        text_at(dl, ImVec2(x + 20, y), kDim, label);
        x += 20 + ImGui::CalcTextSize(label).x + 12;
    };
    legend(kTruth, velocity ? "true velocity (rad/s)" : "true angle", false);
    legend(kStreamCol[k], size.x > 520 ? "filtered (past) / forecast (future), +-2 sigma" : size.x > 320 ? "model +-2 sigma" : "model", true);
}

// The forecast section of stream k in [p0, p0 + size]: a header, the film strips, the plot.
void draw_forecast_section(App & app, int k, ImVec2 p0, ImVec2 size) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ModelStream & s = app.streams[k];
    const float th = ImGui::GetTextLineHeight();
    char buf[256];
    std::string title = short_name(s.name);
    if (size.x < 640 && title.rfind("pendulum-", 0) == 0) title = title.substr(9);
    std::snprintf(buf, sizeof buf, "%s", title.c_str());
    dl->AddText(p0, kStreamCol[k], buf);
    float hx = p0.x + ImGui::CalcTextSize(buf).x + 14;
    if (s.started) {
        std::snprintf(buf, sizeof buf, "estimate: theta %+5.2f +- %.2f (2 sigma; true %+5.2f)   omega %+5.2f (true %+5.2f)",
                      s.est_theta, 2 * s.est_sigma, app.state.theta, s.est_omega, app.state.omega);
        if (size.x < 640)
            std::snprintf(buf, sizeof buf, "theta %+4.2f (true %+4.2f)", s.est_theta, app.state.theta);
        dl->AddText(ImVec2(hx, p0.y), kDim, buf);
    }
    float y = p0.y + th + 4;
    const bool small = size.y < 200;
    const float label_w = ImGui::CalcTextSize("decoded ").x + 4;
    if (s.images.cols() > 0) {
        y += draw_film_strip(app, &s.images, ImVec2(p0.x, y), size.x, "model", kStreamCol[k], label_w) + 3;
        if (!small || k == 0)
            y += draw_film_strip(app, nullptr, ImVec2(p0.x, y), size.x, "true", kTruth, label_w) + 3;
    }
    // the angle plot, and the velocity plot under it when there is room
    const float rest = p0.y + size.y - y;
    const bool last = k + 1 == n_streams(app);
    if (rest > (n_streams(app) > 1 ? 100 : 300)) { // compare mode keeps the velocity plots
        const float ha = std::floor(rest * 0.62f);
        draw_time_plot(app, k, ImVec2(p0.x, y), ImVec2(size.x, ha), false, false);
        draw_time_plot(app, k, ImVec2(p0.x, y + ha + 4), ImVec2(size.x, rest - ha - 4), last, true);
    } else {
        draw_time_plot(app, k, ImVec2(p0.x, y), ImVec2(size.x, rest), last, false);
    }
}

void draw_forecast_panel(App & app) {
    if (!has_model(app.streams[0])) {
        ImGui::TextDisabled(app.loading.empty() ? "No model loaded." : "Loading the model...");
        if (app.loading.empty())
            ImGui::TextWrapped("The forecast of the next H = %d frames appears here once a model is loaded "
                               "(models/*.safetensors, or drop your own file on the page).", app.opt.horizon);
        if (!app.model_error.empty()) ImGui::TextColored(ImVec4(1.f, 0.5f, 0.45f, 1.f), "%s", app.model_error.c_str());
        return;
    }
    if (ImGui::GetContentRegionAvail().x > 560)
        ImGui::TextDisabled("next H = %d frames (%.1f s), assuming %s", app.opt.horizon, app.opt.horizon * app.world.dt,
                            app.opt.torque_mode == "zero" ? "zero torque" : "the current torque is held");
    else
        ImGui::TextDisabled("next %.1f s, %s", app.opt.horizon * app.world.dt,
                            app.opt.torque_mode == "zero" ? "zero torque" : "torque held");
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const int ns = n_streams(app);
    const float gap = 8.f;
    const float h = (avail.y - (ns - 1) * gap) / ns;
    for (int k = 0; k < ns; k++) draw_forecast_section(app, k, ImVec2(p0.x, p0.y + k * (h + gap)), ImVec2(avail.x, h));
    ImGui::Dummy(avail);
}

void draw_controls(App & app) {
    ImGui::TextUnformatted("A pendulum learned from pixels");
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
    bool cov = app.covered;
    if (ImGui::Checkbox("cover the camera", &cov)) app_cover(app, cov);

    ImGui::Spacing();
    ImGui::TextUnformatted("Model");
    auto model_combo = [&](const char * id, int slot) {
        const std::string cur = app.streams[slot].name.empty() ? "(none)" : short_name(app.streams[slot].name);
        ImGui::PushStyleColor(ImGuiCol_Text, ImGui::ColorConvertU32ToFloat4(kStreamCol[slot]));
        const bool open = ImGui::BeginCombo(id, cur.c_str());
        ImGui::PopStyleColor();
        if (open) {
            for (const std::string & n : app.shipped)
                if (ImGui::Selectable(short_name(n).c_str(), n == app.streams[slot].name) && app.request_model &&
                    n != app.streams[slot].name)
                    app.request_model(n, slot);
            ImGui::EndCombo();
        }
    };
    model_combo("##model0", 0);
    auto record_and_score = [&](int slot) {
        const ModelStream & st = app.streams[slot];
        if (!has_model(st)) return;
        ImGui::PushTextWrapPos(0.f);
        if (!st.record.empty()) ImGui::TextDisabled("%s", st.record.c_str());
        if (app.opt.compare) {
            const StreamScore sc = stream_score(st);
            if (sc.n30 > 0)
                ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kStreamCol[slot]), "last 10 s: angle err %.2f / %.2f rad @10/30, vel err %.2f",
                                   sc.angle10, sc.angle30, sc.omega);
            else if (sc.n10 > 0)
                ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kStreamCol[slot]), "last 10 s: angle err %.2f rad @10, vel err %.2f", sc.angle10, sc.omega);
        }
        ImGui::PopTextWrapPos();
    };
    record_and_score(0);
    bool cmp = app.opt.compare;
    if (ImGui::Checkbox("compare with", &cmp)) app_set_compare(app, cmp);
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
        ImGui::TextDisabled("or drop a .safetensors file here");
    }
    if (!app.loading.empty()) ImGui::TextDisabled("loading %s ...", app.loading.c_str());
    if (!app.model_error.empty()) {
        ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.f, 0.5f, 0.45f, 1.f));
        ImGui::TextWrapped("%s", app.model_error.c_str());
        ImGui::PopStyleColor();
    }

    ImGui::Spacing();
    ImGui::TextUnformatted("Forecast");
    int H = app.opt.horizon;
    if (ImGui::SliderInt("H frames", &H, 1, 100)) { app.opt.horizon = H; app.forecast_dirty = true; }
    int mode = app.opt.torque_mode == "zero" ? 1 : 0;
    const bool hold_clicked = ImGui::RadioButton("hold current torque", &mode, 0);
    const bool zero_clicked = ImGui::RadioButton("zero torque", &mode, 1);
    if (hold_clicked || zero_clicked) {
        app.opt.torque_mode = mode == 1 ? "zero" : "hold";
        app.forecast_dirty = true;
    }

    ImGui::Spacing();
    ImGui::TextUnformatted("Latent plot axes");
    ImGui::Combo("##proj", &app.projection, kProjectionNames, 4);

    ImGui::Separator();
    ImGui::Text("%.0f FPS", app.fps);
    if (has_model(app.streams[0])) {
        ImGui::Text("model time %.2f ms / frame", app.model_ms);
        for (int k = 0; k < n_streams(app); k++)
            ImGui::TextDisabled("  %s: filter %.2f, forecast %.2f ms", k == 0 ? "A" : "B", app.streams[k].filter_ms,
                                app.streams[k].forecast_ms);
        ImGui::TextDisabled("(filter step + forecast + decoding)");
    }
}

void panel(const char * title, ImVec2 pos, ImVec2 size, void (*body)(App &), App & app) {
    const ImGuiWindowFlags flags = ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize |
                                   ImGuiWindowFlags_NoCollapse | ImGuiWindowFlags_NoSavedSettings |
                                   ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoFocusOnAppearing |
                                   ImGuiWindowFlags_NoScrollbar | ImGuiWindowFlags_NoScrollWithMouse;
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

void app_init_style() {
    // The panels are fixed tiles: a focused title bar would mean nothing, so look the same.
    ImGuiStyle & style = ImGui::GetStyle();
    style.Colors[ImGuiCol_TitleBgActive] = style.Colors[ImGuiCol_TitleBg];
    style.WindowRounding = 4.f;
    style.WindowPadding = ImVec2(6, 6);
}

void app_init(App & app, const AppOptions & opt) {
    if (ImGui::GetCurrentContext()) app_init_style();
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
    app.true_past.clear();
    app.true_past.push_back(app.state.theta);
    app.true_past_omega.clear();
    app.true_past_omega.push_back(app.state.omega);
    update_observation(app);
    for (ModelStream & s : app.streams) stream_restart(app, s);
}

void app_set_torque(App & app, double u) {
    app.torque_slider = clip(u, -app.world.max_torque, app.world.max_torque);
}

void app_cover(App & app, bool on) { app.covered = on; }

void app_step(App & app, int n) {
    for (int i = 0; i < n; i++) {
        world_step(app);
        app.true_past.push_back(app.state.theta);
        app.true_past_omega.push_back(app.state.omega);
        while ((int)app.true_past.size() > kPastSteps + 1) app.true_past.pop_front();
        while ((int)app.true_past_omega.size() > kPastSteps + 1) app.true_past_omega.pop_front();
    }
}

void app_update_forecast(App & app) {
    const int H = app.opt.horizon;
    const double u = forecast_torque(app);
    if (!app.forecast_dirty && u == app.forecast_u && (int)app.true_theta.size() == H) return;
    app.forecast_dirty = false;
    app.forecast_u = u;
    // the true future under the same assumption, and its renderings for the film strip
    const int D = app.W * app.W;
    app.true_theta.resize(H);
    app.true_omega.resize(H);
    app.true_images.resize((size_t)H * D);
    ekvae::PendulumState st = app.state;
    for (int k = 0; k < H; k++) {
        st = ekvae::pendulum_step(app.world, st, u);
        app.true_theta[k] = st.theta;
        app.true_omega[k] = st.omega;
        ekvae::render_pendulum(st.theta, app.W, app.true_images.data() + (size_t)k * D);
    }
    double total = g_pending_ms;
    g_pending_ms = 0;
    bool any = false;
    for (ModelStream & s : app.streams) {
        if (!has_model(s) || !s.started) continue;
        const double t0 = now_ms();
        stream_forecast(s, H, u);
        s.forecast_ms = now_ms() - t0;
        s.frame_ms = s.filter_ms + s.forecast_ms;
        total += s.forecast_ms;
        any = true;
    }
    if (any) app.model_ms = total;
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
            app_step(app, 1);
            app.accumulator -= app.world.dt;
            n++;
        }
        if (n == kMaxStepsPerFrame) app.accumulator = 0.0;
    }
    app_update_forecast(app);

    const ImVec2 ds = io.DisplaySize;
    const float m = 6.f;
    float x0 = m;
    const bool compact = ds.x < 900 || ds.y < 560;
    if (!app.opt.minimal_ui && !compact) {
        const float cw = std::min(270.f, std::max(220.f, ds.x * 0.22f));
        panel("Controls", ImVec2(m, m), ImVec2(cw, ds.y - 2 * m), draw_controls, app);
        x0 = cw + 2 * m;
    }
    const float aw = std::max(100.f, ds.x - x0 - m);
    const float ah = std::max(100.f, ds.y - 2 * m);
    if (compact) {
        // The pendulum on the left, the forecast on the right (small embeds).
        const float w1 = std::floor(std::min(aw * 0.42f, ah * 1.1f)), w2 = aw - w1 - m;
        panel("Pendulum", ImVec2(x0, m), ImVec2(w1, ah), draw_pendulum_panel, app);
        panel("Forecast", ImVec2(x0 + w1 + m, m), ImVec2(w2, ah), draw_forecast_panel, app);
        return;
    }
    // Top row: pendulum | observation | latent space; below: the forecast of each model.
    const float h1 = std::floor(ah * 0.42f), h2 = ah - h1 - m;
    const float w1 = std::floor(aw * 0.40f), w2 = std::floor(std::min(aw * 0.22f, h1 * 0.9f)), w3 = aw - w1 - w2 - 2 * m;
    panel("Pendulum", ImVec2(x0, m), ImVec2(w1, h1), draw_pendulum_panel, app);
    panel("What the model sees", ImVec2(x0 + w1 + m, m), ImVec2(w2, h1), draw_observation_panel, app);
    panel("Latent space", ImVec2(x0 + w1 + w2 + 2 * m, m), ImVec2(w3, h1), draw_latent_panel, app);
    panel("Forecast", ImVec2(x0, m + h1 + m), ImVec2(aw, h2), draw_forecast_panel, app);
}

bool app_load_model(App & app, int slot, const std::string & name, const uint8_t * data, size_t size, std::string & err) {
    auto fail = [&](const std::string & why) {
        err = why;
        app.model_error = name + ": " + why + (has_model(app.streams[slot]) ? " (still running " + short_name(app.streams[slot].name) + ")" : "");
        return false;
    };
    if (slot < 0 || slot > 1) return fail("model slot must be 0 or 1");
    ekvae::SafeTensors st;
    std::string e;
    if (!ekvae::safetensors_parse(data, size, st, e)) return fail("not a valid safetensors file: " + e);
    auto c = st.metadata.find("config");
    if (c != st.metadata.end()) {
        ekvae::EkvaeConfig cfg;
        if (ekvae::config_from_json(c->second, cfg, e)) {
            if (cfg.world != "pendulum")
                return fail("this is a model of the " + cfg.world + " world; this page runs the pendulum");
            if (cfg.image_size != app.W)
                return fail("the model reads " + std::to_string(cfg.image_size) + "x" + std::to_string(cfg.image_size) +
                            " frames; this demo renders " + std::to_string(app.W) + "x" + std::to_string(app.W));
            if (cfg.n_z < 1 || cfg.n_z > 64 || ekvae::param_count(cfg) > kMaxModelParams)
                return fail("the model's config is far larger than this demo handles");
        }
    }
    auto model = std::make_unique<ekvae::Ekvae<float>>();
    if (!ekvae::ekvae_from_safetensors(st, *model, e)) return fail(e);
    if (!model->has_readout)
        return fail("the model has no linear read-out (readout.W, readout.b) to show angles; "
                    "ekvae_train writes one into model.safetensors");
    // weights that are finite but produce NaN (a huge value somewhere) are refused here
    if (!ekvae::ekvae_check_outputs(*model, e)) return fail(e);

    ModelStream & s = app.streams[slot];
    s.name = name;
    auto rec = st.metadata.find("record");
    s.record = rec == st.metadata.end() ? std::string() : rec->second;
    s.model = std::move(model);
    if (!s.tape) s.tape = std::make_unique<ekvae::Tape<float>>();
    s.images.resize(0, 0);
    stream_restart(app, s);
    app.model_error.clear();
    err.clear();
    return true;
}

void app_set_shipped_models(App & app, const std::vector<std::string> & names) {
    app.shipped = names;
    if (names.empty()) return;
    std::string first = names[0];
    for (const std::string & n : names)
        if (n.find("constrained") != std::string::npos) { first = n; break; }
    if (!app.opt.model.empty()) {
        if (std::find(names.begin(), names.end(), app.opt.model) != names.end()) first = app.opt.model;
        else app.model_error = "model '" + app.opt.model + "' is not among the shipped models; using " + short_name(first);
    }
    app.primary = first;
    if (app.request_model && app.streams[0].name != first) app.request_model(first, 0);
    if (app.opt.compare) app_set_compare(app, true);
}

void app_set_compare(App & app, bool on) {
    app.opt.compare = on;
    if (!on || has_model(app.streams[1]) || app.shipped.empty() || !app.request_model) return;
    // the second model: the first shipped one that is not running in slot 0
    const std::string & first = has_model(app.streams[0]) ? app.streams[0].name : app.primary;
    std::string second = app.shipped[0];
    for (const std::string & n : app.shipped)
        if (n != first) { second = n; break; }
    app.request_model(second, 1);
}

double app_benchmark(App & app, int n, int H, int slot, double * mean_ms) {
    if (slot < 0 || slot > 1 || !has_model(app.streams[slot]) || n < 1) return -1;
    ModelStream & s = app.streams[slot];
    const Mat<float> z0 = s.z, P0 = s.P;
    const bool started0 = s.started;
    const Mat<float> x = Eigen::Map<const Mat<float>>(app.obs.data(), (Eigen::Index)app.obs.size(), 1);
    const Mat<float> U = Mat<float>::Constant(1, H, (float)forecast_torque(app));
    Mat<float> zs, Ps, img;
    std::vector<double> ms(n);
    double th = 0;
    const double t_all = now_ms();
    for (int i = 0; i < n; i++) {
        s.z = z0;
        s.P = P0;
        const double t0 = now_ms();
        ekvae::filter_step(*s.tape, *s.model, s.z, s.P, !started0, Mat<float>(Mat<float>::Constant(1, 1, (float)app.torque)), &x);
        th += ekvae::readout(*s.model, s.z, s.P).value[0];
        ekvae::forecast(*s.tape, *s.model, s.z, s.P, U, zs, Ps, &img);
        for (int k = 0; k < H; k++) th += ekvae::readout(*s.model, zs, Ps, k).value[0];
        ms[i] = now_ms() - t0;
    }
    if (mean_ms) *mean_ms = (now_ms() - t_all) / n;
    volatile double sink = th; // keep the read-outs from being optimised away
    (void)sink;
    s.z = z0;
    s.P = P0;
    std::nth_element(ms.begin(), ms.begin() + n / 2, ms.end());
    return ms[n / 2];
}

std::string app_state_json(App & app) {
    app_update_forecast(app);
    using nlohmann::json;
    auto stream_json = [&](const ModelStream & s) {
        json j;
        j["name"] = s.name;
        if (s.started) j["estimate"] = {{"theta", s.est_theta}, {"sigma", s.est_sigma}, {"omega", s.est_omega}};
        else j["estimate"] = nullptr;
        if (!s.fc_theta.empty()) j["forecast"] = {{"theta", s.fc_theta}, {"sigma", s.fc_sigma}};
        else j["forecast"] = nullptr;
        j["record"] = s.record.empty() ? json() : json(s.record);
        const StreamScore sc = stream_score(s);
        auto num = [](double v) { return std::isfinite(v) ? json(v) : json(); };
        j["score"] = {{"angle_err_10", num(sc.angle10)}, {"angle_err_30", num(sc.angle30)}, {"omega_err", num(sc.omega)},
                      {"n10", sc.n10}, {"n30", sc.n30}};
        j["filter_ms"] = s.filter_ms;
        j["filter_restarts"] = s.restarts;
        j["forecast_ms"] = s.forecast_ms;
        j["model_ms"] = s.frame_ms;
        return j;
    };
    json j;
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
    j["model_requested"] = app.opt.model.empty() ? json() : json(app.opt.model);
    const ModelStream & s0 = app.streams[0];
    j["model"] = has_model(s0) ? json(s0.name) : json();
    j["model_loaded"] = has_model(s0);
    j["error"] = app.model_error.empty() ? json() : json(app.model_error);
    j["loading"] = app.loading.empty() ? json() : json(app.loading);
    j["shipped"] = app.shipped;
    if (has_model(s0) && s0.started) {
        j["estimate"] = {{"theta", s0.est_theta}, {"omega", s0.est_omega}, {"sigma", s0.est_sigma}};
        j["forecast"] = {{"theta", s0.fc_theta}, {"sigma", s0.fc_sigma}, {"true_theta", app.true_theta},
                         {"torque", app.forecast_u}};
        j["model_ms"] = app.model_ms;
    } else {
        j["estimate"] = nullptr;
        j["forecast"] = nullptr;
        j["model_ms"] = nullptr;
    }
    json ms = json::array();
    for (int k = 0; k < 2; k++)
        if (has_model(app.streams[k]) && (k == 0 || app.opt.compare)) ms.push_back(stream_json(app.streams[k]));
    j["models"] = ms;
    return j.dump();
}
