// main.cpp: window, OpenGL context and main loop for the ekvae demo, in the browser (SDL2 +
// WebGL2, built with Emscripten) and natively (ekvae_viewer: SDL2 + OpenGL 3).
// The frame body is one function, run by emscripten_set_main_loop_arg in the browser and by a
// while loop natively. The only file of the project that includes <emscripten*.h>.
//
// Flags (the page turns its URL parameters into these):
//   --horizon N  --torque hold|zero  --compare [0|1]  --model NAME  --ui minimal|full
// Native only:
//   --frames N         draw N frames, then exit 0 (tests under Xvfb)
//   --screenshot F.png save the last frame as a PNG before exiting (with --frames)
//   --size WxH         window size (default 1280x800)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

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
    int exit_code = 0;
};

Loop * g_loop = nullptr; // for the C API the page calls

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
    if (css_w >= 1 && css_h >= 1 && ((int)css_w != win_w || (int)css_h != win_h))
        SDL_SetWindowSize(L.window, (int)css_w, (int)css_h);
#endif

    const Uint64 now = SDL_GetPerformanceCounter();
    float dt = (float)((double)(now - L.last_counter) / (double)SDL_GetPerformanceFrequency());
    L.last_counter = now;
    if (dt <= 0.f) dt = 1.f / 60.f;

    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplSDL2_NewFrame();
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

} // namespace

#ifdef __EMSCRIPTEN__
// The C API behind the page's window.ekvae (see web/README.md). Calls before the app is up
// are ignored (ekvae_state_json returns "null").
extern "C" {
EMSCRIPTEN_KEEPALIVE void ekvae_set_torque(double u) { if (g_loop) app_set_torque(g_loop->app, u); }
EMSCRIPTEN_KEEPALIVE void ekvae_reset(double theta, double omega) { if (g_loop) app_reset(g_loop->app, theta, omega); }
EMSCRIPTEN_KEEPALIVE void ekvae_cover(int on) { if (g_loop) g_loop->app.covered = on != 0; }
EMSCRIPTEN_KEEPALIVE void ekvae_pause(int on) { if (g_loop) g_loop->app.paused = on != 0; }
EMSCRIPTEN_KEEPALIVE void ekvae_step(int n) { if (g_loop && n > 0) app_step(g_loop->app, n); }
EMSCRIPTEN_KEEPALIVE const char * ekvae_state_json() {
    static std::string s;
    s = g_loop ? app_state_json(g_loop->app) : "null";
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
        } else if (a == "--help" || a == "-h") {
            std::printf("usage: ekvae_viewer [--frames N] [--screenshot F.png] [--size WxH] [--horizon N]\n"
                        "                    [--torque hold|zero] [--compare [0|1]] [--model NAME] [--ui minimal|full]\n");
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
    const Uint32 flags = SDL_WINDOW_OPENGL | SDL_WINDOW_RESIZABLE;
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

    app_init(loop.app, opt);
    loop.last_counter = SDL_GetPerformanceCounter();
    g_loop = &loop;

#ifdef __EMSCRIPTEN__
    emscripten_set_main_loop_arg(frame, &loop, 0, 1); // requestAnimationFrame; does not return
#else
    while (!loop.done) frame(&loop);
    std::printf("ekvae_viewer: %ld frames, t = %.2f s, theta = %+.3f\n", loop.app.frames, loop.app.t,
                loop.app.state.theta);
    ImGui_ImplOpenGL3_Shutdown();
    ImGui_ImplSDL2_Shutdown();
    ImGui::DestroyContext();
    SDL_GL_DeleteContext(loop.gl);
    SDL_DestroyWindow(loop.window);
    SDL_Quit();
#endif
    return loop.exit_code;
}
