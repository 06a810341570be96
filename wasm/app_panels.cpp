// app_panels.cpp: the demo's panels (world, camera, latent space, forecast) and the layout of
// every panel (see app.h; the controls and the help are in app_controls.cpp).
//
// Layout (full): controls on the left (hidden with ui=minimal); on the right a top row with the
// true world (with each model's estimate drawn over it), "what the model sees" and the latent
// space, and below it one forecast section per model (film strips + a time plot per state
// component). Small windows (phones, tablets in portrait, most iframes) get a compact layout:
// the world with its torque slider(s) always in view, and tabs for the forecast, the camera,
// the latent space, the settings and the help (stacked in portrait, side by side otherwise).
// ui=minimal drops the controls, the tabs and the title bars: the world (with its torque
// slider when small) and the forecast, for clean embeds.
//
// Keys: while the demo has the keyboard, the arrows turn the joints (key_zone 0); Tab moves
// into the controls, where ImGui's keyboard navigation runs (arrows move, Space presses, Esc
// or Tab leaves: app_tab_key).
#include "app_ui.h"

#include <imgui_internal.h> // FocusWindow, NavInitWindow: entering keyboard navigation on Tab

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace {

// Keys per joint (ImGui 1.86 names no letter keys beyond its shortcuts): <- / -> turn joint 1,
// down / up joint 2 (full torque while held; right and up turn clockwise).
const ImGuiKey kKeys[2][2] = {{ImGuiKey_LeftArrow, ImGuiKey_RightArrow}, {ImGuiKey_DownArrow, ImGuiKey_UpArrow}};
// Screen point of skeleton point (x, y) (reach 1, y up) around centre c with reach R pixels.
ImVec2 to_screen(ImVec2 c, float R, double x, double y) { return ImVec2(c.x + R * (float)x, c.y - R * (float)y); }

void draw_world_panel(App & app) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ekvae::World & w = *app.world;
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    ImVec2 size = ImGui::GetContentRegionAvail();
    size.x = std::max(size.x, 32.f);
    size.y = std::max(size.y, 32.f);
    // The whole canvas catches the mouse: dragging anywhere pulls the tip toward the pointer.
    ImGui::InvisibleButton("world_canvas", size);
    const bool active = ImGui::IsItemActive();
    if (ImGui::IsItemActivated()) app.key_zone = 0; // a click on the world: the arrows turn it again
    const float text_h = ImGui::GetTextLineHeight();
    const ImVec2 c(p0.x + size.x * 0.5f, p0.y + text_h + (size.y - 2.5f * text_h) * 0.5f);
    const float R = 0.40f * std::min(size.x, size.y - 2.5f * text_h);

    app.dragging = active;
    if (active) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        app.drag_x = (m.x - c.x) / R;
        app.drag_y = -(m.y - c.y) / R;
        if (app.paused) app_place_tip(app, app.drag_x, app.drag_y); // paused: the drag places it
    }

    dl->AddRectFilled(p0, ImVec2(p0.x + size.x, p0.y + size.y), kPanelBg);
    dl->AddCircle(c, R, IM_COL32(70, 74, 86, 255), 96, 1.5f);
    const std::vector<double> sk = w.skeleton(app.state.data());
    const int np = (int)sk.size() / 2;
    // Each model's estimate: per joint a +-2 sigma fan around the estimated direction of its
    // link, and the estimated skeleton as thin lines.
    for (int k = 0; k < n_streams(app); k++) {
        const ModelStream & s = app.streams[k];
        if (!has_model(s) || !s.started) continue;
        const std::vector<double> e = w.skeleton(s.est.value.data());
        for (int j = 0; j + 1 < np && j < w.U; j++) {
            const ImVec2 a = to_screen(c, R, e[2 * j], e[2 * j + 1]), b = to_screen(c, R, e[2 * j + 2], e[2 * j + 3]);
            const float len = std::hypot(b.x - a.x, b.y - a.y) * 1.08f;
            const double dir = std::atan2((double)(b.y - a.y), (double)(b.x - a.x));
            const double half = std::min(2 * s.est.sigma[j], kPi);
            dl->PathLineTo(a);
            for (int i = 0; i <= 24; i++) {
                const double an = dir - half + 2 * half * i / 24;
                dl->PathLineTo(ImVec2(a.x + len * (float)std::cos(an), a.y + len * (float)std::sin(an)));
            }
            dl->PathFillConvex(with_alpha(kStreamCol[k], 45));
            dl->AddLine(a, ImVec2(a.x + len * (float)std::cos(dir), a.y + len * (float)std::sin(dir)), kStreamCol[k],
                        std::max(2.f, 0.025f * R));
        }
    }
    // Torques: an arc around each joint, its length proportional to u (clockwise for u > 0).
    for (int j = 0; j + 1 < np && j < w.U; j++) {
        const double u = app.torque[j];
        if (std::fabs(u) < 1e-3) continue;
        const ImVec2 a = to_screen(c, R, sk[2 * j], sk[2 * j + 1]), b = to_screen(c, R, sk[2 * j + 2], sk[2 * j + 3]);
        const float ra = 0.28f * std::hypot(b.x - a.x, b.y - a.y);
        const float a0 = (float)std::atan2((double)(b.y - a.y), (double)(b.x - a.x)); // ImGui arcs: 0 = +x, clockwise on screen
        const float span = (float)(u / w.action_max(j) * kPi * 0.75);
        dl->PathArcTo(a, ra, std::min(a0, a0 + span), std::max(a0, a0 + span), 32);
        dl->PathStroke(kTorqueCol, 0, 4.f);
        const float ae = a0 + span;
        const ImVec2 tip(a.x + ra * std::cos(ae), a.y + ra * std::sin(ae));
        const float dir = span > 0 ? 1.f : -1.f; // tangent direction of travel
        const ImVec2 tan(-std::sin(ae) * dir, std::cos(ae) * dir), nrm(std::cos(ae), std::sin(ae));
        const float h = 0.09f * R;
        dl->AddTriangleFilled(ImVec2(tip.x + tan.x * h, tip.y + tan.y * h), ImVec2(tip.x + nrm.x * h * 0.6f, tip.y + nrm.y * h * 0.6f),
                              ImVec2(tip.x - nrm.x * h * 0.6f, tip.y - nrm.y * h * 0.6f), kTorqueCol);
    }
    const ImVec2 tip = to_screen(c, R, sk[2 * np - 2], sk[2 * np - 1]);
    if (active) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        dl->AddLine(tip, m, IM_COL32(120, 200, 255, 160), 1.5f);
        dl->AddCircleFilled(m, 5.f, IM_COL32(120, 200, 255, 200));
    }
    // the true world: the links, the joints, the tip
    for (int j = 0; j + 1 < np; j++)
        dl->AddLine(to_screen(c, R, sk[2 * j], sk[2 * j + 1]), to_screen(c, R, sk[2 * j + 2], sk[2 * j + 3]), IM_COL32(230, 230, 235, 255),
                    std::max(3.f, 0.06f * R));
    dl->AddCircleFilled(tip, std::max(5.f, 0.09f * R), IM_COL32(235, 90, 80, 255), 48);
    for (int j = 0; j + 1 < np; j++)
        dl->AddCircleFilled(to_screen(c, R, sk[2 * j], sk[2 * j + 1]), std::max(3.f, 0.035f * R), IM_COL32(160, 160, 170, 255), 24);

    // the header: time, the angles, the torques, then the velocities as far as they fit
    char buf[64];
    std::snprintf(buf, sizeof buf, "t %6.2f s", app.t);
    std::string line = buf;
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < (pass == 1 ? w.U : w.S); i++) {
            if (pass == 1) std::snprintf(buf, sizeof buf, "   u%s %+4.2f", w.U > 1 ? std::to_string(i + 1).c_str() : "", app.torque[i]);
            else if (w.angle[i] == (pass == 0)) std::snprintf(buf, sizeof buf, "   %s %+5.2f", w.state_names[i].c_str(), app.state[i]);
            else continue;
            if (ImGui::CalcTextSize((line + buf).c_str()).x < size.x - 12) line += buf;
        }
    text_at(dl, ImVec2(p0.x + 6, p0.y + 4), IM_COL32(210, 210, 215, 255), line.c_str());
    // Legend (bottom): truth, the estimates, the torque arc.
    float x = p0.x + 6, y = p0.y + size.y - text_h - 4;
    auto legend = [&](ImU32 col, const char * label, const char * id) {
        if (x + 18 + ImGui::CalcTextSize(label).x > p0.x + size.x) return;
        dl->AddRectFilled(ImVec2(x, y + 4), ImVec2(x + 14, y + text_h - 4), col);
        record(app, std::string("swatch:") + id, ImVec2(x, y + 4), ImVec2(x + 14, y + text_h - 4));
        text_at(dl, ImVec2(x + 18, y), kDim, label);
        x += 18 + ImGui::CalcTextSize(label).x + 12;
    };
    legend(IM_COL32(230, 230, 235, 255), "true", "true");
    for (int k = 0; k < n_streams(app); k++) {
        if (!has_model(app.streams[k])) continue;
        std::string label = n_streams(app) > 1 ? short_name(app, app.streams[k].name, true) : std::string("estimate");
        if (size.x > 420 && n_streams(app) == 1) label += " +-2 sigma";
        legend(kStreamCol[k], label.c_str(), k == 0 ? "A" : "B");
    }
    legend(kTorqueCol, "torque", "torque");
    const char * what = w.U > 1 ? "the hand" : "it";
    const std::string hint = app.paused ? std::string("paused: drag ") + what + " to place it"
                             : app.key_zone == 1 ? "keys: the controls (Esc: back)"
                             : w.U > 1 ? "drag the hand, or hold the arrow keys" : "drag it, or hold <- / ->";
    if (x + ImGui::CalcTextSize(hint.c_str()).x + 12 < p0.x + size.x)
        text_right(dl, ImVec2(p0.x + size.x - 6, y), IM_COL32(120, 120, 130, 255), hint.c_str());
    // Just after a reset every filter starts from its prior: its +-2 sigma is wide for a moment.
    if (has_model(app.streams[0]) && app.steps < 30) {
        const char * note = size.x > 420 ? "the filter starts from its prior: wide bands for a moment" : "filter starting: wide bands";
        text_at(dl, ImVec2(p0.x + 6, p0.y + 4 + text_h), IM_COL32(230, 200, 120, 255), note);
    }
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
            dl->AddRectFilled(ImVec2(p0.x + j * cell + gap, p0.y + i * cell + gap), ImVec2(p0.x + (j + 1) * cell, p0.y + (i + 1) * cell),
                              IM_COL32(g, g, g, 255));
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

bool no_model_yet(App & app) {
    if (has_model(app.streams[0])) return false;
    ImGui::TextDisabled(app.loading.empty() ? "No model loaded." : "Loading the model...");
    return true;
}

void draw_latent_panel(App & app) {
    if (no_model_yet(app)) return;
    const int ns = n_streams(app);
    ImGui::PushTextWrapPos(0.f); // the arm's axes name does not fit one line of a narrow panel
    ImGui::TextDisabled("filtered z, last %.0f s; axes: %s", 300 * app.world->time_step(), projection_name(app, app.projection).c_str());
    ImGui::PopTextWrapPos();
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
            ImGui::GetWindowDrawList()->AddText(ImVec2(p0.x, y), kStreamCol[k], short_name(app, s.name).c_str());
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

// The forecast section of stream k in [p0, p0 + size]: a header, the film strips, the plots
// (one column per joint: its angle, and its velocity under it when there is room).
void draw_forecast_section(App & app, int k, ImVec2 p0, ImVec2 size) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ModelStream & s = app.streams[k];
    const ekvae::World & w = *app.world;
    const float th = ImGui::GetTextLineHeight();
    const std::string title = short_name(app, s.name, size.x < 640);
    dl->AddText(p0, kStreamCol[k], title.c_str());
    if (s.started) {
        std::string line;
        char buf[96];
        for (int i = 0; i < w.S; i++) {
            if (size.x < 640 && !w.angle[i]) continue;
            std::snprintf(buf, sizeof buf, "%s %+5.2f (true %+5.2f)   ", w.state_names[i].c_str(), s.est.value[i], app.state[i]);
            line += buf;
        }
        dl->AddText(ImVec2(p0.x + ImGui::CalcTextSize(title.c_str()).x + 14, p0.y), kDim, line.c_str());
    }
    float y = p0.y + th + 4;
    const bool small = size.y < 200;
    const float label_w = ImGui::CalcTextSize("decoded ").x + 4;
    if (s.images.cols() > 0) {
        y += draw_film_strip(app, &s.images, ImVec2(p0.x, y), size.x, "model", kStreamCol[k], label_w) + 3;
        if (!small || k == 0) y += draw_film_strip(app, nullptr, ImVec2(p0.x, y), size.x, "true", kTruth, label_w) + 3;
    }
    const float rest = p0.y + size.y - y;
    const bool last = k + 1 == n_streams(app);
    const int na = w.angles();
    const int cols = size.x / na >= 360 ? na : 1;
    const bool velocities = rest * cols / na > (n_streams(app) > 1 ? 100 : 300); // compare mode keeps them
    const int per_col = na / cols, rows = per_col * (velocities ? 2 : 1);
    const float cw = (size.x - (cols - 1) * 6.f) / cols;
    // an angle plot of height ha, its velocity plot under it 0.62 x as high
    const float ha = std::floor((rest - (rows - 1) * 4.f) / (per_col * (velocities ? 1.62f : 1.f)));
    const float hv = std::floor(0.62f * ha);
    for (int a = 0; a < na; a++) {
        const int col = a % cols, row = a / cols;
        const float x = p0.x + col * (cw + 6.f);
        const float yy = y + row * (ha + (velocities ? hv + 4 : 0) + 4);
        const bool bottom = row + 1 == per_col;
        draw_time_plot(app, k, a, ImVec2(x, yy), ImVec2(cw, ha), last && bottom && !velocities);
        const int v = velocity_of(w, a);
        if (velocities && v >= 0) draw_time_plot(app, k, v, ImVec2(x, yy + ha + 4), ImVec2(cw, hv), last && bottom);
    }
}

void draw_forecast_panel(App & app) {
    if (no_model_yet(app)) {
        if (app.loading.empty())
            ImGui::TextWrapped("The forecast of the next H = %d frames appears here once a model is loaded "
                               "(models/*.safetensors, or drop your own file on the page).", app.opt.horizon);
        show_model_error(app);
        return;
    }
    const double secs = app.opt.horizon * app.world->time_step();
    if (ImGui::GetContentRegionAvail().x > 560)
        ImGui::TextDisabled("next H = %d frames (%.1f s), assuming %s", app.opt.horizon, secs,
                            app.opt.torque_mode == "zero" ? "zero torque" : "the current torque is held");
    else
        ImGui::TextDisabled("next %.1f s, %s", secs, app.opt.torque_mode == "zero" ? "zero torque" : "torque held");
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const int ns = n_streams(app);
    const float gap = 8.f;
    const float h = (avail.y - (ns - 1) * gap) / ns;
    for (int k = 0; k < ns; k++) draw_forecast_section(app, k, ImVec2(p0.x, p0.y + k * (h + gap)), ImVec2(avail.x, h));
    ImGui::Dummy(avail);
}

// A fixed tile of the layout (extra: more window flags).
void panel(const char * title, ImVec2 pos, ImVec2 size, void (*body)(App &), App & app, ImGuiWindowFlags extra = 0) {
    const ImGuiWindowFlags flags = ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize | ImGuiWindowFlags_NoCollapse |
                             ImGuiWindowFlags_NoSavedSettings | ImGuiWindowFlags_NoBringToFrontOnFocus |
                             ImGuiWindowFlags_NoFocusOnAppearing | ImGuiWindowFlags_NoScrollbar |
                             ImGuiWindowFlags_NoScrollWithMouse | extra;
    ImGui::SetNextWindowPos(pos, ImGuiCond_Always);
    ImGui::SetNextWindowSize(size, ImGuiCond_Always);
    if (ImGui::Begin(title, nullptr, flags)) body(app);
    const std::string t = title;
    record(app, "panel:" + (t.rfind("###", 0) == 0 ? t.substr(3) : t.substr(0, t.find("##"))), pos, ImVec2(pos.x + size.x, pos.y + size.y));
    ImGui::End();
}

// Panels without anything to navigate: the arrows there are the torque keys' alone.
constexpr ImGuiWindowFlags kNoNav = ImGuiWindowFlags_NoNav;

// The compact layout's tabs: the forecast, the camera, the latent space, the set-up, the help
// (a row of equal buttons, the shown one lit, then its body).
void draw_tabs(App & app) {
    struct Tab { const char * name; void (*body)(App &); };
    const Tab tabs[] = {{"Forecast", draw_forecast_panel}, {"Camera", draw_observation_panel}, {"Latent", draw_latent_panel},
                        {"Setup", draw_controls}, {"Help", draw_help}, {"Train", draw_train_panel}};
    const int n = app.train_start ? 6 : 5; // Train only where a front end trains (the browser)
    const float gap = 3.f, bw = std::floor((ImGui::GetContentRegionAvail().x - (n - 1) * gap) / n);
    ImGui::PushStyleVar(ImGuiStyleVar_ItemSpacing, ImVec2(gap, ImGui::GetStyle().ItemSpacing.y));
    ImGui::PushStyleVar(ImGuiStyleVar_FramePadding, ImVec2(2.f, ImGui::GetStyle().FramePadding.y));
    for (int i = 0; i < n; i++) {
        if (i) ImGui::SameLine();
        const bool lit = i == app.tab;
        ImGui::PushStyleColor(ImGuiCol_Button, ImGui::GetStyleColorVec4(lit ? ImGuiCol_ButtonActive : ImGuiCol_FrameBg));
        // "Forecast" does not fit a phone's fifth of the width: "Plots" there
        const char * label = i == 0 && ImGui::CalcTextSize(tabs[i].name).x + 4 > bw ? "Plots###Forecast" : tabs[i].name;
        if (ImGui::Button(label, ImVec2(bw, 0))) app.tab = i;
        ImGui::PopStyleColor();
        record_item(app, std::string("tab:") + tabs[i].name);
    }
    ImGui::PopStyleVar(2);
    const int i = std::clamp(app.tab, 0, n - 1);
    // the set-up and the help scroll; the plots fill the tab
    ImGui::BeginChild("tab_body", ImVec2(0, 0), false, i >= 3 ? 0 : ImGuiWindowFlags_NoScrollbar | ImGuiWindowFlags_NoScrollWithMouse);
    app.train.open = tabs[i].body == draw_train_panel;
    tabs[i].body(app);
    ImGui::EndChild();
}

// Keyboard navigation of the window called name on (Tab into the controls) or off.
void set_keyboard_navigation(const char * name, bool on) {
    ImGuiContext & g = *GImGui;
    if (!on) {
        ImGui::FocusWindow(nullptr);
        g.NavDisableHighlight = true;
        return;
    }
    ImGuiWindow * win = ImGui::FindWindowByName(name);
    if (!win) return;
    ImGui::FocusWindow(win);
    ImGui::NavInitWindow(win, true);
    g.NavDisableHighlight = false;
    g.NavDisableMouseHover = true;
}

const char * navigated_window(const App & app) { return app.compact ? "###tabs" : "Controls"; }

} // namespace

float app_ui_scale(float css_w, float css_h, bool touch) {
    if (touch) return 1.25f;
    const float s = std::min(css_w / 1280.f, css_h / 800.f);
    const float q = std::floor(std::max(1.f, std::min(s, 2.f)) * 8.f) / 8.f; // steps of 1/8
    return q > 1.f ? 1.f + (q - 1.f) * 0.75f : 1.f;                         // grow a little slower than the window
}

bool app_tab_key(App & app, bool shift) {
    if (app.opt.minimal_ui) return false; // nothing to navigate: Tab leaves
    if (app.key_zone == 0 && !shift) {
        app.key_zone = 1;
        app.nav_request = 1;
        return true;
    }
    if (app.key_zone == 1 && shift) {
        app.key_zone = 0;
        app.nav_request = -1;
        return true;
    }
    if (app.key_zone == 1) { // Tab from the controls leaves the demo; the arrows turn it next time
        app.key_zone = 0;
        app.nav_request = -1;
    }
    return false;
}

void app_init_style(bool touch) {
    // The panels are fixed tiles: a focused title bar would mean nothing, so look the same.
    ImGuiStyle & style = ImGui::GetStyle();
    style.Colors[ImGuiCol_TitleBgActive] = style.Colors[ImGuiCol_TitleBg];
    style.Colors[ImGuiCol_NavHighlight] = ImVec4(1.f, 0.85f, 0.3f, 1.f); // the keyboard's focus ring
    style.WindowRounding = 4.f;
    style.WindowPadding = ImVec2(6, 6);
    if (touch) { // fingers: taller controls, wider grabs and scroll bars
        style.FramePadding = ImVec2(8, 7);
        style.ItemSpacing = ImVec2(8, 7);
        style.GrabMinSize = 22.f;
        style.ScrollbarSize = 20.f;
        style.TouchExtraPadding = ImVec2(4, 4);
    }
}

void app_frame(App & app, float dt_seconds) {
    ImGuiIO & io = ImGui::GetIO();
    app.fps = io.Framerate;
    app.frames++;
    app.ui_rects.clear();
    g_touch_tooltips = app.opt.touch;

    // Keyboard navigation only in the controls (key_zone 1); Esc goes back to the torque keys.
    if (app.key_zone == 1 && ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape))) {
        app.key_zone = 0;
        app.nav_request = -1;
    }
    if (app.key_zone == 1) io.ConfigFlags |= ImGuiConfigFlags_NavEnableKeyboard;
    else io.ConfigFlags &= ~ImGuiConfigFlags_NavEnableKeyboard;
    if (app.nav_request != 0) {
        set_keyboard_navigation(navigated_window(app), app.nav_request > 0);
        app.nav_request = 0;
    }

    // Keys: full torque at a joint while held (right / up = +max, clockwise on screen).
    for (int j = 0; j < app.world->U; j++) {
        app.key_dir[j] = 0;
        if (io.WantTextInput || j >= 2 || app.key_zone != 0) continue;
        if (ImGui::IsKeyDown(ImGui::GetKeyIndex(kKeys[j][1]))) app.key_dir[j] += 1;
        if (ImGui::IsKeyDown(ImGui::GetKeyIndex(kKeys[j][0]))) app.key_dir[j] -= 1;
    }
    app_advance(app, dt_seconds);

    const ImVec2 ds = io.DisplaySize; // UI units (CSS pixels / ui_scale)
    const float m = 6.f;
    app.compact = ds.x < 900 || ds.y < 560;
    std::string title = app.world->title;
    title[0] = (char)std::toupper((unsigned char)title[0]);
    title += "###world"; // one window whatever the world is called
    const ImGuiWindowFlags bare = app.opt.minimal_ui ? ImGuiWindowFlags_NoTitleBar : 0;
    if (app.compact) {
        // The world with its torque strip; the rest in tabs (ui=minimal: the forecast only).
        const ImGuiStyle & st = ImGui::GetStyle();
        const int rows = app.world->U + (app.opt.minimal_ui ? 0 : 1);
        const float strip_h = rows * ImGui::GetFrameHeightWithSpacing() - st.ItemSpacing.y + 2 * st.WindowPadding.y;
        const float aw = std::max(100.f, ds.x - 2 * m), ah = std::max(100.f, ds.y - 2 * m);
        const bool portrait = ds.y > ds.x * 1.15f;
        ImVec2 wpos(m, m), wsize, spos, ssize, rpos, rsize;
        if (portrait) {
            const float wh = std::floor(std::min(aw * 0.95f, (ah - strip_h - m) * 0.42f));
            wsize = ImVec2(aw, wh);
            spos = ImVec2(m, m + wh + m);
            ssize = ImVec2(aw, strip_h);
            rpos = ImVec2(m, spos.y + strip_h + m);
            rsize = ImVec2(aw, ds.y - rpos.y - m);
        } else {
            const float w1 = std::floor(std::min(aw * 0.45f, (ah - strip_h - m) * 1.15f));
            wsize = ImVec2(w1, ah - strip_h - m);
            spos = ImVec2(m, m + wsize.y + m);
            ssize = ImVec2(w1, strip_h);
            rpos = ImVec2(m + w1 + m, m);
            rsize = ImVec2(aw - w1 - m, ah);
        }
        panel(title.c_str(), wpos, wsize, draw_world_panel, app, bare | kNoNav);
        panel("###strip", spos, ssize, draw_torque_strip, app, ImGuiWindowFlags_NoTitleBar);
        if (app.opt.minimal_ui) panel("Forecast", rpos, rsize, draw_forecast_panel, app, bare | kNoNav);
        else panel("###tabs", rpos, rsize, draw_tabs, app, ImGuiWindowFlags_NoTitleBar);
        return;
    }
    float x0 = m;
    if (!app.opt.minimal_ui) {
        const float cw = std::min(270.f, std::max(220.f, ds.x * 0.22f));
        panel("Controls", ImVec2(m, m), ImVec2(cw, ds.y - 2 * m), draw_controls, app);
        x0 = cw + 2 * m;
    }
    const float aw = std::max(100.f, ds.x - x0 - m);
    const float ah = std::max(100.f, ds.y - 2 * m);
    // Top row: world | observation | latent space; below: the forecast of each model.
    const bool training_tile = app.train.open && app.train_start; // the Train panel needs a taller top row
    const float h1 = std::floor(ah * (training_tile ? 0.5f : 0.42f)), h2 = ah - h1 - m;
    const float w1 = std::floor(aw * 0.40f), w2 = std::floor(std::min(aw * 0.22f, h1 * 0.9f)), w3 = aw - w1 - w2 - 2 * m;
    panel(title.c_str(), ImVec2(x0, m), ImVec2(w1, h1), draw_world_panel, app, kNoNav);
    if (training_tile) { // the Train panel takes the camera's and the latent space's tiles
        panel("Train a model in this page", ImVec2(x0 + w1 + m, m), ImVec2(w2 + w3 + m, h1), draw_train_panel, app);
    } else {
        panel("What the model sees", ImVec2(x0 + w1 + m, m), ImVec2(w2, h1), draw_observation_panel, app, kNoNav);
        panel("Latent space", ImVec2(x0 + w1 + w2 + 2 * m, m), ImVec2(w3, h1), draw_latent_panel, app, kNoNav);
    }
    panel("Forecast", ImVec2(x0, m + h1 + m), ImVec2(aw, h2), draw_forecast_panel, app, kNoNav);
    if (app.help_open && !app.opt.minimal_ui) {
        // the help floats over the panels on the right, until "Got it" or its close box
        const float hw = std::min(560.f, aw - 40.f);
        ImGui::SetNextWindowPos(ImVec2(x0 + (aw - hw) * 0.5f, m + 30.f), ImGuiCond_Always);
        ImGui::SetNextWindowSize(ImVec2(hw, 0.f), ImGuiCond_Always);
        ImGui::SetNextWindowBgAlpha(0.97f);
        bool open = true;
        if (ImGui::Begin("What you see, what to try", &open, ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize |
                                                                 ImGuiWindowFlags_NoCollapse | ImGuiWindowFlags_NoSavedSettings))
            draw_help(app);
        ImGui::End();
        if (!open) {
            app.help_open = false;
            if (app.help_seen) app.help_seen();
        }
    }
}
