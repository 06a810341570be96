// bench_autodiff: the autodiff's overhead over the bare Eigen products it consists of.
//
//   1. forward + backward + Adam step of the 256-128-128-4-128-128-256 ReLU MLP on a batch of
//      1024 frames (Bernoulli loss), against the same matrix products written out by hand;
//   2. batched Cholesky forward + backward for 1024 3x3 matrices.
// Both measured in one run, alternating, reporting medians and their ratio (machines are noisy).
//
//   build/bench/bench_autodiff [--reps N] [--json]
#include "autodiff.h"
#include "ekvae.h"
#include "nn.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

// Counting heap allocations: this executable interposes malloc (glibc) and counts calls.
extern "C" void * __libc_malloc(size_t);
static std::atomic<long> g_mallocs{0};
extern "C" void * malloc(size_t n) {
    g_mallocs.fetch_add(1, std::memory_order_relaxed);
    return __libc_malloc(n);
}

using namespace ekvae;
using Mf = Mat<float>;
using clk = std::chrono::steady_clock;

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char ** argv) {
    int reps = 50;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(3, std::atoi(argv[++i]));
        else if (!std::strcmp(argv[i], "--json")) json = true;
        else {
            std::fprintf(stderr, "usage: bench_autodiff [--reps N] [--json]\n");
            return 2;
        }
    }
    const std::vector<int> sizes = {256, 128, 128, 4, 128, 128, 256};
    const int B = 1024;
    Rng rng(1);
    Params<float> ps;
    MLP<float> mlp = make_mlp(ps, "mlp", sizes, Activation::Relu, rng);
    Adam<float> opt;
    Mf X = (Mf::Random(256, B).array() * 0.5f + 0.5f).matrix();
    Tape<float> tape;

    auto autodiff_step = [&]() {
        tape.reset();
        Var x = tape.constant(X);
        Var loss = tape.scale(tape.sum(tape.bernoulli_logits(mlp.forward(tape, x), x)), -1.0f / B);
        ps.zero_grad();
        tape.backward(loss);
        opt.update(ps);
    };

    // The same step's matrix products by hand: Y_l = W_l H_{l-1}; dW_l = G_l H_{l-1}^T;
    // dH_{l-1} = W_l^T G_l (not for the input layer). Buffers preallocated.
    const int L = (int)sizes.size() - 1;
    std::vector<Mf> H(L + 1), G(L + 1), dW(L);
    H[0] = X;
    for (int l = 0; l < L; l++) {
        H[l + 1].resize(sizes[l + 1], B);
        G[l + 1].resize(sizes[l + 1], B);
        dW[l].resize(sizes[l + 1], sizes[l]);
    }
    auto bare_step = [&]() {
        for (int l = 0; l < L; l++) H[l + 1].noalias() = mlp.layers[l].W->value * H[l];
        G[L] = H[L];
        for (int l = L - 1; l >= 0; l--) {
            dW[l].noalias() = G[l + 1] * H[l].transpose();
            if (l > 0) G[l].noalias() = mlp.layers[l].W->value.transpose() * G[l + 1];
        }
    };

    // batched Cholesky of 1024 3x3 SPD matrices, forward + backward
    const int n = 3, NB = 1024;
    Mf S(n * n, NB);
    for (int j = 0; j < NB; j++) {
        Mf m = Mf::Random(n, n);
        Mf a = m * m.transpose() + n * Mf::Identity(n, n);
        std::memcpy(S.col(j).data(), a.data(), sizeof(float) * n * n);
    }
    Params<float> sp;
    sp.add("S", n * n, NB).value = S;
    Tape<float> ctape;
    auto chol_step = [&]() {
        ctape.reset();
        Var L = ctape.bcholesky(ctape.param_batch(*sp.list[0], n, n));
        Var loss = ctape.sum(L);
        sp.zero_grad();
        ctape.backward(loss);
    };

    for (int w = 0; w < 3; w++) { autodiff_step(); bare_step(); chol_step(); }
    std::vector<double> t_ad, t_bare, t_chol;
    for (int r = 0; r < reps; r++) {
        auto t0 = clk::now();
        autodiff_step();
        auto t1 = clk::now();
        bare_step();
        auto t2 = clk::now();
        chol_step();
        auto t3 = clk::now();
        t_ad.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        t_bare.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
        t_chol.push_back(std::chrono::duration<double, std::milli>(t3 - t2).count());
    }
    const double ad = median(t_ad), bare = median(t_bare), chol = median(t_chol);

    // heap allocations in a steady-state step (after the first)
    long before = g_mallocs.load();
    autodiff_step();
    const long mlp_allocs = g_mallocs.load() - before;
    EkvaeConfig ecfg;
    ecfg.train_sequences = 64;
    ecfg.threads = 1;
    ecfg.restarts = 1;
    DatasetConfig dc;
    dc.sequences = 64;
    Dataset data = generate_dataset(dc);
    Trainer tr;
    tr.init(ecfg);
    Mf bx, bu;
    for (int i = 0; i < 3; i++) {
        sample_batch(data, ecfg.batch, ecfg.window, tr.rng, bx, bu);
        tr.train_step(bx, bu);
    }
    sample_batch(data, ecfg.batch, ecfg.window, tr.rng, bx, bu);
    before = g_mallocs.load();
    tr.train_step(bx, bu);
    const long ekvae_allocs = g_mallocs.load() - before;
    if (json) {
        std::printf("{\"mlp_step_ms\": %.4f, \"bare_products_ms\": %.4f, \"overhead_ratio\": %.4f, "
                    "\"bcholesky_fwd_bwd_1024x3x3_ms\": %.4f, \"reps\": %d, \"eigen_threads\": %d, "
                    "\"mlp_step_mallocs\": %ld, \"ekvae_step_mallocs\": %ld}\n",
                    ad, bare, ad / bare, chol, reps, Eigen::nbThreads(), mlp_allocs, ekvae_allocs);
    } else {
        std::printf("MLP 256-128-128-4-128-128-256, batch %d (median of %d, Eigen threads %d)\n", B, reps, Eigen::nbThreads());
        std::printf("  autodiff forward+backward+Adam   %8.3f ms\n", ad);
        std::printf("  bare Eigen products               %8.3f ms\n", bare);
        std::printf("  overhead ratio                    %8.3f x   (target <= 1.5)\n", ad / bare);
        std::printf("batched Cholesky forward+backward, 1024 x 3x3: %.3f ms\n", chol);
        std::printf("heap allocations in one steady-state step: MLP %ld, EKVAE training step (1 thread) %ld\n", mlp_allocs, ekvae_allocs);
    }
    return 0;
}
