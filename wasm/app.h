// app.h: the ekvae demo's state and UI, shared by the browser app and the native ekvae_viewer.
// Plain Dear ImGui: no SDL, OpenGL or Emscripten in here (main.cpp owns the window, the loop
// and where model files come from; the app only ever sees their bytes).
//
// The world runs in real time at its own dt (0.05 s) under the torque from the slider, the
// arrow keys, or the mouse dragging the pendulum. Each loaded model is a "stream" with its own
// Kalman filter state: every world step it consumes the rendered observation (filter_step;
// prediction only while the camera is covered), and whenever the state or the torque changes
// it forecasts H steps open-loop and decodes the H frames. Compare mode runs two streams on
// the same pendulum and the same noisy frames.
//
// Dimension legend: W image side, D = W*W pixels, n_z latent dims, H forecast horizon.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ekvae.h"
#include "pendulum.h"
#include "rng.h"

// Options from the command line (native) or the page's URL parameters (browser).
struct AppOptions {
    int horizon = 30;                 // forecast horizon H (frames)
    std::string torque_mode = "hold"; // forecast torque assumption: "hold" or "zero"
    bool compare = false;             // run two models side by side
    std::string model;                // model file name (as listed in models/), "" = the default
    bool minimal_ui = false;          // ui=minimal: no control panel, for clean embeds
};

// Parses --horizon N (1..200), --torque hold|zero, --compare [0|1], --model NAME,
// --ui minimal|full from argv[1..]; arguments it does not know go to rest, in order.
// Returns false and sets err on a missing or bad value.
bool parse_app_args(int argc, char ** argv, AppOptions & opt, std::vector<std::string> & rest, std::string & err);

// One point of the latent-space history: a filtered mean and the true state at that step.
struct LatentPoint {
    float z[8];                  // the first min(n_z, 8) entries of the filtered mean
    float theta, omega;          // true state
};

// One model with its own filter state, forecast and tape (the tape keeps its buffers).
struct ModelStream {
    std::string name;                                // file name, e.g. pendulum-constrained.safetensors
    std::unique_ptr<ekvae::Ekvae<float>> model;
    std::unique_ptr<ekvae::Tape<float>> tape;
    bool started = false;                            // the filter has taken its first step
    int restarts = 0;                                // times the filter diverged (a non-finite mean or
                                                     // covariance, e.g. after long predicting while covered)
                                                     // and was restarted from the prior
    ekvae::Mat<float> z, P;                          // filtered mean [n_z, 1], covariance [n_z*n_z, 1]
    double est_theta = 0, est_sigma = 0, est_omega = 0; // read-out of (z, P)
    // Forecast from (z, P): means [n_z, H], covariances [n_z*n_z, H], decoded frames [D, H],
    // and the angle read-out with its standard deviation per step.
    ekvae::Mat<float> zs, Ps, images;
    std::vector<double> fc_theta, fc_sigma, fc_omega, fc_omega_sigma;
    double est_omega_sigma = 0;
    // Past: the estimate per step (angle, its sigma, omega and its sigma), oldest first, for the plots.
    std::deque<double> past_theta, past_sigma, past_omega, past_omega_sigma;
    std::deque<LatentPoint> latent;                  // recent filtered means
    std::string record;                              // the file's "record" metadata (its objective's seed study), if any
    // Running forecast score over the last ~10 s: every kScoreEvery steps a 30-step forecast is
    // made; 10 and 30 steps later its angle is compared with the truth (wrapped error, rad).
    // The velocity error |omega_est - omega| is taken every step.
    struct Pending { long target; bool h30; double theta; };
    std::deque<Pending> pending;
    std::deque<double> err10, err30, err_omega;
    double filter_ms = 0, forecast_ms = 0;           // time of the last filter step / forecast
    double frame_ms = 0;                             // model time of the last frame (filter + forecast + decode)
};

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
    bool covered = false;        // "cover the camera": the filter gets no frames, only predicts
    std::vector<float> image;    // [W*W] clean rendering
    std::vector<float> obs;      // [W*W] observation = clip(image + noise * N(0, 1), 0, 1)
    ekvae::Rng rng{12345};

    // Models: streams[0] is the selected model, streams[1] the second one in compare mode.
    std::vector<std::string> shipped;        // model files the front end can fetch (models/index.json)
    ModelStream streams[2];
    std::string model_error;                 // the last refused model file, shown until the next load
    std::string loading;                     // a model file being fetched (browser), shown in the UI
    std::string primary;                     // the model chosen for slot 0 (before it has loaded)
    bool forecast_dirty = true;              // recompute the forecasts before the next draw / state()
    std::vector<double> true_theta;          // [H] the true future under the forecast's torque assumption
    double forecast_u = 0;                   // the torque the last forecast assumed
    std::deque<double> true_past;            // the true angle of recent steps, oldest first
    std::deque<double> true_past_omega;      // and the true velocity
    std::vector<double> true_omega;          // [H] the true future velocity
    std::vector<float> true_images;          // [H*D] its renderings, for the film strip
    double model_ms = 0;                     // model time of the last frame, all streams (ms)
    bool model_ran = false;                  // some model work happened in the last frame
    int projection = 0;                      // latent plot axes: 0 read-out (cos, sin), 1 z0/z1, 2 z0/z2, 3 z1/z2
    // Asks the front end for the bytes of a shipped model (native: reads models/NAME; browser:
    // fetches it); the front end then calls app_load_model. Slot 0 or 1.
    std::function<void(const std::string & name, int slot)> request_model;
    // Opens the front end's file picker (browser); unset natively.
    std::function<void()> open_file_picker;

    float fps = 0.f;
    long frames = 0;             // frames drawn
};

// The running forecast score of a stream: means over the last ~10 s (NaN until there is one).
struct StreamScore {
    double angle10, angle30, omega;
    int n10, n30;
};
StreamScore stream_score(const ModelStream & s);

// Sets up the app: the pendulum hanging down (theta = pi) with a small push. Also sets the
// ImGui style when an ImGui context exists (else call app_init_style once it does).
void app_init(App & app, const AppOptions & opt);
void app_init_style();
// Puts the pendulum at (theta, omega), time back to 0; every filter restarts from its prior.
void app_reset(App & app, double theta, double omega);
// Sets the slider torque (clipped to the world's max torque).
void app_set_torque(App & app, double u);
// Covers (or uncovers) the camera.
void app_cover(App & app, bool on);
// Advances the world n steps now under the current torque (used by "step" and by tests).
void app_step(App & app, int n);
// Runs one UI frame: advances the world by dt_seconds * speed of real time (unless paused),
// then draws every panel. Call between ImGui::NewFrame() and ImGui::Render().
void app_frame(App & app, float dt_seconds);

// Loads a model file's bytes into slot 0 or 1 (name: what the UI calls it). On success the
// stream restarts its filter from the prior at the current state and returns true. On failure
// returns false, sets err (and app.model_error) and leaves the running model untouched.
// Refused: anything ekvae_load refuses, models without a read-out, models whose image size
// or action size do not fit the app (W = 16, n_u = 1), and configs far larger than the file.
bool app_load_model(App & app, int slot, const std::string & name, const uint8_t * data, size_t size, std::string & err);
// Names of the shipped models (the front end's list); picks the default ones and asks the
// front end for them through request_model: slot 0 = opt.model if listed, else a name
// containing "constrained", else the first; compare mode adds the next one in slot 1.
void app_set_shipped_models(App & app, const std::vector<std::string> & names);
// Turns compare mode on or off (requests the second model when needed).
void app_set_compare(App & app, bool on);
// Recomputes the forecasts (and the true future) if the state, torque or options changed.
void app_update_forecast(App & app);

// Benchmark of one stream's per-frame model work: n times (filter step on the current
// observation + an H-step forecast with decoding), leaving the stream's state as it was.
// Returns the median time per frame in ms (mean in *mean_ms); -1 without a model.
double app_benchmark(App & app, int n, int H, int slot, double * mean_ms);

// The state as JSON: {t, theta, omega, torque, covered, paused, speed, noise, steps, frames,
// fps, horizon, torque_mode, compare, model, model_loaded, error, estimate: {theta, sigma,
// omega} | null, forecast: {theta: [H], sigma: [H], true_theta: [H]} | null, model_ms,
// models: [{name, estimate, forecast, model_ms}] (one per running stream)}.
std::string app_state_json(App & app);
