// pendulum.cpp: the Pendulum-v1 world, its renderer, and the dataset generator.
//
// Reproducibility: datasets must be the same bytes on every machine (and in WebAssembly).
// So all dataset arithmetic is done in double and only converted to float at the end, this
// file is compiled with -ffp-contract=off (no fused multiply-add), and sin/cos come from
// portable_sin_cos below instead of the C library, whose last bit differs between libms.
#include "pendulum.h"

#include "rng.h"
#include "safetensors.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace ekvae {

namespace {

constexpr double kPi = 3.14159265358979311600e+00;     // nearest double to pi
constexpr double kTwoPi = 6.28318530717958623200e+00;  // 2 * kPi (exact)

// Polynomial kernels for sin and cos on [-pi/4, pi/4] (fdlibm / musl __sin, __cos).
// x + y is the reduced argument (y a small tail).
double kernel_sin(double x, double y) {
    const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
                 S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
                 S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    double z = x * x;
    double w = z * z;
    double r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
    double v = z * x;
    return x - ((z * (0.5 * y - v * r) - y) - v * S1);
}

double kernel_cos(double x, double y) {
    const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
                 C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
                 C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
    double z = x * x;
    double w = z * z;
    double r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    double hz = 0.5 * z;
    w = 1.0 - hz;
    return w + (((1.0 - w) - hz) + (z * r - x * y));
}

// u ~ U(lo, hi) from the Rng, written here (not Rng::uniform(lo, hi)) so this file's
// no-contraction rule covers the arithmetic whatever the compiler inlines.
double draw_uniform(Rng & rng, double lo, double hi) {
    double u = rng.uniform(); // [0, 1), exact
    return lo + (hi - lo) * u;
}

double clip(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

// metadata numbers as strings that read back to the same double
std::string double_string(double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    return buf;
}

bool parse_meta_double(const std::string & s, double & out) {
    if (s.empty()) return false;
    char * end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (end != s.c_str() + s.size() || !std::isfinite(v)) return false;
    out = v;
    return true;
}

bool parse_meta_u64(const std::string & s, uint64_t & out) {
    if (s.empty() || s[0] < '0' || s[0] > '9') return false;
    errno = 0;
    char * end = nullptr;
    unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (errno != 0 || end != s.c_str() + s.size()) return false;
    out = v;
    return true;
}

} // namespace

void portable_sin_cos(double x, double & s, double & c) {
    if (!std::isfinite(x)) { s = c = std::numeric_limits<double>::quiet_NaN(); return; }
    if (std::fabs(x) > 4.0) x = wrap_angle(x); // keep the quadrant count small
    // x = k pi/2 + (y0 + y1), Cody-Waite with pi/2 split in two (pio2_1 has 33 bits, so
    // k * pio2_1 is exact for |k| <= 3)
    const double invpio2 = 6.36619772367581382433e-01;
    const double pio2_1 = 1.57079632673412561417e+00;
    const double pio2_1t = 6.07710050650619224932e-11;
    double k = std::floor(x * invpio2 + 0.5);
    double r = x - k * pio2_1;
    double w = k * pio2_1t;
    double y0 = r - w;
    double y1 = (r - y0) - w;
    int n = ((int)k) & 3;
    double ks = kernel_sin(y0, y1), kc = kernel_cos(y0, y1);
    switch (n) {
    case 0: s = ks; c = kc; break;
    case 1: s = kc; c = -ks; break;
    case 2: s = -ks; c = -kc; break;
    default: s = -kc; c = ks; break;
    }
}

double wrap_angle(double theta) {
    // fmod is exact; the result lies in (-2 pi, 2 pi), then one shift into (-pi, pi]
    double r = std::fmod(theta, kTwoPi);
    if (r > kPi) r -= kTwoPi;
    else if (r <= -kPi) r += kTwoPi;
    return r;
}

PendulumState pendulum_step(const PendulumParams & p, PendulumState s, double u) {
    u = clip(u, -p.max_torque, p.max_torque);
    double sin_theta, cos_theta;
    portable_sin_cos(s.theta, sin_theta, cos_theta);
    // omega' = clip(omega + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -max_speed, max_speed)
    double accel = 3.0 * p.g / (2.0 * p.l) * sin_theta + 3.0 / (p.m * p.l * p.l) * u;
    double omega = clip(s.omega + accel * p.dt, -p.max_speed, p.max_speed);
    // theta' = theta + omega' dt
    PendulumState next;
    next.theta = wrap_angle(s.theta + omega * p.dt);
    next.omega = omega;
    return next;
}

void render_pendulum(double theta, int W, float * out) {
    double sin_theta, cos_theta;
    portable_sin_cos(theta, sin_theta, cos_theta);
    // rod from c = (W/2, W/2) to tip = c + r (sin theta, -cos theta), r = 0.8 W/2
    const double cx = 0.5 * W, cy = 0.5 * W;
    const double rod = 0.8 * W / 2.0;
    const double dx = rod * sin_theta, dy = -rod * cos_theta; // tip - c
    const double dd = dx * dx + dy * dy;
    const double radius = 0.75 * W / 16.0;
    // distance from (px, py) to the segment: project onto it, clamp to [0, 1]
    auto seg_dist = [&](double px, double py) {
        double qx = px - cx, qy = py - cy;
        double t = dd > 0.0 ? (qx * dx + qy * dy) / dd : 0.0;
        t = clip(t, 0.0, 1.0);
        double ex = qx - t * dx, ey = qy - t * dy;
        return std::sqrt(ex * ex + ey * ey);
    };
    for (int i = 0; i < W; i++) {
        for (int j = 0; j < W; j++) {
            // Shortcut: every sub-sample lies within 0.53 of the pixel centre and distance to a
            // set is 1-Lipschitz, so a centre further than radius + 0.6 gives all-zero samples.
            if (seg_dist(j + 0.5, i + 0.5) > radius + 0.6) {
                out[(size_t)i * W + j] = 0.0f;
                continue;
            }
            int hits = 0;
            for (int a = 0; a < 4; a++)       // sub-sample rows
                for (int b = 0; b < 4; b++) { // sub-sample columns
                    double px = j + (b + 0.5) / 4.0, py = i + (a + 0.5) / 4.0;
                    if (seg_dist(px, py) <= radius) hits++;
                }
            out[(size_t)i * W + j] = (float)hits / 16.0f; // exact in float
        }
    }
}

double image_angle(const float * img, int W) {
    // intensity-weighted centroid of the pixel centres
    double total = 0.0, sx = 0.0, sy = 0.0;
    for (int i = 0; i < W; i++)
        for (int j = 0; j < W; j++) {
            double v = img[(size_t)i * W + j];
            total += v;
            sx += v * (j + 0.5);
            sy += v * (i + 0.5);
        }
    if (total <= 0.0) return 0.0;
    double xbar = sx / total, ybar = sy / total;
    // theta = 0 points up (image y grows downward)
    return std::atan2(xbar - 0.5 * W, -(ybar - 0.5 * W));
}

bool validate_dataset_config(const DatasetConfig & cfg, std::string & err) {
    if (cfg.sequences <= 0) {
        err = "--sequences must be at least 1 (got " + std::to_string(cfg.sequences) +
              "): pass a positive count, e.g. --sequences 1000";
        return false;
    }
    if (cfg.steps <= 0) {
        err = "--steps must be at least 1 (got " + std::to_string(cfg.steps) +
              "): pass a positive count, e.g. --steps 64";
        return false;
    }
    if (cfg.image_size < kMinImageSize || cfg.image_size > kMaxImageSize) {
        err = "--image-size must be between " + std::to_string(kMinImageSize) + " and " + std::to_string(kMaxImageSize) + " (got " +
              std::to_string(cfg.image_size) + "): e.g. --image-size 16";
        return false;
    }
    const PendulumParams & p = cfg.world;
    if (!(std::isfinite(p.g) && std::isfinite(p.m) && p.m > 0 && std::isfinite(p.l) && p.l > 0 &&
          std::isfinite(p.dt) && p.dt > 0 && std::isfinite(p.max_speed) && p.max_speed > 0 &&
          std::isfinite(p.max_torque) && p.max_torque >= 0)) {
        err = "world parameters must be finite with m, l, dt, max_speed > 0 and max_torque >= 0";
        return false;
    }
    // bytes = N T (W W + 1 + 2) * 4 (images, actions, states as F32), without overflow:
    // per sequence fits easily (T < 2^31, W <= 256), the product with N is checked by division
    const uint64_t W = (uint64_t)cfg.image_size;
    const uint64_t per_sequence = (uint64_t)cfg.steps * (W * W + 3) * 4;
    const uint64_t N = (uint64_t)cfg.sequences;
    if (N > kMaxDatasetBytes / per_sequence) {
        // report the size in GiB (double is fine for a message)
        double gib = (double)N * (double)per_sequence / (double)(1ull << 30);
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.1f", gib);
        err = "dataset too large: " + std::to_string(cfg.sequences) + " sequences x " +
              std::to_string(cfg.steps) + " steps of " + std::to_string(cfg.image_size) + "x" +
              std::to_string(cfg.image_size) + " images is " + buf +
              " GiB, over the 4 GiB limit: reduce --sequences, --steps or --image-size";
        return false;
    }
    return true;
}

// Draw order (fixed, part of the byte format; tests pin it with a golden hash):
//   for each sequence n = 0..N-1:
//     theta_0 = U(-pi, pi), omega_0 = U(-1, 1)
//     for t = 0..T-1:
//       u_t = U(-2, 2); frame t renders the current state; then the state steps under u_t
// (so the last step's successor state is computed but not stored).
Dataset generate_dataset(const DatasetConfig & cfg) {
    Dataset d;
    d.N = cfg.sequences;
    d.T = cfg.steps;
    d.W = cfg.image_size;
    d.config = cfg;
    const size_t N = (size_t)d.N, T = (size_t)d.T, W = (size_t)d.W;
    d.images.assign(N * T * W * W, 0.0f); // [N, T, W, W]
    d.actions.assign(N * T, 0.0f);        // [N, T, 1]
    d.states.assign(N * T * 2, 0.0f);     // [N, T, 2]

    Rng rng(cfg.seed);
    for (size_t n = 0; n < N; n++) {
        PendulumState s;
        s.theta = wrap_angle(draw_uniform(rng, -kPi, kPi)); // U(-pi, pi) lies in [-pi, pi)
        s.omega = draw_uniform(rng, -1.0, 1.0);
        for (size_t t = 0; t < T; t++) {
            const double u = draw_uniform(rng, -2.0, 2.0);
            const size_t k = n * T + t;
            render_pendulum(s.theta, d.W, d.images.data() + k * W * W);
            d.actions[k] = (float)u;
            d.states[k * 2 + 0] = (float)s.theta;
            d.states[k * 2 + 1] = (float)s.omega;
            s = pendulum_step(cfg.world, s, u);
        }
    }
    return d;
}

std::vector<uint8_t> dataset_to_safetensors(const Dataset & d) {
    SafeTensors st;
    const int64_t N = d.N, T = d.T, W = d.W;
    st.tensors["images"] = Tensor::from_f32(d.images.data(), {N, T, W, W});
    st.tensors["actions"] = Tensor::from_f32(d.actions.data(), {N, T, 1});
    st.tensors["states"] = Tensor::from_f32(d.states.data(), {N, T, 2});
    const DatasetConfig & c = d.config;
    st.metadata["format"] = "ekvae-dataset";
    st.metadata["version"] = "1";
    st.metadata["sequences"] = std::to_string(d.N);
    st.metadata["steps"] = std::to_string(d.T);
    st.metadata["image_size"] = std::to_string(d.W);
    st.metadata["seed"] = std::to_string(c.seed);
    st.metadata["g"] = double_string(c.world.g);
    st.metadata["m"] = double_string(c.world.m);
    st.metadata["l"] = double_string(c.world.l);
    st.metadata["dt"] = double_string(c.world.dt);
    st.metadata["max_speed"] = double_string(c.world.max_speed);
    st.metadata["max_torque"] = double_string(c.world.max_torque);
    return safetensors_serialize(st);
}

bool dataset_from_safetensors(const uint8_t * data, size_t size, Dataset & out, std::string & err) {
    std::vector<float> file((size + 3) / 4);
    if (size) std::memcpy(file.data(), data, size);
    return dataset_from_safetensors(std::move(file), size, out, err);
}

bool dataset_from_safetensors(std::vector<float> && file, size_t size, Dataset & out, std::string & err) {
    if (size > file.size() * sizeof(float)) {
        err = "internal error: dataset buffer smaller than its size";
        return false;
    }
    const uint8_t * data = reinterpret_cast<const uint8_t *>(file.data());
    SafeTensors st;
    if (!safetensors_parse(data, size, st, err, false)) return false;

    auto meta = st.metadata;
    if (meta.count("format") && meta["format"] != "ekvae-dataset") {
        err = "not an ekvae dataset: metadata format is '" + meta["format"] + "'";
        return false;
    }
    if (meta.count("version") && meta["version"] != "1") {
        err = "unsupported dataset version '" + meta["version"] + "' (this build reads version 1)";
        return false;
    }

    // shapes: images [N, T, W, W], actions [N, T, 1], states [N, T, 2]
    const Tensor * images = st.find("images");
    if (!images) { err = "missing tensor 'images'"; return false; }
    if (images->dtype != "F32" || images->shape.size() != 4) {
        err = "tensor 'images': expected F32 [N, T, W, W], found " + images->dtype + " of rank " +
              std::to_string(images->shape.size());
        return false;
    }
    const int64_t N = images->shape[0], T = images->shape[1], W = images->shape[2];
    if (images->shape[3] != W) {
        err = "tensor 'images': images are not square (" + std::to_string(W) + " x " +
              std::to_string(images->shape[3]) + ")";
        return false;
    }
    if (N <= 0 || T <= 0 || W < kMinImageSize || N > std::numeric_limits<int>::max() ||
        T > std::numeric_limits<int>::max() || W > kMaxImageSize) {
        err = "tensor 'images': unusable shape [" + std::to_string(N) + ", " + std::to_string(T) +
              ", " + std::to_string(W) + ", " + std::to_string(W) + "] (need N, T >= 1 and " + std::to_string(kMinImageSize) +
              " <= W <= " + std::to_string(kMaxImageSize) + "; regenerate it with ekvae_data --image-size 16)";
        return false;
    }
    const Tensor * actions = st.require("actions", "F32", {N, T, 1}, err);
    if (!actions) return false;
    const Tensor * states = st.require("states", "F32", {N, T, 2}, err);
    if (!states) return false;

    Dataset d;
    d.N = (int)N;
    d.T = (int)T;
    d.W = (int)W;
    auto floats = [&](const Tensor * t) {
        std::vector<float> v((size_t)t->numel());
        std::memcpy(v.data(), data + t->file_offset, v.size() * sizeof(float));
        return v;
    };
    d.actions = floats(actions);
    d.states = floats(states);
    // the images move to the front of the file's own buffer (no second copy of them)
    const size_t ni = (size_t)images->numel();
    if (images->file_offset % sizeof(float) == 0) {
        std::memmove(file.data(), file.data() + images->file_offset / sizeof(float), ni * sizeof(float));
        file.resize(ni);
        d.images = std::move(file);
    } else {
        d.images = floats(images);
        file = std::vector<float>();
    }
    for (size_t i = 0; i < d.images.size(); i++) {
        float v = d.images[i];
        if (!(v >= 0.0f && v <= 1.0f)) { // also false for NaN
            err = "tensor 'images': value " + std::to_string(v) + " at index " + std::to_string(i) +
                  " is outside [0, 1]";
            return false;
        }
    }
    for (float v : d.actions)
        if (!std::isfinite(v)) { err = "tensor 'actions': non-finite value"; return false; }
    for (float v : d.states)
        if (!std::isfinite(v)) { err = "tensor 'states': non-finite value"; return false; }

    // generator settings, where the metadata has them (files made elsewhere may not)
    DatasetConfig c;
    c.sequences = d.N;
    c.steps = d.T;
    c.image_size = d.W;
    auto read_double = [&](const char * key, double & x) {
        if (!meta.count(key)) return true;
        if (parse_meta_double(meta[key], x)) return true;
        err = std::string("metadata '") + key + "' is not a number: '" + meta[key] + "'";
        return false;
    };
    if (meta.count("seed") && !parse_meta_u64(meta["seed"], c.seed)) {
        err = "metadata 'seed' is not an unsigned integer: '" + meta["seed"] + "'";
        return false;
    }
    if (!read_double("g", c.world.g) || !read_double("m", c.world.m) ||
        !read_double("l", c.world.l) || !read_double("dt", c.world.dt) ||
        !read_double("max_speed", c.world.max_speed) ||
        !read_double("max_torque", c.world.max_torque))
        return false;
    const char * size_keys[3] = {"sequences", "steps", "image_size"};
    const int64_t sizes[3] = {N, T, W};
    for (int k = 0; k < 3; k++) {
        if (meta.count(size_keys[k]) && meta[size_keys[k]] != std::to_string(sizes[k])) {
            err = std::string("metadata '") + size_keys[k] + "' = '" + meta[size_keys[k]] +
                  "' disagrees with the tensor shapes (" + std::to_string(sizes[k]) + ")";
            return false;
        }
    }
    // values far outside the declared ranges (see kDataRangeFactor)
    const double umax = kDataRangeFactor * std::max(c.world.max_torque, 1e-3), wmax = kDataRangeFactor * c.world.max_speed,
                 thmax = kDataRangeFactor * 3.14159265358979323846;
    for (size_t i = 0; i < d.actions.size(); i++)
        if (std::fabs(d.actions[i]) > umax) {
            err = "tensor 'actions': value " + std::to_string(d.actions[i]) + " at index " + std::to_string(i) +
                  " is far outside the declared torque range +-" + std::to_string(c.world.max_torque) + " (at most " +
                  std::to_string(umax) + " is accepted); fix the data or declare its range in the metadata key 'max_torque'";
            return false;
        }
    for (size_t i = 0; i < d.states.size(); i++) {
        const double lim = i % 2 == 0 ? thmax : wmax;
        if (std::fabs(d.states[i]) > lim) {
            err = std::string("tensor 'states': ") + (i % 2 == 0 ? "angle " : "angular velocity ") + std::to_string(d.states[i]) +
                  " at index " + std::to_string(i) + " is far outside the declared range (at most " + std::to_string(lim) +
                  " is accepted; velocities are declared by the metadata key 'max_speed')";
            return false;
        }
    }
    d.config = c;
    out = std::move(d);
    return true;
}

} // namespace ekvae
