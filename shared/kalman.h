// kalman.h: the EKVAE's state-space part on the tape: the locally-linear transition, the
// extended Kalman filter, the Rauch-Tung-Striebel smoother, joint backward sampling, and the
// sampling-free inference the evaluation and the app use (filter, forecast, encode, decode).
//
// Layout: sequence data is time-major, column t*B + b holds sequence b at time t; small
// matrices are batched as columns ([n*n, B], see autodiff.h).
#pragma once
#include "model.h"

#include <vector>

namespace ekvae {

// ---- the transition ------------------------------------------------------------------------
// I as a column [n*n, 1] (s I: the jitter's diagonal).
template <class T> Mat<T> identity_col(int n, T s = T(1));
// The transition's three heads stacked, [A; B_base; q_raw]  [n_z*n_z + n_z*n_u + n_z, K]: one
// product with alpha gives F, B and q (record once per tape, reuse for every step).
template <class T> Var transition_heads(Tape<T> & t, Ekvae<T> & m);
// alpha = softmax(MLP([z; u])), F = I + A alpha, B = B_base alpha, q = softplus(q_raw alpha) + q_min.
// z [n_z, N], u [n_u, N], I = identity_col as a batch -> F [n_z*n_z, N] (batch n_z x n_z),
// Bu [n_z, N], q [n_z, N] (the variances of Q).
template <class T> void transition(Tape<T> & t, Ekvae<T> & m, Var heads, Var z, Var u, Var I, Var & F, Var & Bu, Var & q);
// R = diag(softplus(r_raw) + r_min) as variances [n_a, 1]
template <class T> Var obs_variances(Tape<T> & t, Ekvae<T> & m);
// P_1 = diag(softplus(p1_raw)) as variances [n_z, 1]
template <class T> Var prior_variances(Tape<T> & t, Ekvae<T> & m);

// ---- inference on the tape -------------------------------------------------------------
template <class T> struct KalmanResult {
    int B = 0, T_ = 0;
    std::vector<Var> m, P;           // filtered mean [n_z, B] and covariance [n_z*n_z, B], t = 0..T-1
    std::vector<Var> m_pred, P_pred; // predicted (prior) moments at t (t = 0: the prior on z_1)
    std::vector<Var> F, Q;           // transition from t-1 to t (t >= 1); Q as variances [n_z, B]
    std::vector<Var> ms, Ps;         // smoothed moments (rts_smoother)
    std::vector<Var> J;              // smoother gains, t = 0..T-2
};

// The extended Kalman filter over a = [n_a, T*B], u = [n_u, T*B] (time-major columns).
// The transition into t is evaluated at the filtered mean of t-1.
template <class T> void kalman_filter(Tape<T> & t, Ekvae<T> & m, Var a, Var u, int B, int T_, KalmanResult<T> & kr);
// The RTS smoother with the filter's matrices (covariances only when asked).
template <class T> void rts_smoother(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr, bool covariances);
// A joint reparameterised sample z_{1:T} ~ p(z | a, u) by backward sampling:
//   z_T ~ N(m_T, P_T),  z_t | z_{t+1} ~ N(m_t + J_t (z_{t+1} - m_pred_{t+1}), (I - J_t F) P_t (I - J_t F)^T + J_t Q J_t^T).
// eps: [n_z, T*B] standard normals. Returns z [n_z, T*B]; log_post [1, B]: log p(z | a, u).
template <class T> Var backward_sample(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr, const Mat<T> & eps, Var & log_post);

// ---- inference without sampling (evaluation, the app) -----------------------------------
// Encoder means and log-variances for frames X [D, N].
template <class T> void encode(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, Mat<T> & mu, Mat<T> & logvar);
// Decoded mean images (sigmoid of the logits) for a = [n_a, N] -> [D, N].
template <class T> Mat<T> decode(Tape<T> & t, Ekvae<T> & m, const Mat<T> & a);
// Decoded mean images of latent states z [n_z, N] (a = H z, as forecast() decodes) -> [D, N].
template <class T> Mat<T> decode_states(Tape<T> & t, Ekvae<T> & m, const Mat<T> & z);

// Filter (and smooth) B sequences with a_t at the encoder mean. Outputs per time step.
template <class T> struct Posterior {
    std::vector<Mat<T>> m, P;       // filtered [n_z, B], [n_z*n_z, B]
    std::vector<Mat<T>> ms, Ps;     // smoothed
};
template <class T> void infer_sequences(Tape<T> & t, Ekvae<T> & m, const Mat<T> & X, const Mat<T> & U, int B, int T_,
                                        bool smooth, Posterior<T> & out);

// Open-loop forecast from a filtered state (mean z [n_z, 1], covariance P [n_z*n_z, 1]) under
// actions U [n_u, H]: z_{k+1} = F(z_k, u_k) z_k + B(z_k, u_k) u_k with F, B, Q evaluated at the
// mean; P_{k+1} = F P_k F^T + Q. Outputs H predicted means [n_z, H], covariances
// [n_z*n_z, H], and (if images != nullptr) decoded mean images [D, H] from a = H z.
template <class T> void forecast(Tape<T> & t, Ekvae<T> & m, const Mat<T> & z, const Mat<T> & P, const Mat<T> & U,
                                 Mat<T> & zs, Mat<T> & Ps, Mat<T> * images = nullptr);

// One filter step for a single stream (the app): from (z, P) predicted with the action u_prev
// [n_u, 1] (or the prior when first; u_prev is not read then), updated with frame x [D, 1]
// unless x == nullptr (only predicts).
template <class T> void filter_step(Tape<T> & t, Ekvae<T> & m, Mat<T> & z, Mat<T> & P, bool first, const Mat<T> & u_prev, const Mat<T> * x);

} // namespace ekvae
