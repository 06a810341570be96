// autodiff.h: reverse-mode automatic differentiation on Eigen matrices.
//
// A Tape<T> records operations on whole matrices (never on scalars). Each recorded node keeps
// its value and what its backward pass needs; backward() walks the tape in reverse and
// accumulates gradients. Layout conventions (column-major, one column per sample):
//
//   a batch of B vectors of size n          [n, B]
//   a batch of B small r x c matrices      [r*c, B]  (each column a column-major r x c matrix)
//   a per-sample scalar                     [1, B]
//
// Batches are columns of one matrix, so the tape's length does not grow with the batch size;
// the batched small-matrix ops (bmm, bcholesky, btrisolve, ...) loop over the columns inside
// one node. A batched operand with a single column is broadcast to every sample.
//
// Buffers: reset() keeps every node's storage, so a step that records the same sequence of
// shapes as the previous one allocates nothing in the tape (Eigen's matrix products may still
// use their own blocking workspace).
//
// Templated on the scalar type: training runs in float, gradient checks in double
// (explicit instantiations for float and double live in autodiff.cpp).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <string>
#include <vector>

namespace ekvae {

template <class T> using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

// A named trainable matrix with its gradient (accumulated by Tape::backward).
template <class T> struct Param {
    std::string name;
    Mat<T> value;
    Mat<T> grad;
};

// A handle to a node of a tape.
struct Var {
    int id = -1;
};

// Activation of a fused Linear layer.
enum class Activation { Relu, Tanh, None };

enum class Op : uint8_t {
    Constant, Parameter,
    Linear, MatMul, Add, Sub, Mul, Scale, AddScalar,
    Relu, Tanh, Sigmoid, Softplus, Exp, Log, Square,
    SoftmaxRows, Sum, SumRows, SumCols,
    Slice, ConcatRows, ConcatCols,
    BMatMul, BTranspose, BDiag, BCholesky, BTriSolve, BCholLogDet,
    BernoulliLogits, GaussDiagLogPdf, GaussCholLogPdf,
    Fused, // an op defined outside the tape (see Tape::fused)
};

template <class T> class Tape;

// ---- ops defined outside the tape ------------------------------------------------------------
// A fused op written elsewhere (the Kalman steps of kalman_ops.h) keeps the model's maths out
// of this generic tape. The op records a node with Tape::fused() and fills its value (and aux:
// what its backward pass needs) in place; backward() later calls the op's FusedBackward with
// everything the node holds.
constexpr int kMaxFusedInputs = 8;
template <class T> struct FusedNode {
    int n_in = 0;
    const Mat<T> * in[kMaxFusedInputs] = {};   // the inputs' values
    Mat<T> * in_grad[kMaxFusedInputs] = {};    // their gradients: null where an input needs none,
                                               // else zeroed on first use; the op adds into them
    const Mat<T> * value = nullptr;            // the node's value
    const Mat<T> * aux = nullptr;              // what the forward pass kept
    const Mat<T> * grad = nullptr;             // d loss / d value
    int br = 0;                                // small-matrix rows of the value
};
template <class T> using FusedBackward = void (*)(const FusedNode<T> & node);

template <class T> class Tape {
public:
    using M = Mat<T>;

    // ---- leaves -------------------------------------------------------------------------
    // A constant (copied into the tape); no gradient flows into it.
    Var constant(const M & value);
    // A constant read in place, without a copy (a training batch): `value` must stay alive and
    // unchanged until the tape is reset.
    Var constant_ref(const M & value);
    // A constant whose small-matrix shape is r x c ([r*c, B]).
    Var constant_batch(const M & value, int r, int c);
    // A trainable parameter: its value is read in place and its grad accumulated by backward().
    Var param(Param<T> & p);
    // The same parameter read as a batch of r x c matrices (value [r*c, 1] or [r*c, B]).
    Var param_batch(Param<T> & p, int r, int c);

    // ---- dense ops ----------------------------------------------------------------------
    // A fused layer act(W x + b): x [n_in, B], W [n_out, n_in], b [n_out, 1] -> [n_out, B].
    // One node instead of four, so a layer costs one pass over its output each way.
    Var linear(Var x, Var W, Var b, Activation act);
    // op(a) op(b), op = transpose when the flag is set                     [m, k] x [k, n]
    Var matmul(Var a, Var b, bool transpose_a = false, bool transpose_b = false);
    // Elementwise a + b, a - b, a * b. Each operand may be broadcast: shape [n, B], [n, 1],
    // [1, B] or [1, 1] against the other.
    Var add(Var a, Var b) { return binary(Op::Add, a, b); }
    Var sub(Var a, Var b) { return binary(Op::Sub, a, b); }
    Var mul(Var a, Var b) { return binary(Op::Mul, a, b); }
    Var scale(Var a, T s);      // s * a
    Var add_scalar(Var a, T s); // a + s
    Var neg(Var a) { return scale(a, T(-1)); }
    Var relu(Var a);
    Var tanh(Var a);
    Var sigmoid(Var a);
    Var softplus(Var a); // log(1 + exp(a)), stable
    Var exp(Var a);
    Var log(Var a);
    Var square(Var a);
    Var softmax_rows(Var a); // softmax over dimension 0 (each column sums to 1)
    Var sum(Var a);          // -> [1, 1]
    Var sum_rows(Var a);     // sum over dimension 0 -> [1, B]
    Var sum_cols(Var a);     // sum over dimension 1 -> [n, 1]
    Var mean(Var a) { return scale(sum(a), T(1) / T(value(a).size())); }
    // a(r0 : r0 + nr, c0 : c0 + nc)
    Var slice(Var a, int r0, int nr, int c0, int nc);
    Var slice_rows(Var a, int r0, int nr) { return slice(a, r0, nr, 0, (int)value(a).cols()); }
    Var slice_cols(Var a, int c0, int nc) { return slice(a, 0, (int)value(a).rows(), c0, nc); }
    Var concat_rows(const std::vector<Var> & parts); // stacked vertically
    Var concat_cols(const std::vector<Var> & parts); // side by side
    // rows [r0, r0 + r*c) of a, read as a batch of r x c matrices
    Var slice_batch(Var a, int r0, int r, int c);

    // ---- batched small-matrix ops (each column one small matrix) ----------------------
    // Reinterpret a [r*c, B] value as a batch of r x c matrices (a copy; small).
    Var as_batch(Var a, int r, int c);
    // op(A_b) op(B_b) for every sample b                                   -> [m*n, B]
    Var bmm(Var a, Var b, bool transpose_a = false, bool transpose_b = false);
    Var btranspose(Var a);
    // diagonal matrices from vectors [n, B] -> [n*n, B]
    Var bdiag(Var v);
    // lower Cholesky factor of each symmetric positive-definite A_b (only the lower triangle is
    // read; the gradient is the symmetric one). A failure sets error() and yields NaN.
    Var bcholesky(Var a);
    // L_b^{-1} X_b (or L_b^{-T} X_b when transpose) with L_b lower triangular
    Var btrisolve(Var L, Var X, bool transpose = false);
    // log det(L_b L_b^T) = 2 sum log diag(L_b)                                -> [1, B]
    Var bchol_logdet(Var L);
    // (A + A^T) / 2
    Var bsymmetrize(Var a) { return scale(add(a, btranspose(a)), T(0.5)); }

    // ---- fused, numerically stable log-densities (one value per column, [1, B]) --------
    // sum_i x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i)); x constant in [0, 1]
    Var bernoulli_logits(Var logits, Var x);
    // log N(x; mu, diag(exp(logvar))); mu and logvar may be [n, 1] (broadcast)
    Var gauss_diag_logpdf(Var x, Var mu, Var logvar);
    // log N(x; mu, L L^T), L a batch of lower-triangular n x n factors; mu may be [n, 1]
    Var gauss_chol_logpdf(Var x, Var mu, Var L);

    // ---- ops defined outside the tape (see FusedNode) ----------------------------------
    // Records a node of small-matrix shape br x bc whose value the caller computes from the
    // inputs' values: it fills *value (and *aux, if its backward needs more) right away,
    // before recording anything else.
    Var fused(FusedBackward<T> back, std::initializer_list<Var> inputs, int br, int bc, M *& value, M *& aux);
    // Records a numerical failure (the first one is kept; see error()).
    void fail(const std::string & what);

    // ---- running ------------------------------------------------------------------------
    const M & value(Var v) const;
    const M & grad(Var v) const { return nodes_[v.id].grad; }
    T scalar(Var v) const { return value(v)(0, 0); }
    // Small-matrix shape of a batched value.
    int brows(Var v) const { return nodes_[v.id].br; }
    int bcols(Var v) const { return nodes_[v.id].bc; }

    // Backpropagates from a [1, 1] node (seed 1): accumulates into every Param's grad
    // (callers zero Param grads between steps) and into node grads readable with grad()
    // (a Linear node with an activation keeps the gradient before the activation there).
    void backward(Var loss);
    // Forgets the recorded ops but keeps their buffers for the next step.
    void reset();
    int size() const { return n_; }
    // Non-empty after a numerical failure (e.g. a Cholesky of a non-positive-definite matrix).
    const std::string & error() const { return error_; }

private:
    struct Node {
        Op op = Op::Constant;
        std::vector<int> in;        // input node ids
        M value;                    // the node's value (unused for parameters)
        M grad;                     // d loss / d value, filled by backward()
        M aux;                      // what the backward pass needs beyond inputs and value
        Param<T> * param = nullptr; // for Op::Parameter
        const M * ext = nullptr;    // for constant_ref: the value lives outside the tape
        int br = 0, bc = 1;         // small-matrix shape of a batched value
        Activation act = Activation::None;   // Linear: its activation
        int r0 = 0, nr = 0, c0 = 0, nc = 0;  // Slice: the block read
        bool trans_a = false, trans_b = false; // MatMul, BMatMul: transposed operands; BTriSolve: L^T
        T scalar = T(0);            // Scale: the factor; AddScalar: the constant
        FusedBackward<T> fused = nullptr; // Fused: its backward pass
        bool needs_grad = false;
        bool grad_fresh = false;    // backward(): grad not written yet (logically zero)
    };
    std::vector<Node> nodes_;
    int n_ = 0;
    std::string error_;

    Node & push(Op op, std::initializer_list<Var> inputs);
    // Sets the small-matrix shape br x bc of the node just recorded and returns it.
    Var shaped(int br, int bc);
    Var concat(const std::vector<Var> & parts, bool rows); // concat_rows (rows) or concat_cols
    Var binary(Op op, Var a, Var b); // add, sub, mul with broadcasting
    const M & val(int id) const {
        const Node & nd = nodes_[id];
        return nd.param ? nd.param->value : nd.ext ? *nd.ext : nd.value;
    }
    void backward_node(int id);
    // The gradient of node id for accumulation, zeroed on first use.
    M & grad_acc(int id);
};

} // namespace ekvae
