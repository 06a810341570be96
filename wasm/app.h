// app.h: the ekvae demo's state and UI, shared by the browser app and the native ekvae_viewer.
// Plain Dear ImGui: no SDL, OpenGL or Emscripten in here (main.cpp owns the window and loop).
//
// The world runs in real time at its own dt (0.05 s) under the torque from the slider, the
// arrow keys, or the mouse dragging the pendulum. The EKVAE filter and forecast are not
// built yet: the places where they plug in are marked "EKVAE hook" in app.cpp.
#pragma once
#include <string>
#include <vector>

#include "pendulum.h"
#include "rng.h"

// Options from the command line (native) or the page's URL parameters (browser).
struct AppOptions {
    int horizon = 30;                 // forecast horizon H (frames); used once a model exists
    std::string torque_mode = "hold"; // forecast torque assumption: "hold" or "zero"
    bool compare = false;             // run both shipped models side by side (with the model)
    std::string model;                // model file name in models/ (with the model)
    bool minimal_ui = false;          // ui=minimal: no control panel, for clean embeds
};

// Parses --horizon N (1..200), --torque hold|zero, --compare [0|1], --model NAME,
// --ui minimal|full from argv[1..]; arguments it does not know go to rest, in order.
// Returns false and sets err on a missing or bad value.
bool parse_app_args(int argc, char ** argv, AppOptions & opt, std::vector<std::string> & rest, std::string & err);

struct App {
    AppOptions opt;
    ekvae::PendulumParams world;
    ekvae::PendulumState state;
    double t = 0.0;              // simulated time (s)
    long steps = 0;              // world steps since the last reset

    // Torque: the slider (and setTorque from JS) sets torque_slider; the arrow keys and the
    // mouse drag override it while active. torque is what the last step applied (clipped).
    double torque_slider = 0.0;
    double torque = 0.0;
    bool dragging = false;       // mouse held on the pendulum panel
    double drag_angle = 0.0;     // the pointer's angle around the pivot (theta convention)
    int key_dir = 0;             // arrow keys held: -1 (left), 0, +1 (right)

    bool paused = false;
    float speed = 1.0f;          // 0.25x .. 4x real time
    double accumulator = 0.0;    // real time not yet simulated (s)

    // What the model sees: the W x W rendering of the current state plus pixel noise.
    int W = 16;
    float noise = 0.0f;          // standard deviation of the Gaussian pixel noise
    bool covered = false;        // "cover the camera": the filter gets no frames (with the model)
    std::vector<float> image;    // [W*W] clean rendering
    std::vector<float> obs;      // [W*W] observation = clip(image + noise * N(0, 1), 0, 1)
    ekvae::Rng rng{12345};

    float fps = 0.f;
    long frames = 0;             // frames drawn
};

// Sets up the app (and its ImGui style: call after ImGui::CreateContext): the pendulum
// hanging down (theta = pi) with a small push.
void app_init(App & app, const AppOptions & opt);
// Puts the pendulum at (theta, omega), time back to 0.
void app_reset(App & app, double theta, double omega);
// Sets the slider torque (clipped to the world's max torque).
void app_set_torque(App & app, double u);
// Advances the world n steps now under the current torque (used by "step" and by tests).
void app_step(App & app, int n);
// Runs one UI frame: advances the world by dt_seconds * speed of real time (unless paused),
// then draws every panel. Call between ImGui::NewFrame() and ImGui::Render().
void app_frame(App & app, float dt_seconds);
// The state as JSON: {t, theta, omega, torque, covered, paused, speed, noise, steps, frames,
// fps, horizon, torque_mode, compare, model, estimate: null, forecast: null, model_ms: null}
// (the last three become objects/numbers once the model runs).
std::string app_state_json(const App & app);
