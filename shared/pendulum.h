// pendulum.h: the pendulum world ekvae learns from, its renderer, and the dataset generator.
//
// The world is exactly gym's Pendulum-v1 update (theta = 0 upright), so results compare with
// published work:
//   omega' = clip(omega + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -max_speed, max_speed)
//   theta' = theta + omega' dt            (reported wrapped to (-pi, pi])
//   u is clipped to [-max_torque, max_torque]
//
// Dimension legend: N sequences, T steps, W image side (pixels).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ekvae {

struct PendulumParams {
    double g = 10.0;
    double m = 1.0;
    double l = 1.0;
    double dt = 0.05;
    double max_speed = 8.0;
    double max_torque = 2.0;
};

struct PendulumState {
    double theta = 0.0; // angle, 0 = upright, wrapped to (-pi, pi]
    double omega = 0.0; // angular velocity (rad/s)
};

// theta wrapped to (-pi, pi]
double wrap_angle(double theta);

// s = sin(x), c = cos(x) within about 1 ulp, computed the same way on every machine and in
// WebAssembly (C library sin/cos differ in the last bit between libms, which chaotic
// dynamics would amplify into different datasets). NaN for non-finite x.
void portable_sin_cos(double x, double & s, double & c);

// One step of the world under torque u (clipped). Returns the next state, theta wrapped.
PendulumState pendulum_step(const PendulumParams & p, PendulumState s, double u);

// Render the pendulum at angle theta into a W*W grayscale image in [0, 1], row-major
// (out[i*W + j] is row i, column j). Pixel (i, j) covers [j, j+1] x [i, i+1]; the rod runs
// from c = (W/2, W/2) to c + r (sin theta, -cos theta), r = 0.8 W/2. A pixel's intensity is
// the fraction of its 4x4 sub-sample points (offsets (k + 0.5)/4) within 0.75 W/16 of the rod.
void render_pendulum(double theta, int W, float * out); // out: [W*W]

// The angle shown by an image: intensity-weighted centroid (pixel centres at (j+0.5, i+0.5)),
// angle = atan2(xbar - W/2, -(ybar - W/2)). Returns 0 for an all-zero image.
double image_angle(const float * img, int W); // img: [W*W]

struct DatasetConfig {
    int sequences = 1000;   // N
    int steps = 64;         // T
    int image_size = 16;    // W
    uint64_t seed = 1;
    PendulumParams world;
};

// A dataset in memory, laid out as in the file:
//   images  [N, T, W, W]  intensities in [0, 1]
//   actions [N, T, 1]     u_t, applied between frame t and t+1
//   states  [N, T, 2]     (theta_t, omega_t) at frame t
struct Dataset {
    int N = 0, T = 0, W = 0;
    std::vector<float> images;
    std::vector<float> actions;
    std::vector<float> states;
    DatasetConfig config; // generator settings (as far as known)

    const float * image(int n, int t) const { return images.data() + ((size_t)n * T + t) * W * W; }
    float action(int n, int t) const { return actions[(size_t)n * T + t]; }
    float theta(int n, int t) const { return states[((size_t)n * T + t) * 2 + 0]; }
    float omega(int n, int t) const { return states[((size_t)n * T + t) * 2 + 1]; }
};

// Limits refused by validate_dataset_config (and so by ekvae_data and ekvae_train).
constexpr uint64_t kMaxDatasetBytes = 4ull << 30; // 4 GiB of tensor data
constexpr int kMaxImageSize = 256;
constexpr int kMinImageSize = 4;    // smaller frames cannot show the rod's direction
// Loaded data must stay within this factor of the declared world ranges (metadata max_torque
// and max_speed, gym's 2 and 8 by default): |u| <= 10 max_torque, |omega| <= 10 max_speed,
// |theta| <= 10 pi. Values far outside are a broken or foreign file, not a harder pendulum.
constexpr double kDataRangeFactor = 10.0;

// Checks N, T, W > 0 and the total size against the limits. Returns false and sets err
// (naming the problem and a fix) when the config is unusable.
bool validate_dataset_config(const DatasetConfig & cfg, std::string & err);

// Generates a dataset: theta_0 ~ U(-pi, pi), omega_0 ~ U(-1, 1), u_t ~ U(-2, 2) independently
// per step, from the seeded portable Rng: the same seed gives the same values on every machine.
// The config must be valid (see validate_dataset_config).
Dataset generate_dataset(const DatasetConfig & cfg);

// Dataset <-> safetensors bytes (tensors images/actions/states, settings in __metadata__).
std::vector<uint8_t> dataset_to_safetensors(const Dataset & d);
// Returns false and sets err when the bytes are not a valid ekvae dataset (missing tensor,
// wrong dtype, inconsistent shapes, values out of range, malformed file).
bool dataset_from_safetensors(const uint8_t * data, size_t size, Dataset & out, std::string & err);
// The same from a file read into float storage (nbytes of it used): the images are moved
// into place inside that buffer, so the peak memory is about the file's size, not three
// times it. file is consumed.
bool dataset_from_safetensors(std::vector<float> && file, size_t nbytes, Dataset & out, std::string & err);

} // namespace ekvae
