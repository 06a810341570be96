// nn.cpp: layers, optimisers and parameter (de)serialisation (see nn.h).
#include "nn.h"

#include <cmath>
#include <cstring>

namespace ekvae {

template <class T> Param<T> & Params<T>::add(const std::string & name, int rows, int cols) {
    auto p = std::make_unique<Param<T>>();
    p->name = name;
    p->value.setZero(rows, cols);
    p->grad.setZero(rows, cols);
    list.push_back(std::move(p));
    return *list.back();
}

template <class T> Param<T> * Params<T>::find(const std::string & name) const {
    for (auto & p : list)
        if (p->name == name) return p.get();
    return nullptr;
}

template <class T> void Params<T>::zero_grad() {
    for (auto & p : list) p->grad.setZero(p->value.rows(), p->value.cols());
}

template <class T> size_t Params<T>::numel() const {
    size_t n = 0;
    for (auto & p : list) n += (size_t)p->value.size();
    return n;
}

template <class T>
Linear<T> make_linear(Params<T> & ps, const std::string & name, int n_in, int n_out, Activation followed_by, Rng & rng) {
    Linear<T> l;
    l.W = &ps.add(name + ".W", n_out, n_in);
    l.b = &ps.add(name + ".b", n_out, 1);
    init_linear(l, followed_by, rng);
    return l;
}

template <class T> void init_linear(const Linear<T> & l, Activation followed_by, Rng & rng) {
    // Kaiming: std = sqrt(2 / n_in); Xavier: std = sqrt(2 / (n_in + n_out))
    const double n_in = (double)l.W->value.cols(), n_out = (double)l.W->value.rows();
    const double sd = followed_by == Activation::Relu ? std::sqrt(2.0 / n_in) : std::sqrt(2.0 / (n_in + n_out));
    for (Eigen::Index i = 0; i < l.W->value.size(); i++) l.W->value.data()[i] = T(sd * rng.normal());
    l.b->value.setZero();
}

template <class T> Var MLP<T>::forward(Tape<T> & t, Var x) const {
    for (size_t i = 0; i < layers.size(); i++) x = layers[i].forward(t, x, i + 1 < layers.size() ? act : Activation::None);
    return x;
}

template <class T>
MLP<T> make_mlp(Params<T> & ps, const std::string & name, const std::vector<int> & sizes, Activation act, Rng & rng) {
    MLP<T> mlp;
    mlp.act = act;
    for (size_t i = 0; i + 1 < sizes.size(); i++) {
        const bool last = i + 2 == sizes.size();
        mlp.layers.push_back(make_linear(ps, name + "." + std::to_string(i), sizes[i], sizes[i + 1],
                                         last ? Activation::None : act, rng));
    }
    return mlp;
}

template <class T> double grad_norm(const Params<T> & ps) {
    double s = 0;
    for (auto & p : ps.list) s += (double)p->grad.squaredNorm();
    return std::sqrt(s);
}

template <class T> bool params_finite(const Params<T> & ps) {
    for (auto & p : ps.list)
        if (!p->value.allFinite()) return false;
    return true;
}

template <class T> double Adam<T>::update(Params<T> & ps) {
    const double norm = grad_norm(ps);
    if (!std::isfinite(norm)) return norm;
    if (m.size() != ps.list.size()) {
        m.clear();
        v.clear();
        for (auto & p : ps.list) {
            m.push_back(Mat<T>::Zero(p->value.rows(), p->value.cols()));
            v.push_back(Mat<T>::Zero(p->value.rows(), p->value.cols()));
        }
    }
    const T clip = (cfg.clip_norm > 0 && norm > cfg.clip_norm) ? T(cfg.clip_norm / norm) : T(1);
    step++;
    const T b1 = T(cfg.beta1), b2 = T(cfg.beta2);
    // bias-corrected step size: lr sqrt(1 - b2^t) / (1 - b1^t)
    const T lr_t = T(cfg.lr * std::sqrt(1.0 - std::pow(cfg.beta2, (double)step)) / (1.0 - std::pow(cfg.beta1, (double)step)));
    const T eps = T(cfg.eps * std::sqrt(1.0 - std::pow(cfg.beta2, (double)step)));
    for (size_t i = 0; i < ps.list.size(); i++) {
        Param<T> & p = *ps.list[i];
        auto g = (clip * p.grad.array());
        m[i].array() = b1 * m[i].array() + (T(1) - b1) * g;
        v[i].array() = b2 * v[i].array() + (T(1) - b2) * g.square();
        p.value.array() -= lr_t * m[i].array() / (v[i].array().sqrt() + eps);
    }
    return norm;
}

template <class T> double sgd_update(Params<T> & ps, double lr, double clip_norm) {
    const double norm = grad_norm(ps);
    if (!std::isfinite(norm)) return norm;
    const double c = (clip_norm > 0 && norm > clip_norm) ? clip_norm / norm : 1.0;
    for (auto & p : ps.list) p->value -= T(lr * c) * p->grad;
    return norm;
}

template <class T> static Tensor to_tensor(const Mat<T> & x) {
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = x.template cast<float>();
    return Tensor::from_f32(r.data(), {(int64_t)x.rows(), (int64_t)x.cols()});
}

template <class T> static bool from_tensor(const SafeTensors & st, const std::string & name, Mat<T> & x, std::string & err) {
    const Tensor * t = st.require(name, "F32", {(int64_t)x.rows(), (int64_t)x.cols()}, err);
    if (!t) return false;
    std::vector<float> f = t->to_f32();
    Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> r(f.data(), x.rows(), x.cols());
    if (!r.allFinite()) {
        err = "tensor '" + name + "' holds NaN or Inf values";
        return false;
    }
    x = r.template cast<T>();
    return true;
}

template <class T> void params_to_safetensors(const Params<T> & ps, SafeTensors & st, const std::string & prefix) {
    for (auto & p : ps.list) st.tensors[prefix + p->name] = to_tensor(p->value);
}

template <class T> bool params_from_safetensors(const SafeTensors & st, Params<T> & ps, std::string & err, const std::string & prefix) {
    // read into copies first, so a failure leaves the parameters untouched
    std::vector<Mat<T>> vals;
    for (auto & p : ps.list) {
        vals.push_back(p->value);
        if (!from_tensor(st, prefix + p->name, vals.back(), err)) return false;
    }
    for (size_t i = 0; i < ps.list.size(); i++) ps.list[i]->value = vals[i];
    return true;
}

template <class T> void adam_to_safetensors(const Adam<T> & opt, const Params<T> & ps, SafeTensors & st) {
    for (size_t i = 0; i < ps.list.size(); i++) {
        const std::string & n = ps.list[i]->name;
        const bool has = i < opt.m.size();
        const Mat<T> z = Mat<T>::Zero(ps.list[i]->value.rows(), ps.list[i]->value.cols());
        st.tensors["adam.m." + n] = to_tensor(has ? opt.m[i] : z);
        st.tensors["adam.v." + n] = to_tensor(has ? opt.v[i] : z);
    }
    st.tensors["adam.step"] = Tensor::from_i64(&opt.step, {1});
}

template <class T> bool adam_from_safetensors(const SafeTensors & st, const Params<T> & ps, Adam<T> & opt, std::string & err) {
    const Tensor * step = st.require("adam.step", "I64", {1}, err);
    if (!step) return false;
    int64_t s = 0;
    std::memcpy(&s, step->data.data(), sizeof s);
    if (s < 0) {
        err = "tensor 'adam.step' is negative";
        return false;
    }
    std::vector<Mat<T>> m, v;
    for (auto & p : ps.list) {
        m.push_back(Mat<T>::Zero(p->value.rows(), p->value.cols()));
        v.push_back(Mat<T>::Zero(p->value.rows(), p->value.cols()));
        if (!from_tensor(st, "adam.m." + p->name, m.back(), err)) return false;
        if (!from_tensor(st, "adam.v." + p->name, v.back(), err)) return false;
    }
    opt.m = std::move(m);
    opt.v = std::move(v);
    opt.step = s;
    return true;
}

#define EKVAE_NN_INSTANTIATE(T)                                                                                      \
    template struct Params<T>;                                                                                       \
    template struct MLP<T>;                                                                                          \
    template struct Adam<T>;                                                                                         \
    template Linear<T> make_linear(Params<T> &, const std::string &, int, int, Activation, Rng &);                   \
    template void init_linear(const Linear<T> &, Activation, Rng &);                                                 \
    template MLP<T> make_mlp(Params<T> &, const std::string &, const std::vector<int> &, Activation, Rng &);         \
    template double sgd_update(Params<T> &, double, double);                                                         \
    template double grad_norm(const Params<T> &);                                                                    \
    template bool params_finite(const Params<T> &);                                                                  \
    template void params_to_safetensors(const Params<T> &, SafeTensors &, const std::string &);                      \
    template bool params_from_safetensors(const SafeTensors &, Params<T> &, std::string &, const std::string &);      \
    template void adam_to_safetensors(const Adam<T> &, const Params<T> &, SafeTensors &);                            \
    template bool adam_from_safetensors(const SafeTensors &, const Params<T> &, Adam<T> &, std::string &);

EKVAE_NN_INSTANTIATE(float)
EKVAE_NN_INSTANTIATE(double)

} // namespace ekvae
