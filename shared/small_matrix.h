// small_matrix.h: loops on tiny column-major matrices shared by the tape's ops (autodiff.cpp)
// and the fused Kalman ops (kalman_ops.cpp). Internal to the core: not part of its API.
#pragma once
#include "autodiff.h"

#include <initializer_list>
#include <stdexcept>

namespace ekvae {
// Internal linkage, as when these lived in autodiff.cpp: each file gets its own copy, so the
// compiler inlines (and contracts multiply-adds) exactly as before the split.
namespace {

// Small matrices live on the stack (no heap traffic inside the batched loops).
constexpr int kMaxSmall = 16;
template <class T> using SM = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, kMaxSmall, kMaxSmall>;
template <class T> using CMap = Eigen::Map<const Mat<T>>;
template <class T> using MMap = Eigen::Map<Mat<T>>;

void check(bool ok, const char * what) {
    if (!ok) throw std::invalid_argument(what);
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
} // namespace ekvae
