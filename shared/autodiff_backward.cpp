// autodiff_backward.cpp: the tape's backward pass (see autodiff.h): Tape::backward and the
// backward rule of every op of autodiff.cpp, in the same order.
//
// Every backward rule below is checked against central finite differences in double precision
// by tests/test_autodiff.cpp.
#include "autodiff.h"

#include "gemm.h"
#include "small_matrix.h"

#include <cmath>
#include <limits>

namespace ekvae {

namespace {

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



} // namespace

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
    // grad of input k (+)= op(P) op(Q)
    auto gemm_acc = [&](int k, const M & P, bool tp, const M & Q, bool tq) {
        const bool f = first(k);
        matmul_into(nodes_[nd.in[k]].grad, P, tp, Q, tq, !f);
    };
    auto vin = [&](int k) -> const M & { return val(nd.in[k]); };
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
        const Activation act = nd.act;
        // the activation's derivative is applied to the node's own gradient in place (no copy)
        M & D = nd.grad;
        if (act == Activation::Relu) {
            // act'(Y) = [Y > 0], as a plain loop that compilers vectorise (a compare and a blend,
            // wasm SIMD too): Eigen 3.4's select() is a scalar loop with a branch on the sign, and
            // was 10% of a browser-preset training step (perf, 2026-12-08). The same values.
            eigen_assert(D.rows() == Y.rows() && D.cols() == Y.cols()); // (select() checked it too)
            T * d = D.data();
            const T * y = Y.data();
            for (Eigen::Index i = 0, n = D.size(); i < n; i++) {
                const T g = d[i];
                d[i] = y[i] > T(0) ? g : T(0);
            }
        } else if (act == Activation::Tanh) D = (D.array() * (T(1) - Y.array().square())).matrix();
        const M & Dv = D;
        if (in_needs(1)) gemm_acc(1, Dv, false, X, true);
        if (in_needs(2)) gin(2) += Dv.rowwise().sum();
        if (in_needs(0)) gemm_acc(0, Wv, true, Dv, false);
        break;
    }
    case Op::MatMul: {
        // C = op(A) op(B)
        const M & A = vin(0);
        const M & B = vin(1);
        const bool ta = nd.trans_a, tb = nd.trans_b;
        if (in_needs(0)) {
            if (!ta && !tb) gemm_acc(0, G, false, B, true);                // dA = G B^T
            else if (ta && !tb) gemm_acc(0, B, false, G, true);            // C = A^T B: dA = B G^T
            else if (!ta && tb) gemm_acc(0, G, false, B, false);           // C = A B^T: dA = G B
            else gemm_acc(0, B, true, G, true);               // C = A^T B^T: dA = B^T G^T
        }
        if (in_needs(1)) {
            if (!ta && !tb) gemm_acc(1, A, true, G, false);                // dB = A^T G
            else if (ta && !tb) gemm_acc(1, A, false, G, false);           // dB = A G
            else if (!ta && tb) gemm_acc(1, G, true, A, false);            // dB = G^T A
            else gemm_acc(1, G, true, A, true);               // dB = G^T A^T
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
        if (in_needs(0)) gin(0) += nd.scalar * G;
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
        if (in_needs(0)) gin(0).block(nd.r0, nd.c0, nd.nr, nd.nc) += G;
        break;
    case Op::ConcatRows:
    case Op::ConcatCols: { // input k's block of G: its rows (or columns) from `at` on
        const bool rows = nd.op == Op::ConcatRows;
        Eigen::Index at = 0;
        for (size_t k = 0; k < nd.in.size(); k++) {
            const Eigen::Index nk = rows ? vin((int)k).rows() : vin((int)k).cols();
            if (in_needs((int)k)) {
                if (rows) gin((int)k) += G.middleRows(at, nk);
                else gin((int)k) += G.middleCols(at, nk);
            }
            at += nk;
        }
        break;
    }
    case Op::BMatMul: {
        const Node & na = nodes_[nd.in[0]];
        const Node & nb = nodes_[nd.in[1]];
        const M & A = vin(0);
        const M & B = vin(1);
        const bool ta = nd.trans_a, tb = nd.trans_b;
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
            tiny_trsm(Lj.data(), n, Xbar.data(), m, !nd.trans_a);
            if (need_x) MMap<T>(gin(1).data() + jx * Xv.rows(), n, m) += Xbar;
            if (need_l) {
                MMap<T> GLj(gin(0).data() + jl * Lv.rows(), n, n);
                SM<T> outer = nd.trans_a ? SM<T>(Yj.lazyProduct(Xbar.transpose())) : SM<T>(Xbar.lazyProduct(Yj.transpose()));
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
    case Op::Fused: {
        FusedNode<T> f;
        f.n_in = (int)nd.in.size();
        for (int i = 0; i < f.n_in; i++) {
            f.in[i] = &vin(i);
            f.in_grad[i] = in_needs(i) ? &gin(i) : nullptr; // zeroed on first use
        }
        f.value = &Y;
        f.aux = &nd.aux;
        f.grad = &G;
        f.br = nd.br;
        nd.fused(f);
        break;
    }
    }
}


#define EKVAE_TAPE_BACKWARD_INSTANTIATE(T)                                                                                   \
    template void Tape<T>::backward(Var);                                                                                    \
    template Tape<T>::M & Tape<T>::grad_acc(int);                                                                            \
    template void Tape<T>::backward_node(int);

EKVAE_TAPE_BACKWARD_INSTANTIATE(float)
EKVAE_TAPE_BACKWARD_INSTANTIATE(double)

} // namespace ekvae
