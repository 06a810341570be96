// app_sim.cpp: the demo's simulation (see app.h): the world under the user's torques, the
// camera, and one model stream per loaded model (filter, forecast, running score). No drawing.
//
// Timing: the filter consumes the observation of every world step; the forecast (H steps,
// decoded) is recomputed whenever the state, the torque or the options changed, so at most
// once per drawn frame. "Model time" is the time of that work in the last frame that ran the
// model.
#include "app.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <imgui.h>

using ekvae::Mat;

namespace {

constexpr int kMaxStepsPerFrame = 16;    // after a long stall, drop time instead of catching up
// Drag: a spring from the tip to the pointer, turned into joint torques through the tip's
// Jacobian, u = kDragGain J^T (pointer - tip) - kDragDamping * qdot (for the pendulum close to
// the tip this is 4 x the angle error - omega).
constexpr double kDragGain = 4.0;
constexpr double kDragDamping = 1.0;
constexpr int kLatentPoints = 300;       // filtered means in the latent plot (15 s)
constexpr double kMaxModelParams = 64e6; // refuse configs beyond this before allocating
constexpr int kScoreEvery = 5;           // steps between scored forecasts (0.25 s)
constexpr int kScoreWindow = 200;        // steps scored (10 s)

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

bool has_model(const ModelStream & s) { return s.model != nullptr; }

template <class T> void push_capped(std::deque<T> & d, T v, size_t cap) {
    d.push_back(std::move(v));
    while (d.size() > cap) d.pop_front();
}

// The actions as a U x n matrix, the same torques u [U] in every column.
Mat<float> torque_columns(const std::vector<double> & u, int n) {
    Mat<float> U((Eigen::Index)u.size(), n);
    for (size_t j = 0; j < u.size(); j++) U.row((Eigen::Index)j).setConstant((float)u[j]);
    return U;
}

// The torques the forecast assumes for every future step.
std::vector<double> forecast_torque(const App & app) {
    return app.opt.torque_mode == "zero" ? std::vector<double>(app.world->U, 0.0) : app_applied_torque(app);
}

// Renders the current state and adds pixel noise: the frame the filter will consume.
void update_observation(App & app) {
    const int n = app.W * app.W;
    app.image.resize(n);
    app.obs.resize(n);
    app.world->render(app.state.data(), app.W, app.image.data());
    for (int i = 0; i < n; i++) {
        double v = app.image[i];
        if (app.noise > 0.f) v += app.noise * app.rng.normal();
        app.obs[i] = (float)ekvae::clip(v, 0.0, 1.0);
    }
}

Estimate read_out(const ModelStream & s, const Mat<float> & z, const Mat<float> & P, int col) {
    const ekvae::Readout r = ekvae::readout(*s.model, z, P, col);
    return {r.value, r.sigma};
}

// ---- model streams ---------------------------------------------------------------------------

void stream_clear_history(ModelStream & s) {
    s.started = false;
    s.past.clear();
    s.latent.clear();
    s.fc.clear();
    s.pending.clear();
    s.err10.clear();
    s.err30.clear();
    s.err_velocity.clear();
}

// After a world step: resolve the forecasts that reach this step, take the velocity error, and
// every kScoreEvery steps make a new 30-step forecast (means only, no decoding).
void stream_score_step(App & app, ModelStream & s, const std::vector<double> & u) {
    if (!has_model(s) || !s.started || !s.model->has_readout) return;
    const ekvae::World & w = *app.world;
    double ev = 0;
    int nv = 0;
    for (int i = 0; i < w.S; i++)
        if (!w.angle[i]) { ev += std::abs(s.est.value[i] - app.state[i]); nv++; }
    if (nv > 0) push_capped(s.err_velocity, ev / nv, kScoreWindow);
    while (!s.pending.empty() && s.pending.front().target <= app.steps) {
        const ModelStream::Pending p = s.pending.front();
        s.pending.pop_front();
        if (p.target != app.steps) continue;
        double e = 0;
        int k = 0;
        for (int i = 0; i < w.S; i++)
            if (w.angle[i]) e += std::abs(ekvae::wrap_angle(p.angles[k++] - app.state[i]));
        push_capped(p.h30 ? s.err30 : s.err10, e / std::max(k, 1), (size_t)(kScoreWindow / kScoreEvery));
    }
    if (app.steps % kScoreEvery != 0) return;
    Mat<float> zs, Ps;
    ekvae::forecast(*s.tape, *s.model, s.z, s.P, torque_columns(u, 30), zs, Ps, (Mat<float> *)nullptr);
    for (int h : {10, 30}) {
        const ekvae::Readout r = ekvae::readout(*s.model, zs, Ps, h - 1);
        ModelStream::Pending p{app.steps + h, h == 30, {}};
        for (int i = 0; i < w.S; i++)
            if (w.angle[i]) p.angles.push_back(r.value[i]);
        s.pending.push_back(std::move(p));
    }
    std::stable_sort(s.pending.begin(), s.pending.end(), [](const auto & a, const auto & b) { return a.target < b.target; });
}

// One filter step of stream s on the current observation (none while covered), predicting
// with u_prev [U] (the torques applied since the previous frame). Returns the time taken (ms).
double stream_filter(App & app, ModelStream & s, const std::vector<double> & u_prev) {
    if (!has_model(s)) return 0;
    const double t0 = now_ms();
    Mat<float> x;
    if (!app.covered) x = Eigen::Map<const Mat<float>>(app.obs.data(), (Eigen::Index)app.obs.size(), 1);
    const Mat<float> u = torque_columns(u_prev, 1);
    ekvae::filter_step(*s.tape, *s.model, s.z, s.P, !s.started, u, app.covered ? nullptr : &x);
    s.started = true;
    Estimate e = read_out(s, s.z, s.P, 0);
    bool finite = s.z.allFinite() && s.P.allFinite();
    for (double v : e.value) finite = finite && std::isfinite(v);
    if (!finite) {
        // Predicting open-loop for a long time (camera covered) can take the learned dynamics
        // where they expand without bound until float overflows: start again from the prior.
        ekvae::filter_step(*s.tape, *s.model, s.z, s.P, true, u, app.covered ? nullptr : &x);
        e = read_out(s, s.z, s.P, 0);
        s.restarts++;
    }
    s.est = e;
    s.filter_ms = now_ms() - t0;
    push_capped(s.past, s.est, kPastSteps + 1);
    LatentPoint p{};
    const int nz = std::min((int)s.z.rows(), kMaxLatentDims);
    for (int i = 0; i < nz; i++) p.z[i] = s.z(i, 0);
    p.state.assign(app.state.begin(), app.state.end());
    push_capped(s.latent, std::move(p), kLatentPoints);
    return s.filter_ms;
}

// The open-loop forecast of stream s under constant torques u [U] for H steps (decoded frames).
void stream_forecast(ModelStream & s, int H, const std::vector<double> & u) {
    ekvae::forecast(*s.tape, *s.model, s.z, s.P, torque_columns(u, H), s.zs, s.Ps, &s.images);
    s.fc.resize(H);
    for (int k = 0; k < H; k++) s.fc[k] = read_out(s, s.zs, s.Ps, k);
}

// Model time accumulated since the last forecast (filter steps), closed by app_update_forecast.
double g_pending_ms = 0;

// One world step under the current torques u_t (applied between frame t and t+1), then one
// filter step per model on the new frame.
void world_step(App & app) {
    const std::vector<double> u = app_applied_torque(app);
    app.world->step(app.state.data(), u.data(), app.state.data());
    app.torque = u;
    app.t += app.world->time_step();
    app.steps++;
    update_observation(app);
    for (ModelStream & s : app.streams) g_pending_ms += stream_filter(app, s, u);
    const std::vector<double> uf = forecast_torque(app);
    for (ModelStream & s : app.streams) stream_score_step(app, s, uf);
    push_capped(app.true_past, app.state, kPastSteps + 1);
    app.forecast_dirty = true;
}

// Restarts stream s at the current frame (its prior, updated with the current observation).
void stream_restart(App & app, ModelStream & s) {
    stream_clear_history(s);
    g_pending_ms += stream_filter(app, s, std::vector<double>(app.world->U, 0.0));
    app.forecast_dirty = true;
}

void drop_model(ModelStream & s) {
    stream_clear_history(s);
    s.model.reset();
    s.name.clear();
    s.record.clear();
    s.images.resize(0, 0);
}

// The world's first model to show: opt.model if it is one of them, else a "constrained" one.
std::string default_model(App & app, const std::vector<std::string> & names) {
    std::string first = names[0];
    for (const std::string & n : names)
        if (n.find("constrained") != std::string::npos) { first = n; break; }
    if (!app.opt.model.empty()) {
        if (std::find(names.begin(), names.end(), app.opt.model) != names.end()) first = app.opt.model;
        else app.model_error = "model '" + app.opt.model + "' is not among the shipped " + app.world->name + " models; using " + first;
    }
    return first;
}

void request_defaults(App & app) {
    const std::vector<std::string> names = app_world_models(app);
    if (names.empty()) return;
    app.primary = default_model(app, names);
    if (app.request_model && app.streams[0].name != app.primary) app.request_model(app.primary, 0);
    if (app.opt.compare) app_set_compare(app, true);
}

// Makes `world` the running one: its camera, its start state, no models.
void install_world(App & app, std::unique_ptr<ekvae::World> world) {
    app.world = std::move(world);
    app.opt.world = app.world->name;
    app.W = app.world->default_image_size;
    const int U = app.world->U;
    app.torque_slider.assign(U, 0.0);
    app.torque.assign(U, 0.0);
    app.key_dir.assign(U, 0);
    app.forecast_u.clear();
    app.true_future.clear();
    app.true_images.clear();
    app.projection = 0;
    app.dragging = false;
    for (ModelStream & s : app.streams) drop_model(s);
    app_reset(app, app_start_state(app));
}

} // namespace

StreamScore stream_score(const ModelStream & s) {
    auto mean = [](const std::deque<double> & d) {
        double t = 0;
        for (double v : d) t += v;
        return d.empty() ? NAN : t / (double)d.size();
    };
    return {mean(s.err10), mean(s.err30), mean(s.err_velocity), (int)s.err10.size(), (int)s.err30.size()};
}

int velocity_of(const ekvae::World & w, int i) {
    const int v = i + w.angles();
    return v < w.S && !w.angle[v] ? v : -1;
}

namespace {
// The tip's Jacobian in the joint angles at state q, by central differences of the skeleton:
// J [2][U] (row 0: d tip_x / d q_j, row 1: d tip_y / d q_j), and the tip itself.
void tip_jacobian(const ekvae::World & w, const std::vector<double> & q, double tip[2], std::vector<double> J[2]) {
    const std::vector<double> sk = w.skeleton(q.data());
    const size_t n = sk.size() - 2;
    tip[0] = sk[n];
    tip[1] = sk[n + 1];
    J[0].assign(w.U, 0.0);
    J[1].assign(w.U, 0.0);
    for (int j = 0; j < w.U; j++) {
        std::vector<double> a = q, b = q;
        const double h = 1e-4;
        a[j] += h;
        b[j] -= h;
        const std::vector<double> pa = w.skeleton(a.data()), pb = w.skeleton(b.data());
        J[0][j] = (pa[n] - pb[n]) / (2 * h);
        J[1][j] = (pa[n + 1] - pb[n + 1]) / (2 * h);
    }
}
} // namespace

std::vector<double> app_applied_torque(const App & app) {
    const ekvae::World & w = *app.world;
    std::vector<double> u = app.torque_slider;
    if (app.dragging && !app.paused && w.S == 2 * w.U) {
        double tip[2];
        std::vector<double> J[2];
        tip_jacobian(w, app.state, tip, J);
        const double fx = app.drag_x - tip[0], fy = app.drag_y - tip[1];
        for (int j = 0; j < w.U; j++)
            u[j] = kDragGain * (J[0][j] * fx + J[1][j] * fy) - kDragDamping * app.state[velocity_of(w, j)];
    } else {
        for (int j = 0; j < w.U; j++)
            if (app.key_dir[j] != 0) u[j] = app.key_dir[j] * w.action_max(j);
    }
    for (int j = 0; j < w.U; j++) u[j] = ekvae::clip(u[j], -w.action_max(j), w.action_max(j));
    return u;
}

void app_place_tip(App & app, double x, double y) {
    const ekvae::World & w = *app.world;
    if (w.S != 2 * w.U) return;
    // damped least squares from the current angles: dq = J^T (J J^T + mu I)^-1 (target - tip)
    std::vector<double> q = app.state;
    for (int it = 0; it < 40; it++) {
        double tip[2];
        std::vector<double> J[2];
        tip_jacobian(w, q, tip, J);
        const double ex = x - tip[0], ey = y - tip[1];
        if (ex * ex + ey * ey < 1e-10) break;
        const double mu = 1e-2;
        double a = mu, b = 0, d = mu; // J J^T + mu I = [a b; b d]
        for (int j = 0; j < w.U; j++) {
            a += J[0][j] * J[0][j];
            b += J[0][j] * J[1][j];
            d += J[1][j] * J[1][j];
        }
        const double det = a * d - b * b;
        const double vx = (d * ex - b * ey) / det, vy = (a * ey - b * ex) / det;
        for (int j = 0; j < w.U; j++) q[j] += J[0][j] * vx + J[1][j] * vy;
    }
    for (int i = 0; i < w.S; i++)
        if (!w.angle[i]) q[i] = 0.0; // placed at rest
    app_reset(app, q);
}

void app_init(App & app, const AppOptions & opt) {
    if (ImGui::GetCurrentContext()) app_init_style(opt.touch);
    app.help_open = opt.show_help;
    if (opt.show_help) app.tab = 4; // the compact layout's Help tab
    app.opt = opt;
    app.paused = false;
    app.speed = 1.f;
    std::unique_ptr<ekvae::World> w = ekvae::make_world(opt.world);
    install_world(app, w ? std::move(w) : ekvae::make_world("pendulum"));
}

bool app_set_world(App & app, const std::string & name, std::string & err) {
    std::unique_ptr<ekvae::World> w = ekvae::make_world(name);
    if (!w) {
        err = "no world called '" + name + "' (there are: " + ekvae::world_names_list() + ")";
        return false;
    }
    if (app.world && app.world->name == name) return true;
    app.model_error.clear();
    app.opt.model.clear();
    install_world(app, std::move(w));
    request_defaults(app);
    return true;
}

std::vector<double> app_start_state(const App & app) { return app.world->demo_start; }

void app_reset(App & app, const std::vector<double> & s) {
    const ekvae::World & w = *app.world;
    app.state.assign(w.S, 0.0);
    for (int i = 0; i < w.S && i < (int)s.size(); i++)
        app.state[i] = w.angle[i] ? ekvae::wrap_angle(s[i]) : ekvae::clip(s[i], -w.state_max(i), w.state_max(i));
    app.t = 0.0;
    app.steps = 0;
    app.accumulator = 0.0;
    app.torque.assign(w.U, 0.0);
    app.true_past.clear();
    app.true_past.push_back(app.state);
    update_observation(app);
    for (ModelStream & st : app.streams) stream_restart(app, st);
}

void app_set_torque(App & app, int j, double u) {
    if (j < 0 || j >= app.world->U || !std::isfinite(u)) return;
    app.torque_slider[j] = ekvae::clip(u, -app.world->action_max(j), app.world->action_max(j));
}

void app_cover(App & app, bool on) { app.covered = on; }

void app_step(App & app, int n) {
    for (int i = 0; i < n; i++) world_step(app);
}

void app_advance(App & app, float dt_seconds) {
    const double dt = app.world->time_step();
    if (!app.paused) {
        app.accumulator += std::min((double)dt_seconds, 0.25) * app.speed;
        int n = 0;
        while (app.accumulator >= dt && n < kMaxStepsPerFrame) {
            app_step(app, 1);
            app.accumulator -= dt;
            n++;
        }
        if (n == kMaxStepsPerFrame) app.accumulator = 0.0;
    }
    app_update_forecast(app);
}

void app_update_forecast(App & app) {
    const int H = app.opt.horizon;
    const std::vector<double> u = forecast_torque(app);
    if (!app.forecast_dirty && u == app.forecast_u && (int)app.true_future.size() == H) return;
    app.forecast_dirty = false;
    app.forecast_u = u;
    // the true future under the same assumption, and its renderings for the film strip
    const int D = app.W * app.W;
    app.true_future.resize(H);
    app.true_images.resize((size_t)H * D);
    std::vector<double> st = app.state;
    for (int k = 0; k < H; k++) {
        app.world->step(st.data(), u.data(), st.data());
        app.true_future[k] = st;
        app.world->render(st.data(), app.W, app.true_images.data() + (size_t)k * D);
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

bool app_load_model(App & app, int slot, const std::string & name, const uint8_t * data, size_t size, std::string & err) {
    // The message: what is wrong in plain words and what file is expected, then the detail.
    auto fail = [&](const std::string & why) {
        err = why;
        const bool not_a_model = why.rfind("not a valid safetensors file", 0) == 0;
        const std::string keeps = has_model(app.streams[slot & 1]) ? " " + app.streams[slot & 1].name + " keeps running." : "";
        app.model_error = name + (not_a_model ? " is not an ekvae model file" : " cannot run in this demo") +
                          ": a .safetensors model written by ekvae_train is expected." + keeps + "\n(" + why + ")";
        return false;
    };
    if (slot < 0 || slot > 1) return fail("model slot must be 0 or 1");
    ekvae::SafeTensors st;
    std::string e;
    if (!ekvae::safetensors_parse(data, size, st, e)) return fail("not a valid safetensors file: " + e);
    std::unique_ptr<ekvae::World> world;
    auto c = st.metadata.find("config");
    if (c != st.metadata.end()) {
        ekvae::EkvaeConfig cfg;
        if (ekvae::config_from_json(c->second, cfg, e)) {
            world = ekvae::make_world(cfg.world);
            if (!world) return fail("a model of the '" + cfg.world + "' world, which this page does not know (it runs " + ekvae::world_names_list() + ")");
            if (slot == 1 && cfg.world != app.world->name)
                return fail("a model of the " + world->title + "; the first model runs the " + app.world->title +
                            " (compare two models of the same world)");
            if (cfg.image_size != world->default_image_size)
                return fail("the model reads " + std::to_string(cfg.image_size) + "x" + std::to_string(cfg.image_size) +
                            " frames; this demo's " + world->title + " camera renders " + std::to_string(world->default_image_size) +
                            "x" + std::to_string(world->default_image_size));
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

    if (world && world->name != app.world->name) {
        const bool compare = app.opt.compare;
        install_world(app, std::move(world));
        app.opt.compare = compare;
    }
    ModelStream & s = app.streams[slot];
    s.name = name;
    if (slot == 0 && name != kTrainingModelName) app.train.follow = false; // the user chose another model
    auto rec = st.metadata.find("record");
    s.record = rec == st.metadata.end() ? std::string() : rec->second;
    s.model = std::move(model);
    if (!s.tape) s.tape = std::make_unique<ekvae::Tape<float>>();
    s.images.resize(0, 0);
    stream_restart(app, s);
    app.model_error.clear();
    err.clear();
    if (slot == 0 && app.opt.compare && !has_model(app.streams[1])) app_set_compare(app, true);
    return true;
}

std::vector<std::string> app_world_models(const App & app) {
    std::vector<std::string> out;
    const std::string prefix = app.world->name + "-";
    for (const std::string & n : app.shipped)
        if (n.rfind(prefix, 0) == 0) out.push_back(n);
    return out;
}

void app_set_shipped_models(App & app, const std::vector<std::string> & names) {
    app.shipped = names;
    request_defaults(app);
}

void app_set_compare(App & app, bool on) {
    app.opt.compare = on;
    const std::vector<std::string> names = app_world_models(app);
    if (!on || has_model(app.streams[1]) || names.empty() || !app.request_model) return;
    // the second model: the first shipped one of this world that is not running in slot 0
    const std::string & first = has_model(app.streams[0]) ? app.streams[0].name : app.primary;
    std::string second = names[0];
    for (const std::string & n : names)
        if (n != first) { second = n; break; }
    app.request_model(second, 1);
}

double app_benchmark(App & app, int n, int H, int slot, double * mean_ms) {
    if (slot < 0 || slot > 1 || !has_model(app.streams[slot]) || n < 1) return -1;
    ModelStream & s = app.streams[slot];
    const Mat<float> z0 = s.z, P0 = s.P;
    const bool started0 = s.started;
    const Mat<float> x = Eigen::Map<const Mat<float>>(app.obs.data(), (Eigen::Index)app.obs.size(), 1);
    const Mat<float> U = torque_columns(forecast_torque(app), H), u = torque_columns(app.torque, 1);
    Mat<float> zs, Ps, img;
    std::vector<double> ms(n);
    double th = 0;
    const double t_all = now_ms();
    for (int i = 0; i < n; i++) {
        s.z = z0;
        s.P = P0;
        const double t0 = now_ms();
        ekvae::filter_step(*s.tape, *s.model, s.z, s.P, !started0, u, &x);
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
