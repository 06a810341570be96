// kalman_ops.h: the fused Kalman steps as tape ops.
//
// One node per time step instead of ~20 primitive ones: the Kalman part of a training step is
// thousands of ops on 2x3 and 3x3 matrices, where per-node overhead, not arithmetic, costs.
// Each returns its two results stacked in rows; take them apart with Tape::slice_batch.
// Shapes per sample (n = state size, k = observation size, n, k <= 16); any input may be
// [., 1] (broadcast over the batch). Tests check each against the composition of primitive
// tape ops (value and every input gradient) and against central differences.
#pragma once
#include "autodiff.h"

namespace ekvae {

// Prediction: m_pred = F m + Bu, P_pred = sym(F P F^T) + diag(q)
//   F [n*n], Bu [n], q [n], m [n], P [n*n]                          -> [m_pred; P_pred] [n + n*n, B]
template <class T> Var kalman_predict(Tape<T> & t, Var F, Var Bu, Var q, Var m, Var P);

// Update with observation a (Joseph form, S's Cholesky factor kept for the backward pass):
//   S = H P H^T + R, K = P H^T S^{-1}, m = m_pred + K (a - H m_pred),
//   P = (I - K H) P_pred (I - K H)^T + K R K^T
//   H [k*n], R [k*k], m_pred [n], P_pred [n*n], a [k]                -> [m; P] [n + n*n, B]
// A Cholesky failure sets the tape's error() and yields NaN, like bcholesky.
template <class T> Var kalman_update(Tape<T> & t, Var H, Var R, Var m_pred, Var P_pred, Var a);

// Smoother gain J = P F^T (P_pred + jitter I)^{-1}
//   P_pred (of the next step) [n*n], F (of the next step) [n*n], P [n*n]  -> J [n*n, B]
template <class T> Var smoother_gain(Tape<T> & t, Var P_pred_next, Var F_next, Var P, T jitter);

// One step of the joint backward sample z_t ~ p(z_t | z_{t+1}, a_{1:t}, u):
//   c = m + J (z_next - m_pred_next),  A = I - J F_next,
//   Sc = A P A^T + J diag(q_next) J^T + jitter I = Lc Lc^T,  z = c + Lc eps,
//   log N(z; c, Sc) = -n/2 log 2 pi - |eps|^2 / 2 - sum_i log Lc_ii
//   m [n], P [n*n], J [n*n], F_next [n*n], q_next [n], m_pred_next [n], z_next [n],
//   eps [n] (a constant)                                              -> [z; log N] [n + 1, B]
template <class T>
Var backward_sample_step(Tape<T> & t, Var m, Var P, Var J, Var F_next, Var q_next, Var m_pred_next, Var z_next, Var eps, T jitter);

} // namespace ekvae
