// world.cpp: the registry of worlds, the dataset generator and file format, and the portable
// math every world's simulation and renderer use (see world.h).
//
// This file is compiled with -ffp-contract=off (no fused multiply-add): portable_sin_cos and
// the generator's conversions must give the same bits on every machine and in WebAssembly.
#include "world.h"

#include "arm.h"
#include "pendulum.h"
#include "safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>

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

double draw_uniform(Rng & rng, double lo, double hi) {
    double u = rng.uniform(); // [0, 1), exact
    return lo + (hi - lo) * u;
}

double clip(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

void render_capsules(const Capsule * caps, int n, int W, float * out) {
    // distance from (px, py) to capsule k's segment: project onto it, clamp to [0, 1]
    auto seg_dist = [&](const Capsule & c, double px, double py) {
        const double dd = c.dx * c.dx + c.dy * c.dy;
        double qx = px - c.x, qy = py - c.y;
        double t = dd > 0.0 ? (qx * c.dx + qy * c.dy) / dd : 0.0;
        t = clip(t, 0.0, 1.0);
        double ex = qx - t * c.dx, ey = qy - t * c.dy;
        return std::sqrt(ex * ex + ey * ey);
    };
    // Shortcut: every sub-sample lies within 0.53 of the pixel centre and distance to a set is
    // 1-Lipschitz, so a centre further than radius + 0.6 from every capsule gives all-zero
    // samples; a capsule's bounding box (grown by radius + 1) skips most distance tests.
    std::vector<int> box((size_t)4 * n); // per capsule: first and last row, first and last column
    for (int k = 0; k < n; k++) {
        const Capsule & c = caps[k];
        const double g = c.radius + 1.0;
        box[4 * k + 0] = (int)std::floor(std::min(c.y, c.y + c.dy) - g);
        box[4 * k + 1] = (int)std::ceil(std::max(c.y, c.y + c.dy) + g);
        box[4 * k + 2] = (int)std::floor(std::min(c.x, c.x + c.dx) - g);
        box[4 * k + 3] = (int)std::ceil(std::max(c.x, c.x + c.dx) + g);
    }
    for (int i = 0; i < W; i++) {
        for (int j = 0; j < W; j++) {
            bool near = false;
            for (int k = 0; k < n && !near; k++)
                near = i >= box[4 * k] && i <= box[4 * k + 1] && j >= box[4 * k + 2] && j <= box[4 * k + 3] &&
                       seg_dist(caps[k], j + 0.5, i + 0.5) <= caps[k].radius + 0.6;
            if (!near) {
                out[(size_t)i * W + j] = 0.0f;
                continue;
            }
            double sum = 0.0; // of multiples of 1/2^k intensities: exact
            for (int a = 0; a < 4; a++)       // sub-sample rows
                for (int b = 0; b < 4; b++) { // sub-sample columns
                    double px = j + (b + 0.5) / 4.0, py = i + (a + 0.5) / 4.0, v = 0.0;
                    for (int k = 0; k < n; k++)
                        if (caps[k].intensity > v && seg_dist(caps[k], px, py) <= caps[k].radius) v = caps[k].intensity;
                    sum += v;
                }
            out[(size_t)i * W + j] = (float)(sum / 16.0);
        }
    }
}

std::vector<std::pair<std::string, double>> World::params() const {
    std::vector<std::pair<std::string, double>> out;
    for (const Param & q : param_table()) out.emplace_back(q.key, *q.value);
    return out;
}

double World::param(const std::string & key) const {
    for (const Param & q : param_table())
        if (q.key == key) return *q.value;
    throw std::invalid_argument("the " + name + " world has no parameter '" + key + "' (its param_table() must list dt and its range keys)");
}

bool World::set_param(const std::string & key, double v, std::string & err) {
    const std::vector<Param> table = param_table();
    const Param * q = nullptr;
    std::string keys;
    for (const Param & e : table) {
        if (e.key == key) q = &e;
        keys += (keys.empty() ? "" : ", ") + e.key;
    }
    if (!q) {
        err = "the " + name + " has no parameter '" + key + "' (it has " + keys + ")";
        return false;
    }
    const bool ok = std::isfinite(v) && (q->range == Range::Finite || (q->range == Range::NonNegative && v >= 0) ||
                                         (q->range == Range::Positive && v > 0) ||
                                         (q->range == Range::Count && v >= 1 && v <= 1000 && v == std::floor(v)));
    if (!ok) {
        const char * what = q->range == Range::Finite ? "a finite number" : q->range == Range::NonNegative ? "finite and >= 0"
                          : q->range == Range::Positive ? "finite and > 0" : "a whole number from 1 to 1000";
        err = "the " + name + "'s parameter " + key + " must be " + what + " (got " + double_string(v) + ")";
        return false;
    }
    // the table points at this world's own (non-const) members: writing through it is sound
    *const_cast<double *>(q->value) = v;
    return true;
}

double World::state_max(int i) const { return angle[i] ? 3.14159265358979323846 : param(state_range_keys[i]); }

int World::angles() const {
    int n = 0;
    for (bool a : angle) n += a ? 1 : 0;
    return n;
}

int World::target_component(int k) const {
    for (int i = 0; i < S; i++) {
        k -= angle[i] ? 2 : 1;
        if (k < 0) return i;
    }
    return -1;
}

void World::readout_targets(const double * s, double * y) const {
    int k = 0;
    for (int i = 0; i < S; i++) {
        if (angle[i]) {
            y[k++] = std::cos(s[i]);
            y[k++] = std::sin(s[i]);
        } else {
            y[k++] = s[i];
        }
    }
}

std::unique_ptr<World> make_world(const std::string & name) {
    if (name == "pendulum") return make_pendulum_world();
    if (name == "arm") return make_arm_world();
    return nullptr;
}

const World & default_world() {
    static const std::unique_ptr<World> w = make_pendulum_world();
    return *w;
}

std::vector<std::string> world_names() { return {"pendulum", "arm"}; }

std::string world_names_list() {
    std::string s;
    for (const std::string & n : world_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
}

namespace {
std::shared_ptr<const World> world_or_pendulum(const std::shared_ptr<const World> & w) {
    return w ? w : std::shared_ptr<const World>(make_pendulum_world());
}
} // namespace

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
    const std::shared_ptr<const World> w = world_or_pendulum(cfg.world);
    // bytes = N T (W W + U + S) * 4 (images, actions, states as F32), without overflow:
    // per sequence fits easily (T < 2^31, W <= 256), the product with N is checked by division
    const uint64_t W = (uint64_t)cfg.image_size;
    const uint64_t per_sequence = (uint64_t)cfg.steps * (W * W + (uint64_t)(w->U + w->S)) * 4;
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
//     the world's initial_state (pendulum: theta_0 = U(-pi, pi), omega_0 = U(-1, 1))
//     for t = 0..T-1:
//       u_t = random_action (pendulum: U(-2, 2)); frame t renders the current state; then
//       the state steps under u_t (so the last step's successor is computed but not stored).
Dataset generate_dataset(const DatasetConfig & cfg) {
    Dataset d;
    d.config = cfg;
    d.config.world = world_or_pendulum(cfg.world);
    const World & w = *d.config.world;
    d.N = cfg.sequences;
    d.T = cfg.steps;
    d.W = cfg.image_size;
    d.S = w.S;
    d.U = w.U;
    const size_t N = (size_t)d.N, T = (size_t)d.T, W = (size_t)d.W, S = (size_t)d.S, U = (size_t)d.U;
    d.images.assign(N * T * W * W, 0.0f); // [N, T, W, W]
    d.actions.assign(N * T * U, 0.0f);    // [N, T, U]
    d.states.assign(N * T * S, 0.0f);     // [N, T, S]

    Rng rng(cfg.seed);
    std::vector<double> s(S), u(U);
    for (size_t n = 0; n < N; n++) {
        w.initial_state(rng, s.data());
        for (size_t t = 0; t < T; t++) {
            w.random_action(rng, u.data());
            const size_t k = n * T + t;
            w.render(s.data(), d.W, d.images.data() + k * W * W);
            for (size_t j = 0; j < U; j++) d.actions[k * U + j] = (float)u[j];
            for (size_t i = 0; i < S; i++) d.states[k * S + i] = (float)s[i];
            w.step(s.data(), u.data(), s.data());
        }
    }
    return d;
}

Dataset dataset_slice(const Dataset & d, int N, int T) {
    Dataset c;
    c.config = d.config;
    c.config.sequences = N;
    c.config.steps = T;
    c.N = N;
    c.T = T;
    c.W = d.W;
    c.S = d.S;
    c.U = d.U;
    const size_t px = (size_t)d.W * d.W;
    for (int n = 0; n < N; n++) {
        const size_t from = (size_t)n * d.T;
        c.images.insert(c.images.end(), d.images.begin() + from * px, d.images.begin() + (from + T) * px);
        c.actions.insert(c.actions.end(), d.actions.begin() + from * d.U, d.actions.begin() + (from + T) * d.U);
        c.states.insert(c.states.end(), d.states.begin() + from * d.S, d.states.begin() + (from + T) * d.S);
    }
    return c;
}

namespace {
std::string joined(const std::vector<std::string> & v) {
    std::string s;
    for (const std::string & x : v) s += (s.empty() ? "" : ",") + x;
    return s;
}
} // namespace

std::vector<uint8_t> dataset_to_safetensors(const Dataset & d) {
    SafeTensors st;
    const int64_t N = d.N, T = d.T, W = d.W;
    st.tensors["images"] = Tensor::from_f32(d.images.data(), {N, T, W, W});
    st.tensors["actions"] = Tensor::from_f32(d.actions.data(), {N, T, d.U});
    st.tensors["states"] = Tensor::from_f32(d.states.data(), {N, T, d.S});
    const DatasetConfig & c = d.config;
    st.metadata["format"] = "ekvae-dataset";
    st.metadata["version"] = "1";
    st.metadata["sequences"] = std::to_string(d.N);
    st.metadata["steps"] = std::to_string(d.T);
    st.metadata["image_size"] = std::to_string(d.W);
    st.metadata["seed"] = std::to_string(c.seed);
    st.metadata["world"] = d.world().name;
    st.metadata["state_names"] = joined(d.world().state_names);
    st.metadata["action_names"] = joined(d.world().action_names);
    for (const auto & [key, value] : d.world().params()) st.metadata[key] = double_string(value);
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
    // the world: metadata 'world' (files without one are the pendulum's), its parameters
    const std::string wname = meta.count("world") ? meta["world"] : "pendulum";
    std::unique_ptr<World> world = make_world(wname);
    if (!world) {
        err = "metadata 'world' = '" + wname + "' is not a world this build knows (" + world_names_list() + ")";
        return false;
    }
    for (const auto & [key, value] : world->params()) {
        (void)value;
        double x = 0;
        if (!meta.count(key)) {
            // a key younger than the file: the value the file was made with, not today's default
            if (world->param_before_key(key, x) && !world->set_param(key, x, err)) return false;
            continue;
        }
        if (!parse_meta_double(meta[key], x)) {
            err = "metadata '" + key + "' is not a number: '" + meta[key] + "'";
            return false;
        }
        if (!world->set_param(key, x, err)) {
            err = "metadata '" + key + "': " + err;
            return false;
        }
    }
    const int64_t S = world->S, U = world->U;

    // shapes: images [N, T, W, W], actions [N, T, U], states [N, T, S]
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
    const Tensor * actions = st.require("actions", "F32", {N, T, U}, err);
    if (!actions) return false;
    const Tensor * states = st.require("states", "F32", {N, T, S}, err);
    if (!states) return false;

    Dataset d;
    d.N = (int)N;
    d.T = (int)T;
    d.W = (int)W;
    d.S = (int)S;
    d.U = (int)U;
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
    if (meta.count("seed") && !parse_meta_u64(meta["seed"], c.seed)) {
        err = "metadata 'seed' is not an unsigned integer: '" + meta["seed"] + "'";
        return false;
    }
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
    std::vector<double> umaxs(U), lims(S);
    for (int j = 0; j < U; j++) umaxs[j] = kDataRangeFactor * std::max(world->action_max(j), 1e-3);
    for (int k = 0; k < S; k++) lims[k] = kDataRangeFactor * world->state_max(k);
    for (size_t i = 0; i < d.actions.size(); i++) {
        const int j = (int)(i % (size_t)U);
        const double umax = umaxs[j];
        if (std::fabs(d.actions[i]) > umax) {
            err = "tensor 'actions': value " + std::to_string(d.actions[i]) + " at index " + std::to_string(i) +
                  " is far outside the declared torque range +-" + std::to_string(world->action_max(j)) + " (at most " +
                  std::to_string(umax) + " is accepted); fix the data or declare its range in the metadata key '" +
                  world->action_range_key + "'";
            return false;
        }
    }
    for (size_t i = 0; i < d.states.size(); i++) {
        const int k = (int)(i % (size_t)S);
        const double lim = lims[k];
        if (std::fabs(d.states[i]) > lim) {
            err = "tensor 'states': " + world->state_names[k] + " = " + std::to_string(d.states[i]) +
                  " at index " + std::to_string(i) + " is far outside the declared range (at most " + std::to_string(lim) +
                  " is accepted" + (world->angle[k] ? std::string(")") : "; declared by the metadata key '" + world->state_range_keys[k] + "')");
            return false;
        }
    }
    c.world = std::move(world);
    d.config = c;
    out = std::move(d);
    return true;
}

} // namespace ekvae
