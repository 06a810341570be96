// autodiff.cpp: the tape's bookkeeping and the forward pass of every Tape op (see autodiff.h);
// their backward rules are in autodiff_backward.cpp, in the same order.
#include "autodiff.h"

#include "gemm.h"
#include "small_matrix.h"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace ekvae {

namespace {



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
        const T * pa = col_of(a, j);
        const T * pb = col_of(b, j);
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

// An operand with c columns broadcasts over a batch of B: c is B or 1.
bool broadcasts(Eigen::Index c, Eigen::Index B) { return c == B || c == 1; }

// The batch size of a batched op's two operands, each [*, batch] or [*, 1] (broadcast).
Eigen::Index checked_batch(Eigen::Index ca, Eigen::Index cb, const char * what) {
    const Eigen::Index nbatch = std::max(ca, cb);
    check(broadcasts(ca, nbatch) && broadcasts(cb, nbatch), what);
    return nbatch;
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
    nd.act = Activation::None;
    nd.r0 = nd.nr = nd.c0 = nd.nc = 0;
    nd.trans_a = nd.trans_b = false;
    nd.scalar = T(0);
    nd.fused = nullptr;
    return nd;
}

template <class T> Var Tape<T>::shaped(int br, int bc) {
    nodes_[n_ - 1].br = br;
    nodes_[n_ - 1].bc = bc;
    return Var{n_ - 1};
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
    constant(v);
    return shaped(r, c);
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
    nd.act = act;
    // start from the bias and accumulate the product (Eigen's assignment would zero the
    // output first: this way that pass does useful work)
    nd.value = bv.col(0).rowwise().replicate(X.cols());
    matmul_into(nd.value, Wv, false, X, false, true);
    if (act == Activation::Relu) nd.value = nd.value.cwiseMax(T(0));
    else if (act == Activation::Tanh) nd.value = nd.value.array().tanh().matrix();
    nd.br = (int)nd.value.rows();
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::matmul(Var a, Var b, bool ta, bool tb) {
    Node & nd = push(Op::MatMul, {a, b});
    nd.trans_a = ta;
    nd.trans_b = tb;
    const M & A = val(a.id);
    const M & B = val(b.id);
    const Eigen::Index ka = ta ? A.rows() : A.cols();
    const Eigen::Index kb = tb ? B.cols() : B.rows();
    check(ka == kb, "matmul: inner dimensions differ");
    matmul_into(nd.value, A, ta, B, tb, false);
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
    nd.scalar = s;
    nd.value = s * val(a.id);
    nd.br = nodes_[a.id].br;
    nd.bc = nodes_[a.id].bc;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::add_scalar(Var a, T s) {
    Node & nd = push(Op::AddScalar, {a});
    nd.scalar = s;
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
    nd.r0 = r0; nd.nr = nr; nd.c0 = c0; nd.nc = nc;
    nd.value = X.block(r0, c0, nr, nc);
    if (nr == X.rows()) { nd.br = nodes_[a.id].br; nd.bc = nodes_[a.id].bc; } else nd.br = nr;
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::concat(const std::vector<Var> & parts, bool rows) {
    check(!parts.empty(), rows ? "concat_rows: no parts" : "concat_cols: no parts");
    Node & nd = push(rows ? Op::ConcatRows : Op::ConcatCols, {});
    // along: the stacked dimension (summed); across: the other one (must agree)
    Eigen::Index along = 0, across = rows ? val(parts[0].id).cols() : val(parts[0].id).rows();
    for (Var p : parts) {
        check(p.id >= 0 && p.id < n_ - 1, rows ? "concat_rows: invalid input" : "concat_cols: invalid input");
        check((rows ? val(p.id).cols() : val(p.id).rows()) == across, rows ? "concat_rows: column counts differ" : "concat_cols: row counts differ");
        along += rows ? val(p.id).rows() : val(p.id).cols();
        nd.in.push_back(p.id);
        nd.needs_grad = nd.needs_grad || nodes_[p.id].needs_grad;
    }
    if (rows) nd.value.resize(along, across);
    else nd.value.resize(across, along);
    Eigen::Index k = 0;
    for (Var p : parts) {
        const M & v = val(p.id);
        if (rows) nd.value.middleRows(k, v.rows()) = v;
        else nd.value.middleCols(k, v.cols()) = v;
        k += rows ? v.rows() : v.cols();
    }
    if (rows) {
        nd.br = (int)along;
    } else {
        nd.br = nodes_[parts[0].id].br;
        nd.bc = nodes_[parts[0].id].bc;
    }
    return Var{n_ - 1};
}

template <class T> Var Tape<T>::concat_rows(const std::vector<Var> & parts) { return concat(parts, true); }
template <class T> Var Tape<T>::concat_cols(const std::vector<Var> & parts) { return concat(parts, false); }

// ---- batched small-matrix ops -----------------------------------------------------------

template <class T> Var Tape<T>::as_batch(Var a, int r, int c) {
    check((Eigen::Index)r * c == val(a.id).rows(), "as_batch: rows != r*c");
    check(r <= kMaxSmall && c <= kMaxSmall, "as_batch: small matrices are limited to 16 x 16");
    Node & nd = push(Op::Scale, {a}); // a copy: scale by 1
    nd.scalar = T(1);
    nd.value = val(a.id);
    return shaped(r, c);
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
    const Eigen::Index nbatch = checked_batch(A.cols(), B.cols(), "bmm: batch sizes differ");
    nd.trans_a = ta;
    nd.trans_b = tb;
    nd.value.resize((Eigen::Index)m * n, nbatch);
    for (Eigen::Index j = 0; j < nbatch; j++)
        tiny_gemm(col_of(A, j), na.br, ta, col_of(B, j), nb.br, tb, nd.value.data() + j * nd.value.rows(), m, n, k, false);
    return shaped(m, n);
}

template <class T> Var Tape<T>::btranspose(Var a) {
    Node & nd = push(Op::BTranspose, {a});
    const Node & na = nodes_[a.id];
    const M & A = val(a.id);
    nd.value.resize(A.rows(), A.cols());
    for (Eigen::Index j = 0; j < A.cols(); j++)
        MMap<T>(nd.value.data() + j * A.rows(), na.bc, na.br) = CMap<T>(A.data() + j * A.rows(), na.br, na.bc).transpose();
    return shaped(na.bc, na.br);
}

template <class T> Var Tape<T>::bdiag(Var v) {
    Node & nd = push(Op::BDiag, {v});
    const M & V = val(v.id);
    const Eigen::Index n = V.rows();
    nd.value.setZero(n * n, V.cols());
    for (Eigen::Index j = 0; j < V.cols(); j++)
        for (Eigen::Index i = 0; i < n; i++) nd.value(i * n + i, j) = V(i, j);
    return shaped((int)n, (int)n);
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
    return shaped(n, n);
}

template <class T> Var Tape<T>::btrisolve(Var L, Var X, bool transpose) {
    Node & nd = push(Op::BTriSolve, {L, X});
    const Node & nl = nodes_[L.id];
    const Node & nx = nodes_[X.id];
    const M & Lv = val(L.id);
    const M & Xv = val(X.id);
    const int n = nl.br, m = nx.bc;
    check(nl.br == nl.bc && nx.br == n, "btrisolve: shapes differ");
    const Eigen::Index nbatch = checked_batch(Lv.cols(), Xv.cols(), "btrisolve: batch sizes differ");
    nd.trans_a = transpose;
    nd.value.resize((Eigen::Index)n * m, nbatch);
    for (Eigen::Index j = 0; j < nbatch; j++) {
        MMap<T> Yj(nd.value.data() + j * nd.value.rows(), n, m);
        Yj = CMap<T>(col_of(Xv, j), n, m);
        tiny_trsm(col_of(Lv, j), n, Yj.data(), m, transpose);
    }
    return shaped(n, m);
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
    const M & X = val(x.id), & Mu = val(mu.id), & Lv = val(logvar.id);
    const Eigen::Index n = X.rows(), B = X.cols();
    check(Mu.rows() == n && Lv.rows() == n, "gauss_diag_logpdf: sizes differ");
    check(broadcasts(Mu.cols(), B) && broadcasts(Lv.cols(), B), "gauss_diag_logpdf: batch sizes differ");
    nd.value.resize(1, B);
    for (Eigen::Index j = 0; j < B; j++) {
        const T * m = col_of(Mu, j);
        const T * lv = col_of(Lv, j);
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
    const M & X = val(x.id), & Mu = val(mu.id), & Lv = val(L.id);
    const int n = (int)X.rows();
    const Eigen::Index B = X.cols();
    check(nodes_[L.id].br == n && nodes_[L.id].bc == n && Mu.rows() == n, "gauss_chol_logpdf: sizes differ");
    check(broadcasts(Mu.cols(), B) && broadcasts(Lv.cols(), B), "gauss_chol_logpdf: batch sizes differ");
    check(n <= kMaxSmall, "gauss_chol_logpdf: at most 16 dimensions");
    nd.value.resize(1, B);
    nd.aux.resize(n, B); // v = L^{-1} (x - mu), kept for the backward pass
    for (Eigen::Index j = 0; j < B; j++) {
        CMap<T> Lj(col_of(Lv, j), n, n);
        auto v = nd.aux.col(j);
        v = X.col(j) - CMap<T>(col_of(Mu, j), n, 1);
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

// ---- ops defined outside the tape ----------------------------------------------------------

template <class T> Var Tape<T>::fused(FusedBackward<T> back, std::initializer_list<Var> inputs, int br, int bc, M *& value, M *& aux) {
    check(inputs.size() <= (size_t)kMaxFusedInputs, "Tape::fused: too many inputs");
    Node & nd = push(Op::Fused, inputs);
    nd.fused = back;
    value = &nd.value;
    aux = &nd.aux;
    return shaped(br, bc);
}

template <class T> void Tape<T>::fail(const std::string & what) {
    if (error_.empty()) error_ = what;
}

// The members defined here; autodiff_backward.cpp instantiates the backward pass.
template class Tape<float>;
template class Tape<double>;

} // namespace ekvae
