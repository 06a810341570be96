// app_plots.cpp: the demo's drawing helpers and plots (see app_ui.h): film strips, the time
// plot of one state component, the latent scatter. Reads the app's state, never changes it.
#include "app_ui.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

using ekvae::Mat;

std::string short_name(const App & app, const std::string & file, bool strip_world) {
    const std::string ext = ".safetensors";
    std::string s = file;
    if (s.size() > ext.size() && s.compare(s.size() - ext.size(), ext.size(), ext) == 0) s = s.substr(0, s.size() - ext.size());
    const std::string prefix = app.world->name + "-";
    if (strip_world && s.size() > prefix.size() && s.rfind(prefix, 0) == 0) s = s.substr(prefix.size());
    return s;
}

ImU32 angle_colour(double theta) {
    float h = (float)((ekvae::wrap_angle(theta) + kPi) / (2 * kPi)), r, g, b;
    ImGui::ColorConvertHSVtoRGB(h, 0.75f, 1.f, r, g, b);
    return IM_COL32((int)(r * 255), (int)(g * 255), (int)(b * 255), 255);
}

ImU32 velocity_colour(double v, double vmax) {
    const float s = (float)ekvae::clip(v / vmax, -1, 1);
    const float a = std::fabs(s);
    const float base = 0.62f;
    float r = base, g = base, b = base;
    if (s > 0) { r = base + (1.0f - base) * a; g = base * (1 - 0.75f * a); b = base * (1 - 0.85f * a); }
    else { b = base + (1.0f - base) * a; g = base * (1 - 0.45f * a); r = base * (1 - 0.85f * a); }
    return IM_COL32((int)(r * 255), (int)(g * 255), (int)(b * 255), 255);
}

void text_at(ImDrawList * dl, ImVec2 p, ImU32 col, const char * s) { dl->AddText(p, col, s); }
void text_right(ImDrawList * dl, ImVec2 p, ImU32 col, const char * s) {
    dl->AddText(ImVec2(p.x - ImGui::CalcTextSize(s).x, p.y), col, s);
}

void draw_gray_image(ImDrawList * dl, const float * img, int W, ImVec2 p0, float side, float dim) {
    const float cell = side / (float)W;
    for (int i = 0; i < W; i++) {
        for (int j = 0; j < W; j++) {
            const int g = (int)std::lround(255.0 * ekvae::clip(img[(size_t)i * W + j], 0, 1) * dim);
            if (g < 3) continue; // the background is drawn by the caller
            dl->AddRectFilled(ImVec2(p0.x + j * cell, p0.y + i * cell), ImVec2(p0.x + (j + 1) * cell, p0.y + (i + 1) * cell),
                              IM_COL32(g, g, g, 255));
        }
    }
}

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

namespace {

// Unwraps a sequence of angles so neighbours differ by less than pi.
std::vector<double> unwrap(const std::vector<double> & a) {
    std::vector<double> u(a.size());
    for (size_t i = 0; i < a.size(); i++) u[i] = i == 0 ? a[0] : u[i - 1] + ekvae::wrap_angle(a[i] - a[i - 1]);
    return u;
}

// The index of the read-out target "cos" of angle component i.
int cos_target(const ekvae::World & w, int i) {
    for (int k = 0; k < w.targets(); k++)
        if (w.target_component(k) == i) return k;
    return 0;
}

// The angle component of projection p (the first angle for the z planes).
int projection_angle(const App & app, int p) {
    const ekvae::World & w = *app.world;
    int a = 0;
    for (int i = 0; i < w.S; i++)
        if (w.angle[i] && a++ == p) return i;
    return 0;
}

// The 2-D coordinates of a latent point under the chosen projection.
ImVec2 project(const App & app, const ModelStream & s, const float * z) {
    const int nz = (int)s.model->cfg.n_z, na = app.world->angles();
    if (app.projection < na && s.model->has_readout) {
        const int k = cos_target(*app.world, projection_angle(app, app.projection));
        double c = s.model->readout_b(k, 0), sn = s.model->readout_b(k + 1, 0);
        for (int i = 0; i < std::min(nz, kMaxLatentDims); i++) {
            c += s.model->readout_W(k, i) * z[i];
            sn += s.model->readout_W(k + 1, i) * z[i];
        }
        // x = sin (right), y = cos (up): the latent circle drawn like the world itself
        return ImVec2((float)sn, (float)c);
    }
    static const int pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
    const int q = std::max(0, std::min(app.projection - na, 2));
    const int a = std::min(pairs[q][0], nz - 1), b = std::min(pairs[q][1], nz - 1);
    return ImVec2(z[a], z[b]);
}

} // namespace

void draw_time_plot(App & app, int k, int comp, ImVec2 p0, ImVec2 size, bool show_x_labels) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ModelStream & s = app.streams[k];
    const ekvae::World & w = *app.world;
    const bool angle = w.angle[comp];
    const float th = ImGui::GetTextLineHeight();
    const float left = ImGui::CalcTextSize("-pi/2 ").x + 4;
    const ImVec2 q0(p0.x + left, p0.y + 2), q1(p0.x + size.x - 4, p0.y + size.y - (show_x_labels ? th + 2 : 2));
    if (q1.y - q0.y < 20 || q1.x - q0.x < 40) return;
    dl->AddRectFilled(q0, q1, kPanelBg);
    const int H = (int)s.fc.size();
    const double dt = w.time_step();
    const double tmin = -kPastSteps * dt, tmax = std::max(H, 1) * dt;
    const double vmax = w.state_max(comp);
    // an angle: a turn centred on where the world rests (the pendulum and the arm's link 1 hang at
    // pi, its elbow rests at 0); a velocity: +-max
    const double mid = angle ? w.rest[comp] : 0.0;
    const double ylo = angle ? mid - kPi : -vmax, yhi = angle ? mid + kPi : vmax;
    auto X = [&](double tt) { return q0.x + (float)((tt - tmin) / (tmax - tmin)) * (q1.x - q0.x); };
    auto Y = [&](double a) { return q1.y - (float)((a - ylo) / (yhi - ylo)) * (q1.y - q0.y); };
    // an angle's grid lines are quarter turns: named by their value wrapped to (-pi, pi]
    auto angle_label = [](double a) {
        const double q = ekvae::wrap_angle(a) / (0.5 * kPi);
        return q > 1.5 ? "pi" : q > 0.5 ? "pi/2" : q > -0.5 ? "0" : q > -1.5 ? "-pi/2" : "pi";
    };
    // label every grid line, every other one, or only the middle one: as many as fit (compare mode's small plots)
    const float spacing = (q1.y - q0.y) / 4;
    const int every = spacing >= 1.05f * th ? 1 : 2 * spacing >= 1.05f * th ? 2 : 4;
    for (int i = 0; i <= 4; i++) {
        const float y = Y(ylo + i * (yhi - ylo) / 4);
        dl->AddLine(ImVec2(q0.x, y), ImVec2(q1.x, y), i == 2 ? IM_COL32(80, 84, 98, 255) : kGrid);
        const float ty = std::min(std::max(y - 0.5f * th, q0.y - 2), q1.y - th + 2);
        char b[16];
        std::snprintf(b, sizeof b, "%+.0f", -vmax + i * vmax / 2);
        if (i == 2) std::snprintf(b, sizeof b, "0");
        if ((i - 2) % every == 0) text_right(dl, ImVec2(q0.x - 4, ty), kDim, angle ? angle_label(ylo + i * 0.5 * kPi) : b);
    }
    for (double tt = std::ceil(tmin); tt <= tmax + 1e-9; tt += 1.0) {
        const float x = X(tt);
        dl->AddLine(ImVec2(x, q0.y), ImVec2(x, q1.y), kGrid);
        if (show_x_labels) {
            char b[16];
            std::snprintf(b, sizeof b, "%+.0f s", tt);
            if (tt == 0) std::snprintf(b, sizeof b, "now");
            const float wl = ImGui::CalcTextSize(b).x; // centred on its line, kept inside the plot's panel
            text_at(dl, ImVec2(std::min(x - 0.5f * wl, p0.x + size.x - wl), q1.y + 1), kDim, b);
        }
    }
    dl->PushClipRect(q0, q1, true);
    // A series (times, values) with an optional +-2 sigma band. Angles are unwrapped and drawn
    // at every offset of 2 pi that reaches the plot, so a spinning pendulum's trace stays in view.
    auto series = [&](const std::vector<double> & ts, const std::vector<double> & val, const std::vector<double> * sig,
                      ImU32 col, float thick) {
        if (ts.empty()) return;
        const std::vector<double> u = angle ? unwrap(val) : val;
        int off_lo = 0, off_hi = 0;
        if (angle) {
            const auto mm = std::minmax_element(u.begin(), u.end());
            off_lo = (int)std::floor((ylo - *mm.second - kPi) / (2 * kPi));
            off_hi = (int)std::ceil((yhi - *mm.first + kPi) / (2 * kPi));
        }
        // 2 sigma capped at half the angle axis (a band that wide says the angle is unknown)
        const double cap = angle ? kPi : 2 * vmax;
        for (int off = off_lo; off <= off_hi; off++) {
            const double sh = off * 2 * kPi;
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
    // the past: truth and the filtered estimate (ending now)
    std::vector<double> tp, true_past, est_past, sig_past;
    const int np = (int)std::min(s.past.size(), app.true_past.size());
    for (int i = 0; i < np; i++) {
        tp.push_back(-(np - 1 - i) * dt);
        true_past.push_back(app.true_past[app.true_past.size() - np + i][comp]);
        const Estimate & e = s.past[s.past.size() - np + i];
        est_past.push_back(e.value[comp]);
        sig_past.push_back(e.sigma[comp]);
    }
    // the future: from now (the current estimate / state) H steps ahead
    std::vector<double> tf, true_fut, fc, fs;
    if (H > 0 && s.started) {
        tf.push_back(0);
        true_fut.push_back(app.state[comp]);
        fc.push_back(s.est.value[comp]);
        fs.push_back(s.est.sigma[comp]);
        for (int i = 0; i < H && i < (int)app.true_future.size(); i++) {
            tf.push_back((i + 1) * dt);
            true_fut.push_back(app.true_future[i][comp]);
            fc.push_back(s.fc[i].value[comp]);
            fs.push_back(s.fc[i].sigma[comp]);
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
    const std::string name = w.state_names[comp];
    const std::string truth = "true " + name + (angle ? (w.name == "pendulum" ? " (0 = up)" : "") : " (rad/s)");
    legend(kTruth, truth.c_str(), false);
    legend(kStreamCol[k], size.x > 520 ? "filtered (past) / forecast (future), +-2 sigma" : size.x > 320 ? "model +-2 sigma" : "model", true);
}

int projection_count(const App & app) { return app.world->angles() + 3; }

std::string projection_name(const App & app, int p) {
    const int na = app.world->angles();
    static const char * zn[3] = {"z0 / z1", "z0 / z2", "z1 / z2"};
    if (p >= na) return zn[std::max(0, std::min(p - na, 2))];
    return "read-out " + app.world->state_names[projection_angle(app, p)] + " (sin, cos)";
}

void draw_scatter(App & app, const ModelStream & s, ImVec2 p0, ImVec2 size, bool by_angle, ImU32 frame_col) {
    ImDrawList * dl = ImGui::GetWindowDrawList();
    const ekvae::World & w = *app.world;
    const int ai = projection_angle(app, std::min(app.projection, w.angles() - 1));
    const int vi = velocity_of(w, ai);
    const double vmax = vi >= 0 ? std::min(6.0, w.state_max(vi)) : 1.0;
    const bool readout_plane = app.projection < w.angles() && s.model->has_readout;
    const float th = ImGui::GetTextLineHeight();
    const float bar_h = 6.f;
    const ImVec2 q0 = p0, q1(p0.x + size.x, p0.y + size.y - th - bar_h - 4);
    dl->AddRectFilled(q0, q1, kPanelBg);
    dl->AddRect(q0, q1, frame_col);
    // bounds: fixed for a read-out plane, else from the points (equal scales on both axes)
    float x0 = -1.4f, x1 = 1.4f, y0 = -1.4f, y1 = 1.4f;
    if (!readout_plane) {
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
    const float wd = q1.x - q0.x, h = q1.y - q0.y, sc = std::min(wd / (x1 - x0), h / (y1 - y0));
    const ImVec2 mid(0.5f * (q0.x + q1.x), 0.5f * (q0.y + q1.y));
    const float cx = 0.5f * (x0 + x1), cy = 0.5f * (y0 + y1);
    auto to_screen = [&](ImVec2 v) { return ImVec2(mid.x + (v.x - cx) * sc, mid.y - (v.y - cy) * sc); };
    dl->PushClipRect(q0, q1, true);
    if (readout_plane) dl->AddCircle(to_screen(ImVec2(0, 0)), sc, kGrid, 64, 1.f);
    const size_t n = s.latent.size();
    for (size_t i = 0; i < n; i++) {
        const LatentPoint & p = s.latent[i];
        const ImU32 col = by_angle ? angle_colour(p.state[ai]) : velocity_colour(vi >= 0 ? p.state[vi] : 0.0, vmax);
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
        const ImU32 col = by_angle ? angle_colour(-kPi + 2 * kPi * f) : velocity_colour(vmax * (2 * f - 1), vmax);
        dl->AddRectFilled(ImVec2(q0.x + wd * i / nb, by), ImVec2(q0.x + wd * (i + 1) / nb + 0.5f, by + bar_h), col);
    }
    const float ty = by + bar_h;
    char lo[16], hi[16];
    std::snprintf(lo, sizeof lo, "%+.0f", -vmax);
    std::snprintf(hi, sizeof hi, "%+.0f", vmax);
    const std::string name = by_angle ? w.state_names[ai] : vi >= 0 ? w.state_names[vi] : std::string("velocity");
    const std::string mid_label = wd > 150 ? "true " + name : name;
    text_at(dl, ImVec2(q0.x, ty), kDim, by_angle ? "-pi" : lo);
    text_at(dl, ImVec2(q0.x + 0.5f * (wd - ImGui::CalcTextSize(mid_label.c_str()).x), ty), kDim, mid_label.c_str());
    text_right(dl, ImVec2(q1.x, ty), kDim, by_angle ? "pi" : hi);
}
