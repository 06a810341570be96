// app.h: the ekvae demo's state and UI, shared by the browser app and the native ekvae_viewer.
// Plain Dear ImGui: no SDL, OpenGL or Emscripten in here (main.cpp owns the window, the loop
// and where model files come from; the app only ever sees their bytes).
//
// The world (any ekvae::World: the pendulum, the two-link arm) runs in real time at its own
// time step under the torques from the sliders, the keys, or the mouse dragging its tip. Each
// loaded model is a "stream" with its own Kalman filter state: every world step it consumes
// the rendered observation (filter_step; prediction only while the camera is covered), and
// whenever the state or the torque changes it forecasts H steps open-loop and decodes the H
// frames. Compare mode runs two streams on the same world and the same noisy frames.
//
// The files, one job each:
//   app_sim.cpp     the simulation: world steps, torques, observations, model streams
//                   (filter, forecast, running score), loading models, switching worlds
//   app_plots.cpp   drawing helpers and the plots: film strips, time plots, latent scatter
//   app_panels.cpp  the panels (world, camera, latent space, forecast), the layout, the UI
//                   scale and the keyboard's two modes
//   app_controls.cpp the control panel, the compact layout's torque strip, the help
//   app_api.cpp     command-line / URL options and the JSON state for the page's API
//   app_train.cpp   the Train panel: a run of the core's Trainer in the page's Web Worker,
//                   its progress, curves, latent space and metrics (the worker is the front end's)
//
// Dimension legend: W image side, D = W*W pixels, n_z latent dims, H forecast horizon,
// S state dims, U action dims (of the running world).
#pragma once
#include <cmath>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ekvae.h"
#include "rng.h"
#include "world.h"

// Options from the command line (native) or the page's URL parameters (browser).
constexpr int kMaxHorizon = 200;      // forecast horizon limits (the slider, the URL, the API)
struct AppOptions {
    std::string world = "pendulum";   // the running world (a name make_world knows)
    int horizon = 30;                 // forecast horizon H (frames), 1..kMaxHorizon
    std::string torque_mode = "hold"; // forecast torque assumption: "hold" or "zero"
    bool compare = false;             // run two models side by side
    std::string model;                // model file name (as listed in models/), "" = the default
    bool minimal_ui = false;          // ui=minimal: no control panel, for clean embeds
    bool touch = false;               // a touch screen (coarse pointer): larger controls
    bool show_help = false;           // open the "what you see / what to try" help at start (first visit)
};

// Parses --world NAME, --horizon N (1..200), --torque hold|zero, --compare [0|1],
// --model NAME, --ui minimal|full, --touch 0|1, --show-help 0|1 from argv[1..]; arguments it does not know go to rest, in
// order. Returns false and sets err on a missing or bad value.
bool parse_app_args(int argc, char ** argv, AppOptions & opt, std::vector<std::string> & rest, std::string & err);

// A stream's belief about the world's state at one step, read off (z, P): value and sigma [S].
struct Estimate {
    std::vector<double> value, sigma;
};

constexpr int kPastSteps = 60;        // steps of history in the time plots (3 s at dt = 0.05)

// One point of the latent-space history: a filtered mean and the true state at that step.
constexpr int kMaxLatentDims = 8;
struct LatentPoint {
    float z[kMaxLatentDims];     // the first min(n_z, 8) entries of the filtered mean
    std::vector<float> state;    // [S] true state
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
    Estimate est;                                    // read-out of (z, P)
    // Forecast from (z, P): means [n_z, H], covariances [n_z*n_z, H], decoded frames [D, H],
    // and its read-out per step [H].
    ekvae::Mat<float> zs, Ps, images;
    std::vector<Estimate> fc;
    std::deque<Estimate> past;                       // the estimate per step, oldest first, for the plots
    std::deque<LatentPoint> latent;                  // recent filtered means
    std::string record;                              // the file's "record" metadata (its objective's seed study), if any
    // Running forecast score over the last ~10 s: every kScoreEvery steps a 30-step forecast is
    // made; 10 and 30 steps later its angles are compared with the truth (mean wrapped error
    // over the world's angles, rad). The velocity error (mean |estimate - truth| over the
    // velocities) is taken every step.
    struct Pending { long target; bool h30; std::vector<double> angles; };
    std::deque<Pending> pending;
    std::deque<double> err10, err30, err_velocity;
    double filter_ms = 0, forecast_ms = 0;           // time of the last filter step / forecast
    double frame_ms = 0;                             // model time of the last frame (filter + forecast + decode)
};

// The Train panel's view of a run in the front end's worker (the app never trains itself: it
// asks the front end through App::train_start / train_stop / ..., and is told the progress).
struct TrainView {
    bool open = false;                 // the panel is shown (closing it stops a run)
    // the next run's settings
    int world = 0;                     // index into ekvae::world_names()
    int objective = 0;                 // 0 constrained, 1 elbo
    int seed = 0;
    int steps = 6000;                  // the browser preset's
    // the run
    bool running = false, started = false, stopped = false, finished = false;
    std::string run_world, run_objective;
    int run_seed = 0;
    long step = 0, total = 0;
    int start = 0, starts = 0;
    int threads = 1;                   // the worker's (2+ on cross-origin isolated pages)
    bool choosing = false;
    double seconds = 0, steps_per_s = 0, eta_s = 0, heap_mb = 0;
    double D0 = NAN;                   // the run's distortion bound (the D curve's line)
    std::vector<float> curve_step, D, R, lambda, elbo; // every step's values
    std::vector<float> lx, ly, lstate0;                // latent plot: held-out smoothed means on 2 axes, true first angle
    long latent_step = -1;
    bool follow = true;                // the live filter runs the snapshots of the model in training
    long snapshot_step = -1;           // the step of the snapshot running in slot 0
    struct Check { std::string name; double value, limit; bool at_least, met; };
    bool evaluated = false;            // the run's end came with its metrics on a fresh test set
    std::vector<Check> bar;            // the quality bar on it (none for a world without a bar)
    bool bar_met = false;
    double r2_omega = 0;
    std::string error;
};
constexpr const char * kTrainingModelName = "training.safetensors"; // slot 0's name for snapshots

struct App {
    AppOptions opt;
    std::unique_ptr<ekvae::World> world;  // the running world (opt.world)
    std::vector<double> state;   // [S] its state
    double t = 0.0;              // simulated time (s)
    long steps = 0;              // world steps since the last reset

    // Torques [U]: the sliders (and setTorque from JS) set torque_slider; the keys and the
    // mouse drag override them while active. torque is what the last step applied (clipped).
    std::vector<double> torque_slider, torque;
    bool dragging = false;       // mouse held on the world panel
    double drag_x = 0, drag_y = 0; // the pointer in skeleton units (pivot at 0, reach 1, y up)
    std::vector<int> key_dir;    // [U] keys held per joint: -1, 0, +1

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
    // shipped: every model file the front end can fetch (models/index.json), named
    // WORLD-*.safetensors; the selectors offer those of the running world.
    std::vector<std::string> shipped;
    ModelStream streams[2];
    std::string model_error;                 // the last refused model file, shown until the next load
    std::string loading;                     // a model file being fetched (browser), shown in the UI
    std::string primary;                     // the model chosen for slot 0 (before it has loaded)
    bool forecast_dirty = true;              // recompute the forecasts before the next draw / state()
    std::vector<double> forecast_u;          // [U] the torques the last forecast assumed
    std::vector<std::vector<double>> true_future; // [H][S] the true future under that assumption
    std::vector<float> true_images;          // [H*D] its renderings, for the film strip
    std::deque<std::vector<double>> true_past; // [S] the true state of recent steps, oldest first
    double model_ms = 0;                     // model time of the last frame, all streams (ms)
    int projection = 0;                      // latent plot axes: one read-out plane per angle, then z0/z1, z0/z2, z1/z2
    // Asks the front end for the bytes of a shipped model (native: reads models/NAME; browser:
    // fetches it); the front end then calls app_load_model. Slot 0 or 1.
    std::function<void(const std::string & name, int slot)> request_model;
    // Opens the front end's file picker (browser); unset natively.
    std::function<void()> open_file_picker;
    // Copies a link that restores the set-up (browser: ekvae.shareLink()); unset natively.
    std::function<void()> copy_link;

    // Opens a web address (browser: a new tab); unset natively.
    std::function<void(const std::string & url)> open_url;
    // The help was closed with "Got it" (browser: remembered for the next visit); unset natively.
    std::function<void()> help_seen;

    // UI: the scale of the whole UI (UI units -> CSS pixels, app_ui_scale), the tab shown in the
    // compact layout, where the keys go (0: the arrows turn the joints; 1: keyboard navigation
    // of the controls, entered with Tab, left with Esc or Tab), the help window.
    float ui_scale = 1.f;
    bool compact = false;        // this frame uses the compact layout (small windows, phones)
    int tab = 0;
    int key_zone = 0;
    int nav_request = 0;         // +1: start keyboard navigation next frame, -1: end it
    bool help_open = false;
    // Where the last frame drew its controls and swatches (CSS pixels), for tests and the page:
    // "torque1", "torque2" (sliders), "swatch:true", "swatch:A", "swatch:B", "swatch:torque",
    // "help", and each panel as "panel:TITLE".
    struct UiRect { std::string name; float x, y, w, h; };
    std::vector<UiRect> ui_rects;

    // The Train panel; the front end's worker (browser) does the training: start with a config
    // JSON ({preset, objective, seed, steps}), stop, resume, download the last model file.
    TrainView train;
    std::function<void(const std::string & config_json)> train_start;
    std::function<void()> train_stop, train_resume, train_download;

    float fps = 0.f;
    long frames = 0;             // frames drawn
};

// ---- simulation (app_sim.cpp) ----------------------------------------------------------------

// The running forecast score of a stream: means over the last ~10 s (NaN until there is one).
struct StreamScore {
    double angle10, angle30, velocity;
    int n10, n30;
};
StreamScore stream_score(const ModelStream & s);

// Sets up the app on opt.world (the pendulum when unknown): the world's start state (the
// pendulum hanging down with a small push, the arm stretched out). Also sets the ImGui style
// when an ImGui context exists (else call app_init_style once it does).
void app_init(App & app, const AppOptions & opt);
void app_init_style(bool touch = false);
// Switches to the world called name (false and err for an unknown one): its start state, its
// image size, no models; asks for that world's default shipped model(s).
bool app_set_world(App & app, const std::string & name, std::string & err);
// The world's start state (what Reset does).
std::vector<double> app_start_state(const App & app);
// Puts the world at state s [S] (angles wrapped, velocities clipped), time back to 0; every
// filter restarts from its prior.
void app_reset(App & app, const std::vector<double> & s);
// Sets the slider torque of joint j (clipped to the world's max torque).
void app_set_torque(App & app, int j, double u);
// Covers (or uncovers) the camera.
void app_cover(App & app, bool on);
// Advances the world n steps now under the current torques (used by "step" and by tests).
void app_step(App & app, int n);
// Real time -> world steps at the chosen speed (unless paused), then the forecasts.
void app_advance(App & app, float dt_seconds);
// While paused, dragging places the world instead: its angles put the tip as close to (x, y)
// (skeleton units: pivot at 0, reach 1, y up) as it reaches, at rest; then app_reset.
void app_place_tip(App & app, double x, double y);
// The torques of the next step [U]: mouse drag (not while paused), else keys, else the sliders; clipped.
std::vector<double> app_applied_torque(const App & app);
// The velocity component of angle component i (state = angles, then their velocities), -1 if none.
int velocity_of(const ekvae::World & w, int i);

// Loads a model file's bytes into slot 0 or 1 (name: what the UI calls it). On success the
// stream restarts its filter from the prior at the current state and returns true. On failure
// returns false, sets err (and app.model_error) and leaves the running model untouched.
// A model of another world loaded into slot 0 switches the app to that world (slot 1 must
// match slot 0's world). Refused: anything ekvae_load refuses, models without a read-out,
// models whose image size does not match their world's camera, and configs far larger than
// the file.
bool app_load_model(App & app, int slot, const std::string & name, const uint8_t * data, size_t size, std::string & err);
// Names of the shipped models (the front end's list); picks the running world's default ones
// and asks the front end for them through request_model: slot 0 = opt.model if listed, else
// a name containing "constrained", else the first; compare mode adds the next one in slot 1.
void app_set_shipped_models(App & app, const std::vector<std::string> & names);
// The shipped models of the running world (named WORLD-*.safetensors).
std::vector<std::string> app_world_models(const App & app);
// Turns compare mode on or off (requests the second model when needed).
void app_set_compare(App & app, bool on);
// Recomputes the forecasts (and the true future) if the state, torque or options changed.
void app_update_forecast(App & app);

// Benchmark of one stream's per-frame model work: n times (filter step on the current
// observation + an H-step forecast with decoding), leaving the stream's state as it was.
// Returns the median time per frame in ms (mean in *mean_ms); -1 without a model.
double app_benchmark(App & app, int n, int H, int slot, double * mean_ms);

// ---- UI (app_panels.cpp) ---------------------------------------------------------------------

// Runs one UI frame: reads the keys, advances the world (app_advance), then draws every
// panel. Call between ImGui::NewFrame() and ImGui::Render().
void app_frame(App & app, float dt_seconds);
// The UI scale for a canvas of css_w x css_h CSS pixels: 1 up to 1280 x 800, growing with the
// window beyond (1920 x 1080: 1.25), 1.25 on touch screens; in steps of 1/8. The front end
// lays the UI out in units of CSS pixels / scale (ImGui's DisplaySize) and rasterises the font
// at 13 px x scale x devicePixelRatio.
float app_ui_scale(float css_w, float css_h, bool touch);
// Tab (shift: Shift+Tab) pressed while the app has the keyboard: moves between the arrows'
// torque and the keyboard navigation of the controls. Returns false when the focus should
// leave the app (the page then moves it on).
bool app_tab_key(App & app, bool shift);

// ---- Train panel (app_train.cpp) -------------------------------------------------------------

// The panel's body (a tile in the full layout, a tab in the compact one).
void draw_train_panel(App & app);
// The front end's reports from its worker, as the worker's JSON messages (web/ekvae-train-worker.js):
// progress (step, steps, seconds, steps_per_s, eta_s, series), latent (x, y, state),
// finished (stopped, step, metrics: {bar, bar_met, metrics}), error (message).
void app_train_report(App & app, const std::string & type, const std::string & json);
// A snapshot of the model in training has loaded into slot 0 (step: its step).
void app_train_snapshot_loaded(App & app, long step);

// ---- page API (app_api.cpp) ------------------------------------------------------------------

// The state as JSON: {world, state_names, state: [S], t, theta, omega (the first angle and its
// velocity), torque (joint 1), torques: [U], covered, paused, speed, noise, steps, frames, fps,
// horizon, torque_mode, compare, model, model_loaded, error, estimate: {theta, sigma, omega,
// value: [S], sigmas: [S]} | null, forecast: {theta: [H], sigma: [H], true_theta: [H], torque,
// torques: [U], components: {NAME: {mean: [H], sigma: [H], true: [H]}}} | null, model_ms,
// models: [{name, estimate, forecast, score, model_ms, ...}] (one per running stream)}.
std::string app_state_json(App & app);
