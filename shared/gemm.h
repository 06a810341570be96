// gemm.h: a plain C++ float matrix product for builds where Eigen's own kernels are slow.
//
// Eigen 3.4 has no WebAssembly SIMD kernels: in the browser its products run scalar, ~10x
// slower than natively (bench_ekvae's floor: 54.7 ms in node vs 5.2 ms native, one thread),
// and the training step is mostly products. This kernel is written so that clang vectorises
// it with -msimd128 (a register tile of 8 rows x 4 columns, contiguous inner loops); it is
// portable C++ (no intrinsics) and compiled everywhere, but only builds that define
// EKVAE_PORTABLE_GEMM (the WebAssembly ones, wasm/CMakeLists.txt) route products through it:
// natively Eigen's AVX kernels are faster. tests/test_autodiff.cpp checks it against Eigen.
#pragma once
#include <Eigen/Dense>

#include <type_traits>
#include <vector>

namespace ekvae {

// C [m, n] = (accumulate ? C : 0) + op(A) op(B), column-major with leading dimensions;
// op(A) is [m, k] (A [m, k], or A [k, m] when ta), op(B) is [k, n] (B [k, n], or [n, k] when tb).
// scratch holds the transposed operands (kept by the caller between calls).
void gemm_f32(int m, int n, int k, const float * A, int lda, bool ta, const float * B, int ldb, bool tb, float * C, int ldc,
              bool accumulate, std::vector<float> & scratch);

// Products at least this large (m * n * k multiply-adds) go through gemm_f32 in
// EKVAE_PORTABLE_GEMM builds; smaller ones (the app's one-frame forwards) stay with Eigen.
constexpr double kPortableGemmMinWork = 32768;

// out = (accumulate ? out : 0) + op(A) op(B) for Eigen matrices (out already sized when
// accumulating): gemm_f32 for large float products in EKVAE_PORTABLE_GEMM builds, else Eigen.
template <class T>
void matmul_into(Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> & out, const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> & A,
                 bool ta, const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> & B, bool tb, bool accumulate) {
    const Eigen::Index m = ta ? A.cols() : A.rows(), k = ta ? A.rows() : A.cols(), n = tb ? B.rows() : B.cols();
#ifdef EKVAE_PORTABLE_GEMM
    if constexpr (std::is_same_v<T, float>) {
        if ((double)m * n * k >= kPortableGemmMinWork) {
            thread_local std::vector<float> scratch;
            if (!accumulate) out.resize(m, n);
            gemm_f32((int)m, (int)n, (int)k, A.data(), (int)A.rows(), ta, B.data(), (int)B.rows(), tb, out.data(), (int)out.rows(),
                     accumulate, scratch);
            return;
        }
    }
#endif
    (void)m, (void)n, (void)k;
    if (accumulate) {
        if (!ta && !tb) out.noalias() += A * B;
        else if (ta && !tb) out.noalias() += A.transpose() * B;
        else if (!ta && tb) out.noalias() += A * B.transpose();
        else out.noalias() += A.transpose() * B.transpose();
    } else {
        if (!ta && !tb) out.noalias() = A * B;
        else if (ta && !tb) out.noalias() = A.transpose() * B;
        else if (!ta && tb) out.noalias() = A * B.transpose();
        else out.noalias() = A.transpose() * B.transpose();
    }
}

} // namespace ekvae
