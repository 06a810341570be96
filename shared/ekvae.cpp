// ekvae.cpp: the EKVAE model, its extended Kalman filter/smoother, objective, training step,
// forecasting and evaluation (see ekvae.h for the equations and the dimension legend).
#include "ekvae.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#if defined(__SSE3__)
#include <pmmintrin.h>
#endif

namespace ekvae {

// Tiny values (Adam's second moments of rarely used weights, say) would otherwise become
// denormal floats, which x86 processes ~100x slower: measured, a run slowed 4x after a few
// thousand steps. Flush them to zero in the training threads.
static void flush_denormals() {
#if defined(__SSE3__)
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

using json = nlohmann::json;

// ---- config -------------------------------------------------------------------------------

namespace {

enum class Kind { Int, Double, String, IntList };
struct Field {
    const char * name;
    Kind kind;
    double lo, hi; // range for numbers and list entries
    int EkvaeConfig::*i = nullptr;
    double EkvaeConfig::*d = nullptr;
    std::string EkvaeConfig::*s = nullptr;
    std::vector<int> EkvaeConfig::*l = nullptr;
};

#define F_INT(n, lo, hi) Field{#n, Kind::Int, lo, hi, &EkvaeConfig::n, nullptr, nullptr, nullptr}
#define F_DBL(n, lo, hi) Field{#n, Kind::Double, lo, hi, nullptr, &EkvaeConfig::n, nullptr, nullptr}
#define F_STR(n) Field{#n, Kind::String, 0, 0, nullptr, nullptr, &EkvaeConfig::n, nullptr}
#define F_LST(n, lo, hi) Field{#n, Kind::IntList, lo, hi, nullptr, nullptr, nullptr, &EkvaeConfig::n}

const std::vector<Field> & fields() {
    static const std::vector<Field> f = {
        F_INT(image_size, kMinImageSize, kMaxImageSize), F_INT(n_a, 1, 16), F_INT(n_z, 1, 16), F_INT(n_u, 1, 16), F_INT(K, 1, 256),
        F_LST(enc_hidden, 1, 4096), F_LST(dec_hidden, 1, 4096), F_LST(alpha_hidden, 1, 4096),
        F_DBL(q_min, 1e-8, 1), F_DBL(r_min, 1e-8, 1), F_DBL(jitter, 0, 1e-1), F_DBL(init_scale_A, 0, 1),
        F_INT(train_sequences, 1, 1000000), F_INT(train_seed, 0, 2147483647), F_INT(test_sequences, 2, 1000000),
        F_INT(test_seed, 0, 2147483647), F_INT(sequence_steps, 2, 100000), F_STR(data),
        F_STR(objective), F_INT(batch, 1, 4096), F_INT(window, 2, 100000), F_DBL(lr, 1e-9, 10), F_DBL(clip_norm, 0, 1e12),
        F_INT(seed, 0, 2147483647), F_INT(train_steps, 0, 2000000000), F_DBL(train_minutes, 0, 1e6), F_INT(threads, 1, 256),
        F_DBL(checkpoint_minutes, 0.01, 1e6), F_INT(log_every, 1, 1000000000), F_INT(eval_every, 0, 1000000000),
        F_DBL(D0, 1e-6, 1e9), F_DBL(lambda_init, 1e-9, 1e9), F_DBL(lambda_min, 1e-9, 1e9), F_DBL(lambda_max, 0, 1e9),
        F_DBL(lambda_rate, 0, 1e3), F_DBL(lambda_max_step, 0, 10), F_DBL(lambda_ma, 0, 0.999999),
        F_INT(restarts, 1, 64), F_INT(restart_steps, 1, 1000000000), F_INT(lr_decay_start, 0, 2000000000),
        F_INT(lr_decay_end, 0, 2000000000), F_DBL(lr_final, 0, 1),
        F_STR(lambda_rule), F_STR(lambda_warmup), F_STR(lambda_scale),
    };
    return f;
}
#undef F_INT
#undef F_DBL
#undef F_STR
#undef F_LST

const Field * find_field(const std::string & key) {
    for (const Field & f : fields())
        if (key == f.name) return &f;
    return nullptr;
}

std::string range_string(const Field & f) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "[%g, %g]", f.lo, f.hi);
    return buf;
}

bool utf8_valid(const std::string & s) {
    const unsigned char * p = (const unsigned char *)s.data();
    const size_t n = s.size();
    for (size_t i = 0; i < n;) {
        const unsigned c = p[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > n) return false;
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        for (int k = 1; k < len; k++) {
            if ((p[i + k] >> 6) != 2) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

bool set_from_json(EkvaeConfig & cfg, const Field & f, const json & v, std::string & err) {
    const std::string name = f.name;
    switch (f.kind) {
    case Kind::Int: {
        if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())) {
            err = "config key '" + name + "' must be an integer";
            return false;
        }
        const double x = v.get<double>();
        if (x < f.lo || x > f.hi) {
            err = "config key '" + name + "' = " + v.dump() + " is out of range " + range_string(f);
            return false;
        }
        cfg.*f.i = (int)x;
        return true;
    }
    case Kind::Double: {
        if (!v.is_number()) {
            err = "config key '" + name + "' must be a number";
            return false;
        }
        const double x = v.get<double>();
        if (!std::isfinite(x) || x < f.lo || x > f.hi) {
            err = "config key '" + name + "' = " + v.dump() + " is out of range " + range_string(f);
            return false;
        }
        cfg.*f.d = x;
        return true;
    }
    case Kind::String:
        if (!v.is_string()) {
            err = "config key '" + name + "' must be a string";
            return false;
        }
        if (!utf8_valid(v.get<std::string>())) { // it is written back into JSON (config.json, model files)
            err = "config key '" + name + "' is not valid UTF-8 text" +
                  (name == "data" ? " (rename the file, or link it under a UTF-8 name)" : "");
            return false;
        }
        cfg.*f.s = v.get<std::string>();
        return true;
    case Kind::IntList: {
        if (!v.is_array() || v.empty() || v.size() > 16) {
            err = "config key '" + name + "' must be a list of 1 to 16 layer sizes, e.g. [128, 128]";
            return false;
        }
        std::vector<int> out;
        for (const json & e : v) {
            if (!e.is_number_integer() || e.get<double>() < f.lo || e.get<double>() > f.hi) {
                err = "config key '" + name + "': layer sizes must be integers in " + range_string(f);
                return false;
            }
            out.push_back(e.get<int>());
        }
        cfg.*f.l = out;
        return true;
    }
    }
    return false;
}

json field_to_json(const EkvaeConfig & cfg, const Field & f) {
    switch (f.kind) {
    case Kind::Int: return cfg.*f.i;
    case Kind::Double: return cfg.*f.d;
    case Kind::String: return cfg.*f.s;
    case Kind::IntList: return cfg.*f.l;
    }
    return nullptr;
}

} // namespace

std::vector<std::string> config_keys() {
    std::vector<std::string> k;
    for (const Field & f : fields()) k.push_back(f.name);
    return k;
}

std::string config_to_json(const EkvaeConfig & cfg, int indent) {
    json j = json::object();
    for (const Field & f : fields()) j[f.name] = field_to_json(cfg, f);
    return j.dump(indent);
}

bool config_json_items(const std::string & text, std::vector<std::pair<std::string, std::string>> & items, std::string & err) {
    json j;
    if (!json_parse_strict(text.data(), text.size(), j, err)) return false;
    if (!j.is_object()) {
        err = "a config is a JSON object of keys and values, e.g. {\"lr\": 0.001}";
        return false;
    }
    items.clear();
    for (auto it = j.begin(); it != j.end(); ++it) {
        const Field * f = find_field(it.key());
        if (!f) {
            err = "unknown config key '" + it.key() + "'";
            return false;
        }
        if (f->kind == Kind::String && !it.value().is_string()) {
            err = "config key '" + it.key() + "' must be a string";
            return false;
        }
        items.push_back({it.key(), f->kind == Kind::String ? it.value().get<std::string>() : it.value().dump()});
    }
    return true;
}

bool config_from_json(const std::string & text, EkvaeConfig & cfg, std::string & err) {
    json j;
    if (!json_parse_strict(text.data(), text.size(), j, err)) return false;
    if (!j.is_object()) {
        err = "a config is a JSON object of keys and values, e.g. {\"lr\": 0.001}";
        return false;
    }
    EkvaeConfig c = cfg;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const Field * f = find_field(it.key());
        if (!f) {
            err = "unknown config key '" + it.key() + "'";
            return false;
        }
        if (!set_from_json(c, *f, it.value(), err)) return false;
    }
    if (!config_validate(c, err)) return false;
    cfg = c;
    return true;
}

bool config_set(EkvaeConfig & cfg, const std::string & key, const std::string & value, std::string & err) {
    const Field * f = find_field(key);
    if (!f) {
        err = "unknown config key '" + key + "'";
        return false;
    }
    json v;
    if (f->kind == Kind::String) v = value;
    else {
        v = json::parse(value, nullptr, false);
        if (v.is_discarded()) {
            err = "config key '" + key + "': cannot parse '" + value + "'" +
                  (f->kind == Kind::IntList ? " (write a list like [128,128])" : " as a number");
            return false;
        }
    }
    return set_from_json(cfg, *f, v, err);
}

bool config_validate(const EkvaeConfig & c, std::string & err) {
    if (c.n_u != 1) {
        err = "n_u = " + std::to_string(c.n_u) + ": the pendulum world has one torque, so n_u must be 1";
        return false;
    }
    if (c.objective != "constrained" && c.objective != "elbo") {
        err = "objective must be 'constrained' or 'elbo', not '" + c.objective + "'";
        return false;
    }
    if (c.window > c.sequence_steps) {
        err = "window (" + std::to_string(c.window) + ") is longer than the sequences (sequence_steps = " + std::to_string(c.sequence_steps) + ")";
        return false;
    }
    if (c.lambda_min > c.lambda_max || c.lambda_init < c.lambda_min || c.lambda_init > c.lambda_max) {
        err = "need lambda_min <= lambda_init <= lambda_max";
        return false;
    }
    if (c.lambda_rule != "ekvae" && c.lambda_rule != "authors") {
        err = "lambda_rule must be 'ekvae' or 'authors', not '" + c.lambda_rule + "'";
        return false;
    }
    if (c.lambda_warmup != "none" && c.lambda_warmup != "hold" && c.lambda_warmup != "rate_off") {
        err = "lambda_warmup must be 'none', 'hold' or 'rate_off', not '" + c.lambda_warmup + "'";
        return false;
    }
    if (c.lambda_scale != "none" && c.lambda_scale != "normalized") {
        err = "lambda_scale must be 'none' or 'normalized', not '" + c.lambda_scale + "'";
        return false;
    }
    if (c.lambda_rule == "authors" && (c.lambda_warmup != "none" || c.lambda_scale != "none")) {
        err = "lambda_rule 'authors' has its own warm-up and loss scale: leave lambda_warmup and lambda_scale at 'none'";
        return false;
    }
    if (c.restarts > 1 && c.train_steps > 0 && (int64_t)c.train_steps <= (int64_t)c.restarts * c.restart_steps) {
        err = "train_steps (" + std::to_string(c.train_steps) + ") must be more than restarts x restart_steps (" +
              std::to_string(c.restarts) + " x " + std::to_string(c.restart_steps) + "): the starts are part of the run's steps; for a short run pass --restarts 1";
        return false;
    }
    if (c.lr_decay_end != 0 && c.lr_decay_end <= c.lr_decay_start) {
        err = "lr_decay_end (" + std::to_string(c.lr_decay_end) + ") must be after lr_decay_start (" +
              std::to_string(c.lr_decay_start) + "), or 0 for a constant learning rate";
        return false;
    }
    return true;
}

bool config_preset(const std::string & name, EkvaeConfig & cfg) {
    if (name == "pendulum") {
        cfg = EkvaeConfig{};
        return true;
    }
    return false;
}

// ---- model --------------------------------------------------------------------------------

namespace {
template <class T> Mat<T> identity_col(int n, T s = T(1)) {
    Mat<T> I = Mat<T>::Zero(n * n, 1);
    for (int i = 0; i < n; i++) I(i * n + i, 0) = s;
    return I;
}
double inv_softplus(double y) { return std::log(std::expm1(y)); }
} // namespace

template <class T> void ekvae_init(Ekvae<T> & m, const EkvaeConfig & cfg, uint64_t seed) {
    m.cfg = cfg;
    m.ps.list.clear();
    Rng rng(seed * 0x9E3779B97F4A7C15ULL + 12345);
    const int D = cfg.image_size * cfg.image_size, na = cfg.n_a, nz = cfg.n_z, nu = cfg.n_u, K = cfg.K;
    auto sizes = [](int in, const std::vector<int> & hidden, int out) {
        std::vector<int> s = {in};
        s.insert(s.end(), hidden.begin(), hidden.end());
        s.push_back(out);
        return s;
    };
    m.enc = make_mlp(m.ps, "enc", sizes(D, cfg.enc_hidden, 2 * na), Activation::Relu, rng);
    m.dec = make_mlp(m.ps, "dec", sizes(na, cfg.dec_hidden, D), Activation::Relu, rng);
    m.alpha = make_mlp(m.ps, "alpha", sizes(nz + nu, cfg.alpha_hidden, K), Activation::Relu, rng);
    // the decoder starts predicting a mostly dark frame (the rod covers few pixels)
    m.dec.layers.back().b->value.setConstant(T(-3));
    m.H = &m.ps.add("H", na * nz, 1);
    for (Eigen::Index i = 0; i < m.H->value.size(); i++) m.H->value(i) = T(rng.normal() / std::sqrt((double)nz));
    m.r_raw = &m.ps.add("r_raw", na, 1);
    m.r_raw->value.setConstant(T(inv_softplus(0.1)));
    m.A = &m.ps.add("A", nz * nz, K);
    m.Bm = &m.ps.add("B", nz * nu, K);
    for (Eigen::Index i = 0; i < m.A->value.size(); i++) m.A->value(i) = T(cfg.init_scale_A * rng.normal());
    for (Eigen::Index i = 0; i < m.Bm->value.size(); i++) m.Bm->value(i) = T(cfg.init_scale_A * rng.normal());
    m.q_raw = &m.ps.add("q_raw", nz, K);
    m.q_raw->value.setConstant(T(inv_softplus(0.01)));
    m.mu1 = &m.ps.add("mu1", nz, 1);
    m.p1_raw = &m.ps.add("p1_raw", nz, 1);
    m.p1_raw->value.setConstant(T(inv_softplus(1.0)));
    m.readout_W = Mat<T>::Zero(3, nz);
    m.readout_b = Mat<T>::Zero(3, 1);
    m.has_readout = false;
}

template <class T, class S> void ekvae_copy_params(const Ekvae<S> & from, Ekvae<T> & to) {
    for (size_t i = 0; i < from.ps.list.size(); i++) to.ps.list[i]->value = from.ps.list[i]->value.template cast<T>();
    to.readout_W = from.readout_W.template cast<T>();
    to.readout_b = from.readout_b.template cast<T>();
    to.has_readout = from.has_readout;
}

template <class T> void ekvae_to_safetensors(const Ekvae<T> & m, SafeTensors & st) {
    params_to_safetensors(m.ps, st);
    if (m.has_readout) {
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> W = m.readout_W.template cast<float>();
        st.tensors["readout.W"] = Tensor::from_f32(W.data(), {3, (int64_t)m.cfg.n_z});
        Mat<float> b = m.readout_b.template cast<float>();
        st.tensors["readout.b"] = Tensor::from_f32(b.data(), {3});
    }
    st.metadata["format"] = kModelFormat;
    st.metadata["version"] = std::to_string(kModelVersion);
    st.metadata["config"] = config_to_json(m.cfg, -1);
}

namespace {
// The longest "config" metadata accepted from a model file: a real config is under 1 KB.
constexpr size_t kMaxConfigJson = 64 << 10;

// Name and [rows, cols] of every parameter ekvae_init creates, in creation order, computed
// without allocating them: a hostile config (16 layers of 4096 on 256x256 images) would
// otherwise make the loader allocate gigabytes before finding that the file lacks the tensors.
std::vector<std::pair<std::string, std::vector<int64_t>>> param_shapes(const EkvaeConfig & c) {
    std::vector<std::pair<std::string, std::vector<int64_t>>> s;
    auto mlp = [&](const std::string & name, int in, const std::vector<int> & hidden, int out) {
        std::vector<int> sz = {in};
        sz.insert(sz.end(), hidden.begin(), hidden.end());
        sz.push_back(out);
        for (size_t i = 0; i + 1 < sz.size(); i++) {
            s.push_back({name + "." + std::to_string(i) + ".W", {sz[i + 1], sz[i]}});
            s.push_back({name + "." + std::to_string(i) + ".b", {sz[i + 1], 1}});
        }
    };
    const int D = c.image_size * c.image_size, na = c.n_a, nz = c.n_z, nu = c.n_u, K = c.K;
    mlp("enc", D, c.enc_hidden, 2 * na);
    mlp("dec", na, c.dec_hidden, D);
    mlp("alpha", nz + nu, c.alpha_hidden, K);
    s.push_back({"H", {na * nz, 1}});
    s.push_back({"r_raw", {na, 1}});
    s.push_back({"A", {nz * nz, K}});
    s.push_back({"B", {nz * nu, K}});
    s.push_back({"q_raw", {nz, K}});
    s.push_back({"mu1", {nz, 1}});
    s.push_back({"p1_raw", {nz, 1}});
    return s;
}
} // namespace

template <class T> bool ekvae_from_safetensors(const SafeTensors & st, Ekvae<T> & m, std::string & err) {
    auto fmt = st.metadata.find("format");
    if (fmt == st.metadata.end() || fmt->second != kModelFormat) {
        err = "not an ekvae model file (metadata 'format' is not '" + std::string(kModelFormat) +
              "'); train one with ekvae_train or use a file from models/";
        return false;
    }
    auto ver = st.metadata.find("version");
    if (ver == st.metadata.end() || (ver->second != "1" && ver->second != std::to_string(kModelVersion))) {
        err = "model file version '" + (ver == st.metadata.end() ? std::string("?") : ver->second) +
              "' is not supported (this build reads versions 1 to " + std::to_string(kModelVersion) + ")";
        return false;
    }
    // from version 2 on every file carries a checksum (safetensors_parse has verified it)
    if (ver->second != "1" && !st.metadata.count(kChecksumKey)) {
        err = "model file has no checksum in its metadata (key '" + std::string(kChecksumKey) +
              "'): it was edited or written by another tool; save it again with ekvae_train";
        return false;
    }
    auto c = st.metadata.find("config");
    EkvaeConfig cfg;
    if (c == st.metadata.end()) {
        err = "model file has no 'config' in its metadata";
        return false;
    }
    if (c->second.size() > kMaxConfigJson) {
        err = "model config: " + std::to_string(c->second.size()) + " bytes of JSON, more than the limit of " +
              std::to_string(kMaxConfigJson);
        return false;
    }
    std::string cerr;
    if (!config_from_json(c->second, cfg, cerr)) {
        err = "model config: " + cerr;
        return false;
    }
    // every parameter must be in the file with its shape before the model is built
    const auto shapes = param_shapes(cfg);
    for (const auto & [name, shape] : shapes)
        if (!st.require(name, "F32", shape, err)) return false;
    ekvae_init(m, cfg, 0);
    for (size_t i = 0; i < shapes.size(); i++) // param_shapes mirrors ekvae_init
        if (m.ps.list.size() != shapes.size() || m.ps.list[i]->name != shapes[i].first) {
            err = "internal error: param_shapes() disagrees with ekvae_init()";
            return false;
        }
    if (!params_from_safetensors(st, m.ps, err)) return false;
    const Tensor * W = st.find("readout.W");
    const Tensor * b = st.find("readout.b");
    if (W || b) {
        const Tensor * Wc = st.require("readout.W", "F32", {3, (int64_t)cfg.n_z}, err);
        const Tensor * bc = Wc ? st.require("readout.b", "F32", {3}, err) : nullptr;
        if (!Wc || !bc) return false;
        std::vector<float> w = Wc->to_f32(), bb = bc->to_f32();
        for (float x : w) if (!std::isfinite(x)) { err = "tensor 'readout.W' holds NaN or Inf values"; return false; }
        for (float x : bb) if (!std::isfinite(x)) { err = "tensor 'readout.b' holds NaN or Inf values"; return false; }
        m.readout_W = Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(w.data(), 3, cfg.n_z).template cast<T>();
        m.readout_b = Eigen::Map<Mat<float>>(bb.data(), 3, 1).template cast<T>();
        m.has_readout = true;
    }
    return true;
}

template <class T> bool ekvae_load(const uint8_t * data, size_t size, Ekvae<T> & m, std::string & err) {
    SafeTensors st;
    if (!safetensors_parse(data, size, st, err)) return false;
    return ekvae_from_safetensors(st, m, err);
}

// ---- the transition and the Kalman recursions -----------------------------------------------

namespace {

// The transition's three heads stacked, [A; B_base; q_raw]  [n_z*n_z + n_z*n_u + n_z, K]: one
// product with alpha gives F, B and q (record once per tape, reuse for every step).
template <class T> Var transition_heads(Tape<T> & t, Ekvae<T> & m) {
    return t.concat_rows({t.param(*m.A), t.param(*m.Bm), t.param(*m.q_raw)});
}

// alpha = softmax(MLP([z; u])), F = I + A alpha, B = B_base alpha, q = softplus(q_raw alpha) + q_min.
// z [n_z, N], u [n_u, N] -> F [n_z*n_z, N] (batch n_z x n_z), Bu [n_z, N], q [n_z, N].
template <class T> void transition(Tape<T> & t, Ekvae<T> & m, Var heads, Var z, Var u, Var I, Var & F, Var & Bu, Var & q) {
    const EkvaeConfig & c = m.cfg;
    const int nz = c.n_z, nu = c.n_u;
    Var alpha = t.softmax_rows(m.alpha.forward(t, t.concat_rows({z, u})));     // [K, N]
    Var h = t.matmul(heads, alpha);                                            // [n_z*n_z + n_z*n_u + n_z, N]
    F = t.as_batch(t.add(t.slice_rows(h, 0, nz * nz), I), nz, nz);            // [n_z*n_z, N]
    Bu = t.bmm(t.slice_batch(h, nz * nz, nz, nu), u);                          // [n_z, N]
    q = t.add_scalar(t.softplus(t.slice_rows(h, nz * nz + nz * nu, nz)), T(c.q_min)); // [n_z, N]
}

// R = diag(softplus(r_raw) + r_min) as variances [n_a, 1]
template <class T> Var obs_variances(Tape<T> & t, Ekvae<T> & m) {
    return t.add_scalar(t.softplus(t.param(*m.r_raw)), T(m.cfg.r_min));
}

template <class T> Var prior_variances(Tape<T> & t, Ekvae<T> & m) { return t.softplus(t.param(*m.p1_raw)); }

// The Kalman update of (mp, Pp) with observation a_t [n_a, B] (one fused tape node):
//   S = H P H^T + R,  K = P H^T S^{-1},  m = mp + K (a - H mp),
//   P = (I - K H) Pp (I - K H)^T + K R K^T   (Joseph form: symmetric positive semi-definite)
template <class T> void kalman_update(Tape<T> & t, Var H, Var Rm, Var mp, Var Pp, Var a, Var & mt, Var & Pt) {
    const int nz = t.bcols(H);
    Var r = t.kalman_update(H, Rm, mp, Pp, a); // [m; P]  [n_z + n_z*n_z, B]
    mt = t.slice_batch(r, 0, nz, 1);
    Pt = t.slice_batch(r, nz, nz, nz);
}

// Prediction: mp = F m + B u, Pp = F P F^T + Q (one fused tape node)
template <class T> void kalman_predict(Tape<T> & t, Var F, Var Bu, Var q, Var m, Var P, Var & mp, Var & Pp) {
    const int nz = t.brows(F);
    Var r = t.kalman_predict(F, Bu, q, m, P); // [mp; Pp]  [n_z + n_z*n_z, B]
    mp = t.slice_batch(r, 0, nz, 1);
    Pp = t.slice_batch(r, nz, nz, nz);
}

} // namespace

template <class T> void kalman_filter(Tape<T> & t, Ekvae<T> & m, Var a, Var u, int B, int T_, KalmanResult<T> & kr) {
    const EkvaeConfig & c = m.cfg;
    const int nz = c.n_z, na = c.n_a;
    kr = KalmanResult<T>{};
    kr.B = B;
    kr.T_ = T_;
    kr.m.resize(T_); kr.P.resize(T_); kr.m_pred.resize(T_); kr.P_pred.resize(T_); kr.F.resize(T_); kr.Q.resize(T_);
    Var H = t.param_batch(*m.H, na, nz);
    Var Rm = t.bdiag(obs_variances(t, m));
    Var I = t.constant_batch(identity_col<T>(nz), nz, nz);
    Var heads = transition_heads(t, m);
    for (int k = 0; k < T_; k++) {
        Var mp, Pp;
        if (k == 0) {
            mp = t.param(*m.mu1);                       // [n_z, 1], broadcast over the batch
            Pp = t.bdiag(prior_variances(t, m));        // [n_z*n_z, 1]
        } else {
            Var Bu, q;
            transition(t, m, heads, kr.m[k - 1], t.slice_cols(u, (k - 1) * B, B), I, kr.F[k], Bu, q);
            kr.Q[k] = q;
            kalman_predict(t, kr.F[k], Bu, q, kr.m[k - 1], kr.P[k - 1], mp, Pp);
        }
        kalman_update(t, H, Rm, mp, Pp, t.slice_cols(a, k * B, B), kr.m[k], kr.P[k]);
        kr.m_pred[k] = mp;
        kr.P_pred[k] = Pp;
    }
}

namespace {
// Smoother gains J_t = P_t F_{t+1}^T (P_pred_{t+1} + jitter I)^{-1} (one fused node each).
template <class T> void smoother_gains(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr) {
    if (!kr.J.empty()) return;
    kr.J.resize(std::max(kr.T_ - 1, 0));
    for (int k = kr.T_ - 2; k >= 0; k--) kr.J[k] = t.smoother_gain(kr.P_pred[k + 1], kr.F[k + 1], kr.P[k], T(m.cfg.jitter));
}
} // namespace

template <class T> void rts_smoother(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr, bool covariances) {
    smoother_gains(t, m, kr);
    const int T_ = kr.T_;
    kr.ms.assign(T_, Var{});
    kr.Ps.assign(T_, Var{});
    kr.ms[T_ - 1] = kr.m[T_ - 1];
    kr.Ps[T_ - 1] = kr.P[T_ - 1];
    for (int k = T_ - 2; k >= 0; k--) {
        const Var J = kr.J[k];
        // ms_t = m_t + J (ms_{t+1} - m_pred_{t+1});  Ps_t = P_t + J (Ps_{t+1} - P_pred_{t+1}) J^T
        kr.ms[k] = t.add(kr.m[k], t.bmm(J, t.sub(kr.ms[k + 1], kr.m_pred[k + 1])));
        if (covariances) kr.Ps[k] = t.add(kr.P[k], t.bmm(t.bmm(J, t.sub(kr.Ps[k + 1], kr.P_pred[k + 1])), J, false, true));
    }
}

template <class T> Var backward_sample(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr, const Mat<T> & eps, Var & log_post) {
    smoother_gains(t, m, kr);
    const int nz = m.cfg.n_z, B = kr.B, T_ = kr.T_;
    Var E = t.constant(eps);
    Var Ij = t.constant_batch(identity_col<T>(nz, T(m.cfg.jitter)), nz, nz);
    std::vector<Var> z(T_);
    Var L = t.bcholesky(t.add(kr.P[T_ - 1], Ij));
    z[T_ - 1] = t.add(kr.m[T_ - 1], t.bmm(L, t.slice_cols(E, (T_ - 1) * B, B)));
    log_post = t.gauss_chol_logpdf(z[T_ - 1], kr.m[T_ - 1], L);
    for (int k = T_ - 2; k >= 0; k--) {
        // conditional p(z_t | z_{t+1}, a_{1:t}): mean m_t + J (z_{t+1} - m_pred_{t+1}),
        // covariance (I - J F) P_t (I - J F)^T + J Q J^T  (= P_t - J P_pred J^T, kept PSD);
        // one fused node gives [z_t; log density of z_t]
        Var s = t.backward_sample_step(kr.m[k], kr.P[k], kr.J[k], kr.F[k + 1], kr.Q[k + 1], kr.m_pred[k + 1], z[k + 1],
                                       t.slice_cols(E, k * B, B), T(m.cfg.jitter));
        z[k] = t.slice_batch(s, 0, nz, 1);
        log_post = t.add(log_post, t.slice_rows(s, nz, 1));
    }
    return t.concat_cols(z);
}

template <class T>
EkvaeTerms ekvae_objective(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, const Mat<T> & U, int B, int T_, Rng & rng,
                           const LossWeights & w, double scale) {
    const EkvaeConfig & c = m.cfg;
    const int na = c.n_a, nz = c.n_z, N = B * T_;
    EkvaeTerms r;
    Var x = t.constant_ref(X); // the batch is read in place (X and U outlive this step's tape)
    Var u = t.constant_ref(U);
    // q(a | x): reparameterised sample a = mu + sigma * eps
    Var h = m.enc.forward(t, x);                                  // [2 n_a, N]
    Var mu = t.slice_rows(h, 0, na), lv = t.slice_rows(h, na, na);
    Mat<T> ea(na, N), ez(nz, N);
    for (Eigen::Index i = 0; i < ea.size(); i++) ea.data()[i] = T(rng.normal());
    for (Eigen::Index i = 0; i < ez.size(); i++) ez.data()[i] = T(rng.normal());
    Var a = t.add(mu, t.mul(t.exp(t.scale(lv, T(0.5))), t.constant(ea)));
    r.log_qa = t.sum(t.gauss_diag_logpdf(a, mu, lv));
    // p(x | a)
    r.log_px = t.sum(t.bernoulli_logits(m.dec.forward(t, a), x));
    // p(z | a, u): filter, smoother gains, joint backward sample
    KalmanResult<T> kr;
    kalman_filter(t, m, a, u, B, T_, kr);
    Var log_post;
    Var z = backward_sample(t, m, kr, ez, log_post);              // [n_z, N]
    r.log_post = t.sum(log_post);
    r.a = a;
    r.z = z;
    // p(a | z)
    Var H = t.param_batch(*m.H, na, nz);
    r.log_paz = t.sum(t.gauss_diag_logpdf(a, t.bmm(H, z), t.log(obs_variances(t, m))));
    // p(z | u): the prior on z_1, then the transition at the sampled states
    Var lp1 = t.sum(t.gauss_diag_logpdf(t.slice_cols(z, 0, B), t.param(*m.mu1), t.log(prior_variances(t, m))));
    if (T_ > 1) {
        const int N1 = (T_ - 1) * B;
        Var zprev = t.slice_cols(z, 0, N1), znext = t.slice_cols(z, B, N1);
        Var I = t.constant_batch(identity_col<T>(nz), nz, nz);
        Var F, Bu, q;
        transition(t, m, transition_heads(t, m), zprev, t.slice_cols(u, 0, N1), I, F, Bu, q);
        Var mean = t.add(t.bmm(F, zprev), Bu);
        r.log_pz = t.add(lp1, t.sum(t.gauss_diag_logpdf(znext, mean, t.log(q))));
    } else {
        r.log_pz = lp1;
    }
    const T inv = T(1.0 / N);
    r.D = t.scale(r.log_px, -inv);
    r.R = t.scale(t.sub(t.add(r.log_qa, r.log_post), t.add(r.log_paz, r.log_pz)), inv);
    Var loss;
    if (w.rate == 1 && w.distortion == 1 && w.offset == 0) loss = t.add(r.R, r.D);
    else {
        loss = t.add(w.rate == 1 ? r.R : t.scale(r.R, T(w.rate)), t.scale(r.D, T(w.distortion)));
        if (w.offset != 0) loss = t.add_scalar(loss, T(w.offset));
    }
    r.loss = t.scale(loss, T(scale));
    return r;
}

// ---- inference without sampling --------------------------------------------------------------

template <class T> void encode(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, Mat<T> & mu, Mat<T> & logvar) {
    t.reset();
    Var h = m.enc.forward(t, t.constant(X));
    mu = t.value(h).topRows(m.cfg.n_a);
    logvar = t.value(h).bottomRows(m.cfg.n_a);
}

template <class T> Mat<T> decode(Tape<T> & t, Ekvae<T> & m, const Mat<T> & a) {
    t.reset();
    return t.value(t.sigmoid(m.dec.forward(t, t.constant(a))));
}

template <class T>
void infer_sequences(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, const Mat<T> & U, int B, int T_, bool smooth, Posterior<T> & out) {
    t.reset();
    Var a = t.slice_rows(m.enc.forward(t, t.constant(X)), 0, m.cfg.n_a);
    KalmanResult<T> kr;
    kalman_filter(t, m, a, t.constant(U), B, T_, kr);
    if (smooth) rts_smoother(t, m, kr, true);
    out.m.resize(T_); out.P.resize(T_);
    out.ms.resize(smooth ? T_ : 0); out.Ps.resize(smooth ? T_ : 0);
    auto full = [&](Var v) { // broadcast [rows, 1] values (the prior) to B columns
        Mat<T> x = t.value(v);
        if (x.cols() == 1 && B > 1) x = x.replicate(1, B).eval();
        return x;
    };
    for (int k = 0; k < T_; k++) {
        out.m[k] = full(kr.m[k]);
        out.P[k] = full(kr.P[k]);
        if (smooth) {
            out.ms[k] = full(kr.ms[k]);
            out.Ps[k] = full(kr.Ps[k]);
        }
    }
}

template <class T>
void forecast(Tape<T> & t, Ekvae<T> & m, const Mat<T> & z, const Mat<T> & P, const Mat<T> & U, Mat<T> & zs, Mat<T> & Ps, Mat<T> * images) {
    const int nz = m.cfg.n_z, na = m.cfg.n_a;
    const int B = (int)z.cols();
    const int Hn = (int)(U.cols() / std::max(B, 1));
    t.reset();
    Var I = t.constant_batch(identity_col<T>(nz), nz, nz);
    Var u = t.constant(U);
    Var zk = t.constant(z);
    Var Pk = t.constant_batch(P, nz, nz);
    Var heads = transition_heads(t, m);
    std::vector<Var> zv, Pv;
    for (int k = 0; k < Hn; k++) {
        Var F, Bu, q;
        transition(t, m, heads, zk, t.slice_cols(u, k * B, B), I, F, Bu, q);
        kalman_predict(t, F, Bu, q, zk, Pk, zk, Pk);
        zv.push_back(zk);
        Pv.push_back(Pk);
    }
    zs.resize(nz, (Eigen::Index)Hn * B);
    Ps.resize(nz * nz, (Eigen::Index)Hn * B);
    for (int k = 0; k < Hn; k++) {
        zs.middleCols((Eigen::Index)k * B, B) = t.value(zv[k]);
        Ps.middleCols((Eigen::Index)k * B, B) = t.value(Pv[k]);
    }
    if (images && Hn > 0) {
        Var Hm = t.param_batch(*m.H, na, nz);
        Var a = t.bmm(Hm, t.constant(zs));
        *images = t.value(t.sigmoid(m.dec.forward(t, a)));
    }
}

template <class T> void filter_step(Tape<T> & t, Ekvae<T> & m, Mat<T> & z, Mat<T> & P, bool first, T u_prev, const Mat<T> * x) {
    const int nz = m.cfg.n_z, na = m.cfg.n_a;
    t.reset();
    Var I = t.constant_batch(identity_col<T>(nz), nz, nz);
    Var mp, Pp;
    if (first) {
        mp = t.param(*m.mu1);
        Pp = t.bdiag(prior_variances(t, m));
    } else {
        Var zk = t.constant(z), Pk = t.constant_batch(P, nz, nz);
        Var u = t.constant(Mat<T>::Constant(m.cfg.n_u, 1, u_prev));
        Var F, Bu, q;
        transition(t, m, transition_heads(t, m), zk, u, I, F, Bu, q);
        kalman_predict(t, F, Bu, q, zk, Pk, mp, Pp);
    }
    if (x) {
        Var a = t.slice_rows(m.enc.forward(t, t.constant(*x)), 0, na);
        Var H = t.param_batch(*m.H, na, nz);
        Var Rm = t.bdiag(obs_variances(t, m));
        Var mt, Pt;
        kalman_update(t, H, Rm, mp, Pp, a, mt, Pt);
        mp = mt;
        Pp = Pt;
    }
    z = t.value(mp);
    P = t.value(Pp);
}

template <class T> Readout readout(const Ekvae<T> & m, const Mat<T> & z, const Mat<T> & P, int col) {
    const int nz = m.cfg.n_z;
    const Eigen::VectorXd zz = z.col(col).template cast<double>();
    const Eigen::MatrixXd Pm = Eigen::Map<const Mat<T>>(P.col(col).data(), nz, nz).template cast<double>();
    const Eigen::MatrixXd W = m.readout_W.template cast<double>();
    const Eigen::VectorXd o = W * zz + m.readout_b.col(0).template cast<double>(); // (cos, sin, omega)
    const double c = o(0), s = o(1);
    Readout r;
    r.theta = std::atan2(s, c);
    r.omega = o(2);
    // d theta / d z = (c grad s - s grad c) / (c^2 + s^2);  d omega / d z = W row 2
    const Eigen::VectorXd g = (c * W.row(1) - s * W.row(0)).transpose() / std::max(c * c + s * s, 1e-12);
    const Eigen::VectorXd w = W.row(2).transpose();
    r.sigma_theta = std::sqrt(std::max(g.dot(Pm * g), 0.0));
    r.sigma_omega = std::sqrt(std::max(w.dot(Pm * w), 0.0));
    return r;
}

// ---- lambda ---------------------------------------------------------------------------------------

void LambdaState::init(const EkvaeConfig & cfg) {
    lambda = cfg.lambda_init;
    D_ma = 0;
    started = false;
    warm = cfg.lambda_rule == "ekvae" && cfg.lambda_warmup == "none";
}

void LambdaState::update(const EkvaeConfig & cfg, double D, int64_t step) {
    if (!std::isfinite(D)) return;
    const bool authors = cfg.lambda_rule == "authors";
    const double ma = authors ? 0.99 : cfg.lambda_ma;
    if (!started) {
        D_ma = D;
        started = true;
    } else {
        D_ma = ma * D_ma + (1 - ma) * D;
    }
    if (!warm) { // warm-up: lambda held until the moving average first meets the bound
        if (D_ma < cfg.D0) warm = true;
        return;
    }
    if (authors) {
        if (step % 100 != 0) return;
        const double f = D_ma < cfg.D0 ? -std::tanh(100.0 * (1.0 / lambda - 1.0)) : 1.0;
        const double factor = std::clamp(std::exp(cfg.lambda_rate * f * (D_ma - cfg.D0)), 0.9, 1.05);
        lambda = std::clamp(lambda * factor, cfg.lambda_min, cfg.lambda_max);
        return;
    }
    const double s = std::clamp(cfg.lambda_rate * (D_ma - cfg.D0), -cfg.lambda_max_step, cfg.lambda_max_step);
    lambda = std::clamp(lambda * std::exp(s), cfg.lambda_min, cfg.lambda_max);
}

LossWeights LambdaState::weights(const EkvaeConfig & cfg) const {
    if (cfg.objective == "elbo") return LossWeights::elbo();
    const bool rate_off = !warm && (cfg.lambda_rule == "authors" || cfg.lambda_warmup == "rate_off");
    if (rate_off) return {0, 1, 0};
    if (cfg.lambda_rule == "authors") return {1 / lambda, 1, -cfg.D0};
    LossWeights w = LossWeights::lagrangian(lambda, cfg.D0);
    if (cfg.lambda_scale == "normalized") {
        const double s = 1 / (1 + lambda);
        w = {w.rate * s, w.distortion * s, w.offset * s};
    }
    return w;
}

double lr_at(const EkvaeConfig & cfg, int64_t step) {
    if (cfg.lr_decay_end <= 0 || step <= cfg.lr_decay_start) return cfg.lr;
    if (step >= cfg.lr_decay_end) return cfg.lr * cfg.lr_final;
    const double x = (double)(step - cfg.lr_decay_start) / (double)(cfg.lr_decay_end - cfg.lr_decay_start);
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + std::cos(3.14159265358979323846 * x)));
}

// ---- batches ---------------------------------------------------------------------------------------

void sample_batch(const Dataset & d, int B, int window, Rng & rng, Mat<float> & X, Mat<float> & U) {
    const int D = d.W * d.W;
    X.resize(D, (Eigen::Index)window * B);
    U.resize(1, (Eigen::Index)window * B);
    for (int b = 0; b < B; b++) {
        const int n = (int)rng.below((uint64_t)d.N);
        const int t0 = (int)rng.below((uint64_t)(d.T - window + 1));
        for (int k = 0; k < window; k++) {
            std::memcpy(X.col((Eigen::Index)k * B + b).data(), d.image(n, t0 + k), sizeof(float) * D);
            U(0, (Eigen::Index)k * B + b) = d.action(n, t0 + k);
        }
    }
}

void sequences_batch(const Dataset & d, int first, int B, int t0, int T_, Mat<float> & X, Mat<float> & U) {
    const int D = d.W * d.W;
    X.resize(D, (Eigen::Index)T_ * B);
    U.resize(1, (Eigen::Index)T_ * B);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < T_; k++) {
            std::memcpy(X.col((Eigen::Index)k * B + b).data(), d.image(first + b, t0 + k), sizeof(float) * D);
            U(0, (Eigen::Index)k * B + b) = d.action(first + b, t0 + k);
        }
}

// ---- training -------------------------------------------------------------------------------------

// The initialisation seed of start k of a run with seed s (start 0 is the run's own seed).
static uint64_t start_seed(int s, int k) { return (uint64_t)s ^ ((uint64_t)k << 40); }

void Trainer::init(const EkvaeConfig & c, const Dataset * val) {
    cfg = c;
    validation = val;
    step = 0;
    rejected = 0;
    start = 0;
    best_start = -1;
    start_scores.clear();
    best_state.clear();
    begin_start(0);
}

void Trainer::begin_start(int k) {
    const uint64_t s = start_seed(cfg.seed, k);
    ekvae_init(model, cfg, s);
    opt = Adam<float>{};
    opt.cfg.lr = cfg.lr;
    opt.cfg.clip_norm = cfg.clip_norm;
    lam.init(cfg);
    rng.reseed(s ^ 0xD1B54A32D192ED03ULL);
    replicas.clear();
    tapes.clear();
}

HeldOut heldout_objective(Ekvae<float> & m, const Dataset & d, int max_sequences, uint64_t noise_seed) {
    Tape<float> t;
    Rng rng(noise_seed);
    Mat<float> X, U;
    const int N = std::min(d.N, max_sequences), chunk = 50;
    double Dsum = 0, Rsum = 0;
    for (int c0 = 0; c0 < N; c0 += chunk) {
        const int B = std::min(chunk, N - c0);
        sequences_batch(d, c0, B, 0, d.T, X, U);
        t.reset();
        EkvaeTerms r = ekvae_objective(t, m, X, U, B, d.T, rng, LossWeights::elbo());
        Dsum += t.scalar(r.D) * B;
        Rsum += t.scalar(r.R) * B;
    }
    HeldOut h;
    h.D = Dsum / N;
    h.R = Rsum / N;
    h.score = m.cfg.objective == "elbo" ? h.R + h.D : h.R + std::max(0.0, h.D - m.cfg.D0);
    if (!std::isfinite(h.score)) h.score = INFINITY;
    return h;
}

void Trainer::end_start(StepStats & st) {
    const HeldOut h = validation ? heldout_objective(model, *validation) : HeldOut{0, 0, INFINITY};
    st.start_done = true;
    st.start_score = h.score;
    st.start_D = h.D;
    st.start_R = h.R;
    start_scores.push_back(h.score);
    if (best_start < 0 || h.score < start_scores[best_start]) {
        best_start = start;
        best_state = checkpoint_impl(false);
    }
    start++;
    if (start < cfg.restarts) {
        begin_start(start);
        return;
    }
    // the last start ended: continue the best one (its weights, optimiser, lambda and RNG)
    const int64_t s = step, rj = rejected;
    std::string err;
    std::vector<uint8_t> bytes = std::move(best_state);
    best_state.clear();
    restore_impl(bytes.data(), bytes.size(), err, true);
    step = s;
    rejected = rj;
    st.chosen = best_start;
}

// Worker threads kept from one training step to the next (creating and joining a thread
// costs ~50 us here, 1% of a 2-thread step). run(f) calls f(0) on the caller's thread and
// f(1..n) on the workers, and returns when all have finished.
struct TrainerPool {
    std::vector<std::thread> threads;
    std::mutex mu;
    std::condition_variable wake, done;
    const std::function<void(int)> * job = nullptr;
    uint64_t generation = 0;
    int pending = 0;
    bool quit = false;

    explicit TrainerPool(int n) {
        for (int k = 1; k <= n; k++) threads.emplace_back([this, k] { loop(k); });
    }
    ~TrainerPool() {
        {
            std::lock_guard<std::mutex> l(mu);
            quit = true;
        }
        wake.notify_all();
        for (auto & t : threads) t.join();
    }
    void loop(int k) {
        uint64_t seen = 0;
        for (;;) {
            const std::function<void(int)> * f;
            {
                std::unique_lock<std::mutex> l(mu);
                wake.wait(l, [&] { return quit || generation != seen; });
                if (quit) return;
                seen = generation;
                f = job;
            }
            (*f)(k);
            std::lock_guard<std::mutex> l(mu);
            if (--pending == 0) done.notify_one();
        }
    }
    void run(const std::function<void(int)> & f) {
        {
            std::lock_guard<std::mutex> l(mu);
            job = &f;
            pending = (int)threads.size();
            generation++;
        }
        wake.notify_all();
        f(0);
        std::unique_lock<std::mutex> l(mu);
        done.wait(l, [&] { return pending == 0; });
    }
};

StepStats Trainer::train_step(const Mat<float> & X, const Mat<float> & U) {
    StepStats st;
    const int B = cfg.batch, T_ = (int)(X.cols() / B), D = (int)X.rows();
    const int nt = std::max(1, std::min(cfg.threads, B));
    while ((int)tapes.size() < nt) tapes.push_back(std::make_unique<Tape<float>>());
    while ((int)replicas.size() < nt - 1) {
        replicas.push_back(std::make_unique<Ekvae<float>>());
        ekvae_init(*replicas.back(), cfg, 0);
    }
    // sequences [b0[k], b0[k+1]) go to thread k; each thread gets its own noise stream
    std::vector<int> b0(nt + 1);
    for (int k = 0; k <= nt; k++) b0[k] = (int)((int64_t)B * k / nt);
    std::vector<uint64_t> seeds(nt);
    for (int k = 0; k < nt; k++) seeds[k] = rng.next_u64();
    std::vector<EkvaeTerms> terms(nt);
    Xs.resize(nt);
    Us.resize(nt);
    const LossWeights lw = lam.weights(cfg);
    flush_denormals();
    const std::function<void(int)> work = [&](int k) {
        flush_denormals();
        Ekvae<float> & mk = k == 0 ? model : *replicas[k - 1];
        if (k > 0) ekvae_copy_params(model, mk);
        const int Bk = b0[k + 1] - b0[k];
        if (nt > 1) { // this thread's sequences, time-major like the batch
            Xs[k].resize(D, (Eigen::Index)T_ * Bk);
            Us[k].resize(U.rows(), (Eigen::Index)T_ * Bk);
            for (int tt = 0; tt < T_; tt++) {
                Xs[k].middleCols((Eigen::Index)tt * Bk, Bk) = X.middleCols((Eigen::Index)tt * B + b0[k], Bk);
                Us[k].middleCols((Eigen::Index)tt * Bk, Bk) = U.middleCols((Eigen::Index)tt * B + b0[k], Bk);
            }
        }
        Tape<float> & t = *tapes[k];
        t.reset();
        Rng r(seeds[k]);
        mk.ps.zero_grad();
        terms[k] = ekvae_objective(t, mk, nt > 1 ? Xs[k] : X, nt > 1 ? Us[k] : U, Bk, T_, r, lw, (double)Bk / B);
        if (t.error().empty() && std::isfinite(t.scalar(terms[k].loss))) t.backward(terms[k].loss);
    };
    if (nt == 1) work(0);
    else {
        if (!pool || (int)pool->threads.size() != nt - 1) pool = std::make_shared<TrainerPool>(nt - 1);
        pool->run(work);
    }
    for (int k = 0; k < nt; k++) {
        Tape<float> & t = *tapes[k];
        const double w = (double)(b0[k + 1] - b0[k]) / B;
        if (!t.error().empty() && st.error.empty()) st.error = t.error();
        st.loss += t.scalar(terms[k].loss);
        st.D += w * t.scalar(terms[k].D);
        st.R += w * t.scalar(terms[k].R);
        const double inv = 1.0 / ((double)(b0[k + 1] - b0[k]) * T_);
        st.log_px += w * inv * t.scalar(terms[k].log_px);
        st.log_qa += w * inv * t.scalar(terms[k].log_qa);
        st.log_post += w * inv * t.scalar(terms[k].log_post);
        st.log_paz += w * inv * t.scalar(terms[k].log_paz);
        st.log_pz += w * inv * t.scalar(terms[k].log_pz);
        if (k > 0)
            for (size_t i = 0; i < model.ps.list.size(); i++) model.ps.list[i]->grad += replicas[k - 1]->ps.list[i]->grad;
    }
    st.elbo = -(st.D + st.R);
    const bool elbo = cfg.objective == "elbo";
    st.lambda = elbo ? 1.0 : lam.lambda; // the ELBO is the Lagrangian at lambda = 1
    st.start = start;           // (end_start below may move on to the next start)
    if (!st.error.empty() || !std::isfinite(st.loss)) {
        if (st.error.empty()) st.error = "non-finite loss";
        st.ok = false;
    } else {
        // keep a copy: an update that produced non-finite weights is undone
        backup.resize(model.ps.list.size());
        for (size_t i = 0; i < backup.size(); i++) backup[i] = model.ps.list[i]->value;
        opt.cfg.lr = lr_at(cfg, step + 1);
        st.lr = opt.cfg.lr;
        st.grad_norm = opt.update(model.ps);
        if (!std::isfinite(st.grad_norm)) {
            st.ok = false;
            st.error = "non-finite gradient";
        } else if (!params_finite(model.ps)) {
            for (size_t i = 0; i < backup.size(); i++) model.ps.list[i]->value = backup[i];
            st.ok = false;
            st.error = "the update produced non-finite weights";
        }
    }
    if (!st.ok) rejected++;
    else if (!elbo) lam.update(cfg, st.D, step + 1);
    st.D_ma = lam.D_ma;
    step++;
    if (choosing() && step == (int64_t)(start + 1) * cfg.restart_steps) end_start(st);
    else if (cfg.restarts > 1 && !choosing()) st.start = best_start;
    return st;
}

std::vector<uint8_t> Trainer::checkpoint() const { return checkpoint_impl(true); }

bool Trainer::restore(const uint8_t * data, size_t size, std::string & err) { return restore_impl(data, size, err, false); }

// with_starts: the restart bookkeeping too (the best finished start's state nested as bytes).
std::vector<uint8_t> Trainer::checkpoint_impl(bool with_starts) const {
    SafeTensors st;
    ekvae_to_safetensors(model, st);
    adam_to_safetensors(opt, model.ps, st);
    const double l[4] = {lam.lambda, lam.D_ma, lam.started ? 1.0 : 0.0, lam.warm ? 1.0 : 0.0};
    st.tensors["train.lambda"] = Tensor::from_f64(l, {4});
    st.tensors["train.rng"] = Tensor::from_u64(rng.s, {4});
    const int64_t s[2] = {step, rejected};
    st.tensors["train.step"] = Tensor::from_i64(s, {2});
    if (with_starts && cfg.restarts > 1) {
        const int64_t r[2] = {start, best_start};
        st.tensors["train.restart"] = Tensor::from_i64(r, {2});
        if (!start_scores.empty()) st.tensors["train.start_scores"] = Tensor::from_f64(start_scores.data(), {(int64_t)start_scores.size()});
        if (!best_state.empty()) {
            Tensor b;
            b.dtype = "U8";
            b.shape = {(int64_t)best_state.size()};
            b.data = best_state;
            st.tensors["train.best_start_state"] = b;
        }
    }
    st.metadata["kind"] = "checkpoint";
    return safetensors_serialize(st);
}

bool Trainer::restore_impl(const uint8_t * data, size_t size, std::string & err, bool nested) {
    SafeTensors st;
    if (!safetensors_parse(data, size, st, err)) return false;
    Ekvae<float> m;
    if (!ekvae_from_safetensors(st, m, err)) return false;
    Adam<float> o;
    if (!adam_from_safetensors(st, m.ps, o, err)) return false;
    const Tensor * lt = st.find("train.lambda"); // 3 values in files written before the warm-up existed
    const Tensor * l = st.require("train.lambda", "F64", {lt && lt->shape == std::vector<int64_t>{3} ? 3 : 4}, err);
    const Tensor * r = l ? st.require("train.rng", "U64", {4}, err) : nullptr;
    const Tensor * s = r ? st.require("train.step", "I64", {2}, err) : nullptr;
    if (!s) return false;
    double lv[4] = {0, 0, 0, 1};
    int64_t sv[2];
    std::memcpy(lv, l->data.data(), l->data.size());
    std::memcpy(sv, s->data.data(), sizeof sv);
    // A real run keeps lambda in [lambda_min, lambda_max], Adam's second moments >= 0, a
    // nonzero RNG state and step counts far below int64 overflow (which `step + train_steps`
    // and Adam's step++ would reach from a hostile file).
    const int64_t kMaxStep = int64_t(1) << 53;
    const EkvaeConfig & mc = m.cfg;
    if (!std::isfinite(lv[0]) || !std::isfinite(lv[1]) || lv[0] < mc.lambda_min || lv[0] > mc.lambda_max ||
        (lv[2] != 0 && lv[2] != 1) || (lv[3] != 0 && lv[3] != 1) || sv[0] < 0 || sv[1] < 0 || sv[0] > kMaxStep || sv[1] > sv[0] || o.step > kMaxStep) {
        err = "checkpoint training state is corrupt (lambda or step out of range)";
        return false;
    }
    for (size_t i = 0; i < o.v.size(); i++)
        if ((o.v[i].array() < 0.0f).any()) {
            err = "tensor 'adam.v." + m.ps.list[i]->name + "' holds negative second moments";
            return false;
        }
    uint64_t rs[4];
    std::memcpy(rs, r->data.data(), sizeof rs);
    if ((rs[0] | rs[1] | rs[2] | rs[3]) == 0) {
        err = "tensor 'train.rng': an all-zero generator state";
        return false;
    }
    // the restart bookkeeping (a run with restarts > 1 interrupted while choosing)
    int64_t rs2[2] = {m.cfg.restarts, -1};
    std::vector<double> scores;
    std::vector<uint8_t> best;
    if (!nested && m.cfg.restarts > 1) {
        const Tensor * rt = st.require("train.restart", "I64", {2}, err);
        if (!rt) return false;
        std::memcpy(rs2, rt->data.data(), sizeof rs2);
        const int64_t nsc = std::min<int64_t>(rs2[0], m.cfg.restarts);
        if (rs2[0] < 0 || rs2[0] > m.cfg.restarts || rs2[1] < -1 || rs2[1] >= nsc || (rs2[0] > 0 && rs2[1] < 0)) {
            err = "checkpoint restart state is corrupt (start " + std::to_string(rs2[0]) + ", best " + std::to_string(rs2[1]) + ")";
            return false;
        }
        if (nsc > 0) {
            const Tensor * sc = st.require("train.start_scores", "F64", {nsc}, err);
            if (!sc) return false;
            scores.resize((size_t)nsc);
            std::memcpy(scores.data(), sc->data.data(), sc->data.size());
        }
        if (rs2[0] > 0 && rs2[0] < m.cfg.restarts) {
            const Tensor * b = st.find("train.best_start_state");
            if (!b || b->dtype != "U8" || b->shape.size() != 1) {
                err = "checkpoint of a run choosing among starts lacks 'train.best_start_state'";
                return false;
            }
            Trainer probe;
            if (!probe.restore_impl(b->data.data(), b->data.size(), err, true)) {
                err = "train.best_start_state: " + err;
                return false;
            }
            best = b->data;
        }
    }
    if (!nested) {
        const Dataset * val = validation;
        init(m.cfg, val);
        start = (int)rs2[0];
        best_start = (int)rs2[1];
        start_scores = scores;
        best_state = best;
    } else {
        cfg = m.cfg;
        ekvae_init(model, cfg, 0);
        replicas.clear();
        tapes.clear();
    }
    ekvae_copy_params(m, model);
    o.cfg = opt.cfg;
    opt = std::move(o);
    lam.lambda = lv[0];
    lam.D_ma = lv[1];
    lam.started = lv[2] != 0;
    lam.warm = lv[3] != 0;
    std::memcpy(rng.s, r->data.data(), sizeof rng.s);
    step = sv[0];
    rejected = sv[1];
    return true;
}

// ---- evaluation ---------------------------------------------------------------------------------------

double r2_linear(const Eigen::MatrixXd & Zf, const Eigen::VectorXd & yf, const Eigen::MatrixXd & Zt, const Eigen::VectorXd & yt) {
    Eigen::MatrixXd A(Zf.rows(), Zf.cols() + 1), At(Zt.rows(), Zt.cols() + 1);
    A << Zf, Eigen::VectorXd::Ones(Zf.rows());
    At << Zt, Eigen::VectorXd::Ones(Zt.rows());
    const Eigen::VectorXd w = A.colPivHouseholderQr().solve(yf);
    const double ss_res = (At * w - yt).squaredNorm();
    const double ss_tot = (yt.array() - yt.mean()).square().sum();
    return ss_tot > 0 ? 1.0 - ss_res / ss_tot : 0.0;
}

double r2_knn(const Eigen::MatrixXd & Zf, const Eigen::VectorXd & yf, const Eigen::MatrixXd & Zt, const Eigen::VectorXd & yt, int k) {
    const Eigen::Index nf = Zf.rows();
    k = (int)std::min<Eigen::Index>(k, nf);
    std::vector<std::pair<double, Eigen::Index>> d(nf);
    double ss_res = 0;
    const Eigen::VectorXd nf2 = Zf.rowwise().squaredNorm();
    for (Eigen::Index i = 0; i < Zt.rows(); i++) {
        const Eigen::VectorXd dist = nf2 - 2.0 * Zf * Zt.row(i).transpose();
        for (Eigen::Index j = 0; j < nf; j++) d[j] = {dist(j), j};
        std::nth_element(d.begin(), d.begin() + (k - 1), d.end());
        double pred = 0;
        for (int j = 0; j < k; j++) pred += yf(d[j].second);
        pred /= k;
        ss_res += (pred - yt(i)) * (pred - yt(i));
    }
    const double ss_tot = (yt.array() - yt.mean()).square().sum();
    return ss_tot > 0 ? 1.0 - ss_res / ss_tot : 0.0;
}

namespace {
// Smoothed posterior means of every frame of sequences [first, first + n) (a at the encoder mean).
void smoothed_means(Ekvae<float> & m, const Dataset & d, int first, int n, Eigen::MatrixXd & Z, Eigen::MatrixXd & Y) {
    Tape<float> t;
    const int nz = m.cfg.n_z, chunk = 50;
    Z.resize((Eigen::Index)n * d.T, nz);
    Y.resize((Eigen::Index)n * d.T, 3);
    Mat<float> X, U;
    Posterior<float> post;
    for (int c0 = 0; c0 < n; c0 += chunk) {
        const int B = std::min(chunk, n - c0);
        sequences_batch(d, first + c0, B, 0, d.T, X, U);
        infer_sequences(t, m, X, U, B, d.T, true, post);
        for (int b = 0; b < B; b++)
            for (int k = 0; k < d.T; k++) {
                const Eigen::Index row = (Eigen::Index)(c0 + b) * d.T + k;
                Z.row(row) = post.ms[k].col(b).cast<double>().transpose();
                const double th = d.theta(first + c0 + b, k);
                Y(row, 0) = std::cos(th);
                Y(row, 1) = std::sin(th);
                Y(row, 2) = d.omega(first + c0 + b, k);
            }
    }
}

void fit_linear(const Eigen::MatrixXd & Z, const Eigen::MatrixXd & Y, Eigen::MatrixXd & W, Eigen::VectorXd & b) {
    Eigen::MatrixXd A(Z.rows(), Z.cols() + 1);
    A << Z, Eigen::VectorXd::Ones(Z.rows());
    const Eigen::MatrixXd sol = A.colPivHouseholderQr().solve(Y); // [n_z + 1, 3]
    W = sol.topRows(Z.cols()).transpose();
    b = sol.row(Z.cols()).transpose();
}

double wrapped_abs(double a) { return std::abs(wrap_angle(a)); }
} // namespace

void fit_readout(Ekvae<float> & m, const Dataset & d, int max_sequences) {
    Eigen::MatrixXd Z, Y, W;
    Eigen::VectorXd b;
    smoothed_means(m, d, 0, std::min(d.N, max_sequences), Z, Y);
    fit_linear(Z, Y, W, b);
    m.readout_W = W.cast<float>();
    m.readout_b = b.cast<float>();
    m.has_readout = true;
}

void evaluate(Ekvae<float> & m, const Dataset & d, EvalMetrics & e, bool fit, uint64_t seed) {
    const int Dp = d.W * d.W, N = d.N, Tf = 16, Hmax = 32;
    e = EvalMetrics{};
    e.sequences = N;
    e.horizons = {1, 5, 10, 20, 32};
    // r2 probes: fit on the first half of the sequences, score on the second
    Eigen::MatrixXd Z, Y;
    smoothed_means(m, d, 0, N, Z, Y);
    const Eigen::Index half = (Eigen::Index)(N / 2) * d.T;
    const Eigen::MatrixXd Zf = Z.topRows(half), Zt = Z.bottomRows(Z.rows() - half);
    double r2l[3], r2k[3];
    for (int j = 0; j < 3; j++) {
        r2l[j] = r2_linear(Zf, Y.col(j).head(half), Zt, Y.col(j).tail(Z.rows() - half));
        r2k[j] = r2_knn(Zf, Y.col(j).head(half), Zt, Y.col(j).tail(Z.rows() - half), 10);
    }
    e.r2_cos = r2l[0]; e.r2_sin = r2l[1]; e.r2_omega = r2l[2];
    e.r2knn_cos = r2k[0]; e.r2knn_sin = r2k[1]; e.r2knn_omega = r2k[2];
    if (fit) {
        Eigen::MatrixXd W;
        Eigen::VectorXd b;
        fit_linear(Zf, Y.topRows(half), W, b);
        m.readout_W = W.cast<float>();
        m.readout_b = b.cast<float>();
        m.has_readout = true;
    }
    // forecasts: filter frames 1..16, then predict frames 17..48 open-loop with the true actions
    if (d.T >= Tf + Hmax) {
        e.mse_curve.assign(Hmax, 0); e.baseline_mse_curve.assign(Hmax, 0);
        e.angle_err_curve.assign(Hmax, 0); e.baseline_angle_curve.assign(Hmax, 0);
        Tape<float> t;
        Mat<float> X, U, zs, Ps, imgs;
        Posterior<float> post;
        const int chunk = 50;
        for (int c0 = 0; c0 < N; c0 += chunk) {
            const int B = std::min(chunk, N - c0);
            sequences_batch(d, c0, B, 0, Tf, X, U);
            infer_sequences(t, m, X, U, B, Tf, false, post);
            Mat<float> Uf(1, (Eigen::Index)Hmax * B);
            for (int k = 0; k < Hmax; k++)
                for (int b = 0; b < B; b++) Uf(0, (Eigen::Index)k * B + b) = d.action(c0 + b, Tf - 1 + k);
            forecast(t, m, post.m[Tf - 1], post.P[Tf - 1], Uf, zs, Ps, &imgs);
            for (int b = 0; b < B; b++) {
                const int n = c0 + b;
                const float * last = d.image(n, Tf - 1);
                for (int k = 0; k < Hmax; k++) {
                    const float * truth = d.image(n, Tf + k);
                    const float * pred = imgs.col((Eigen::Index)k * B + b).data();
                    double se = 0, seb = 0;
                    for (int i = 0; i < Dp; i++) {
                        se += (pred[i] - truth[i]) * (pred[i] - truth[i]);
                        seb += (last[i] - truth[i]) * (last[i] - truth[i]);
                    }
                    const double th = d.theta(n, Tf + k);
                    e.mse_curve[k] += se / Dp / N;
                    e.baseline_mse_curve[k] += seb / Dp / N;
                    e.angle_err_curve[k] += wrapped_abs(image_angle(pred, d.W) - th) / N;
                    e.baseline_angle_curve[k] += wrapped_abs(image_angle(last, d.W) - th) / N;
                }
            }
        }
        for (int h : e.horizons) {
            e.forecast_mse.push_back(e.mse_curve[h - 1]);
            e.baseline_mse.push_back(e.baseline_mse_curve[h - 1]);
            e.forecast_angle_err.push_back(e.angle_err_curve[h - 1]);
            e.baseline_angle_err.push_back(e.baseline_angle_curve[h - 1]);
        }
    }
    // ELBO, distortion, rate per time step on whole sequences (a fixed noise seed)
    const HeldOut h = heldout_objective(m, d, N, seed + 77);
    e.distortion = h.D;
    e.rate = h.R;
    e.elbo = -(e.distortion + e.rate);
}

std::string metrics_to_json(const EvalMetrics & e, int indent) {
    json j;
    j["r2"] = {{"cos", e.r2_cos}, {"sin", e.r2_sin}, {"omega", e.r2_omega}};
    j["r2_knn"] = {{"cos", e.r2knn_cos}, {"sin", e.r2knn_sin}, {"omega", e.r2knn_omega}};
    auto at = [&](const std::vector<double> & v) {
        json o = json::object();
        for (size_t i = 0; i < e.horizons.size() && i < v.size(); i++) o[std::to_string(e.horizons[i])] = v[i];
        return o;
    };
    j["forecast_mse"] = at(e.forecast_mse);
    j["baseline_mse"] = at(e.baseline_mse);
    j["forecast_angle_err"] = at(e.forecast_angle_err);
    j["baseline_angle_err"] = at(e.baseline_angle_err);
    j["forecast_angle_err_curve"] = e.angle_err_curve;
    j["baseline_angle_err_curve"] = e.baseline_angle_curve;
    j["forecast_mse_curve"] = e.mse_curve;
    j["baseline_mse_curve"] = e.baseline_mse_curve;
    j["elbo"] = e.elbo;
    j["distortion"] = e.distortion;
    j["rate"] = e.rate;
    j["sequences"] = e.sequences;
    return j.dump(indent);
}

std::string metrics_nonfinite(const EvalMetrics & e) {
    const std::pair<const char *, double> scalars[] = {{"r2.cos", e.r2_cos}, {"r2.sin", e.r2_sin}, {"r2.omega", e.r2_omega},
                                                       {"r2_knn.cos", e.r2knn_cos}, {"r2_knn.sin", e.r2knn_sin}, {"r2_knn.omega", e.r2knn_omega},
                                                       {"elbo", e.elbo}, {"distortion", e.distortion}, {"rate", e.rate}};
    for (const auto & [name, v] : scalars)
        if (!std::isfinite(v)) return name;
    const std::pair<const char *, const std::vector<double> *> curves[] = {{"forecast_mse", &e.mse_curve}, {"forecast_angle_err", &e.angle_err_curve}};
    for (const auto & [name, v] : curves)
        for (size_t k = 0; k < v->size(); k++)
            if (!std::isfinite((*v)[k])) return std::string(name) + " at horizon " + std::to_string(k + 1);
    return "";
}

bool ekvae_check_outputs(Ekvae<float> & m, std::string & err) {
    DatasetConfig dc;
    dc.sequences = 2;
    dc.steps = 24;
    dc.image_size = m.cfg.image_size;
    dc.seed = 12345;
    const Dataset d = generate_dataset(dc);
    Tape<float> t;
    Mat<float> X, U, zs, Ps, imgs;
    Posterior<float> post;
    sequences_batch(d, 0, 2, 0, d.T, X, U);
    infer_sequences(t, m, X, U, 2, d.T, true, post);
    auto bad = [&](const char * what, const Mat<float> & x) {
        if (x.allFinite()) return false;
        err = std::string("the model's ") + what + " is not finite on a test sequence: its weights are unusable (retrain it, or "
              "take an earlier checkpoint)";
        return true;
    };
    for (int k = 0; k < d.T; k++)
        if (bad("filtered state", post.m[k]) || bad("filtered covariance", post.P[k]) || bad("smoothed state", post.ms[k])) return false;
    Mat<float> Uf = U.rightCols(2 * 8);
    forecast(t, m, post.m[d.T - 1], post.P[d.T - 1], Uf, zs, Ps, &imgs);
    if (bad("forecast state", zs) || bad("forecast covariance", Ps) || bad("decoded forecast image", imgs)) return false;
    const HeldOut h = heldout_objective(m, d, 2);
    if (!std::isfinite(h.D) || !std::isfinite(h.R)) {
        err = std::string("the model's objective (") + (std::isfinite(h.D) ? "rate" : "distortion") +
              ") is not finite on a test sequence: its weights are unusable (retrain it, or take an earlier checkpoint)";
        return false;
    }
    if (m.has_readout) {
        const Readout r = readout(m, post.m[d.T - 1], post.P[d.T - 1], 0);
        if (!std::isfinite(r.theta + r.omega + r.sigma_theta + r.sigma_omega)) {
            err = "the model's read-out (angle and velocity) is not finite on a test sequence: the file is unusable";
            return false;
        }
    }
    return true;
}

// ---- explicit instantiations ------------------------------------------------------------------

#define EKVAE_INSTANTIATE(T)                                                                                                 \
    template void ekvae_init(Ekvae<T> &, const EkvaeConfig &, uint64_t);                                                     \
    template void ekvae_to_safetensors(const Ekvae<T> &, SafeTensors &);                                                     \
    template bool ekvae_from_safetensors(const SafeTensors &, Ekvae<T> &, std::string &);                                   \
    template bool ekvae_load(const uint8_t *, size_t, Ekvae<T> &, std::string &);                                            \
    template void kalman_filter(Tape<T> &, Ekvae<T> &, Var, Var, int, int, KalmanResult<T> &);                               \
    template void rts_smoother(Tape<T> &, Ekvae<T> &, KalmanResult<T> &, bool);                                              \
    template Var backward_sample(Tape<T> &, Ekvae<T> &, KalmanResult<T> &, const Mat<T> &, Var &);                           \
    template EkvaeTerms ekvae_objective(Tape<T> &, Ekvae<T> &, const Mat<T> &, const Mat<T> &, int, int, Rng &, const LossWeights &, double); \
    template void encode(Tape<T> &, Ekvae<T> &, const Mat<T> &, Mat<T> &, Mat<T> &);                                         \
    template Mat<T> decode(Tape<T> &, Ekvae<T> &, const Mat<T> &);                                                           \
    template void infer_sequences(Tape<T> &, Ekvae<T> &, const Mat<T> &, const Mat<T> &, int, int, bool, Posterior<T> &);    \
    template void forecast(Tape<T> &, Ekvae<T> &, const Mat<T> &, const Mat<T> &, const Mat<T> &, Mat<T> &, Mat<T> &, Mat<T> *); \
    template void filter_step(Tape<T> &, Ekvae<T> &, Mat<T> &, Mat<T> &, bool, T, const Mat<T> *);                           \
    template Readout readout(const Ekvae<T> &, const Mat<T> &, const Mat<T> &, int);

EKVAE_INSTANTIATE(float)
EKVAE_INSTANTIATE(double)
template void ekvae_copy_params(const Ekvae<float> &, Ekvae<float> &);
template void ekvae_copy_params(const Ekvae<float> &, Ekvae<double> &);
template void ekvae_copy_params(const Ekvae<double> &, Ekvae<float> &);
template void ekvae_copy_params(const Ekvae<double> &, Ekvae<double> &);

} // namespace ekvae
