// app_ui.h: what the demo's panels (app_panels.cpp) and plots (app_plots.cpp) share: the
// palette and the drawing helpers. Internal to the app; needs an ImGui context.
#pragma once
#include <string>

#include <imgui.h>

#include "app.h"

constexpr double kPi = 3.14159265358979323846;

// Colours: the truth in white, each model stream in its own colour, the torque in yellow:
// Okabe and Ito's colour-blind-safe sky blue, vermillion and yellow, which stay apart under
// protanopia, deuteranopia and tritanopia (the browser test measures them under Chromium's
// emulation of each).
const ImU32 kTruth = IM_COL32(235, 235, 240, 255);
const ImU32 kStreamCol[2] = {IM_COL32(86, 180, 233, 255), IM_COL32(230, 97, 0, 255)};
const ImU32 kTorqueCol = IM_COL32(240, 228, 66, 255);
const ImU32 kPanelBg = IM_COL32(24, 26, 32, 255);
const ImU32 kGrid = IM_COL32(60, 64, 76, 255);
const ImU32 kDim = IM_COL32(150, 150, 160, 255);

inline ImU32 with_alpha(ImU32 c, int a) { return (c & 0x00FFFFFFu) | ((ImU32)a << IM_COL32_A_SHIFT); }
inline bool has_model(const ModelStream & s) { return s.model != nullptr; }
inline int n_streams(const App & app) { return app.opt.compare && has_model(app.streams[1]) ? 2 : 1; }

// "pendulum-constrained.safetensors" -> "pendulum-constrained"; with strip_world also
// without the running world's "pendulum-" prefix (for narrow labels).
std::string short_name(const App & app, const std::string & file, bool strip_world = false);
// Angle colour: a cyclic hue, 0 red, going round the colour wheel.
ImU32 angle_colour(double theta);
// Velocity colour: diverging blue (negative) - grey - red (positive), saturating at +-vmax.
ImU32 velocity_colour(double v, double vmax);

void text_at(ImDrawList * dl, ImVec2 p, ImU32 col, const char * s);
void text_right(ImDrawList * dl, ImVec2 p, ImU32 col, const char * s);
// A grey W x W image (values in [0, 1]) drawn into the square [p0, p0 + side].
void draw_gray_image(ImDrawList * dl, const float * img, int W, ImVec2 p0, float side, float dim = 1.f);

// A row of H frames (images [D, H] column-major, or nullptr for the truth from
// app.true_images) scaled to fit width; every stride-th frame when they would be smaller
// than W pixels. Returns the height used.
float draw_film_strip(App & app, const ekvae::Mat<float> * images, ImVec2 p0, float width, const char * label,
                      ImU32 label_col, float label_w);
// The time plot of state component i for stream k in [p0, p0 + size]: the past (filtered
// estimate vs truth) left of "now", the forecast (+-2 sigma) vs the true future right of it.
void draw_time_plot(App & app, int k, int i, ImVec2 p0, ImVec2 size, bool show_x_labels);
// The latent plot's axes: one read-out plane per angle ("read-out theta1 (sin, cos)"), then
// pairs of z coordinates.
int projection_count(const App & app);
std::string projection_name(const App & app, int p);
// One scatter of stream s's recent filtered means in [p0, p0 + size], coloured by the true
// angle of the plotted plane (by_angle) or its velocity, with a colour bar underneath.
void draw_scatter(App & app, const ModelStream & s, ImVec2 p0, ImVec2 size, bool by_angle, ImU32 frame_col);

// A tooltip for the last item; on touch screens (g_touch_tooltips) only while the finger is
// down (a tap leaves the pointer where it was, and a tooltip would stay).
inline bool g_touch_tooltips = false;
inline void tip(const char * text) {
    if (ImGui::IsItemHovered() && (!g_touch_tooltips || ImGui::GetIO().MouseDown[0])) ImGui::SetTooltip("%s", text);
}
// Records where something was drawn (UI units -> CSS pixels) for state().ui.rects.
inline void record(App & app, const std::string & name, ImVec2 a, ImVec2 b) {
    const float s = app.ui_scale;
    app.ui_rects.push_back({name, a.x * s, a.y * s, (b.x - a.x) * s, (b.y - a.y) * s});
}
inline void record_item(App & app, const std::string & name) { record(app, name, ImGui::GetItemRectMin(), ImGui::GetItemRectMax()); }

// The controls (app_controls.cpp): the control panel; the compact layout's strip of torque
// slider(s) and run buttons; the help; the last refused file (plain words, then the detail).
void draw_controls(App & app);
void draw_torque_strip(App & app);
void draw_help(App & app);
void show_model_error(const App & app);
