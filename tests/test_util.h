// test_util.h: helpers the core's tests share (defined in test_util.cpp, compiled once): random matrices, the central-difference
// gradient check, a linear-Gaussian model with its dense joint-Gaussian posterior, a byte hash.
#pragma once
#include "ekvae.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace ekvae_test {

using namespace ekvae;
using Md = Eigen::MatrixXd;
using Vd = Eigen::VectorXd;

const double kPi = 3.14159265358979311600;

// FNV-1a, 64 bit: a tiny fixed hash for golden byte checks
uint64_t fnv1a64(const std::vector<uint8_t> & bytes);

// smallest difference between two angles, in [0, pi]
inline double angle_diff(double a, double b) { return std::fabs(wrap_angle(a - b)); }

using Fn = std::function<Var(Tape<double> &, const std::vector<Var> &)>;

Md randn(int r, int c, Rng & rng, double scale = 1.0);

// Symmetric positive-definite batch [n*n, B]: M M^T + n I per column.
Md spd_batch(int n, int B, Rng & rng);

// Lower-triangular factors with a positive diagonal [n*n, B].
Md lower_batch(int n, int B, Rng & rng);

// Compares the tape's gradient of loss = sum(f(inputs) .* W) (W random, fixed) with central
// differences. Inputs are Params so their grads are accumulated. The tolerance is robust near
// zero: |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
void grad_check(const char * name, std::vector<Md> inputs, const Fn & f, double atol = 1e-6, double rtol = 1e-5,
                       double h = 1e-6);



// A linear-Gaussian EKVAE: K = 1 makes alpha = 1, so F = I + A_1, B = B_1, Q fixed.
struct LinearSystem {
    int nz = 3, na = 2, T = 6;
    Md F, Bv, Q, H, R, P1;
    Vd mu1;
};

inline double softplus(double x) { return std::log1p(std::exp(x)); }

void make_linear_model(Ekvae<double> & m, LinearSystem & s);

// Dense joint Gaussian of z_{1:T} given u: mean mu [T nz], covariance S [T nz, T nz].
void dense_prior(const LinearSystem & s, const Vd & u, Vd & mu, Md & S);

// Condition the dense prior on observations a_{1:k}: posterior mean and covariance of z_{1:T}.
void dense_posterior(const LinearSystem & s, const Vd & mu, const Md & S, const Vd & a, int k, Vd & pm, Md & PS);

double dense_logpdf(const Vd & x, const Vd & m, const Md & S);


// Plain-Eigen evaluation of an MLP (ReLU between layers, none after the last).
Md mlp_dense(const MLP<double> & net, const Md & x);
double gauss_diag(const Vd & x, const Vd & m, const Vd & var);
// The transition at (z, u), computed independently of the core: F = I + A alpha,
// b = B alpha u, q = softplus(q_raw alpha) + q_min, alpha = softmax(MLP([z; u])).
void transition_dense(const Ekvae<double> & m, const Vd & z, double u, Md & F, Vd & b, Vd & q);

// a tiny model and run for training tests, and a small pendulum dataset
EkvaeConfig tiny_train_config();
Dataset tiny_data(int N = 8, int T = 12, int W = 8, uint64_t seed = 5);

} // namespace ekvae_test
