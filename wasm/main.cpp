// main.cpp: window, OpenGL context and main loop for the ekvae demo, in the browser (SDL2 +
// WebGL2, built with Emscripten) and natively (ekvae_viewer: SDL2 + OpenGL 3).
// The frame body is one function, run by emscripten_set_main_loop_arg in the browser and by a
// while loop natively. The app's only file that includes <emscripten*.h> (the page's trainer,
// train_worker.cpp, is the other file of wasm/ that does).
//
// Flags (the page turns its URL parameters into these):
//   --world NAME  --horizon N  --torque hold|zero  --compare [0|1]  --model NAME  --ui minimal|full
// Native only:
//   --model FILE       a model file path (or a NAME in --models-dir); default: the shipped
//                      models in models/ (pendulum-constrained first) when that folder exists
//   --models-dir DIR   where the shipped models are (default models)
//   --frames N         draw N frames, then exit 0 (tests under Xvfb)
//   --screenshot F.png save the last frame as a PNG before exiting (with --frames)
//   --size WxH         window size (default 1280x800)
//   --bench N          no window: time N frames of model work (filter step + H-step forecast
//                      with decoding) per model and print the median, then exit
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>
#ifndef __EMSCRIPTEN__
#include <filesystem>
#endif

#include <SDL.h>
#include <imgui.h>
#include <imgui_impl_opengl3.h>
#include <imgui_impl_sdl.h>

#ifdef __EMSCRIPTEN__
#include <GLES3/gl3.h>
#include <emscripten.h>
#include <emscripten/html5.h>
#else
#include <SDL_opengl.h>
#include <stb_image_write.h>
#endif

#include <nlohmann/json.hpp>

#include "app.h"

namespace {

struct Loop {
    SDL_Window * window = nullptr;
    SDL_GLContext gl = nullptr;
    App app;
    Uint64 last_counter = 0;
    bool done = false;
    long max_frames = -1;   // native --frames
    std::string screenshot; // native --screenshot
    std::string models_dir = "models"; // native: the shipped models
    float dpr = 1.f;        // browser: the devicePixelRatio (natively 1)
    float font_scale = 0.f; // devicePixelRatio x UI scale the font was built for (0: not yet)
    int exit_code = 0;
};

Loop * g_loop = nullptr; // for the C API the page calls

// ImGui's default font rasterised at 13 px x scale and drawn at 1 / scale: sharp text on a
// backing store scale times the UI's size (scale = devicePixelRatio x UI scale; call between
// frames; gl_ready: the backend's textures exist and the font texture is made again, else its
// first frame makes it).
void build_font(float scale, bool gl_ready) {
    ImGuiIO & io = ImGui::GetIO();
    io.Fonts->Clear();
    ImFontConfig cfg;
    cfg.SizePixels = std::round(13.f * scale);
    io.Fonts->AddFontDefault(&cfg);
    io.FontGlobalScale = 13.f / cfg.SizePixels;
    if (gl_ready) {
        ImGui_ImplOpenGL3_DestroyFontsTexture();
        ImGui_ImplOpenGL3_CreateFontsTexture();
    }
}

#ifndef __EMSCRIPTEN__
// Reads the back buffer and writes it as a PNG (rows flipped: GL's origin is bottom-left).
// Sets colours to the number of distinct RGB colours (a blank frame has one or two).
bool save_screenshot(const std::string & path, int w, int h, size_t & colours) {
    std::vector<unsigned char> px((size_t)w * h * 4), flipped(px.size());
    glPixelStorei(GL_PACK_ALIGNMENT, 1);
    glReadPixels(0, 0, w, h, GL_RGBA, GL_UNSIGNED_BYTE, px.data());
    for (int y = 0; y < h; y++)
        std::copy(px.begin() + (size_t)(h - 1 - y) * w * 4, px.begin() + (size_t)(h - y) * w * 4,
                  flipped.begin() + (size_t)y * w * 4);
    std::vector<uint32_t> rgb((size_t)w * h);
    for (size_t i = 0; i < rgb.size(); i++) rgb[i] = px[4 * i] << 16 | px[4 * i + 1] << 8 | px[4 * i + 2];
    std::sort(rgb.begin(), rgb.end());
    colours = (size_t)(std::unique(rgb.begin(), rgb.end()) - rgb.begin());
    return stbi_write_png(path.c_str(), w, h, 4, flipped.data(), w * 4) != 0;
}
#endif

void frame(void * arg) {
    Loop & L = *static_cast<Loop *>(arg);
    SDL_Event ev;
    while (SDL_PollEvent(&ev)) {
        ImGui_ImplSDL2_ProcessEvent(&ev);
        if (ev.type == SDL_QUIT) L.done = true;
        if (ev.type == SDL_WINDOWEVENT && ev.window.event == SDL_WINDOWEVENT_CLOSE &&
            ev.window.windowID == SDL_GetWindowID(L.window))
            L.done = true;
    }
#ifdef __EMSCRIPTEN__
    // Follow the canvas's CSS size (the page sizes it to its container, also inside an iframe).
    double css_w = 0, css_h = 0;
    emscripten_get_element_css_size("#canvas", &css_w, &css_h);
    int win_w = 0, win_h = 0;
    SDL_GetWindowSize(L.window, &win_w, &win_h);
    // The backing store is the CSS size x devicePixelRatio (SDL_WINDOW_ALLOW_HIGHDPI), renewed
    // when either changes (browser zoom, another screen); the font follows the ratio.
    const float dpr = (float)emscripten_get_device_pixel_ratio();
    if (css_w >= 1 && css_h >= 1 && ((int)css_w != win_w || (int)css_h != win_h || dpr != L.dpr)) {
        if (dpr != L.dpr && (int)css_w == win_w && (int)css_h == win_h) SDL_SetWindowSize(L.window, win_w + 1, win_h);
        SDL_SetWindowSize(L.window, (int)css_w, (int)css_h);
    }
    L.dpr = dpr;
    SDL_GetWindowSize(L.window, &win_w, &win_h);
#else
    int win_w = 0, win_h = 0;
    SDL_GetWindowSize(L.window, &win_w, &win_h);
#endif
    // The UI scale follows the window (and the browser zoom, through the CSS size); the font is
    // rasterised for it and the device pixels.
    L.app.ui_scale = app_ui_scale((float)win_w, (float)win_h, L.app.opt.touch);
    if (L.dpr * L.app.ui_scale != L.font_scale) {
        build_font(L.dpr * L.app.ui_scale, L.font_scale != 0.f);
        L.font_scale = L.dpr * L.app.ui_scale;
    }

    const Uint64 now = SDL_GetPerformanceCounter();
    float dt = (float)((double)(now - L.last_counter) / (double)SDL_GetPerformanceFrequency());
    L.last_counter = now;
    if (dt <= 0.f) dt = 1.f / 60.f;

    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplSDL2_NewFrame();
    {
        // the UI is laid out in UI units: CSS pixels / ui_scale (the renderer scales it back up)
        ImGuiIO & io = ImGui::GetIO();
        const float s = L.app.ui_scale;
        io.DisplaySize = ImVec2(io.DisplaySize.x / s, io.DisplaySize.y / s);
        io.DisplayFramebufferScale = ImVec2(io.DisplayFramebufferScale.x * s, io.DisplayFramebufferScale.y * s);
        if (io.MousePos.x > -FLT_MAX / 2) io.MousePos = ImVec2(io.MousePos.x / s, io.MousePos.y / s);
    }
    ImGui::NewFrame();
    app_frame(L.app, dt);
    ImGui::Render();

    ImGuiIO & io = ImGui::GetIO();
    const int fb_w = (int)(io.DisplaySize.x * io.DisplayFramebufferScale.x);
    const int fb_h = (int)(io.DisplaySize.y * io.DisplayFramebufferScale.y);
    glViewport(0, 0, fb_w, fb_h);
    glClearColor(0.08f, 0.085f, 0.1f, 1.f);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());

#ifdef __EMSCRIPTEN__
    SDL_GL_SwapWindow(L.window);
    if (L.app.frames == 1) EM_ASM({ if (Module.onAppReady) Module.onAppReady(); });
#else
    if (L.max_frames >= 0 && L.app.frames >= L.max_frames) {
        if (!L.screenshot.empty()) {
            size_t colours = 0;
            if (save_screenshot(L.screenshot, fb_w, fb_h, colours)) {
                std::printf("ekvae_viewer: wrote %s (%dx%d, colours=%zu)\n", L.screenshot.c_str(), fb_w, fb_h, colours);
            } else {
                std::fprintf(stderr, "ekvae_viewer: cannot write %s\n", L.screenshot.c_str());
                L.exit_code = 1;
            }
        }
        L.done = true;
    }
    SDL_GL_SwapWindow(L.window);
#endif
}

void report_error(const std::string & msg) {
    std::fprintf(stderr, "ekvae: %s\n", msg.c_str());
#ifdef __EMSCRIPTEN__
    EM_ASM({ if (Module.onAppError) Module.onAppError(UTF8ToString($0)); }, msg.c_str());
#endif
}

#ifndef __EMSCRIPTEN__
bool read_file(const std::string & path, std::vector<uint8_t> & bytes) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
}

// Loads models_dir/name (or name itself when it is a path) into a slot; reports failures.
bool load_model_file(Loop & L, const std::string & name, int slot) {
    namespace fs = std::filesystem;
    const std::string path = fs::exists(name) && name.find('/') != std::string::npos ? name : L.models_dir + "/" + name;
    std::vector<uint8_t> bytes;
    std::string err;
    if (!read_file(path, bytes)) {
        L.app.model_error = name + ": cannot read " + path;
        report_error(L.app.model_error);
        return false;
    }
    if (!app_load_model(L.app, slot, fs::path(name).filename().string(), bytes.data(), bytes.size(), err)) {
        report_error(L.app.model_error);
        return false;
    }
    std::printf("ekvae_viewer: model %d: %s\n", slot, path.c_str());
    return true;
}

// The *.safetensors files of a folder, sorted; empty when it does not exist.
std::vector<std::string> list_models(const std::string & dir) {
    namespace fs = std::filesystem;
    std::vector<std::string> names;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return names;
    for (const auto & e : fs::directory_iterator(dir, ec))
        if (e.is_regular_file() && e.path().extension() == ".safetensors") names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}
#endif

} // namespace

#ifdef __EMSCRIPTEN__
// The C API behind the page's window.ekvae (see web/README.md). Calls before the app is up
// are ignored (ekvae_state_json returns "null").
extern "C" {
// The slider torque of joint j (0-based).
EMSCRIPTEN_KEEPALIVE void ekvae_set_torque(int j, double u) { if (g_loop) app_set_torque(g_loop->app, j, u); }
// The true state from a JSON array of numbers (missing components are 0); "null" = the world's start state.
EMSCRIPTEN_KEEPALIVE void ekvae_reset(const char * json_state) {
    if (!g_loop) return;
    const nlohmann::json j = nlohmann::json::parse(json_state ? json_state : "null", nullptr, false);
    std::vector<double> s = app_start_state(g_loop->app);
    if (j.is_array()) {
        s.assign(s.size(), 0.0);
        for (size_t i = 0; i < j.size() && i < s.size(); i++)
            if (j[i].is_number()) s[i] = j[i].get<double>();
    }
    app_reset(g_loop->app, s);
}
// Switches the world ("pendulum", "arm"); returns 0 with the reason in ekvae_last_error() for an unknown one.
EMSCRIPTEN_KEEPALIVE int ekvae_set_world(const char * name) {
    if (!g_loop) return 0;
    std::string err;
    if (app_set_world(g_loop->app, name ? name : "", err)) return 1;
    g_loop->app.model_error = err;
    return 0;
}
// Tab (shift: Shift+Tab) while the canvas has the focus: 1 if the app moved the keys between
// the torque and the controls, 0 if the focus should leave the demo.
// The worker's reports for the Train panel (type: progress, latent, finished, error; json: the message).
EMSCRIPTEN_KEEPALIVE void ekvae_train_report(const char * type, const char * json) { if (g_loop) app_train_report(g_loop->app, type, json); }
// A snapshot of the model in training loaded into slot 0 (ekvae_load_model_bytes as training.safetensors).
EMSCRIPTEN_KEEPALIVE void ekvae_train_snapshot(double step) { if (g_loop) app_train_snapshot_loaded(g_loop->app, (long)step); }
// Whether the live filter should run the snapshots (the panel's checkbox; off once another model is chosen).
EMSCRIPTEN_KEEPALIVE int ekvae_train_follow() { return g_loop && g_loop->app.train.follow ? 1 : 0; }
// Opens (1) or closes (0) the Train panel (the compact layout: its tab).
EMSCRIPTEN_KEEPALIVE void ekvae_train_panel(int open) {
    if (!g_loop) return;
    g_loop->app.train.open = open != 0;
    if (open && g_loop->app.compact) g_loop->app.tab = 5;
    if (!open && g_loop->app.compact && g_loop->app.tab == 5) g_loop->app.tab = 0;
}
EMSCRIPTEN_KEEPALIVE int ekvae_tab(int shift) { return g_loop && app_tab_key(g_loop->app, shift != 0) ? 1 : 0; }
EMSCRIPTEN_KEEPALIVE void ekvae_cover(int on) { if (g_loop) app_cover(g_loop->app, on != 0); }
EMSCRIPTEN_KEEPALIVE void ekvae_pause(int on) { if (g_loop) g_loop->app.paused = on != 0; }
EMSCRIPTEN_KEEPALIVE void ekvae_step(int n) { if (g_loop && n > 0) app_step(g_loop->app, n); }
EMSCRIPTEN_KEEPALIVE const char * ekvae_state_json() {
    static std::string s;
    s = g_loop ? app_state_json(g_loop->app) : "null";
    return s.c_str();
}
// The shipped model files, a JSON array of names (models/index.json); the app then asks for
// the default one(s) through Module.onRequestModel(name, slot).
EMSCRIPTEN_KEEPALIVE void ekvae_set_models(const char * json_names) {
    if (!g_loop) return;
    std::vector<std::string> names;
    const nlohmann::json j = nlohmann::json::parse(json_names, nullptr, false);
    if (j.is_array())
        for (const auto & v : j)
            if (v.is_string()) names.push_back(v.get<std::string>());
    app_set_shipped_models(g_loop->app, names);
}
// Loads a model file's bytes into slot 0 or 1. Returns 1 on success; 0 on failure, with the
// reason in ekvae_last_error() (and in state().error) while the previous model keeps running.
EMSCRIPTEN_KEEPALIVE int ekvae_load_model_bytes(const uint8_t * data, int size, int slot, const char * name) {
    if (!g_loop) return 0;
    std::string err;
    g_loop->app.loading.clear();
    return app_load_model(g_loop->app, slot, name ? name : "model", data, (size_t)size, err) ? 1 : 0;
}
EMSCRIPTEN_KEEPALIVE const char * ekvae_last_error() { return g_loop ? g_loop->app.model_error.c_str() : ""; }
// Shows "loading NAME" in the UI ("" clears it; a failed fetch passes its message as error).
EMSCRIPTEN_KEEPALIVE void ekvae_set_loading(const char * name, const char * error) {
    if (!g_loop) return;
    g_loop->app.loading = name ? name : "";
    if (error && *error) g_loop->app.model_error = error;
}
EMSCRIPTEN_KEEPALIVE void ekvae_set_compare(int on) { if (g_loop) app_set_compare(g_loop->app, on != 0); }
EMSCRIPTEN_KEEPALIVE void ekvae_set_horizon(int h) {
    if (g_loop && h >= 1 && h <= kMaxHorizon) { g_loop->app.opt.horizon = h; g_loop->app.forecast_dirty = true; }
}
EMSCRIPTEN_KEEPALIVE void ekvae_set_torque_mode(int zero) {
    if (g_loop) { g_loop->app.opt.torque_mode = zero ? "zero" : "hold"; g_loop->app.forecast_dirty = true; }
}
// Times n frames of model work (see app_benchmark): {"median_ms", "mean_ms", "n", "horizon"}.
EMSCRIPTEN_KEEPALIVE const char * ekvae_benchmark(int n, int H, int slot) {
    static std::string s;
    if (!g_loop) return "null";
    double mean = 0;
    const double med = app_benchmark(g_loop->app, n, H, slot, &mean);
    s = med < 0 ? "null" : nlohmann::json({{"median_ms", med}, {"mean_ms", mean}, {"n", n}, {"horizon", H}, {"slot", slot}}).dump();
    return s.c_str();
}
}
#endif

int main(int argc, char ** argv) {
    static Loop loop; // outlives main() in the browser, where main returns into the event loop
    AppOptions opt;
    std::vector<std::string> rest;
    std::string err;
    if (!parse_app_args(argc, argv, opt, rest, err)) {
        report_error(err);
        return 2;
    }
    int win_w = 1280, win_h = 800;
    long bench = 0;
    for (size_t i = 0; i < rest.size(); i++) {
        const std::string & a = rest[i];
        const bool has_value = i + 1 < rest.size();
        if (a == "--frames" && has_value) {
            loop.max_frames = std::strtol(rest[++i].c_str(), nullptr, 10);
            if (loop.max_frames <= 0) { report_error("--frames: expected a positive number"); return 2; }
        } else if (a == "--screenshot" && has_value) {
            loop.screenshot = rest[++i];
        } else if (a == "--size" && has_value) {
            if (std::sscanf(rest[++i].c_str(), "%dx%d", &win_w, &win_h) != 2 || win_w < 64 || win_h < 64) {
                report_error("--size: expected WxH, e.g. 1280x800");
                return 2;
            }
        } else if (a == "--models-dir" && has_value) {
            loop.models_dir = rest[++i];
        } else if (a == "--bench" && has_value) {
            bench = std::strtol(rest[++i].c_str(), nullptr, 10);
            if (bench <= 0) { report_error("--bench: expected a positive number of frames"); return 2; }
        } else if (a == "--help" || a == "-h") {
            std::printf("usage: ekvae_viewer [--frames N] [--screenshot F.png] [--size WxH] [--world pendulum|arm] [--horizon N]\n"
                        "                    [--torque hold|zero] [--compare [0|1]] [--model FILE|NAME]\n"
                        "                    [--models-dir DIR] [--ui minimal|full] [--touch 0|1] [--show-help 0|1] [--bench N]\n");
            return 0;
        } else {
            report_error("unknown or incomplete flag '" + a + "' (see --help)");
            return 2;
        }
    }
    if (!loop.screenshot.empty() && loop.max_frames < 0) {
        report_error("--screenshot needs --frames N");
        return 2;
    }
#ifndef __EMSCRIPTEN__
    // Models: the shipped ones from --models-dir, or the file named by --model.
    {
        App & app = loop.app;
        app.request_model = [&](const std::string & name, int slot) { load_model_file(loop, name, slot); };
        std::string explicit_file;
        if (!opt.model.empty() && std::filesystem::is_regular_file(opt.model) && opt.model.find('/') != std::string::npos) {
            explicit_file = opt.model;
            opt.model.clear();
        }
        app_init(app, opt); // before the window: --bench needs no display
        if (!explicit_file.empty()) {
            app.shipped = list_models(loop.models_dir); // for the model selector
            if (!load_model_file(loop, explicit_file, 0)) return 1;
            if (app.opt.compare) app_set_compare(app, true);
        } else {
            app_set_shipped_models(app, list_models(loop.models_dir));
            if (!opt.model.empty() && app.streams[0].name != opt.model) {
                report_error("--model " + opt.model + ": no such file, nor in " + loop.models_dir + "/");
                return 1;
            }
        }
        if (!app.streams[0].model) std::printf("ekvae_viewer: no model loaded (no models in %s/)\n", loop.models_dir.c_str());
        if (bench > 0) {
            if (!app.streams[0].model) { report_error("--bench needs a model"); return 1; }
            for (int k = 0; k < 2; k++) {
                if (!app.streams[k].model) continue;
                app_benchmark(app, 50, app.opt.horizon, k, nullptr); // warm up
                double mean = 0;
                const double med = app_benchmark(app, (int)bench, app.opt.horizon, k, &mean);
                std::printf("ekvae_viewer: bench %s: filter step + H=%d forecast with decoding: median %.4f ms, mean %.4f ms over %ld frames\n",
                            app.streams[k].name.c_str(), app.opt.horizon, med, mean, bench);
            }
            return 0;
        }
    }
#endif

#ifdef __EMSCRIPTEN__
    // Keys only while the canvas has the focus (not the whole window): a course page around the
    // demo keeps its own keys (PageDown, Tab, ...) until the reader clicks into the demo.
    SDL_SetHint(SDL_HINT_EMSCRIPTEN_KEYBOARD_ELEMENT, "#canvas");
#endif
    if (SDL_Init(SDL_INIT_VIDEO | SDL_INIT_TIMER) != 0) {
        report_error(std::string("SDL_Init failed: ") + SDL_GetError());
        return 1;
    }
#ifdef __EMSCRIPTEN__
    // WebGL2 = OpenGL ES 3.0
    const char * glsl_version = "#version 300 es";
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_FLAGS, 0);
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_PROFILE_MASK, SDL_GL_CONTEXT_PROFILE_ES);
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_MAJOR_VERSION, 3);
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_MINOR_VERSION, 0);
#else
    const char * glsl_version = "#version 130";
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_FLAGS, 0);
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_PROFILE_MASK, SDL_GL_CONTEXT_PROFILE_CORE);
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_MAJOR_VERSION, 3);
    SDL_GL_SetAttribute(SDL_GL_CONTEXT_MINOR_VERSION, 0);
#endif
    SDL_GL_SetAttribute(SDL_GL_DOUBLEBUFFER, 1);
    SDL_GL_SetAttribute(SDL_GL_DEPTH_SIZE, 0);
    SDL_GL_SetAttribute(SDL_GL_STENCIL_SIZE, 0);
#ifdef __EMSCRIPTEN__
    const Uint32 flags = SDL_WINDOW_OPENGL | SDL_WINDOW_RESIZABLE | SDL_WINDOW_ALLOW_HIGHDPI;
#else
    const Uint32 flags = SDL_WINDOW_OPENGL | SDL_WINDOW_RESIZABLE;
#endif
    loop.window = SDL_CreateWindow("ekvae", SDL_WINDOWPOS_CENTERED, SDL_WINDOWPOS_CENTERED, win_w, win_h, flags);
    if (!loop.window) {
        report_error(std::string("cannot create a window: ") + SDL_GetError());
        return 1;
    }
    loop.gl = SDL_GL_CreateContext(loop.window);
    if (!loop.gl) {
        report_error(std::string("cannot create an OpenGL context (WebGL2 in the browser): ") + SDL_GetError());
        return 1;
    }
    SDL_GL_MakeCurrent(loop.window, loop.gl);
    SDL_GL_SetSwapInterval(1);

    IMGUI_CHECKVERSION();
    ImGui::CreateContext();
    ImGuiIO & io = ImGui::GetIO();
    io.IniFilename = nullptr; // no file system in the browser; the layout is computed each frame
    ImGui::StyleColorsDark();
    ImGui_ImplSDL2_InitForOpenGL(loop.window, loop.gl);
    ImGui_ImplOpenGL3_Init(glsl_version);

#ifdef __EMSCRIPTEN__
    app_init(loop.app, opt);
    loop.app.request_model = [](const std::string & name, int slot) {
        g_loop->app.loading = name;
        EM_ASM({ if (Module.onRequestModel) Module.onRequestModel(UTF8ToString($0), $1); }, name.c_str(), slot);
    };
    loop.app.open_file_picker = []() { EM_ASM({ if (Module.onOpenFilePicker) Module.onOpenFilePicker(); }); };
    loop.app.copy_link = []() { EM_ASM({ if (Module.onCopyLink) Module.onCopyLink(); }); };
    loop.app.open_url = [](const std::string & url) { EM_ASM({ window.open(UTF8ToString($0), '_blank', 'noopener'); }, url.c_str()); };
    loop.app.help_seen = []() { EM_ASM({ if (Module.onHelpSeen) Module.onHelpSeen(); }); };
    // the Train panel: the page's worker trains (web/ekvae-train-worker.js)
    loop.app.train_start = [](const std::string & cfg) { EM_ASM({ if (Module.onTrainStart) Module.onTrainStart(UTF8ToString($0)); }, cfg.c_str()); };
    loop.app.train_stop = []() { EM_ASM({ if (Module.onTrainStop) Module.onTrainStop(); }); };
    loop.app.train_resume = []() { EM_ASM({ if (Module.onTrainResume) Module.onTrainResume(); }); };
    loop.app.train_download = []() { EM_ASM({ if (Module.onTrainDownload) Module.onTrainDownload(); }); };
#else
    app_init_style(loop.app.opt.touch);
#endif
    loop.last_counter = SDL_GetPerformanceCounter();
    g_loop = &loop;

#ifdef __EMSCRIPTEN__
    emscripten_set_main_loop_arg(frame, &loop, 0, 1); // requestAnimationFrame; does not return
#else
    while (!loop.done) frame(&loop);
    std::printf("ekvae_viewer: %ld frames, %s, t = %.2f s, %s = %+.3f", loop.app.frames, loop.app.world->name.c_str(), loop.app.t,
                loop.app.world->state_names[0].c_str(), loop.app.state[0]);
    if (loop.app.streams[0].model)
        std::printf(", estimate %+.3f, model %s, model time %.3f ms/frame", loop.app.streams[0].est.value[0],
                    loop.app.streams[0].name.c_str(), loop.app.model_ms);
    std::printf("\n");
    ImGui_ImplOpenGL3_Shutdown();
    ImGui_ImplSDL2_Shutdown();
    ImGui::DestroyContext();
    SDL_GL_DeleteContext(loop.gl);
    SDL_DestroyWindow(loop.window);
    SDL_Quit();
#endif
    return loop.exit_code;
}
