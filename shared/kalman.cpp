// kalman.cpp: the transition, the extended Kalman filter and smoother, backward sampling,
// forecasting and single-stream filtering (see kalman.h for the equations' shapes).
#include "kalman.h"

#include "kalman_ops.h"

#include <algorithm>

namespace ekvae {

template <class T> Mat<T> identity_col(int n, T s) {
    Mat<T> I = Mat<T>::Zero(n * n, 1);
    for (int i = 0; i < n; i++) I(i * n + i, 0) = s;
    return I;
}
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

namespace {
// The Kalman update of (mp, Pp) with observation a_t [n_a, B] (one fused tape node):
//   S = H P H^T + R,  K = P H^T S^{-1},  m = mp + K (a - H mp),
//   P = (I - K H) Pp (I - K H)^T + K R K^T   (Joseph form: symmetric positive semi-definite)
template <class T> void update_step(Tape<T> & t, Var H, Var Rm, Var mp, Var Pp, Var a, Var & mt, Var & Pt) {
    const int nz = t.bcols(H);
    Var r = kalman_update(t, H, Rm, mp, Pp, a); // [m; P]  [n_z + n_z*n_z, B]
    mt = t.slice_batch(r, 0, nz, 1);
    Pt = t.slice_batch(r, nz, nz, nz);
}

// Prediction: mp = F m + B u, Pp = F P F^T + Q (one fused tape node)
template <class T> void predict_step(Tape<T> & t, Var F, Var Bu, Var q, Var m, Var P, Var & mp, Var & Pp) {
    const int nz = t.brows(F);
    Var r = kalman_predict(t, F, Bu, q, m, P); // [mp; Pp]  [n_z + n_z*n_z, B]
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
            predict_step(t, kr.F[k], Bu, q, kr.m[k - 1], kr.P[k - 1], mp, Pp);
        }
        update_step(t, H, Rm, mp, Pp, t.slice_cols(a, k * B, B), kr.m[k], kr.P[k]);
        kr.m_pred[k] = mp;
        kr.P_pred[k] = Pp;
    }
}

namespace {
// Smoother gains J_t = P_t F_{t+1}^T (P_pred_{t+1} + jitter I)^{-1} (one fused node each).
template <class T> void smoother_gains(Tape<T> & t, Ekvae<T> & m, KalmanResult<T> & kr) {
    if (!kr.J.empty()) return;
    kr.J.resize(std::max(kr.T_ - 1, 0));
    for (int k = kr.T_ - 2; k >= 0; k--) kr.J[k] = smoother_gain(t, kr.P_pred[k + 1], kr.F[k + 1], kr.P[k], T(m.cfg.jitter));
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
        Var s = backward_sample_step(t, kr.m[k], kr.P[k], kr.J[k], kr.F[k + 1], kr.Q[k + 1], kr.m_pred[k + 1], z[k + 1],
                                       t.slice_cols(E, k * B, B), T(m.cfg.jitter));
        z[k] = t.slice_batch(s, 0, nz, 1);
        log_post = t.add(log_post, t.slice_rows(s, nz, 1));
    }
    return t.concat_cols(z);
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

template <class T> Mat<T> decode_states(Tape<T> & t, Ekvae<T> & m, const Mat<T> & z) {
    t.reset();
    Var a = t.bmm(t.param_batch(*m.H, m.cfg.n_a, m.cfg.n_z), t.constant(z));
    return t.value(t.sigmoid(m.dec.forward(t, a)));
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
        predict_step(t, F, Bu, q, zk, Pk, zk, Pk);
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

template <class T> void filter_step(Tape<T> & t, Ekvae<T> & m, Mat<T> & z, Mat<T> & P, bool first, const Mat<T> & u_prev, const Mat<T> * x) {
    const int nz = m.cfg.n_z, na = m.cfg.n_a;
    t.reset();
    Var I = t.constant_batch(identity_col<T>(nz), nz, nz);
    Var mp, Pp;
    if (first) {
        mp = t.param(*m.mu1);
        Pp = t.bdiag(prior_variances(t, m));
    } else {
        Var zk = t.constant(z), Pk = t.constant_batch(P, nz, nz);
        Var u = t.constant(u_prev);
        Var F, Bu, q;
        transition(t, m, transition_heads(t, m), zk, u, I, F, Bu, q);
        predict_step(t, F, Bu, q, zk, Pk, mp, Pp);
    }
    if (x) {
        Var a = t.slice_rows(m.enc.forward(t, t.constant(*x)), 0, na);
        Var H = t.param_batch(*m.H, na, nz);
        Var Rm = t.bdiag(obs_variances(t, m));
        Var mt, Pt;
        update_step(t, H, Rm, mp, Pp, a, mt, Pt);
        mp = mt;
        Pp = Pt;
    }
    z = t.value(mp);
    P = t.value(Pp);
}

#define EKVAE_KALMAN_INSTANTIATE(T)                                                                                          \
    template Mat<T> identity_col(int, T);                                                                                    \
    template Var transition_heads(Tape<T> &, Ekvae<T> &);                                                                    \
    template void transition(Tape<T> &, Ekvae<T> &, Var, Var, Var, Var, Var &, Var &, Var &);                                \
    template Var obs_variances(Tape<T> &, Ekvae<T> &);                                                                       \
    template Var prior_variances(Tape<T> &, Ekvae<T> &);                                                                     \
    template void kalman_filter(Tape<T> &, Ekvae<T> &, Var, Var, int, int, KalmanResult<T> &);                               \
    template void rts_smoother(Tape<T> &, Ekvae<T> &, KalmanResult<T> &, bool);                                              \
    template Var backward_sample(Tape<T> &, Ekvae<T> &, KalmanResult<T> &, const Mat<T> &, Var &);                           \
    template void encode(Tape<T> &, Ekvae<T> &, const Mat<T> &, Mat<T> &, Mat<T> &);                                         \
    template Mat<T> decode(Tape<T> &, Ekvae<T> &, const Mat<T> &);                                                           \
    template Mat<T> decode_states(Tape<T> &, Ekvae<T> &, const Mat<T> &);                                                    \
    template void infer_sequences(Tape<T> &, Ekvae<T> &, const Mat<T> &, const Mat<T> &, int, int, bool, Posterior<T> &);    \
    template void forecast(Tape<T> &, Ekvae<T> &, const Mat<T> &, const Mat<T> &, const Mat<T> &, Mat<T> &, Mat<T> &, Mat<T> *); \
    template void filter_step(Tape<T> &, Ekvae<T> &, Mat<T> &, Mat<T> &, bool, const Mat<T> &, const Mat<T> *);

EKVAE_KALMAN_INSTANTIATE(float)
EKVAE_KALMAN_INSTANTIATE(double)

} // namespace ekvae
