// Tests for gemm.h: the portable float product against Eigen's, for every transpose, with and
// without accumulation, on shapes with and without the kernel's 8 x 4 tile edges; and
// matmul_into's routing as the WebAssembly build compiles it (EKVAE_PORTABLE_GEMM).
#define EKVAE_PORTABLE_GEMM 1
#include "gemm.h"

#include "test_util.h"

using namespace ekvae;
using namespace ekvae_test;
using Mf = Eigen::MatrixXf;

static Mf randf(int r, int c, Rng & rng) { return randn(r, c, rng).cast<float>(); }

// max |a - b| relative to the size of the terms of the product (k |A| |B|)
static double rel_err(const Mf & a, const Mf & b, int k) { return (a - b).cwiseAbs().maxCoeff() / std::max(1, k); }

TEST_CASE("gemm_f32 matches Eigen's product for every transpose and shape") {
    Rng rng(3);
    std::vector<float> scratch;
    const int shapes[][3] = {{8, 4, 1}, {13, 7, 5}, {16, 12, 33}, {3, 2, 9}, {128, 36, 64}, {4, 64, 128}, {257, 5, 3}};
    for (const auto & s : shapes) {
        const int m = s[0], n = s[1], k = s[2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) {
                    const Mf A = ta ? randf(k, m, rng) : randf(m, k, rng);
                    const Mf B = tb ? randf(n, k, rng) : randf(k, n, rng);
                    const Mf C0 = randf(m, n, rng);
                    const Mf opA = ta ? Mf(A.transpose()) : A, opB = tb ? Mf(B.transpose()) : B;
                    const Mf want = (acc ? C0 : Mf::Zero(m, n)) + opA * opB;
                    Mf C = C0;
                    gemm_f32(m, n, k, A.data(), (int)A.rows(), ta, B.data(), (int)B.rows(), tb, C.data(), m, acc, scratch);
                    INFO("m " << m << " n " << n << " k " << k << " ta " << ta << " tb " << tb << " acc " << acc);
                    CHECK(rel_err(C, want, k) < 1e-6);
                }
    }
}

TEST_CASE("matmul_into routes large float products through gemm_f32 and keeps Eigen for the rest") {
    Rng rng(4);
    // large (128 x 64 x 256 >= kPortableGemmMinWork) and small (8 x 1 x 16) products
    for (const int n : {64, 1}) {
        const Mf W = randf(128, 256, rng), X = randf(256, n, rng), G = randf(128, n, rng);
        Mf Y;
        matmul_into(Y, W, false, X, false, false);
        CHECK(rel_err(Y, W * X, 256) < 1e-6);
        Mf dW = randf(128, 256, rng);
        const Mf dW0 = dW;
        matmul_into(dW, G, false, X, true, true); // dW += G X^T
        CHECK(rel_err(dW, dW0 + G * X.transpose(), n) < 1e-6);
        Mf dX;
        matmul_into(dX, W, true, G, false, false); // dX = W^T G
        CHECK(rel_err(dX, W.transpose() * G, 128) < 1e-6);
    }
    // double always takes Eigen's product: the same bits
    const Md A = randn(40, 30, rng), B = randn(30, 50, rng);
    Md C;
    matmul_into(C, A, false, B, false, false);
    CHECK((C - A * B).cwiseAbs().maxCoeff() == 0.0);
}
