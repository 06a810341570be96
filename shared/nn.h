// nn.h: named parameters, Linear layers and MLPs on the Tape, Adam and SGD with
// gradient-norm clipping, and saving/loading parameters and optimiser state by name.
//
// Layout: a layer's input is [n_in, B] (one column per sample), its weight W [n_out, n_in],
// its bias b [n_out, 1]; y = W x + b.
#pragma once
#include "autodiff.h"
#include "rng.h"
#include "safetensors.h"

#include <memory>
#include <string>
#include <vector>

namespace ekvae {

// Owns every trainable matrix of a model, in creation order, addressable by name.
template <class T> struct Params {
    std::vector<std::unique_ptr<Param<T>>> list;

    Param<T> & add(const std::string & name, int rows, int cols); // zero-initialised
    Param<T> * find(const std::string & name) const;
    void zero_grad();
    size_t numel() const;
};

// Initialisation: Kaiming (He) normal for ReLU layers, Xavier (Glorot) normal otherwise;
// biases start at zero.
template <class T> struct Linear {
    Param<T> * W = nullptr; // [n_out, n_in]
    Param<T> * b = nullptr; // [n_out, 1]
    Var forward(Tape<T> & t, Var x, Activation act = Activation::None) const {
        return t.linear(x, t.param(*W), t.param(*b), act);
    }
};

template <class T> Linear<T> make_linear(Params<T> & ps, const std::string & name, int n_in, int n_out,
                                         Activation followed_by, Rng & rng);
// Draws the initial weights of an existing layer (the same draws as make_linear); zero bias.
template <class T> void init_linear(const Linear<T> & l, Activation followed_by, Rng & rng);

// An MLP: Linear layers with `act` between them and none after the last.
template <class T> struct MLP {
    std::vector<Linear<T>> layers;
    Activation act = Activation::Relu;
    Var forward(Tape<T> & t, Var x) const;
};

// sizes = {n_in, hidden..., n_out}; parameters are named "<name>.<i>.W" and "<name>.<i>.b".
template <class T> MLP<T> make_mlp(Params<T> & ps, const std::string & name, const std::vector<int> & sizes,
                                   Activation act, Rng & rng);

struct AdamConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double clip_norm = 0.0; // global gradient-norm clipping; 0 = off
};

// Adam with bias correction. The moments are kept per parameter, in the order of Params::list.
template <class T> struct Adam {
    AdamConfig cfg;
    int64_t step = 0;
    std::vector<Mat<T>> m, v;

    // Applies one update from the accumulated gradients. Returns the global gradient norm
    // before clipping. A non-finite gradient norm leaves parameters and moments untouched
    // (the caller reports and skips the step).
    double update(Params<T> & ps);
};

// Plain SGD with the same clipping; returns the gradient norm (non-finite: no update).
template <class T> double sgd_update(Params<T> & ps, double lr, double clip_norm = 0.0);

// Global L2 norm of all gradients.
template <class T> double grad_norm(const Params<T> & ps);
// True when every parameter value is finite.
template <class T> bool params_finite(const Params<T> & ps);

// Parameters <-> safetensors tensors (F32 [rows, cols], named as the parameter, with an
// optional prefix). Loading requires every parameter to be present with its shape and finite
// values; returns false and sets err naming the first offending tensor otherwise.
template <class T> void params_to_safetensors(const Params<T> & ps, SafeTensors & st, const std::string & prefix = "");
template <class T> bool params_from_safetensors(const SafeTensors & st, Params<T> & ps, std::string & err,
                                                const std::string & prefix = "");
// Adam state as tensors "adam.m.<name>", "adam.v.<name>" and "adam.step" (I64 [1]).
template <class T> void adam_to_safetensors(const Adam<T> & opt, const Params<T> & ps, SafeTensors & st);
template <class T> bool adam_from_safetensors(const SafeTensors & st, const Params<T> & ps, Adam<T> & opt, std::string & err);

} // namespace ekvae
