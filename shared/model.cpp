// model.cpp: the parameter table, initialisation, the model file and the read-out (see model.h).
#include "model.h"

#include <algorithm>
#include <cmath>

namespace ekvae {

namespace {
double inv_softplus(double y) { return std::log(std::expm1(y)); }

// The longest "config" metadata accepted from a model file: a real config is under 1 KB.
constexpr size_t kMaxConfigJson = 64 << 10;

std::vector<int> layer_sizes(int in, const std::vector<int> & hidden, int out) {
    std::vector<int> s = {in};
    s.insert(s.end(), hidden.begin(), hidden.end());
    s.push_back(out);
    return s;
}
} // namespace

std::vector<ParamSpec> param_table(const EkvaeConfig & c) {
    std::vector<ParamSpec> s;
    auto mlp = [&](const std::string & name, const std::vector<int> & sz) {
        for (size_t i = 0; i + 1 < sz.size(); i++) {
            s.push_back({name + "." + std::to_string(i) + ".W", sz[i + 1], sz[i]});
            s.push_back({name + "." + std::to_string(i) + ".b", sz[i + 1], 1});
        }
    };
    const int D = c.image_size * c.image_size, na = c.n_a, nz = c.n_z, nu = c.n_u, K = c.K;
    mlp("enc", layer_sizes(D, c.enc_hidden, 2 * na));
    mlp("dec", layer_sizes(na, c.dec_hidden, D));
    mlp("alpha", layer_sizes(nz + nu, c.alpha_hidden, K));
    s.push_back({"H", na * nz, 1});
    s.push_back({"r_raw", na, 1});
    s.push_back({"A", nz * nz, K});
    s.push_back({"B", nz * nu, K});
    s.push_back({"q_raw", nz, K});
    s.push_back({"mu1", nz, 1});
    s.push_back({"p1_raw", nz, 1});
    return s;
}

double param_count(const EkvaeConfig & c) {
    double n = 0;
    for (const ParamSpec & p : param_table(c)) n += (double)p.rows * (double)p.cols;
    return n;
}

template <class T> void ekvae_init(Ekvae<T> & m, const EkvaeConfig & cfg, uint64_t seed) {
    m.cfg = cfg;
    m.world = make_world(cfg.world);
    m.ps.list.clear();
    for (const ParamSpec & p : param_table(cfg)) m.ps.add(p.name, (int)p.rows, (int)p.cols);
    auto mlp = [&](const std::string & name, size_t hidden) {
        MLP<T> r;
        r.act = Activation::Relu;
        for (size_t i = 0; i <= hidden; i++)
            r.layers.push_back({m.ps.find(name + "." + std::to_string(i) + ".W"), m.ps.find(name + "." + std::to_string(i) + ".b")});
        return r;
    };
    m.enc = mlp("enc", cfg.enc_hidden.size());
    m.dec = mlp("dec", cfg.dec_hidden.size());
    m.alpha = mlp("alpha", cfg.alpha_hidden.size());
    m.H = m.ps.find("H");
    m.r_raw = m.ps.find("r_raw");
    m.A = m.ps.find("A");
    m.Bm = m.ps.find("B");
    m.q_raw = m.ps.find("q_raw");
    m.mu1 = m.ps.find("mu1");
    m.p1_raw = m.ps.find("p1_raw");
    // initial values, drawn in this order from the seed (Kaiming for layers followed by a ReLU,
    // Xavier for the last layer of each MLP)
    Rng rng(seed * 0x9E3779B97F4A7C15ULL + 12345);
    for (const MLP<T> * net : {&m.enc, &m.dec, &m.alpha})
        for (size_t i = 0; i < net->layers.size(); i++)
            init_linear(net->layers[i], i + 1 < net->layers.size() ? Activation::Relu : Activation::None, rng);
    // the decoder starts predicting a mostly dark frame (the rod covers few pixels)
    m.dec.layers.back().b->value.setConstant(T(-3));
    for (Eigen::Index i = 0; i < m.H->value.size(); i++) m.H->value(i) = T(rng.normal() / std::sqrt((double)cfg.n_z));
    m.r_raw->value.setConstant(T(inv_softplus(0.1)));
    for (Eigen::Index i = 0; i < m.A->value.size(); i++) m.A->value(i) = T(cfg.init_scale_A * rng.normal());
    for (Eigen::Index i = 0; i < m.Bm->value.size(); i++) m.Bm->value(i) = T(cfg.init_scale_A * rng.normal());
    m.q_raw->value.setConstant(T(inv_softplus(0.01)));
    m.p1_raw->value.setConstant(T(inv_softplus(1.0)));
    const int ny = m.world ? m.world->targets() : 0;
    m.readout_W = Mat<T>::Zero(ny, cfg.n_z);
    m.readout_b = Mat<T>::Zero(ny, 1);
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
        st.tensors["readout.W"] = Tensor::from_f32(W.data(), {(int64_t)W.rows(), (int64_t)m.cfg.n_z});
        Mat<float> b = m.readout_b.template cast<float>();
        st.tensors["readout.b"] = Tensor::from_f32(b.data(), {(int64_t)b.rows()});
    }
    st.metadata["format"] = kModelFormat;
    st.metadata["version"] = std::to_string(kModelVersion);
    st.metadata["config"] = config_to_json(m.cfg, -1);
}

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
    for (const ParamSpec & p : param_table(cfg))
        if (!st.require(p.name, "F32", {p.rows, p.cols}, err)) return false;
    ekvae_init(m, cfg, 0);
    if (!params_from_safetensors(st, m.ps, err)) return false;
    const Tensor * W = st.find("readout.W");
    const Tensor * b = st.find("readout.b");
    if (W || b) {
        const int64_t ny = m.world->targets();
        const Tensor * Wc = st.require("readout.W", "F32", {ny, (int64_t)cfg.n_z}, err);
        const Tensor * bc = Wc ? st.require("readout.b", "F32", {ny}, err) : nullptr;
        if (!Wc || !bc) return false;
        std::vector<float> w = Wc->to_f32(), bb = bc->to_f32();
        for (float x : w) if (!std::isfinite(x)) { err = "tensor 'readout.W' holds NaN or Inf values"; return false; }
        for (float x : bb) if (!std::isfinite(x)) { err = "tensor 'readout.b' holds NaN or Inf values"; return false; }
        m.readout_W = Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(w.data(), ny, cfg.n_z).template cast<T>();
        m.readout_b = Eigen::Map<Mat<float>>(bb.data(), ny, 1).template cast<T>();
        m.has_readout = true;
    }
    return true;
}

template <class T> bool ekvae_load(const uint8_t * data, size_t size, Ekvae<T> & m, std::string & err) {
    SafeTensors st;
    if (!safetensors_parse(data, size, st, err)) return false;
    return ekvae_from_safetensors(st, m, err);
}

template <class T> Readout readout(const Ekvae<T> & m, const Mat<T> & z, const Mat<T> & P, int col) {
    const World & w = *m.world;
    const int nz = m.cfg.n_z;
    const Eigen::VectorXd zz = z.col(col).template cast<double>();
    const Eigen::MatrixXd Pm = Eigen::Map<const Mat<T>>(P.col(col).data(), nz, nz).template cast<double>();
    const Eigen::MatrixXd W = m.readout_W.template cast<double>();
    const Eigen::VectorXd o = W * zz + m.readout_b.col(0).template cast<double>(); // the targets
    Readout r;
    r.value.resize(w.S);
    r.sigma.resize(w.S);
    int k = 0; // the row of component i's first target
    for (int i = 0; i < w.S; i++) {
        Eigen::VectorXd g;
        if (w.angle[i]) {
            // theta = atan2(sin, cos);  d theta / d z = (c grad s - s grad c) / (c^2 + s^2)
            const double c = o(k), s = o(k + 1);
            r.value[i] = std::atan2(s, c);
            g = (c * W.row(k + 1) - s * W.row(k)).transpose() / std::max(c * c + s * s, 1e-12);
            k += 2;
        } else {
            r.value[i] = o(k);
            g = W.row(k).transpose();
            k += 1;
        }
        r.sigma[i] = std::sqrt(std::max(g.dot(Pm * g), 0.0));
    }
    return r;
}

#define EKVAE_MODEL_INSTANTIATE(T)                                                                                           \
    template void ekvae_init(Ekvae<T> &, const EkvaeConfig &, uint64_t);                                                     \
    template void ekvae_to_safetensors(const Ekvae<T> &, SafeTensors &);                                                     \
    template bool ekvae_from_safetensors(const SafeTensors &, Ekvae<T> &, std::string &);                                   \
    template bool ekvae_load(const uint8_t *, size_t, Ekvae<T> &, std::string &);                                            \
    template Readout readout(const Ekvae<T> &, const Mat<T> &, const Mat<T> &, int);

EKVAE_MODEL_INSTANTIATE(float)
EKVAE_MODEL_INSTANTIATE(double)
template void ekvae_copy_params(const Ekvae<float> &, Ekvae<float> &);
template void ekvae_copy_params(const Ekvae<float> &, Ekvae<double> &);
template void ekvae_copy_params(const Ekvae<double> &, Ekvae<float> &);
template void ekvae_copy_params(const Ekvae<double> &, Ekvae<double> &);

} // namespace ekvae
