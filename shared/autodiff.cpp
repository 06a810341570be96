// autodiff.cpp: forward and backward passes of every Tape op (see autodiff.h).
//
// Every backward rule below is checked against central finite differences in double precision
// by tests/test_autodiff.cpp.
#include "autodiff.h"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace ekvae {

namespace {

// Small matrices live on the stack (no heap traffic inside the batched loops).
constexpr int kMaxSmall = 16;
template <class T> using SM = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, kMaxSmall, kMaxSmall>;
template <class T> using CMap = Eigen::Map<const Mat<T>>;
template <class T> using MMap = Eigen::Map<Mat<T>>;

void check(bool ok, const char * what) {
    if (!ok) throw std::invalid_argument(what);
}

// Broadcast shape of two operands: each dimension equal or 1.
bool broadcast_shape(Eigen::Index ra, Eigen::Index ca, Eigen::Index rb, Eigen::Index cb, Eigen::Index & R, Eigen::Index & C) {
    R = std::max(ra, rb);
    C = std::max(ca, cb);
    return (ra == R || ra == 1) && (rb == R || rb == 1) && (ca == C || ca == 1) && (cb == C || cb == 1);
}

// out(i, j) = f(a(ia, ja), b(ib, jb)) with broadcasting; inner loop over contiguous rows.
template <class T, class F> void broadcast_apply(const Mat<T> & a, const Mat<T> & b, Mat<T> & out, F f) {
    const Eigen::Index R = out.rows(), C = out.cols();
    const Eigen::Index ra = a.rows(), rb = b.rows();
    for (Eigen::Index j = 0; j < C; j++) {
        const T * pa = a.data() + (a.cols() == 1 ? 0 : j) * ra;
        const T * pb = b.data() + (b.cols() == 1 ? 0 : j) * rb;
        T * po = out.data() + j * R;
        if (ra == R && rb == R) {
            for (Eigen::Index i = 0; i < R; i++) po[i] = f(pa[i], pb[i]);
        } else if (ra == R) {
            const T bv = pb[0];
            for (Eigen::Index i = 0; i < R; i++) po[i] = f(pa[i], bv);
        } else if (rb == R) {
            const T av = pa[0];
            for (Eigen::Index i = 0; i < R; i++) po[i] = f(av, pb[i]);
        } else {
            for (Eigen::Index i = 0; i < R; i++) po[i] = f(pa[0], pb[0]);
        }
    }
}

// ga(ia, ja) += term(i, j) over the broadcast shape of g, where term(i, j) = g(i, j) * other(io, jo)
// (other == nullptr means term = g).
template <class T> void broadcast_accumulate(Mat<T> & ga, const Mat<T> & g, const Mat<T> * other, T sign) {
    const Eigen::Index R = g.rows(), C = g.cols();
    const Eigen::Index ra = ga.rows();
    for (Eigen::Index j = 0; j < C; j++) {
        T * pa = ga.data() + (ga.cols() == 1 ? 0 : j) * ra;
        const T * pg = g.data() + j * R;
        const T * po = other ? other->data() + (other->cols() == 1 ? 0 : j) * other->rows() : nullptr;
        const bool o_full = other && other->rows() == R;
        if (ra == R) {
            if (!other) for (Eigen::Index i = 0; i < R; i++) pa[i] += sign * pg[i];
            else if (o_full) for (Eigen::Index i = 0; i < R; i++) pa[i] += sign * pg[i] * po[i];
            else for (Eigen::Index i = 0; i < R; i++) pa[i] += sign * pg[i] * po[0];
        } else {
            T acc = 0;
            if (!other) for (Eigen::Index i = 0; i < R; i++) acc += pg[i];
            else if (o_full) for (Eigen::Index i = 0; i < R; i++) acc += pg[i] * po[i];
            else for (Eigen::Index i = 0; i < R; i++) acc += pg[i] * po[0];
            pa[0] += sign * acc;
        }
    }
}

// C [m x n] (+)= op(A) op(B) for tiny column-major matrices (k inner): plain loops beat Eigen's
// dynamic-size lazyProduct setup at these sizes (2x3, 3x3, 3x1).
template <class T, bool TA, bool TB>
inline void tiny_gemm_t(const T * A, int ar, const T * B, int br, T * C, int m, int n, int k, bool acc) {
    for (int c = 0; c < n; c++)
        for (int r = 0; r < m; r++) {
            T s = acc ? C[c * m + r] : T(0);
            for (int q = 0; q < k; q++) s += (TA ? A[r * ar + q] : A[q * ar + r]) * (TB ? B[q * br + c] : B[c * br + q]);
            C[c * m + r] = s;
        }
}
template <class T>
inline void tiny_gemm(const T * A, int ar, bool ta, const T * B, int br, bool tb, T * C, int m, int n, int k, bool acc) {
    if (!ta && !tb) tiny_gemm_t<T, false, false>(A, ar, B, br, C, m, n, k, acc);
    else if (ta && !tb) tiny_gemm_t<T, true, false>(A, ar, B, br, C, m, n, k, acc);
    else if (!ta && tb) tiny_gemm_t<T, false, true>(A, ar, B, br, C, m, n, k, acc);
    else tiny_gemm_t<T, true, true>(A, ar, B, br, C, m, n, k, acc);
}

// X [n x m] <- L^{-1} X (transpose: L^{-T} X), L [n x n] lower triangular, column-major; plain
// substitution loops (Eigen's triangular solver sets up a blocked solve even for 3 x 3).
template <class T> inline void tiny_trsm(const T * L, int n, T * X, int m, bool transpose) {
    for (int c = 0; c < m; c++) {
        T * x = X + (Eigen::Index)c * n;
        if (!transpose) {
            for (int i = 0; i < n; i++) {
                T s = x[i];
                for (int k = 0; k < i; k++) s -= L[k * n + i] * x[k];
                x[i] = s / L[i * n + i];
            }
        } else {
            for (int i = n - 1; i >= 0; i--) {
                T s = x[i];
                for (int k = i + 1; k < n; k++) s -= L[i * n + k] * x[k];
                x[i] = s / L[i * n + i];
            }
        }
    }
}

// L L^T = A for one n x n matrix (reads A's lower triangle; L's upper triangle set to zero).
// Returns false, with L filled with NaN, when A is not positive definite.
template <class T> bool chol_factor(const T * A, int n, T * L) {
    for (int i = 0; i < n * n; i++) L[i] = T(0);
    for (int c = 0; c < n; c++) {
        T d = A[c * n + c];
        for (int k = 0; k < c; k++) d -= L[k * n + c] * L[k * n + c];
        if (!(d > T(0))) {
            for (int i = 0; i < n * n; i++) L[i] = std::numeric_limits<T>::quiet_NaN();
            return false;
        }
        const T lcc = std::sqrt(d);
        L[c * n + c] = lcc;
        for (int r = c + 1; r < n; r++) {
            T s = A[c * n + r];
            for (int k = 0; k < c; k++) s -= L[k * n + r] * L[k * n + c];
            L[c * n + r] = s / lcc;
        }
    }
    return true;
}

// Abar += the symmetric gradient of A = L L^T, given Lbar (its lower triangle is read).
// With Phi(X) = lower triangle of X with a halved diagonal:
//   S = L^{-T} Phi(L^T Lbar) L^{-1},  Abar = (S + S^T) / 2
template <class T> void chol_backward(const T * L, const T * Lbar, int n, T * Abar) {
    CMap<T> Lj(L, n, n);
    SM<T> Lb = CMap<T>(Lbar, n, n).template triangularView<Eigen::Lower>();
    SM<T> P(n, n);
    tiny_gemm(Lj.data(), n, true, Lb.data(), n, false, P.data(), n, n, n, false);
    for (int c = 0; c < n; c++) {
        P(c, c) *= T(0.5);
        for (int r = 0; r < c; r++) P(r, c) = T(0);
    }
    // S = L^{-T} P L^{-1}: solve L^T X = P, then S L = X  <=>  L^T S^T = X^T
    tiny_trsm(L, n, P.data(), n, true);
    SM<T> St = P.transpose();
    tiny_trsm(L, n, St.data(), n, true);
    MMap<T> A(Abar, n, n);
    A += T(0.5) * (St + St.transpose());
}

const double kLog2Pi = 1.8378770664093454835606594728112;

// ---- per-sample kernels of the fused Kalman ops -------------------------------------------
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

// Column j of a batched value (column 0 when it is broadcast).
template <class T> const T * col_of(const Mat<T> & X, Eigen::Index j) { return X.data() + (X.cols() == 1 ? 0 : j) * X.rows(); }
template <class T> T * col_of(Mat<T> & X, Eigen::Index j) { return X.data() + (X.cols() == 1 ? 0 : j) * X.rows(); }

// The batch size of operands that are [., B] or [., 1]; 0 when they disagree.
template <class T> Eigen::Index batch_of(std::initializer_list<const Mat<T> *> xs) {
    Eigen::Index B = 1;
    for (const Mat<T> * x : xs) B = std::max(B, x->cols());
    for (const Mat<T> * x : xs)
        if (x->cols() != B && x->cols() != 1) return 0;
    return B;
}

} // namespace

// ---- bookkeeping ------------------------------------------------------------------------

template <class T> typename Tape<T>::Node & Tape<T>::push(Op op, std::initializer_list<Var> inputs) {
    for (Var v : inputs) check(v.id >= 0 && v.id < n_, "Tape: input from another tape or step");
    if (n_ == (int)nodes_.size()) nodes_.emplace_back();
    Node & nd = nodes_[n_++];
    nd.op = op;
    nd.in.clear();
    nd.needs_grad = false;
    for (Var v : inputs) {
        nd.in.push_back(v.id);
        nd.needs_grad = nd.needs_grad || nodes_[v.id].needs_grad;
    }
    nd.param = nullptr;
    nd.ext = nullptr;
    nd.br = 0;
    nd.bc = 1;
    nd.i0 = nd.i1 = nd.i2 = nd.i3 = 0;
    nd.f0 = nd.f1 = false;
    nd.s = T(0);
    return nd;
}

template <class T> void Tape<T>::reset() {
    n_ = 0;
    error_.clear();
}

template <class T> const typename Tape<T>::M & Tape<T>::value(Var v) const {
    check(v.id >= 0 && v.id < n_, "Tape::value: invalid Var");
    return val(v.id);
}

// ---- leaves -----------------------------------------------------------------------------

template <class T> Var Tape<T>::constant(const M & v) {
    Node & nd = push(Op::Constant, {});
    nd.value = v;
    nd.br = (int)v.rows();
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::constant_ref(const M & v) {
    Node & nd = push(Op::Constant, {});
    nd.ext = &v;
    nd.br = (int)v.rows();
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::constant_batch(const M & v, int r, int c) {
    check((Eigen::Index)r * c == v.rows(), "constant_batch: rows != r*c");
    Var out = constant(v);
    nodes_[out.id].br = r;
    nodes_[out.id].bc = c;
    return out;
}

template <class T> Var Tape<T>::param(Param<T> & p) {
    Node & nd = push(Op::Parameter, {});
    nd.param = &p;
    nd.needs_grad = true;
    nd.br = (int)p.value.rows();
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::param_batch(Param<T> & p, int r, int c) {
    check((Eigen::Index)r * c == p.value.rows(), "param_batch: rows != r*c");
    Var out = param(p);
    nodes_[out.id].br = r;
    nodes_[out.id].bc = c;
    return out;
}

// ---- dense ops --------------------------------------------------------------------------

template <class T> Var Tape<T>::linear(Var x, Var W, Var b, Activation act) {
    Node & nd = push(Op::Linear, {x, W, b});
    const M & X = val(x.id);
    const M & Wv = val(W.id);
    const M & bv = val(b.id);
    check(Wv.cols() == X.rows() && bv.rows() == Wv.rows() && bv.cols() == 1, "linear: shapes differ");
    nd.i0 = (int)act;
    // start from the bias and accumulate the product (Eigen's assignment would zero the
    // output first: this way that pass does useful work)
    nd.value = bv.col(0).rowwise().replicate(X.cols());
    nd.value.noalias() += Wv * X;
    if (act == Activation::Relu) nd.value = nd.value.cwiseMax(T(0));
    else if (act == Activation::Tanh) nd.value = nd.value.array().tanh().matrix();
    nd.br = (int)nd.value.rows();
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::matmul(Var a, Var b, bool ta, bool tb) {
    Node & nd = push(Op::MatMul, {a, b});
    nd.f0 = ta;
    nd.f1 = tb;
    const M & A = val(a.id);
    const M & B = val(b.id);
    const Eigen::Index ka = ta ? A.rows() : A.cols();
    const Eigen::Index kb = tb ? B.cols() : B.rows();
    check(ka == kb, "matmul: inner dimensions differ");
    if (!ta && !tb) nd.value.noalias() = A * B;
    else if (ta && !tb) nd.value.noalias() = A.transpose() * B;
    else if (!ta && tb) nd.value.noalias() = A * B.transpose();
    else nd.value.noalias() = A.transpose() * B.transpose();
    nd.br = (int)nd.value.rows();
    return Var{n_ - 1};
}

// a + b, a - b, a * b with broadcasting (see autodiff.h); the result takes its small-matrix
// shape from the operand that is not broadcast over rows.
template <class T> Var Tape<T>::binary(Op op, Var a, Var b) {
    Node & nd = push(op, {a, b});
    const M & A = val(a.id);
    const M & B = val(b.id);
    Eigen::Index R, C;
    check(broadcast_shape(A.rows(), A.cols(), B.rows(), B.cols(), R, C), "add/sub/mul: shapes do not broadcast");
    nd.value.resize(R, C);
    if (op == Op::Add) broadcast_apply<T>(A, B, nd.value, [](T x, T y) { return x + y; });
    else if (op == Op::Sub) broadcast_apply<T>(A, B, nd.value, [](T x, T y) { return x - y; });
    else broadcast_apply<T>(A, B, nd.value, [](T x, T y) { return x * y; });
    const Node & shape_from = nodes_[A.rows() == R ? a.id : b.id];
    nd.br = shape_from.br;
    nd.bc = shape_from.bc;
    return Var{n_ - 1};
}

// Elementwise ops as Eigen array expressions (vectorised exp/log/tanh/logistic).
#define EKVAE_UNARY(NAME, OP, EXPR)                                  \
    template <class T> Var Tape<T>::NAME(Var a) {                    \
        Node & nd = push(OP, {a});                                   \
        const auto x = val(a.id).array();                            \
        nd.value.resize(x.rows(), x.cols());                         \
        nd.value.array() = EXPR;                                     \
        nd.br = nodes_[a.id].br;                                     \
        nd.bc = nodes_[a.id].bc;                                     \
        return Var{n_ - 1};                                          \
    }

EKVAE_UNARY(relu, Op::Relu, x.max(T(0)))
EKVAE_UNARY(tanh, Op::Tanh, x.tanh())
EKVAE_UNARY(sigmoid, Op::Sigmoid, x.logistic())
EKVAE_UNARY(softplus, Op::Softplus, x.max(T(0)) + (-x.abs()).exp().log1p())
EKVAE_UNARY(exp, Op::Exp, x.exp())
EKVAE_UNARY(log, Op::Log, x.log())
EKVAE_UNARY(square, Op::Square, x.square())
#undef EKVAE_UNARY

template <class T> Var Tape<T>::scale(Var a, T s) {
    Node & nd = push(Op::Scale, {a});
    nd.s = s;
    nd.value = s * val(a.id);
    nd.br = nodes_[a.id].br;
    nd.bc = nodes_[a.id].bc;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::add_scalar(Var a, T s) {
    Node & nd = push(Op::AddScalar, {a});
    nd.s = s;
    nd.value = (val(a.id).array() + s).matrix();
    nd.br = nodes_[a.id].br;
    nd.bc = nodes_[a.id].bc;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::softmax_rows(Var a) {
    Node & nd = push(Op::SoftmaxRows, {a});
    const M & X = val(a.id);
    nd.value.resize(X.rows(), X.cols());
    for (Eigen::Index j = 0; j < X.cols(); j++) {
        const T mx = X.col(j).maxCoeff();
        nd.value.col(j) = (X.col(j).array() - mx).exp().matrix();
        nd.value.col(j) /= nd.value.col(j).sum();
    }
    nd.br = (int)X.rows();
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::sum(Var a) {
    Node & nd = push(Op::Sum, {a});
    nd.value.resize(1, 1);
    nd.value(0, 0) = val(a.id).sum();
    nd.br = 1;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::sum_rows(Var a) {
    Node & nd = push(Op::SumRows, {a});
    nd.value = val(a.id).colwise().sum();
    nd.br = 1;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::sum_cols(Var a) {
    Node & nd = push(Op::SumCols, {a});
    nd.value = val(a.id).rowwise().sum();
    nd.br = nodes_[a.id].br;
    nd.bc = nodes_[a.id].bc;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::slice(Var a, int r0, int nr, int c0, int nc) {
    Node & nd = push(Op::Slice, {a});
    const M & X = val(a.id);
    check(r0 >= 0 && nr >= 0 && r0 + nr <= X.rows() && c0 >= 0 && nc >= 0 && c0 + nc <= X.cols(), "slice: out of range");
    nd.i0 = r0; nd.i1 = nr; nd.i2 = c0; nd.i3 = nc;
    nd.value = X.block(r0, c0, nr, nc);
    if (nr == X.rows()) { nd.br = nodes_[a.id].br; nd.bc = nodes_[a.id].bc; } else nd.br = nr;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::concat_rows(const std::vector<Var> & parts) {
    check(!parts.empty(), "concat_rows: no parts");
    Node & nd = push(Op::ConcatRows, {});
    Eigen::Index rows = 0, cols = val(parts[0].id).cols();
    for (Var p : parts) {
        check(p.id >= 0 && p.id < n_ - 1, "concat_rows: invalid input");
        check(val(p.id).cols() == cols, "concat_rows: column counts differ");
        rows += val(p.id).rows();
        nd.in.push_back(p.id);
        nd.needs_grad = nd.needs_grad || nodes_[p.id].needs_grad;
    }
    nd.value.resize(rows, cols);
    Eigen::Index r = 0;
    for (Var p : parts) {
        nd.value.middleRows(r, val(p.id).rows()) = val(p.id);
        r += val(p.id).rows();
    }
    nd.br = (int)rows;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::concat_cols(const std::vector<Var> & parts) {
    check(!parts.empty(), "concat_cols: no parts");
    Node & nd = push(Op::ConcatCols, {});
    Eigen::Index cols = 0, rows = val(parts[0].id).rows();
    for (Var p : parts) {
        check(p.id >= 0 && p.id < n_ - 1, "concat_cols: invalid input");
        check(val(p.id).rows() == rows, "concat_cols: row counts differ");
        cols += val(p.id).cols();
        nd.in.push_back(p.id);
        nd.needs_grad = nd.needs_grad || nodes_[p.id].needs_grad;
    }
    nd.value.resize(rows, cols);
    Eigen::Index c = 0;
    for (Var p : parts) {
        nd.value.middleCols(c, val(p.id).cols()) = val(p.id);
        c += val(p.id).cols();
    }
    nd.br = nodes_[parts[0].id].br;
    nd.bc = nodes_[parts[0].id].bc;
    return Var{n_ - 1};
}

// ---- batched small-matrix ops -----------------------------------------------------------

template <class T> Var Tape<T>::as_batch(Var a, int r, int c) {
    check((Eigen::Index)r * c == val(a.id).rows(), "as_batch: rows != r*c");
    check(r <= kMaxSmall && c <= kMaxSmall, "as_batch: small matrices are limited to 16 x 16");
    Node & nd = push(Op::Scale, {a}); // a copy: scale by 1
    nd.s = T(1);
    nd.value = val(a.id);
    nd.br = r;
    nd.bc = c;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::bmm(Var a, Var b, bool ta, bool tb) {
    Node & nd = push(Op::BMatMul, {a, b});
    const Node & na = nodes_[a.id];
    const Node & nb = nodes_[b.id];
    const M & A = val(a.id);
    const M & B = val(b.id);
    const int m = ta ? na.bc : na.br, k = ta ? na.br : na.bc;
    const int k2 = tb ? nb.bc : nb.br, n = tb ? nb.br : nb.bc;
    check(k == k2, "bmm: inner dimensions differ");
    check(A.rows() == (Eigen::Index)na.br * na.bc && B.rows() == (Eigen::Index)nb.br * nb.bc, "bmm: operands are not batches");
    const Eigen::Index nbatch = std::max(A.cols(), B.cols());
    check((A.cols() == nbatch || A.cols() == 1) && (B.cols() == nbatch || B.cols() == 1), "bmm: batch sizes differ");
    nd.f0 = ta;
    nd.f1 = tb;
    nd.value.resize((Eigen::Index)m * n, nbatch);
    for (Eigen::Index j = 0; j < nbatch; j++)
        tiny_gemm(A.data() + (A.cols() == 1 ? 0 : j) * A.rows(), na.br, ta, B.data() + (B.cols() == 1 ? 0 : j) * B.rows(), nb.br, tb,
                  nd.value.data() + j * nd.value.rows(), m, n, k, false);
    nd.br = m;
    nd.bc = n;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::btranspose(Var a) {
    Node & nd = push(Op::BTranspose, {a});
    const Node & na = nodes_[a.id];
    const M & A = val(a.id);
    nd.value.resize(A.rows(), A.cols());
    for (Eigen::Index j = 0; j < A.cols(); j++)
        MMap<T>(nd.value.data() + j * A.rows(), na.bc, na.br) = CMap<T>(A.data() + j * A.rows(), na.br, na.bc).transpose();
    nd.br = na.bc;
    nd.bc = na.br;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::bdiag(Var v) {
    Node & nd = push(Op::BDiag, {v});
    const M & V = val(v.id);
    const Eigen::Index n = V.rows();
    nd.value.setZero(n * n, V.cols());
    for (Eigen::Index j = 0; j < V.cols(); j++)
        for (Eigen::Index i = 0; i < n; i++) nd.value(i * n + i, j) = V(i, j);
    nd.br = nd.bc = (int)n;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::bcholesky(Var a) {
    Node & nd = push(Op::BCholesky, {a});
    const Node & na = nodes_[a.id];
    const M & A = val(a.id);
    const int n = na.br;
    check(na.br == na.bc && n <= kMaxSmall, "bcholesky: needs square matrices of at most 16 x 16");
    nd.value.resize(A.rows(), A.cols());
    for (Eigen::Index j = 0; j < A.cols(); j++)
        if (!chol_factor(A.data() + j * A.rows(), n, nd.value.data() + j * A.rows()) && error_.empty())
            error_ = "bcholesky: matrix " + std::to_string(j) + " of the batch is not positive definite";
    nd.br = nd.bc = n;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::btrisolve(Var L, Var X, bool transpose) {
    Node & nd = push(Op::BTriSolve, {L, X});
    const Node & nl = nodes_[L.id];
    const Node & nx = nodes_[X.id];
    const M & Lv = val(L.id);
    const M & Xv = val(X.id);
    const int n = nl.br, m = nx.bc;
    check(nl.br == nl.bc && nx.br == n, "btrisolve: shapes differ");
    const Eigen::Index nbatch = std::max(Lv.cols(), Xv.cols());
    check((Lv.cols() == nbatch || Lv.cols() == 1) && (Xv.cols() == nbatch || Xv.cols() == 1), "btrisolve: batch sizes differ");
    nd.f0 = transpose;
    nd.value.resize((Eigen::Index)n * m, nbatch);
    for (Eigen::Index j = 0; j < nbatch; j++) {
        CMap<T> Lj(Lv.data() + (Lv.cols() == 1 ? 0 : j) * Lv.rows(), n, n);
        MMap<T> Yj(nd.value.data() + j * nd.value.rows(), n, m);
        Yj = CMap<T>(Xv.data() + (Xv.cols() == 1 ? 0 : j) * Xv.rows(), n, m);
        tiny_trsm(Lj.data(), n, Yj.data(), m, transpose);
    }
    nd.br = n;
    nd.bc = m;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::bchol_logdet(Var L) {
    Node & nd = push(Op::BCholLogDet, {L});
    const Node & nl = nodes_[L.id];
    const M & Lv = val(L.id);
    const int n = nl.br;
    check(nl.br == nl.bc, "bchol_logdet: needs square factors");
    nd.value.resize(1, Lv.cols());
    for (Eigen::Index j = 0; j < Lv.cols(); j++) {
        T s = 0;
        for (int i = 0; i < n; i++) s += std::log(Lv(i * n + i, j));
        nd.value(0, j) = 2 * s;
    }
    nd.br = 1;
    return Var{n_ - 1};
}

// ---- fused log-densities ----------------------------------------------------------------

template <class T> Var Tape<T>::bernoulli_logits(Var logits, Var x) {
    Node & nd = push(Op::BernoulliLogits, {logits, x});
    const M & Lg = val(logits.id);
    const M & X = val(x.id);
    check(Lg.rows() == X.rows() && Lg.cols() == X.cols(), "bernoulli_logits: shapes differ");
    // x log s(l) + (1 - x) log(1 - s(l)) = x l - softplus(l)
    // softplus(l) = max(l, 0) + log1p(e), e = exp(-|l|). Column by column: each sum is a
    // contiguous, vectorised reduction. When the logits need a gradient, d/dl = x - sigmoid(l)
    // is kept in aux (sigmoid(l) = 1/(1 + e) for l >= 0, e/(1 + e) otherwise), so the backward
    // pass needs no second exp.
    const bool keep = nodes_[logits.id].needs_grad;
    nd.value.resize(1, Lg.cols());
    nd.aux.resize(Lg.rows(), keep ? Lg.cols() : 1);
    for (Eigen::Index j = 0; j < Lg.cols(); j++) {
        const auto l = Lg.col(j).array();
        auto e = nd.aux.col(keep ? j : 0).array();
        e = (-l.abs()).exp();
        nd.value(0, j) = (X.col(j).array() * l - (l.max(T(0)) + e.log1p())).sum();
        if (keep) e = X.col(j).array() - (l >= T(0)).select(T(1), e) / (T(1) + e);
    }
    nd.br = 1;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::gauss_diag_logpdf(Var x, Var mu, Var logvar) {
    Node & nd = push(Op::GaussDiagLogPdf, {x, mu, logvar});
    const M & X = val(x.id);
    const M & Mu = val(mu.id);
    const M & Lv = val(logvar.id);
    const Eigen::Index n = X.rows(), B = X.cols();
    check(Mu.rows() == n && Lv.rows() == n, "gauss_diag_logpdf: sizes differ");
    check((Mu.cols() == B || Mu.cols() == 1) && (Lv.cols() == B || Lv.cols() == 1), "gauss_diag_logpdf: batch sizes differ");
    nd.value.resize(1, B);
    for (Eigen::Index j = 0; j < B; j++) {
        const T * m = Mu.data() + (Mu.cols() == 1 ? 0 : j) * n;
        const T * lv = Lv.data() + (Lv.cols() == 1 ? 0 : j) * n;
        T s = 0;
        for (Eigen::Index i = 0; i < n; i++) {
            const T r = X(i, j) - m[i];
            s += T(kLog2Pi) + lv[i] + r * r * std::exp(-lv[i]);
        }
        nd.value(0, j) = T(-0.5) * s;
    }
    nd.br = 1;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::gauss_chol_logpdf(Var x, Var mu, Var L) {
    Node & nd = push(Op::GaussCholLogPdf, {x, mu, L});
    const M & X = val(x.id);
    const M & Mu = val(mu.id);
    const M & Lv = val(L.id);
    const int n = (int)X.rows();
    const Eigen::Index B = X.cols();
    check(nodes_[L.id].br == n && nodes_[L.id].bc == n && Mu.rows() == n, "gauss_chol_logpdf: sizes differ");
    check((Mu.cols() == B || Mu.cols() == 1) && (Lv.cols() == B || Lv.cols() == 1), "gauss_chol_logpdf: batch sizes differ");
    check(n <= kMaxSmall, "gauss_chol_logpdf: at most 16 dimensions");
    nd.value.resize(1, B);
    nd.aux.resize(n, B); // v = L^{-1} (x - mu), kept for the backward pass
    for (Eigen::Index j = 0; j < B; j++) {
        CMap<T> Lj(Lv.data() + (Lv.cols() == 1 ? 0 : j) * Lv.rows(), n, n);
        auto v = nd.aux.col(j);
        v = X.col(j) - Mu.col(Mu.cols() == 1 ? 0 : j);
        tiny_trsm(Lj.data(), n, v.data(), 1, false);
        T logdet = 0;
        for (int i = 0; i < n; i++) logdet += std::log(Lj(i, i));
        nd.value(0, j) = T(-0.5) * (T(n * kLog2Pi) + v.squaredNorm()) - logdet;
    }
    nd.br = 1;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::slice_batch(Var a, int r0, int r, int c) {
    check(r <= kMaxSmall && c <= kMaxSmall, "slice_batch: small matrices are limited to 16 x 16");
    Var out = slice(a, r0, r * c, 0, (int)val(a.id).cols());
    nodes_[out.id].br = r;
    nodes_[out.id].bc = c;
    return out;
}

// ---- fused Kalman steps ------------------------------------------------------------------
// Each runs KalmanKernels<T, 3, 2> (the default model's sizes, unrolled) or the run-time-size
// kernels, over the batch.

template <class T> Var Tape<T>::kalman_predict(Var F, Var Bu, Var q, Var m, Var P) {
    Node & nd = push(Op::KalmanPredict, {F, Bu, q, m, P});
    const M & Fv = val(F.id), & Bv = val(Bu.id), & qv = val(q.id), & mv = val(m.id), & Pv = val(P.id);
    const int n = (int)mv.rows();
    check(n <= kMaxSmall && Fv.rows() == n * n && Bv.rows() == n && qv.rows() == n && Pv.rows() == n * n, "kalman_predict: sizes differ");
    const Eigen::Index B = batch_of<T>({&Fv, &Bv, &qv, &mv, &Pv});
    check(B > 0, "kalman_predict: batch sizes differ");
    nd.value.resize(n + n * n, B);
    for (Eigen::Index j = 0; j < B; j++) {
        T * out = nd.value.data() + j * nd.value.rows();
        if (n == 3) KalmanKernels<T, 3, 2>::predict(n, col_of(Fv, j), col_of(Bv, j), col_of(qv, j), col_of(mv, j), col_of(Pv, j), out);
        else KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::predict(n, col_of(Fv, j), col_of(Bv, j), col_of(qv, j), col_of(mv, j), col_of(Pv, j), out);
    }
    nd.br = n + n * n;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::kalman_update(Var H, Var R, Var m_pred, Var P_pred, Var a) {
    Node & nd = push(Op::KalmanUpdate, {H, R, m_pred, P_pred, a});
    const M & Hv = val(H.id), & Rv = val(R.id), & mv = val(m_pred.id), & Pv = val(P_pred.id), & av = val(a.id);
    const int n = (int)mv.rows(), k = (int)av.rows();
    check(n <= kMaxSmall && k <= kMaxSmall && Hv.rows() == k * n && Rv.rows() == k * k && Pv.rows() == n * n, "kalman_update: sizes differ");
    const Eigen::Index B = batch_of<T>({&Hv, &Rv, &mv, &Pv, &av});
    check(B > 0, "kalman_update: batch sizes differ");
    nd.value.resize(n + n * n, B);
    nd.aux.resize(k * k + k * n + k, B); // [L_S; K^T; e] per sample, for the backward pass
    for (Eigen::Index j = 0; j < B; j++) {
        T * out = nd.value.data() + j * nd.value.rows(), * aux = nd.aux.data() + j * nd.aux.rows();
        const bool ok = n == 3 && k == 2
            ? KalmanKernels<T, 3, 2>::update(n, k, col_of(Hv, j), col_of(Rv, j), col_of(mv, j), col_of(Pv, j), col_of(av, j), out, aux)
            : KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::update(n, k, col_of(Hv, j), col_of(Rv, j), col_of(mv, j), col_of(Pv, j), col_of(av, j), out, aux);
        if (!ok && error_.empty()) error_ = "kalman_update: innovation covariance " + std::to_string(j) + " of the batch is not positive definite";
    }
    nd.br = n + n * n;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::smoother_gain(Var P_pred_next, Var F_next, Var P, T jitter) {
    Node & nd = push(Op::SmootherGain, {P_pred_next, F_next, P});
    const M & Sv = val(P_pred_next.id), & Fv = val(F_next.id), & Pv = val(P.id);
    const int n = nodes_[P.id].br;
    check(n <= kMaxSmall && nodes_[P.id].bc == n && Sv.rows() == n * n && Fv.rows() == n * n && Pv.rows() == n * n, "smoother_gain: sizes differ");
    const Eigen::Index B = batch_of<T>({&Sv, &Fv, &Pv});
    check(B > 0, "smoother_gain: batch sizes differ");
    nd.value.resize(n * n, B);
    nd.aux.resize(n * n, B); // the Cholesky factor of P_pred + jitter I
    for (Eigen::Index j = 0; j < B; j++) {
        T * J = nd.value.data() + j * n * n, * aux = nd.aux.data() + j * n * n;
        const bool ok = n == 3 ? KalmanKernels<T, 3, 2>::gain(n, col_of(Sv, j), col_of(Fv, j), col_of(Pv, j), jitter, J, aux)
                               : KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::gain(n, col_of(Sv, j), col_of(Fv, j), col_of(Pv, j), jitter, J, aux);
        if (!ok && error_.empty()) error_ = "smoother_gain: predicted covariance " + std::to_string(j) + " of the batch is not positive definite";
    }
    nd.br = nd.bc = n;
    return Var{n_ - 1};
}

template <class T>
Var Tape<T>::backward_sample_step(Var m, Var P, Var J, Var F_next, Var q_next, Var m_pred_next, Var z_next, Var eps, T jitter) {
    Node & nd = push(Op::BackwardSampleStep, {m, P, J, F_next, q_next, m_pred_next, z_next, eps});
    const M & mv = val(m.id), & Pv = val(P.id), & Jv = val(J.id), & Fv = val(F_next.id), & qv = val(q_next.id);
    const M & mpv = val(m_pred_next.id), & zv = val(z_next.id), & ev = val(eps.id);
    const int n = (int)mv.rows();
    check(n <= kMaxSmall && Pv.rows() == n * n && Jv.rows() == n * n && Fv.rows() == n * n && qv.rows() == n && mpv.rows() == n &&
              zv.rows() == n && ev.rows() == n,
          "backward_sample_step: sizes differ");
    const Eigen::Index B = batch_of<T>({&mv, &Pv, &Jv, &Fv, &qv, &mpv, &zv, &ev});
    check(B > 0, "backward_sample_step: batch sizes differ");
    nd.value.resize(n + 1, B);
    nd.aux.resize(n * n, B); // the Cholesky factor Lc of the conditional covariance
    for (Eigen::Index j = 0; j < B; j++) {
        T * out = nd.value.data() + j * (n + 1), * aux = nd.aux.data() + j * n * n;
        const bool ok = n == 3
            ? KalmanKernels<T, 3, 2>::sample(n, col_of(mv, j), col_of(Pv, j), col_of(Jv, j), col_of(Fv, j), col_of(qv, j), col_of(mpv, j), col_of(zv, j), col_of(ev, j), jitter, out, aux)
            : KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::sample(n, col_of(mv, j), col_of(Pv, j), col_of(Jv, j), col_of(Fv, j), col_of(qv, j), col_of(mpv, j), col_of(zv, j),
                                                                   col_of(ev, j), jitter, out, aux);
        if (!ok && error_.empty()) error_ = "backward_sample_step: conditional covariance " + std::to_string(j) + " of the batch is not positive definite";
    }
    nd.br = n + 1;
    return Var{n_ - 1};
}

// ---- backward ---------------------------------------------------------------------------

template <class T> void Tape<T>::backward(Var loss) {
    check(loss.id >= 0 && loss.id < n_, "backward: invalid Var");
    check(val(loss.id).size() == 1, "backward: the loss must be [1, 1]");
    for (int i = 0; i <= loss.id; i++) {
        Node & nd = nodes_[i];
        if (!nd.needs_grad) continue;
        const M & v = val(i);
        nd.grad.resize(v.rows(), v.cols());
        nd.grad_fresh = true;
    }
    nodes_[loss.id].grad(0, 0) = T(1);
    nodes_[loss.id].grad_fresh = false;
    // A node whose grad was never written has a zero gradient: nothing to propagate.
    for (int i = loss.id; i >= 0; i--)
        if (nodes_[i].needs_grad && !nodes_[i].grad_fresh) backward_node(i);
}

template <class T> typename Tape<T>::M & Tape<T>::grad_acc(int id) {
    Node & nd = nodes_[id];
    if (nd.grad_fresh) {
        nd.grad.setZero();
        nd.grad_fresh = false;
    }
    return nd.grad;
}

template <class T> void Tape<T>::backward_node(int id) {
    Node & nd = nodes_[id];
    const M & G = nd.grad;
    const M & Y = val(id);
    auto in_needs = [&](int k) { return nodes_[nd.in[k]].needs_grad; };
    auto gin = [&](int k) -> M & { return grad_acc(nd.in[k]); };
    // For products: the first write assigns (no zeroing pass), later ones accumulate.
    auto first = [&](int k) {
        Node & ni = nodes_[nd.in[k]];
        const bool f = ni.grad_fresh;
        ni.grad_fresh = false;
        return f;
    };
    auto gemm_acc = [&](int k, const auto & product) {
        M & g = nodes_[nd.in[k]].grad;
        if (first(k)) g.noalias() = product;
        else g.noalias() += product;
    };
    auto vin = [&](int k) -> const M & { return val(nd.in[k]); };
    // For the fused ops: the gradients of inputs 0..count-1 (null where an input needs none,
    // zeroed on first use), and their column j (column 0 of a broadcast input).
    auto grad_mats = [&](int count, M ** gm) {
        for (int i = 0; i < count; i++) gm[i] = in_needs(i) ? &gin(i) : nullptr;
    };
    auto grad_cols = [&](int count, M * const * gm, Eigen::Index j, T ** g) {
        for (int i = 0; i < count; i++) g[i] = gm[i] ? col_of(*gm[i], j) : nullptr;
    };

    switch (nd.op) {
    case Op::Constant:
        break;
    case Op::Parameter: {
        Param<T> & p = *nd.param;
        if (p.grad.rows() != p.value.rows() || p.grad.cols() != p.value.cols()) p.grad.setZero(p.value.rows(), p.value.cols());
        p.grad += G;
        break;
    }
    case Op::Linear: {
        // Y = act(W X + b): D = G * act'(Y); dW = D X^T, db = rowsum(D), dX = W^T D
        const M & X = vin(0);
        const M & Wv = vin(1);
        const Activation act = (Activation)nd.i0;
        // the activation's derivative is applied to the node's own gradient in place (no copy)
        M & D = nd.grad;
        if (act == Activation::Relu) D = (Y.array() > T(0)).select(D, T(0));
        else if (act == Activation::Tanh) D = (D.array() * (T(1) - Y.array().square())).matrix();
        const M & Dv = D;
        if (in_needs(1)) gemm_acc(1, Dv * X.transpose());
        if (in_needs(2)) gin(2) += Dv.rowwise().sum();
        if (in_needs(0)) gemm_acc(0, Wv.transpose() * Dv);
        break;
    }
    case Op::MatMul: {
        // C = op(A) op(B)
        const M & A = vin(0);
        const M & B = vin(1);
        const bool ta = nd.f0, tb = nd.f1;
        if (in_needs(0)) {
            if (!ta && !tb) gemm_acc(0, G * B.transpose());                // dA = G B^T
            else if (ta && !tb) gemm_acc(0, B * G.transpose());            // C = A^T B: dA = B G^T
            else if (!ta && tb) gemm_acc(0, G * B);                        // C = A B^T: dA = G B
            else gemm_acc(0, B.transpose() * G.transpose());               // C = A^T B^T: dA = B^T G^T
        }
        if (in_needs(1)) {
            if (!ta && !tb) gemm_acc(1, A.transpose() * G);                // dB = A^T G
            else if (ta && !tb) gemm_acc(1, A * G);                        // dB = A G
            else if (!ta && tb) gemm_acc(1, G.transpose() * A);            // dB = G^T A
            else gemm_acc(1, G.transpose() * A.transpose());               // dB = G^T A^T
        }
        break;
    }
    case Op::Add:
        if (in_needs(0)) broadcast_accumulate<T>(gin(0), G, nullptr, T(1));
        if (in_needs(1)) broadcast_accumulate<T>(gin(1), G, nullptr, T(1));
        break;
    case Op::Sub:
        if (in_needs(0)) broadcast_accumulate<T>(gin(0), G, nullptr, T(1));
        if (in_needs(1)) broadcast_accumulate<T>(gin(1), G, nullptr, T(-1));
        break;
    case Op::Mul:
        if (in_needs(0)) broadcast_accumulate<T>(gin(0), G, &vin(1), T(1));
        if (in_needs(1)) broadcast_accumulate<T>(gin(1), G, &vin(0), T(1));
        break;
    case Op::Scale:
        if (in_needs(0)) gin(0) += nd.s * G;
        break;
    case Op::AddScalar:
        if (in_needs(0)) gin(0) += G;
        break;
    case Op::Relu:
        if (in_needs(0)) gin(0).array() += G.array() * (vin(0).array() > T(0)).template cast<T>();
        break;
    case Op::Tanh:
        if (in_needs(0)) gin(0).array() += G.array() * (T(1) - Y.array().square());
        break;
    case Op::Sigmoid:
        if (in_needs(0)) gin(0).array() += G.array() * Y.array() * (T(1) - Y.array());
        break;
    case Op::Softplus:
        if (in_needs(0)) gin(0).array() += G.array() * vin(0).array().logistic();
        break;
    case Op::Exp:
        if (in_needs(0)) gin(0).array() += G.array() * Y.array();
        break;
    case Op::Log:
        if (in_needs(0)) gin(0).array() += G.array() / vin(0).array();
        break;
    case Op::Square:
        if (in_needs(0)) gin(0).array() += T(2) * G.array() * vin(0).array();
        break;
    case Op::SoftmaxRows:
        if (in_needs(0)) {
            // dx = y * (g - sum(g * y)) per column
            M & GX = gin(0);
            for (Eigen::Index j = 0; j < Y.cols(); j++) {
                const T dot = G.col(j).dot(Y.col(j));
                GX.col(j).array() += Y.col(j).array() * (G.col(j).array() - dot);
            }
        }
        break;
    case Op::Sum:
        if (in_needs(0)) gin(0).array() += G(0, 0);
        break;
    case Op::SumRows:
        if (in_needs(0)) gin(0).rowwise() += G.row(0);
        break;
    case Op::SumCols:
        if (in_needs(0)) gin(0).colwise() += G.col(0);
        break;
    case Op::Slice:
        if (in_needs(0)) gin(0).block(nd.i0, nd.i2, nd.i1, nd.i3) += G;
        break;
    case Op::ConcatRows: {
        Eigen::Index r = 0;
        for (size_t k = 0; k < nd.in.size(); k++) {
            const Eigen::Index rk = vin((int)k).rows();
            if (in_needs((int)k)) gin((int)k) += G.middleRows(r, rk);
            r += rk;
        }
        break;
    }
    case Op::ConcatCols: {
        Eigen::Index c = 0;
        for (size_t k = 0; k < nd.in.size(); k++) {
            const Eigen::Index ck = vin((int)k).cols();
            if (in_needs((int)k)) gin((int)k) += G.middleCols(c, ck);
            c += ck;
        }
        break;
    }
    case Op::BMatMul: {
        const Node & na = nodes_[nd.in[0]];
        const Node & nb = nodes_[nd.in[1]];
        const M & A = vin(0);
        const M & B = vin(1);
        const bool ta = nd.f0, tb = nd.f1;
        const bool need_a = in_needs(0), need_b = in_needs(1);
        T * GA = need_a ? gin(0).data() : nullptr;
        T * GB = need_b ? gin(1).data() : nullptr;
        const int m = nd.br, n = nd.bc;
        for (Eigen::Index j = 0; j < G.cols(); j++) {
            const Eigen::Index ja = A.cols() == 1 ? 0 : j, jb = B.cols() == 1 ? 0 : j;
            const T * Aj = A.data() + ja * A.rows();
            const T * Bj = B.data() + jb * B.rows();
            const T * Gj = G.data() + j * G.rows();
            if (need_a) { // dA = G op(B)^T (or its transpose when A entered transposed): inner dimension n
                T * GAj = GA + ja * A.rows();
                if (!ta) tiny_gemm(Gj, m, false, Bj, nb.br, !tb, GAj, na.br, na.bc, n, true);
                else tiny_gemm(Bj, nb.br, tb, Gj, m, true, GAj, na.br, na.bc, n, true);
            }
            if (need_b) { // dB = op(A)^T G (or its transpose): inner dimension m
                T * GBj = GB + jb * B.rows();
                if (!tb) tiny_gemm(Aj, na.br, !ta, Gj, m, false, GBj, nb.br, nb.bc, m, true);
                else tiny_gemm(Gj, m, true, Aj, na.br, ta, GBj, nb.br, nb.bc, m, true);
            }
        }
        break;
    }
    case Op::BTranspose:
        if (in_needs(0)) {
            const Node & na = nodes_[nd.in[0]];
            M & GA = gin(0);
            for (Eigen::Index j = 0; j < G.cols(); j++)
                MMap<T>(GA.data() + j * GA.rows(), na.br, na.bc) += CMap<T>(G.data() + j * G.rows(), nd.br, nd.bc).transpose();
        }
        break;
    case Op::BDiag:
        if (in_needs(0)) {
            M & GV = gin(0);
            const Eigen::Index n = GV.rows();
            for (Eigen::Index j = 0; j < G.cols(); j++)
                for (Eigen::Index i = 0; i < n; i++) GV(i, j) += G(i * n + i, j);
        }
        break;
    case Op::BCholesky:
        if (in_needs(0)) {
            const int n = nd.br;
            M & GA = gin(0);
            for (Eigen::Index j = 0; j < G.cols(); j++) chol_backward(Y.data() + j * Y.rows(), G.data() + j * G.rows(), n, GA.data() + j * GA.rows());
        }
        break;
    case Op::BTriSolve: {
        // Y = L^{-1} X:   Xbar = L^{-T} G,  Lbar = -tril(Xbar Y^T)
        // Y = L^{-T} X:   Xbar = L^{-1} G,  Lbar = -tril(Y Xbar^T)
        const Node & nl = nodes_[nd.in[0]];
        const M & Lv = vin(0);
        const M & Xv = vin(1);
        const int n = nl.br, m = nd.bc;
        const bool need_l = in_needs(0), need_x = in_needs(1);
        for (Eigen::Index j = 0; j < G.cols(); j++) {
            const Eigen::Index jl = Lv.cols() == 1 ? 0 : j, jx = Xv.cols() == 1 ? 0 : j;
            CMap<T> Lj(Lv.data() + jl * Lv.rows(), n, n);
            CMap<T> Yj(Y.data() + j * Y.rows(), n, m);
            SM<T> Xbar = CMap<T>(G.data() + j * G.rows(), n, m);
            tiny_trsm(Lj.data(), n, Xbar.data(), m, !nd.f0);
            if (need_x) MMap<T>(gin(1).data() + jx * Xv.rows(), n, m) += Xbar;
            if (need_l) {
                MMap<T> GLj(gin(0).data() + jl * Lv.rows(), n, n);
                SM<T> outer = nd.f0 ? SM<T>(Yj.lazyProduct(Xbar.transpose())) : SM<T>(Xbar.lazyProduct(Yj.transpose()));
                GLj.template triangularView<Eigen::Lower>() -= outer;
            }
        }
        break;
    }
    case Op::BCholLogDet:
        if (in_needs(0)) {
            const int n = nodes_[nd.in[0]].br;
            const M & Lv = vin(0);
            M & GL = gin(0);
            for (Eigen::Index j = 0; j < G.cols(); j++)
                for (int i = 0; i < n; i++) GL(i * n + i, j) += T(2) * G(0, j) / Lv(i * n + i, j);
        }
        break;
    case Op::BernoulliLogits: {
        const M & Lg = vin(0);
        const M & X = vin(1);
        // d/dl = x - sigmoid(l) (kept in aux by the forward pass), d/dx = l, each scaled by the
        // column's upstream gradient; column by column (contiguous, vectorised); the first write
        // assigns (no zeroing pass)
        if (in_needs(0)) {
            const bool fresh = first(0);
            M & g = nodes_[nd.in[0]].grad;
            for (Eigen::Index j = 0; j < X.cols(); j++) {
                if (fresh) g.col(j) = G(0, j) * nd.aux.col(j);
                else g.col(j) += G(0, j) * nd.aux.col(j);
            }
        }
        if (in_needs(1)) gin(1).array() += Lg.array().rowwise() * G.row(0).array();
        break;
    }
    case Op::GaussDiagLogPdf: {
        const M & X = vin(0);
        const M & Mu = vin(1);
        const M & Lv = vin(2);
        const Eigen::Index n = X.rows();
        for (Eigen::Index j = 0; j < X.cols(); j++) {
            const Eigen::Index jm = Mu.cols() == 1 ? 0 : j, jv = Lv.cols() == 1 ? 0 : j;
            for (Eigen::Index i = 0; i < n; i++) {
                const T r = X(i, j) - Mu(i, jm);
                const T ivar = std::exp(-Lv(i, jv));
                if (in_needs(0)) gin(0)(i, j) -= G(0, j) * r * ivar;
                if (in_needs(1)) gin(1)(i, jm) += G(0, j) * r * ivar;
                if (in_needs(2)) gin(2)(i, jv) += T(-0.5) * G(0, j) * (T(1) - r * r * ivar);
            }
        }
        break;
    }
    case Op::GaussCholLogPdf: {
        // v = L^{-1} r, w = L^{-T} v = Sigma^{-1} r:
        //   dx = -g w,  dmu = g w,  dL = g (tril(w v^T) - diag(1 / L_ii))
        const M & X = vin(0);
        const M & Mu = vin(1);
        const M & Lv = vin(2);
        const int n = (int)X.rows();
        for (Eigen::Index j = 0; j < X.cols(); j++) {
            const Eigen::Index jm = Mu.cols() == 1 ? 0 : j, jl = Lv.cols() == 1 ? 0 : j;
            CMap<T> Lj(Lv.data() + jl * Lv.rows(), n, n);
            Eigen::Matrix<T, Eigen::Dynamic, 1, 0, kMaxSmall, 1> v = nd.aux.col(j);
            Eigen::Matrix<T, Eigen::Dynamic, 1, 0, kMaxSmall, 1> w = v;
            tiny_trsm(Lj.data(), n, w.data(), 1, true);
            const T g = G(0, j);
            if (in_needs(0)) gin(0).col(j) -= g * w;
            if (in_needs(1)) gin(1).col(jm) += g * w;
            if (in_needs(2)) {
                MMap<T> GLj(gin(2).data() + jl * Lv.rows(), n, n);
                for (int c = 0; c < n; c++) {
                    for (int r = c; r < n; r++) GLj(r, c) += g * w(r) * v(c);
                    GLj(c, c) -= g / Lj(c, c);
                }
            }
        }
        break;
    }
    case Op::KalmanPredict: {
        const int n = (int)vin(3).rows();
        M * gm[5];
        T * g[5];
        grad_mats(5, gm);
        for (Eigen::Index j = 0; j < G.cols(); j++) {
            grad_cols(5, gm, j, g);
            const T * F = col_of(vin(0), j), * m = col_of(vin(3), j), * P = col_of(vin(4), j), * Gj = G.data() + j * G.rows();
            if (n == 3) KalmanKernels<T, 3, 2>::predict_back(n, F, m, P, Gj, g[0], g[1], g[2], g[3], g[4]);
            else KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::predict_back(n, F, m, P, Gj, g[0], g[1], g[2], g[3], g[4]);
        }
        break;
    }
    case Op::KalmanUpdate: {
        const int n = (int)vin(2).rows(), k = (int)vin(4).rows();
        M * gm[5];
        T * g[5];
        grad_mats(5, gm);
        for (Eigen::Index j = 0; j < G.cols(); j++) {
            grad_cols(5, gm, j, g);
            const T * H = col_of(vin(0), j), * R = col_of(vin(1), j), * mp = col_of(vin(2), j), * Pp = col_of(vin(3), j);
            const T * aux = nd.aux.data() + j * nd.aux.rows(), * Gj = G.data() + j * G.rows();
            if (n == 3 && k == 2) KalmanKernels<T, 3, 2>::update_back(n, k, H, R, mp, Pp, aux, Gj, g[0], g[1], g[2], g[3], g[4]);
            else KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::update_back(n, k, H, R, mp, Pp, aux, Gj, g[0], g[1], g[2], g[3], g[4]);
        }
        break;
    }
    case Op::SmootherGain: {
        const int n = nd.br;
        M * gm[3];
        T * g[3];
        grad_mats(3, gm);
        for (Eigen::Index j = 0; j < G.cols(); j++) {
            grad_cols(3, gm, j, g);
            const T * F = col_of(vin(1), j), * P = col_of(vin(2), j), * J = Y.data() + j * Y.rows(), * aux = nd.aux.data() + j * nd.aux.rows();
            const T * Gj = G.data() + j * G.rows();
            if (n == 3) KalmanKernels<T, 3, 2>::gain_back(n, F, P, J, aux, Gj, g[0], g[1], g[2]);
            else KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::gain_back(n, F, P, J, aux, Gj, g[0], g[1], g[2]);
        }
        break;
    }
    case Op::BackwardSampleStep: {
        const int n = (int)vin(0).rows();
        M * gm[7];
        T * g[7];
        grad_mats(7, gm);
        for (Eigen::Index j = 0; j < G.cols(); j++) {
            grad_cols(7, gm, j, g);
            const T * P = col_of(vin(1), j), * J = col_of(vin(2), j), * F = col_of(vin(3), j), * q = col_of(vin(4), j);
            const T * mpn = col_of(vin(5), j), * zn = col_of(vin(6), j), * eps = col_of(vin(7), j);
            const T * aux = nd.aux.data() + j * nd.aux.rows(), * Gj = G.data() + j * G.rows();
            if (n == 3) KalmanKernels<T, 3, 2>::sample_back(n, P, J, F, q, mpn, zn, eps, aux, Gj, g[0], g[1], g[2], g[3], g[4], g[5], g[6]);
            else KalmanKernels<T, Eigen::Dynamic, Eigen::Dynamic>::sample_back(n, P, J, F, q, mpn, zn, eps, aux, Gj, g[0], g[1], g[2], g[3], g[4], g[5], g[6]);
        }
        break;
    }
    }
}

template class Tape<float>;
template class Tape<double>;

} // namespace ekvae
