// model.h: the EKVAE's parameters (one table of names and shapes), their initialisation, the
// model file, and the linear read-out of the world's state from the latent state.
//
//   encoder     q(a_t | x_t)  = N(mu(x_t), diag sigma^2(x_t))       enc: D -> ... -> 2 n_a
//   decoder     p(x_t | a_t)  = Bernoulli(sigmoid(logits(a_t)))      dec: n_a -> ... -> D
//   observation p(a_t | z_t)  = N(H z_t, R),  R = diag(softplus(r_raw) + r_min)
//   transition  alpha = softmax(MLP([z_{t-1}, u_{t-1}])) [K]; F = I + sum_k alpha_k A_k,
//               B = sum_k alpha_k B_k, Q = diag(softplus(sum_k alpha_k q_k) + q_min)
//   prior       p(z_1) = N(mu_1, diag(softplus(p1_raw)))
#pragma once
#include "autodiff.h"
#include "config.h"
#include "nn.h"
#include "safetensors.h"
#include "world.h"

#include <memory>
#include <string>
#include <vector>

namespace ekvae {

constexpr const char * kModelFormat = "ekvae-model";
constexpr int kModelVersion = 2; // 2: a checksum in the metadata (version 1 files, without one, still load)

// One trainable matrix of the model: its name (as in the model file) and shape [rows, cols].
struct ParamSpec {
    std::string name;
    int64_t rows = 0, cols = 0;
};
// Every parameter of a model with this config, in creation order (the order of Params::list
// and of the optimiser's state): the one table that ekvae_init, the loader (which checks a
// file's tensors before allocating anything) and param_count use.
std::vector<ParamSpec> param_table(const EkvaeConfig & cfg);
double param_count(const EkvaeConfig & cfg); // sum of rows * cols (double: a hostile config may overflow)

template <class T> struct Ekvae {
    EkvaeConfig cfg;
    std::shared_ptr<const World> world; // made from cfg.world by ekvae_init
    Params<T> ps;
    MLP<T> enc;           // D -> ... -> 2 n_a  (mu, log sigma^2)
    MLP<T> dec;           // n_a -> ... -> D    (logits)
    MLP<T> alpha;         // n_z + n_u -> ... -> K
    Param<T> * H = nullptr;     // [n_a*n_z, 1]  (column-major n_a x n_z)
    Param<T> * r_raw = nullptr; // [n_a, 1]      R = diag(softplus(r_raw) + r_min)
    Param<T> * A = nullptr;     // [n_z*n_z, K]
    Param<T> * Bm = nullptr;    // [n_z*n_u, K]
    Param<T> * q_raw = nullptr; // [n_z, K]      Q = diag(softplus(q_raw alpha) + q_min)
    Param<T> * mu1 = nullptr;   // [n_z, 1]
    Param<T> * p1_raw = nullptr;// [n_z, 1]      P_1 = diag(softplus(p1_raw))
    // Linear read-out z -> the world's read-out targets (pendulum: cos theta, sin theta,
    // omega), fitted after training (not trained).
    Mat<T> readout_W;           // [targets, n_z]
    Mat<T> readout_b;           // [targets, 1]
    bool has_readout = false;

    Ekvae() = default;
    Ekvae(const Ekvae &) = delete;
    Ekvae & operator=(const Ekvae &) = delete;
};

// Builds a model with freshly initialised parameters (seeded). cfg must be valid.
template <class T> void ekvae_init(Ekvae<T> & m, const EkvaeConfig & cfg, uint64_t seed);
// Copies parameter values (same architecture).
template <class T, class S> void ekvae_copy_params(const Ekvae<S> & from, Ekvae<T> & to);

// ---- the model file ---------------------------------------------------------------------
// Model weights (+ read-out) with the full config in __metadata__ ("config": JSON).
template <class T> void ekvae_to_safetensors(const Ekvae<T> & m, SafeTensors & st);
// Loads a model from parsed safetensors. Checks format/version, the config, and every tensor's
// name, shape and finiteness; returns false and sets err otherwise (m is left unusable).
template <class T> bool ekvae_from_safetensors(const SafeTensors & st, Ekvae<T> & m, std::string & err);
// Same, from the bytes of a file.
template <class T> bool ekvae_load(const uint8_t * data, size_t size, Ekvae<T> & m, std::string & err);

// ---- the read-out ------------------------------------------------------------------------
// The world's state read off column `col` of z [n_z, N] with covariances P [n_z*n_z, N]
// through the linear read-out: an angle as atan2(sin, cos) of its two targets, any other
// component directly, each with its standard deviation by linearisation (sigma^2 = g^T P g,
// g the gradient of the quantity in z). value, sigma: [S]. Requires has_readout.
struct Readout {
    std::vector<double> value, sigma;
};
template <class T> Readout readout(const Ekvae<T> & m, const Mat<T> & z, const Mat<T> & P, int col = 0);

} // namespace ekvae
