// app_api.cpp: the demo's options (command line natively, URL parameters in the page) and its
// state as JSON for the page's window.ekvae.state() (see app.h and web/README.md).
#include "app.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <nlohmann/json.hpp>

bool parse_app_args(int argc, char ** argv, AppOptions & opt, std::vector<std::string> & rest, std::string & err) {
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto value = [&](const char * what) -> const char * {
            if (i + 1 >= argc) { err = a + ": missing " + what; return nullptr; }
            return argv[++i];
        };
        auto one_of = [&](const char * v, const char * x, const char * y) {
            if (std::string(v) == x || std::string(v) == y) return true;
            err = a + ": expected " + x + " or " + y + ", got '" + v + "'";
            return false;
        };
        if (a == "--world") {
            const char * v = value("a world name");
            if (!v) return false;
            if (!ekvae::make_world(v)) {
                err = std::string("--world: no world called '") + v + "' (there are: " + ekvae::world_names_list() + ")";
                return false;
            }
            opt.world = v;
        } else if (a == "--horizon") {
            const char * v = value("a number of frames (1..200)");
            if (!v) return false;
            char * end = nullptr;
            long h = std::strtol(v, &end, 10);
            if (*v == '\0' || *end != '\0' || h < 1 || h > kMaxHorizon) {
                err = "--horizon: expected 1.." + std::to_string(kMaxHorizon) + " frames, got '" + v + "'";
                return false;
            }
            opt.horizon = (int)h;
        } else if (a == "--torque") {
            const char * v = value("hold or zero");
            if (!v || !one_of(v, "hold", "zero")) return false;
            opt.torque_mode = v;
        } else if (a == "--compare") {
            opt.compare = true;
            if (i + 1 < argc && (std::string(argv[i + 1]) == "0" || std::string(argv[i + 1]) == "1"))
                opt.compare = std::string(argv[++i]) == "1";
        } else if (a == "--model") {
            const char * v = value("a model file name");
            if (!v) return false;
            opt.model = v;
        } else if (a == "--touch" || a == "--show-help") {
            const char * v = value("0 or 1");
            if (!v || !one_of(v, "0", "1")) return false;
            (a == "--touch" ? opt.touch : opt.show_help) = std::string(v) == "1";
        } else if (a == "--ui") {
            const char * v = value("minimal or full");
            if (!v || !one_of(v, "minimal", "full")) return false;
            opt.minimal_ui = std::string(v) == "minimal";
        } else {
            rest.push_back(a);
        }
    }
    return true;
}

std::string app_state_json(App & app) {
    app_update_forecast(app);
    using nlohmann::json;
    const ekvae::World & w = *app.world;
    const int va = std::max(velocity_of(w, 0), 0); // the first angle's velocity ("omega")
    auto num = [](double v) { return std::isfinite(v) ? json(v) : json(); };
    auto estimate_json = [&](const ModelStream & s) {
        if (!s.started) return json();
        return json{{"theta", s.est.value[0]}, {"sigma", s.est.sigma[0]}, {"omega", s.est.value[va]},
                    {"value", s.est.value}, {"sigmas", s.est.sigma}};
    };
    // forecast: the first angle as theta / sigma (the pendulum's keys), every component by name
    auto forecast_json = [&](const ModelStream & s) {
        if (s.fc.empty()) return json();
        json comps = json::object(), theta = json::array(), sigma = json::array(), true_theta = json::array();
        for (int i = 0; i < w.S; i++) {
            json mean = json::array(), sig = json::array(), truth = json::array();
            for (size_t k = 0; k < s.fc.size(); k++) {
                mean.push_back(s.fc[k].value[i]);
                sig.push_back(s.fc[k].sigma[i]);
                if (k < app.true_future.size()) truth.push_back(app.true_future[k][i]);
            }
            comps[w.state_names[i]] = {{"mean", mean}, {"sigma", sig}, {"true", truth}};
            if (i == 0) { theta = mean; sigma = sig; true_theta = truth; }
        }
        return json{{"theta", theta}, {"sigma", sigma}, {"true_theta", true_theta}, {"torque", app.forecast_u[0]},
                    {"torques", app.forecast_u}, {"components", comps}};
    };
    auto stream_json = [&](const ModelStream & s) {
        json j;
        j["name"] = s.name;
        j["estimate"] = estimate_json(s);
        json f = forecast_json(s);
        if (!f.is_null()) f = {{"theta", f["theta"]}, {"sigma", f["sigma"]}, {"components", f["components"]}};
        j["forecast"] = f;
        j["record"] = s.record.empty() ? json() : json(s.record);
        const StreamScore sc = stream_score(s);
        j["score"] = {{"angle_err_10", num(sc.angle10)}, {"angle_err_30", num(sc.angle30)}, {"omega_err", num(sc.velocity)},
                      {"n10", sc.n10}, {"n30", sc.n30}};
        j["filter_ms"] = s.filter_ms;
        j["filter_restarts"] = s.restarts;
        j["forecast_ms"] = s.forecast_ms;
        j["model_ms"] = s.frame_ms;
        return j;
    };
    json j;
    j["world"] = w.name;
    j["world_title"] = w.title;
    j["state_names"] = w.state_names;
    j["state_angles"] = w.angle;
    j["state"] = app.state;
    j["image_size"] = app.W;
    j["t"] = app.t;
    j["dt"] = w.time_step();
    j["theta"] = app.state[0];
    j["omega"] = app.state[va];
    j["torque"] = app.torque[0];
    j["torques"] = app.torque;
    j["torque_setting"] = app.torque_slider[0];
    j["torque_settings"] = app.torque_slider;
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
    j["model"] = s0.model ? json(s0.name) : json();
    j["model_loaded"] = s0.model != nullptr;
    j["error"] = app.model_error.empty() ? json() : json(app.model_error);
    j["loading"] = app.loading.empty() ? json() : json(app.loading);
    j["shipped"] = app.shipped;
    j["world_models"] = app_world_models(app);
    const bool live = s0.model && s0.started;
    j["estimate"] = live ? estimate_json(s0) : json();
    j["forecast"] = live ? forecast_json(s0) : json();
    j["model_ms"] = live ? json(app.model_ms) : json();
    json ms = json::array();
    for (int k = 0; k < 2; k++)
        if (app.streams[k].model && (k == 0 || app.opt.compare)) ms.push_back(stream_json(app.streams[k]));
    j["models"] = ms;
    json rects = json::object();
    for (const App::UiRect & r : app.ui_rects) rects[r.name] = {r.x, r.y, r.w, r.h};
    j["ui"] = {{"scale", app.ui_scale}, {"minimal", app.opt.minimal_ui}, {"touch", app.opt.touch}, {"tab", app.tab},
               {"keys", app.key_zone == 0 ? "torque" : "controls"}, {"help_open", app.help_open}, {"rects", rects}};
    return j.dump();
}
