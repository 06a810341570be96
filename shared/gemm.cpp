// gemm.cpp: the portable float product of gemm.h.
#include "gemm.h"

#include <algorithm>
#include <cstring>

namespace ekvae {

namespace {

// dst [cols, rows] = src [rows, cols]^T (column-major, leading dimension ld)
// (buf already holds offset + rows * cols floats)
const float * transposed(const float * src, int ld, int rows, int cols, std::vector<float> & buf, size_t offset) {
    float * dst = buf.data() + offset;
    for (int j = 0; j < cols; j++)
        for (int i = 0; i < rows; i++) dst[(size_t)i * cols + j] = src[(size_t)j * ld + i];
    return dst;
}

// Four floats as one value: GCC's and clang's vector extension (SSE natively, one v128 in
// WebAssembly with -msimd128); loads and stores through memcpy (any alignment).
typedef float v4 __attribute__((vector_size(16)));
inline v4 load4(const float * p) { v4 v; std::memcpy(&v, p, sizeof v); return v; }
inline void store4(float * p, v4 v) { std::memcpy(p, &v, sizeof v); }

// C[0:8, 0:4] += A[0:8, 0:k] B[0:k, 0:4]: 2 x 4 vector accumulators (packing A's rows into
// contiguous panels, or B's columns, measured no faster in node)
inline void tile_8x4(int k, const float * A, int lda, const float * B, int ldb, float * C, int ldc) {
    v4 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
    const float * b0 = B, * b1 = B + ldb, * b2 = B + 2 * (size_t)ldb, * b3 = B + 3 * (size_t)ldb;
    for (int p = 0; p < k; p++) {
        const float * a = A + (size_t)p * lda;
        const v4 a0 = load4(a), a1 = load4(a + 4);
        const float x0 = b0[p], x1 = b1[p], x2 = b2[p], x3 = b3[p];
        c00 += a0 * x0; c01 += a1 * x0;
        c10 += a0 * x1; c11 += a1 * x1;
        c20 += a0 * x2; c21 += a1 * x2;
        c30 += a0 * x3; c31 += a1 * x3;
    }
    float * C1 = C + ldc, * C2 = C + 2 * (size_t)ldc, * C3 = C + 3 * (size_t)ldc;
    store4(C, load4(C) + c00); store4(C + 4, load4(C + 4) + c01);
    store4(C1, load4(C1) + c10); store4(C1 + 4, load4(C1 + 4) + c11);
    store4(C2, load4(C2) + c20); store4(C2 + 4, load4(C2 + 4) + c21);
    store4(C3, load4(C3) + c30); store4(C3 + 4, load4(C3 + 4) + c31);
}

} // namespace

void gemm_f32(int m, int n, int k, const float * A, int lda, bool ta, const float * B, int ldb, bool tb, float * C, int ldc,
              bool accumulate, std::vector<float> & scratch) {
    const int m8 = m - m % 8, n4 = n - n % 4;
    const size_t nta = ta ? (size_t)m * k : 0, ntb = tb ? (size_t)k * n : 0;
    const size_t need = nta + ntb;
    if (scratch.size() < need) scratch.resize(need);
    if (ta) { // A [k, m] -> [m, k]
        A = transposed(A, lda, k, m, scratch, 0);
        lda = m;
    }
    if (tb) { // B [n, k] -> [k, n]
        B = transposed(B, ldb, n, k, scratch, nta);
        ldb = k;
    }
    if (!accumulate)
        for (int j = 0; j < n; j++) std::memset(C + (size_t)j * ldc, 0, sizeof(float) * m);
    for (int j = 0; j < n4; j += 4)
        for (int i = 0; i < m8; i += 8) tile_8x4(k, A + i, lda, B + (size_t)j * ldb, ldb, C + (size_t)j * ldc + i, ldc);
    // the edges: rows m8.. of every column, then the last n % 4 columns
    for (int j = 0; j < n; j++) {
        const int i_start = j < n4 ? m8 : 0;
        if (i_start >= m) continue;
        float * c = C + (size_t)j * ldc;
        for (int p = 0; p < k; p++) {
            const float x = B[(size_t)j * ldb + p];
            const float * a = A + (size_t)p * lda;
            for (int i = i_start; i < m; i++) c[i] += a[i] * x;
        }
    }
}

} // namespace ekvae
