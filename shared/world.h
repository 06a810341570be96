// world.h: a system ekvae learns from (its state, actions, dynamics and camera), the datasets
// rendered from it, and the portable math its simulations share.
//
// A world's state s [S] and action u [U] are doubles. A frame is a W x W grayscale image in
// [0, 1], row-major (out[i*W + j] is row i, column j). Which state components are angles
// matters to evaluation: an angle is read out of the latent state as (cos, sin), and its
// forecast error is measured on decoded images through image_angles().
//
// Reproducibility: a dataset must be the same bytes on every machine and in WebAssembly, so
// worlds simulate and render in double with portable_sin_cos (never the C library's sin/cos)
// in files compiled with -ffp-contract=off, and draw from the portable Rng only.
//
// To add a world: derive from World, fill the members in its constructor, implement the
// virtual functions, and add it to make_world() in world.cpp (docs/architecture.md has the
// steps).
//
// Dimension legend: N sequences, T steps, W image side, S state dims, U action dims.
#pragma once
#include "rng.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ekvae {

// theta wrapped to (-pi, pi]
double wrap_angle(double theta);

// s = sin(x), c = cos(x) within about 1 ulp, computed the same way on every machine and in
// WebAssembly (C library sin/cos differ in the last bit between libms, which chaotic
// dynamics would amplify into different datasets). NaN for non-finite x.
void portable_sin_cos(double x, double & s, double & c);

// Helpers the worlds share (all in double, portable):
// u ~ U(lo, hi) from the Rng; x clipped to [lo, hi].
double draw_uniform(Rng & rng, double lo, double hi);
double clip(double x, double lo, double hi);

// A thick segment ("capsule") in pixel coordinates (x right, y down; pixel (i, j) covers
// [j, j+1] x [i, i+1]): the points within `radius` of the segment from (x, y) to
// (x + dx, y + dy), drawn with the given intensity.
struct Capsule {
    double x, y, dx, dy, radius, intensity;
};
// Renders capsules into out [W*W]: a pixel is the mean over its 4x4 sub-sample points
// (offsets (k + 0.5)/4) of the largest intensity of a capsule covering the point (0 if none).
void render_capsules(const Capsule * caps, int n, int W, float * out);

class World {
public:
    virtual ~World() = default;

    std::string name;                       // "pendulum", "arm": the config key `world`
    std::string description;                // one line for --help and the page
    std::string title;                      // what the page calls it: "pendulum", "two-link arm"
    int S = 0, U = 0;                       // state and action dimensions
    std::vector<std::string> state_names;   // [S], e.g. theta, omega
    std::vector<bool> angle;                // [S] true for angles (wrapped to (-pi, pi])
    std::vector<std::string> action_names;  // [U], e.g. torque
    // The linear read-out targets, in state order: an angle gives cos and sin, any other
    // component its value. Pendulum: cos, sin, omega (the keys of metrics.json).
    std::vector<std::string> target_names;
    int default_image_size = 16;
    // rest [S]: where the world settles without torque (a fixed point of step() under u = 0);
    // the page centres each angle's plot on it. demo_start [S]: the page's first state.
    std::vector<double> rest, demo_start;

    // The ranges of states and actions, by the parameter that sets each: state_range_keys [S]
    // names it for each component ("" for an angle, whose range is (-pi, pi]), e.g.
    // "max_speed"; action_range_key for every action, e.g. "max_torque".
    std::vector<std::string> state_range_keys;
    std::string action_range_key;

    // The physical parameters (stored in dataset metadata, settable from it), in the order
    // files list them: each one's key, the member of this world that holds it (set_param
    // writes through the pointer, so it must point into the world itself), and the values it
    // may take. Every world has "dt" (seconds of simulated time per step) and the range keys.
    enum class Range { Finite, NonNegative, Positive, Count }; // Count: a whole number, 1 to 1000
    struct Param {
        std::string key;
        const double * value;
        Range range;
    };
    virtual std::vector<Param> param_table() const = 0;
    // A parameter added after files of this world were first written: the value those files,
    // which lack its key, were made with (true), so a loader does not relabel them with today's
    // default. False for a parameter every file carries.
    virtual bool param_before_key(const std::string & key, double & value) const { return false; }

    // The parameters by key, read through param_table().
    std::vector<std::pair<std::string, double>> params() const;
    double param(const std::string & key) const; // throws std::invalid_argument for a key the world does not have
    // Sets a parameter; returns false and sets err (naming the key and its range) for an
    // unknown key or a value outside its range.
    bool set_param(const std::string & key, double value, std::string & err);
    // u_j is clipped to [-action_max(j), action_max(j)] by step().
    double action_max(int j) const { return param(action_range_key); }
    // |s_i| never exceeds this in the world's own sequences (pi for an angle, the velocity
    // clip otherwise): loaded data far outside it is refused (see kDataRangeFactor).
    double state_max(int i) const;
    // Seconds of simulated time per step (the page runs the world at this rate).
    double time_step() const { return param("dt"); }

    // The dataset generator's draws: a start state s [S], then per step an action u [U].
    virtual void initial_state(Rng & rng, double * s) const = 0;
    virtual void random_action(Rng & rng, double * u) const = 0;
    // One step under u (clipped): next [S] from s [S] (next may alias s).
    virtual void step(const double * s, const double * u, double * next) const = 0;
    // The frame of state s: out [W*W].
    virtual void render(const double * s, int W, float * out) const = 0;
    // The angles a frame shows, one per angle component in state order: angles [number of
    // angle components]. Used on decoded images, so it must cope with blurred ones.
    virtual void image_angles(const float * img, int W, double * angles) const = 0;
    // The drawing of state s for the page: points (x, y) of a polyline from the pivot,
    // scaled so the fully stretched polyline has length 1 (y up), e.g. pivot, tip.
    // xy [2 * points]. The page's drag and torque arcs assume the layout both worlds have:
    // state = (joint angles q_1..q_U, their velocities), action j turns joint j, and joint j
    // sits at polyline point j.
    virtual std::vector<double> skeleton(const double * s) const = 0;

    virtual std::unique_ptr<World> clone() const = 0;

    int angles() const;                   // how many components are angles
    int targets() const { return (int)target_names.size(); }
    // The state component read-out target k belongs to (an angle has two targets).
    int target_component(int k) const;
    // The read-out targets of state s [S]: y [targets()].
    void readout_targets(const double * s, double * y) const;
};

// A world by name with its default parameters; nullptr for an unknown name.
// default_world(): the pendulum with default parameters (one shared instance).
std::unique_ptr<World> make_world(const std::string & name);
const World & default_world();
std::vector<std::string> world_names();   // every name make_world knows
std::string world_names_list();           // "pendulum, arm" for messages

struct DatasetConfig {
    int sequences = 1000;   // N
    int steps = 64;         // T
    int image_size = 16;    // W
    uint64_t seed = 1;
    std::shared_ptr<const World> world; // nullptr = the pendulum with default parameters
};

// A dataset in memory, laid out as in the file:
//   images  [N, T, W, W]  intensities in [0, 1]
//   actions [N, T, U]     u_t, applied between frame t and t+1
//   states  [N, T, S]     the world's state at frame t
// A Dataset made by hand (not by the generator or the loader) is the pendulum's unless its
// config.world, S and U say otherwise.
struct Dataset {
    int N = 0, T = 0, W = 0, S = 2, U = 1;
    std::vector<float> images;
    std::vector<float> actions;
    std::vector<float> states;
    DatasetConfig config; // generator settings (as far as known)

    const World & world() const { return config.world ? *config.world : default_world(); }
    const float * image(int n, int t) const { return images.data() + ((size_t)n * T + t) * W * W; }
    float action(int n, int t, int j) const { return actions[((size_t)n * T + t) * U + j]; }
    float state(int n, int t, int i) const { return states[((size_t)n * T + t) * S + i]; }
    const float * state_ptr(int n, int t) const { return states.data() + ((size_t)n * T + t) * S; }
};

// Limits refused by validate_dataset_config (and so by ekvae_data and ekvae_train).
constexpr uint64_t kMaxDatasetBytes = 4ull << 30; // 4 GiB of tensor data
constexpr int kMaxImageSize = 256;
constexpr int kMinImageSize = 4;    // smaller frames cannot show a rod's direction
// Loaded data must stay within this factor of the world's declared ranges (World::state_max,
// action_max, which metadata keys like max_torque and max_speed set): values far outside
// are a broken or foreign file, not a harder system.
constexpr double kDataRangeFactor = 10.0;

// The first N sequences of d, each cut to its first T steps (N <= d.N, T <= d.T).
Dataset dataset_slice(const Dataset & d, int N, int T);

// Checks N, T, W > 0 and the total size against the limits. Returns false and sets err
// (naming the problem and a fix) when the config is unusable.
bool validate_dataset_config(const DatasetConfig & cfg, std::string & err);

// Generates a dataset from the seeded portable Rng: per sequence the world's initial_state,
// then per step random_action, the frame of the current state, and the step under that
// action. The same seed gives the same bytes on every machine. The config must be valid.
Dataset generate_dataset(const DatasetConfig & cfg);

// Dataset <-> safetensors bytes (tensors images/actions/states; the world's name, state
// names and parameters in __metadata__; a file without a world is the pendulum).
std::vector<uint8_t> dataset_to_safetensors(const Dataset & d);
// Returns false and sets err when the bytes are not a valid ekvae dataset (missing tensor,
// wrong dtype, inconsistent shapes, values out of range, malformed file).
bool dataset_from_safetensors(const uint8_t * data, size_t size, Dataset & out, std::string & err);
// The same from a file read into float storage (nbytes of it used): the images are moved
// into place inside that buffer, so the peak memory is about the file's size, not three
// times it. file is consumed.
bool dataset_from_safetensors(std::vector<float> && file, size_t nbytes, Dataset & out, std::string & err);

} // namespace ekvae
