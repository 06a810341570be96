// kalman_ops.cpp: the fused Kalman steps (see kalman_ops.h): per-sample kernels, each forward
// beside its backward, then the tape ops that run them over a batch.
//
// Every backward rule here is checked against central finite differences in double precision
// and against the composition of primitive tape ops by tests/test_kalman_ops.cpp.
#include "kalman_ops.h"

#include "small_matrix.h"

#include <string>

namespace ekvae {

namespace {

// ---- per-sample kernels ----------------------------------------------------------------------
// On Eigen matrices of compile-time size for the default model (N = 3 states, K = 2
// observations: Eigen unrolls the products) and of run-time size otherwise (N = K = Dynamic,
// stack storage up to 16). Gradient pointers may be null (input needs no gradient); the
// backward kernels add into them. Inputs are column pointers into batched [rows, B] values.
template <class T, int N, int K> struct KalmanKernels {
    static constexpr int MN = N == Eigen::Dynamic ? kMaxSmall : N;
    static constexpr int MK = K == Eigen::Dynamic ? kMaxSmall : K;
    using NN = Eigen::Matrix<T, N, N, Eigen::ColMajor, MN, MN>;
    using KN = Eigen::Matrix<T, K, N, Eigen::ColMajor, MK, MN>;
    using NK = Eigen::Matrix<T, N, K, Eigen::ColMajor, MN, MK>;
    using KK = Eigen::Matrix<T, K, K, Eigen::ColMajor, MK, MK>;
    using VN = Eigen::Matrix<T, N, 1, Eigen::ColMajor, MN, 1>;
    using VK = Eigen::Matrix<T, K, 1, Eigen::ColMajor, MK, 1>;
    template <class X> using In = Eigen::Map<const Eigen::Matrix<T, X::RowsAtCompileTime, X::ColsAtCompileTime>>;
    template <class X> using Out = Eigen::Map<Eigen::Matrix<T, X::RowsAtCompileTime, X::ColsAtCompileTime>>;
    template <class X> static void add_to(T * g, const X & v) {
        if (g) Out<X>(g, v.rows(), v.cols()) += v;
    }
    // X <- (L L^T)^{-1} X, L lower triangular
    template <class X> static void chol_solve(const T * L, int n, X & x) {
        tiny_trsm(L, n, x.data(), (int)x.cols(), false);
        tiny_trsm(L, n, x.data(), (int)x.cols(), true);
    }

    // m_pred = F m + Bu, P_pred = (Y + Y^T)/2 + diag(q), Y = F P F^T
    static void predict(int n, const T * F_, const T * Bu, const T * q, const T * m, const T * P_, T * out) {
        In<NN> F(F_, n, n), P(P_, n, n);
        Out<VN>(out, n, 1) = F * In<VN>(m, n, 1) + In<VN>(Bu, n, 1);
        const NN FP = F * P;
        const NN Y = FP * F.transpose();
        Out<NN> Pp(out + n, n, n);
        Pp = T(0.5) * (Y + Y.transpose());
        Pp.diagonal() += In<VN>(q, n, 1);
    }
    // With Gs = (G_Pp + G_Pp^T)/2: dF = Gs F (P + P^T) + G_mp m^T, dP = F^T Gs F, dm = F^T G_mp,
    // dBu = G_mp, dq = diag(G_Pp)
    static void predict_back(int n, const T * F_, const T * m_, const T * P_, const T * G, T * gF, T * gBu, T * gq, T * gm, T * gP) {
        In<NN> F(F_, n, n), P(P_, n, n), gPp(G + n, n, n);
        In<VN> gmp(G, n, 1), m(m_, n, 1);
        const NN Gs = T(0.5) * (gPp + gPp.transpose());
        if (gF) add_to(gF, NN(Gs * F * NN(P + P.transpose()) + gmp * m.transpose()));
        if (gBu) add_to(gBu, VN(gmp));
        if (gq) add_to(gq, VN(gPp.diagonal()));
        if (gm) add_to(gm, VN(F.transpose() * gmp));
        if (gP) add_to(gP, NN(F.transpose() * Gs * F));
    }

    // HP = H Pp, S = HP H^T + R = L L^T, K^T = S^{-1} HP, e = a - H mp, m = mp + K e,
    // P = (I - K H) Pp (I - K H)^T + K R K^T. aux = [L; K^T; e]. False when S is not positive definite.
    static bool update(int n, int k, const T * H_, const T * R_, const T * mp_, const T * Pp_, const T * a, T * out, T * aux) {
        In<KN> H(H_, k, n);
        In<KK> R(R_, k, k);
        In<NN> Pp(Pp_, n, n);
        In<VN> mp(mp_, n, 1);
        const KN HP = H * Pp;
        const KK S = HP * H.transpose() + R;
        const bool ok = chol_factor(S.data(), k, aux);
        KN Kt = HP; // K^T
        chol_solve(aux, k, Kt);
        const VK e = In<VK>(a, k, 1) - H * mp;
        NN A = -Kt.transpose() * H; // I - K H
        A.diagonal().array() += T(1);
        Out<VN>(out, n, 1) = mp + Kt.transpose() * e;
        const NN APp = A * Pp;
        const NK KR = Kt.transpose() * R;
        Out<NN>(out + n, n, n) = APp * A.transpose() + KR * Kt;
        Out<KN>(aux + k * k, k, n) = Kt;
        Out<VK>(aux + k * k + k * n, k, 1) = e;
        return ok;
    }
    // The reverse of update, with the symmetric gradient through S's Cholesky factor.
    static void update_back(int n, int k, const T * H_, const T * R_, const T * mp_, const T * Pp_, const T * aux, const T * G, T * gH_,
                            T * gR_, T * gmp_, T * gPp_, T * ga) {
        In<KN> H(H_, k, n), Kt(aux + k * k, k, n);
        In<KK> R(R_, k, k);
        In<NN> Pp(Pp_, n, n), gP(G + n, n, n);
        In<VN> mp(mp_, n, 1), gm(G, n, 1);
        In<VK> e(aux + k * k + k * n, k, 1);
        NN A = -Kt.transpose() * H;
        A.diagonal().array() += T(1);
        // P = A Pp A^T + K R K^T
        const NN gA = gP * A * Pp.transpose() + gP.transpose() * A * Pp;
        NN gPp = A.transpose() * gP * A;
        KN gKt = R.transpose() * Kt * gP.transpose() + R * Kt * gP; // (gP K R^T + gP^T K R)^T
        KK gR = Kt * gP * Kt.transpose();
        // A = I - K H;  m = mp + K e;  e = a - H mp
        gKt -= H * gA.transpose();
        KN gH = -Kt * gA;
        gKt += e * gm.transpose();
        const VK ge = Kt * gm;
        const VN gmp = gm - H.transpose() * ge;
        gH -= ge * mp.transpose();
        // K^T = S^{-1} HP:  dHP = S^{-1} dK^T,  dS = -sym(S^{-1} dK^T K)
        KN X = gKt;
        chol_solve(aux, k, X);
        const KK XK = X * Kt.transpose();
        const KK gS = T(-0.5) * (XK + XK.transpose());
        // S = HP H^T + R;  HP = H Pp
        const KN gHP = X + gS * H;
        gH += gS * H * Pp + gHP * Pp.transpose();
        gPp += H.transpose() * gHP;
        gR += gS;
        add_to(gH_, gH);
        add_to(gR_, gR);
        add_to(gmp_, gmp);
        add_to(gPp_, gPp);
        add_to(ga, ge);
    }

    // J^T = S^{-1} F P, S = P_pred + jitter I = L L^T (aux = L). False when S is not positive definite.
    static bool gain(int n, const T * Ppn, const T * F, const T * P, T jitter, T * J, T * aux) {
        NN S = In<NN>(Ppn, n, n);
        S.diagonal().array() += jitter;
        const bool ok = chol_factor(S.data(), n, aux);
        NN Jt = In<NN>(F, n, n) * In<NN>(P, n, n);
        chol_solve(aux, n, Jt);
        Out<NN>(J, n, n) = Jt.transpose();
        return ok;
    }
    // dFP = S^{-1} dJ^T, dS = -sym(S^{-1} dJ^T J), dF = dFP P^T, dP = F^T dFP
    static void gain_back(int n, const T * F, const T * P, const T * J, const T * aux, const T * G, T * gPpn, T * gF, T * gP) {
        NN X = In<NN>(G, n, n).transpose();
        chol_solve(aux, n, X);
        const NN XJ = X * In<NN>(J, n, n);
        if (gPpn) add_to(gPpn, NN(T(-0.5) * (XJ + XJ.transpose())));
        if (gF) add_to(gF, NN(X * In<NN>(P, n, n).transpose()));
        if (gP) add_to(gP, NN(In<NN>(F, n, n).transpose() * X));
    }

    // c = m + J (z_next - m_pred_next), A = I - J F, Sc = A P A^T + J diag(q) J^T + jitter I = Lc Lc^T
    // (aux = Lc), z = c + Lc eps, log N = -n/2 log 2 pi - |eps|^2/2 - sum log Lc_ii.
    static bool sample(int n, const T * m, const T * P_, const T * J_, const T * F_, const T * q_, const T * mpn, const T * zn, const T * eps_,
                       T jitter, T * out, T * aux) {
        In<NN> P(P_, n, n), J(J_, n, n), F(F_, n, n);
        In<VN> q(q_, n, 1), eps(eps_, n, 1);
        NN A = -J * F;
        A.diagonal().array() += T(1);
        const NN AP = A * P;
        const NN JD = J * q.asDiagonal();
        NN S = AP * A.transpose() + JD * J.transpose();
        S.diagonal().array() += jitter;
        const bool ok = chol_factor(S.data(), n, aux);
        In<NN> Lc(aux, n, n);
        Out<VN>(out, n, 1) = In<VN>(m, n, 1) + J * (In<VN>(zn, n, 1) - In<VN>(mpn, n, 1)) + Lc * eps;
        T logdet = 0;
        for (int i = 0; i < n; i++) logdet += std::log(Lc(i, i));
        out[n] = T(-0.5) * (T(n * kLog2Pi) + eps.squaredNorm()) - logdet;
        return ok;
    }
    // dc = dz, dLc = tril(dz eps^T) - dlogN diag(1/Lc_ii), dSc from the Cholesky backward, then
    // Sc = A P A^T + J D J^T (D = diag(q)), A = I - J F, c = m + J (z_next - m_pred_next).
    static void sample_back(int n, const T * P_, const T * J_, const T * F_, const T * q_, const T * mpn, const T * zn, const T * eps_,
                            const T * aux, const T * G, T * gm, T * gP, T * gJ_, T * gF, T * gq, T * gmpn, T * gzn) {
        In<NN> P(P_, n, n), J(J_, n, n), F(F_, n, n), Lc(aux, n, n);
        In<VN> q(q_, n, 1), eps(eps_, n, 1), gz(G, n, 1);
        NN gLc = gz * eps.transpose();
        for (int i = 0; i < n; i++) gLc(i, i) -= G[n] / Lc(i, i);
        NN gS = NN::Zero(n, n);
        chol_backward(aux, gLc.data(), n, gS.data());
        NN A = -J * F;
        A.diagonal().array() += T(1);
        const NN gA = gS * A * NN(P + P.transpose());
        const VN d = In<VN>(zn, n, 1) - In<VN>(mpn, n, 1);
        NN gJ = NN(gS + gS.transpose()) * J * q.asDiagonal();
        gJ -= gA * F.transpose();
        gJ += gz * d.transpose();
        const VN gd = J.transpose() * gz;
        if (gm) add_to(gm, VN(gz));
        if (gP) add_to(gP, NN(A.transpose() * gS * A));
        if (gJ_) add_to(gJ_, gJ);
        if (gF) add_to(gF, NN(-J.transpose() * gA));
        if (gq) add_to(gq, VN(NN(J.transpose() * gS * J).diagonal()));
        if (gmpn) add_to(gmpn, VN(-gd));
        if (gzn) add_to(gzn, gd);
    }
};

// The one size dispatch, per sample: the kernels unrolled for the default model's sizes (n = 3
// states, k = 2 observations) when `fixed`, else of run-time size. (A macro, so that each call
// site compiles to the same plain conditional call the optimiser inlines as it always has.)
#define EKVAE_KALMAN_KERNEL(T, fixed, call) \
    ((fixed) ? KalmanKernels<T, 3, 2>::call : KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::call)

// The backward loop over the samples (the columns of the node's gradient G): body(j, Gj, g) with
// Gj column j of G and g[i] column j of input i's gradient (null where the input needs none).
template <class T, class Body> void each_sample_backward(const FusedNode<T> & f, Body body) {
    const Mat<T> & G = *f.grad;
    T * g[kMaxFusedInputs];
    for (Eigen::Index j = 0; j < G.cols(); j++) {
        for (int i = 0; i < f.n_in; i++) g[i] = f.in_grad[i] ? col_of(*f.in_grad[i], j) : nullptr;
        body(j, G.data() + j * G.rows(), g);
    }
}

// ---- the tape ops: forward, then backward ---------------------------------------------------
// Inputs by position, as recorded: predict (F, Bu, q, m, P); update (H, R, m_pred, P_pred, a);
// gain (P_pred_next, F_next, P); sample (m, P, J, F_next, q_next, m_pred_next, z_next, eps).

template <class T> void predict_backward(const FusedNode<T> & f) {
    const int n = (int)f.in[3]->rows();
    each_sample_backward(f, [&](Eigen::Index j, const T * Gj, T ** g) {
        const T * F = col_of(*f.in[0], j), * m = col_of(*f.in[3], j), * P = col_of(*f.in[4], j);
        EKVAE_KALMAN_KERNEL(T, n == 3, predict_back(n, F, m, P, Gj, g[0], g[1], g[2], g[3], g[4]));
    });
}

template <class T> void update_backward(const FusedNode<T> & f) {
    const int n = (int)f.in[2]->rows(), k = (int)f.in[4]->rows();
    each_sample_backward(f, [&](Eigen::Index j, const T * Gj, T ** g) {
        const T * H = col_of(*f.in[0], j), * R = col_of(*f.in[1], j), * mp = col_of(*f.in[2], j), * Pp = col_of(*f.in[3], j);
        const T * aux = f.aux->data() + j * f.aux->rows();
        EKVAE_KALMAN_KERNEL(T, n == 3 && k == 2, update_back(n, k, H, R, mp, Pp, aux, Gj, g[0], g[1], g[2], g[3], g[4]));
    });
}

template <class T> void gain_backward(const FusedNode<T> & f) {
    const Mat<T> & Y = *f.value;
    const int n = f.br;
    each_sample_backward(f, [&](Eigen::Index j, const T * Gj, T ** g) {
        const T * F = col_of(*f.in[1], j), * P = col_of(*f.in[2], j), * J = Y.data() + j * Y.rows(), * aux = f.aux->data() + j * f.aux->rows();
        EKVAE_KALMAN_KERNEL(T, n == 3, gain_back(n, F, P, J, aux, Gj, g[0], g[1], g[2]));
    });
}

template <class T> void sample_backward(const FusedNode<T> & f) {
    const int n = (int)f.in[0]->rows();
    each_sample_backward(f, [&](Eigen::Index j, const T * Gj, T ** g) {
        const T * P = col_of(*f.in[1], j), * J = col_of(*f.in[2], j), * F = col_of(*f.in[3], j), * q = col_of(*f.in[4], j);
        const T * mpn = col_of(*f.in[5], j), * zn = col_of(*f.in[6], j), * eps = col_of(*f.in[7], j);
        const T * aux = f.aux->data() + j * f.aux->rows();
        EKVAE_KALMAN_KERNEL(T, n == 3, sample_back(n, P, J, F, q, mpn, zn, eps, aux, Gj, g[0], g[1], g[2], g[3], g[4], g[5], g[6]));
    });
}

} // namespace

template <class T> Var kalman_predict(Tape<T> & t, Var F, Var Bu, Var q, Var m, Var P) {
    const int n = (int)t.value(m).rows();
    Mat<T> * value, * aux; // (record first: recording may move the tape's nodes, so values are read after)
    Var r = t.fused(predict_backward<T>, {F, Bu, q, m, P}, n + n * n, 1, value, aux);
    const Mat<T> & Fv = t.value(F), & Bv = t.value(Bu), & qv = t.value(q), & mv = t.value(m), & Pv = t.value(P);
    check(n <= kMaxSmall && Fv.rows() == n * n && Bv.rows() == n && qv.rows() == n && Pv.rows() == n * n, "kalman_predict: sizes differ");
    const Eigen::Index B = batch_of<T>({&Fv, &Bv, &qv, &mv, &Pv});
    check(B > 0, "kalman_predict: batch sizes differ");
    value->resize(n + n * n, B);
    for (Eigen::Index j = 0; j < B; j++)
        EKVAE_KALMAN_KERNEL(T, n == 3, predict(n, col_of(Fv, j), col_of(Bv, j), col_of(qv, j), col_of(mv, j), col_of(Pv, j), value->data() + j * value->rows()));
    return r;
}

template <class T> Var kalman_update(Tape<T> & t, Var H, Var R, Var m_pred, Var P_pred, Var a) {
    const int n = (int)t.value(m_pred).rows(), k = (int)t.value(a).rows();
    Mat<T> * value, * aux;
    Var r = t.fused(update_backward<T>, {H, R, m_pred, P_pred, a}, n + n * n, 1, value, aux);
    const Mat<T> & Hv = t.value(H), & Rv = t.value(R), & mv = t.value(m_pred), & Pv = t.value(P_pred), & av = t.value(a);
    check(n <= kMaxSmall && k <= kMaxSmall && Hv.rows() == k * n && Rv.rows() == k * k && Pv.rows() == n * n, "kalman_update: sizes differ");
    const Eigen::Index B = batch_of<T>({&Hv, &Rv, &mv, &Pv, &av});
    check(B > 0, "kalman_update: batch sizes differ");
    value->resize(n + n * n, B);
    aux->resize(k * k + k * n + k, B); // [L_S; K^T; e] per sample, for the backward pass
    for (Eigen::Index j = 0; j < B; j++) {
        T * out = value->data() + j * value->rows(), * ax = aux->data() + j * aux->rows();
        const bool ok = EKVAE_KALMAN_KERNEL(T, n == 3 && k == 2, update(n, k, col_of(Hv, j), col_of(Rv, j), col_of(mv, j), col_of(Pv, j), col_of(av, j), out, ax));
        if (!ok) t.fail("kalman_update: innovation covariance " + std::to_string(j) + " of the batch is not positive definite");
    }
    return r;
}

template <class T> Var smoother_gain(Tape<T> & t, Var P_pred_next, Var F_next, Var P, T jitter) {
    const int n = t.brows(P);
    Mat<T> * value, * aux;
    Var r = t.fused(gain_backward<T>, {P_pred_next, F_next, P}, n, n, value, aux);
    const Mat<T> & Sv = t.value(P_pred_next), & Fv = t.value(F_next), & Pv = t.value(P);
    check(n <= kMaxSmall && t.bcols(P) == n && Sv.rows() == n * n && Fv.rows() == n * n && Pv.rows() == n * n, "smoother_gain: sizes differ");
    const Eigen::Index B = batch_of<T>({&Sv, &Fv, &Pv});
    check(B > 0, "smoother_gain: batch sizes differ");
    value->resize(n * n, B);
    aux->resize(n * n, B); // the Cholesky factor of P_pred + jitter I
    for (Eigen::Index j = 0; j < B; j++) {
        T * J = value->data() + j * n * n, * ax = aux->data() + j * n * n;
        const bool ok = EKVAE_KALMAN_KERNEL(T, n == 3, gain(n, col_of(Sv, j), col_of(Fv, j), col_of(Pv, j), jitter, J, ax));
        if (!ok) t.fail("smoother_gain: predicted covariance " + std::to_string(j) + " of the batch is not positive definite");
    }
    return r;
}

template <class T>
Var backward_sample_step(Tape<T> & t, Var m, Var P, Var J, Var F_next, Var q_next, Var m_pred_next, Var z_next, Var eps, T jitter) {
    const int n = (int)t.value(m).rows();
    Mat<T> * value, * aux;
    Var r = t.fused(sample_backward<T>, {m, P, J, F_next, q_next, m_pred_next, z_next, eps}, n + 1, 1, value, aux);
    const Mat<T> & mv = t.value(m), & Pv = t.value(P), & Jv = t.value(J), & Fv = t.value(F_next), & qv = t.value(q_next);
    const Mat<T> & mpv = t.value(m_pred_next), & zv = t.value(z_next), & ev = t.value(eps);
    check(n <= kMaxSmall && Pv.rows() == n * n && Jv.rows() == n * n && Fv.rows() == n * n && qv.rows() == n && mpv.rows() == n &&
              zv.rows() == n && ev.rows() == n,
          "backward_sample_step: sizes differ");
    const Eigen::Index B = batch_of<T>({&mv, &Pv, &Jv, &Fv, &qv, &mpv, &zv, &ev});
    check(B > 0, "backward_sample_step: batch sizes differ");
    value->resize(n + 1, B);
    aux->resize(n * n, B); // the Cholesky factor Lc of the conditional covariance
    for (Eigen::Index j = 0; j < B; j++) {
        T * out = value->data() + j * (n + 1), * ax = aux->data() + j * n * n;
        const bool ok = EKVAE_KALMAN_KERNEL(T, n == 3, sample(n, col_of(mv, j), col_of(Pv, j), col_of(Jv, j), col_of(Fv, j), col_of(qv, j), col_of(mpv, j),
                                    col_of(zv, j), col_of(ev, j), jitter, out, ax));
        if (!ok) t.fail("backward_sample_step: conditional covariance " + std::to_string(j) + " of the batch is not positive definite");
    }
    return r;
}

#define EKVAE_KALMAN_OPS_INSTANTIATE(T)                                                                                      \
    template Var kalman_predict(Tape<T> &, Var, Var, Var, Var, Var);                                                         \
    template Var kalman_update(Tape<T> &, Var, Var, Var, Var, Var);                                                          \
    template Var smoother_gain(Tape<T> &, Var, Var, Var, T);                                                                 \
    template Var backward_sample_step(Tape<T> &, Var, Var, Var, Var, Var, Var, Var, Var, T);

// One scalar type per compilation: float here, double in the second compilation of this file
// (shared/CMakeLists.txt, EKVAE_KALMAN_OPS_SCALAR=double), so the two run in parallel: with
// both in one unit this file was the longest compile of the build (about a minute).
#ifndef EKVAE_KALMAN_OPS_SCALAR
#define EKVAE_KALMAN_OPS_SCALAR float
#endif
EKVAE_KALMAN_OPS_INSTANTIATE(EKVAE_KALMAN_OPS_SCALAR)

} // namespace ekvae
